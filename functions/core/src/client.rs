//! The outbound HTTP client: rustls with TLS 1.2 or later, no redirects, no proxies, a
//! whole-request timeout, the URL policy checked before every request and on every DNS
//! answer, and response bodies read only up to a cap.
//!
//! Certificates are checked against Mozilla's root set compiled into the binary
//! ([`webpki_roots`]) rather than the system's store: building a client reads no file, so a
//! Lambda function starts without scanning `/etc/ssl/certs`, and every deployment trusts
//! the same roots.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::retry::parse_retry_after;
use crate::urlpolicy::{HostResolver, PolicyResolver, ResolveError, UrlPolicy};
use reqwest::header::{HeaderMap, RETRY_AFTER};
pub use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Most of a response body read; the rest is dropped with the connection.
pub const MAX_RESPONSE_READ: usize = 64 * 1024;
/// Most of a response body kept in the attempt log.
pub const MAX_EXCERPT: usize = 1024;

/// What one request got back.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: Option<u16>,
    pub latency: Duration,
    /// The start of the body, lossily decoded.
    pub excerpt: String,
    /// Set when no status was received: `blocked`, `timeout`, `connect`, `tls`, `body`,
    /// `request`.
    pub error: Option<String>,
    pub retry_after: Option<Duration>,
}

#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: Arc<UrlPolicy>,
}

pub struct SenderOptions {
    pub policy: Arc<UrlPolicy>,
    pub resolver: Arc<dyn HostResolver>,
    pub timeout: Duration,
    /// Extra roots to trust (test CAs), DER-encoded; the compiled-in roots are always
    /// trusted.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// An extra root was not a usable CA certificate, or the TLS settings were refused.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

/// The TLS settings of every outbound connection: TLS 1.3 or 1.2 (nothing older is
/// offered), the *ring* provider, HTTP/1.1 in ALPN, and trust in the compiled-in roots plus
/// `extra_roots`.
pub fn tls_config(extra_roots: Vec<CertificateDer<'static>>) -> Result<ClientConfig, ClientError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for root in extra_roots {
        roots.add(root)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Makes *ring* the process-wide rustls provider, for programs that also build plain
/// `reqwest::Client`s: reqwest is built without a provider of its own and panics without
/// one. Does nothing when a provider is already installed.
pub fn install_crypto_provider() {
    // An error only says that a provider is already installed, which is what was wanted.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Sender {
    pub fn new(opts: SenderOptions) -> Result<Self, ClientError> {
        let resolver = PolicyResolver::new(opts.policy.clone(), opts.resolver);
        let client = reqwest::Client::builder()
            .user_agent(concat!("Hookline/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(resolver))
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .tls_backend_preconfigured(tls_config(opts.extra_roots)?)
            .build()?;
        Ok(Sender {
            client,
            policy: opts.policy,
        })
    }

    /// POSTs `body` to `url`. Never fails: every outcome is described in the response.
    pub async fn post(&self, url: &str, headers: HeaderMap, body: Vec<u8>) -> Response {
        let started = Instant::now();
        let failed = |kind: &str, detail: String| Response {
            status: None,
            latency: started.elapsed(),
            excerpt: truncate(detail.as_bytes()),
            error: Some(kind.to_string()),
            retry_after: None,
        };
        if let Err(e) = self.policy.check_url(url) {
            return failed("blocked", e.to_string());
        }
        let sent = self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => return failed(kind_of(&e), describe(&e)),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let mut read = Vec::new();
        let mut body_error = None;
        while read.len() < MAX_RESPONSE_READ {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_RESPONSE_READ - read.len();
                    read.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                Err(e) => {
                    body_error = Some(kind_of(&e).to_string());
                    break;
                }
            }
        }
        Response {
            status: Some(status),
            latency: started.elapsed(),
            excerpt: truncate(&read),
            // A status was received; a body cut short is noted but does not undo it.
            error: body_error.map(|k| format!("body_{k}")),
            retry_after,
        }
    }
}

/// At most [`MAX_EXCERPT`] bytes of valid UTF-8: decoding replaces each invalid byte with a
/// three-byte U+FFFD, so the cut is made after decoding, on a character boundary.
fn truncate(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_EXCERPT)]);
    let mut end = text.len().min(MAX_EXCERPT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// The errors behind `e`, outermost first. An `io::Error` wrapping another error hides it
/// from `source()`, so the walk steps into it explicitly.
fn causes(e: &reqwest::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    let first: &(dyn std::error::Error + 'static) = e;
    std::iter::successors(Some(first), |e| match e.downcast_ref::<std::io::Error>() {
        Some(io) => io
            .get_ref()
            .map(|inner| inner as &(dyn std::error::Error + 'static)),
        None => e.source(),
    })
}

fn blocked_by_policy(e: &reqwest::Error) -> bool {
    causes(e).any(|c| {
        matches!(
            c.downcast_ref::<ResolveError>(),
            Some(ResolveError::Blocked(_))
        )
    })
}

/// True when the TLS handshake failed (old protocol version, untrusted certificate, …).
fn tls_failure(e: &reqwest::Error) -> bool {
    causes(e).any(|c| c.is::<rustls::Error>())
}

fn kind_of(e: &reqwest::Error) -> &'static str {
    if blocked_by_policy(e) {
        "blocked"
    } else if tls_failure(e) {
        "tls"
    } else if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    }
}

/// The error with its causes, which reqwest keeps in the source chain.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
