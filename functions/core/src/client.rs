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

use crate::credentials::{CredentialsKey, ReceiverAuth};
use crate::model::Endpoint;
use crate::oauth::ClientCredentials;
use crate::retry::parse_retry_after;
use crate::urlpolicy::{HostResolver, PolicyResolver, ResolveError, UrlPolicy};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER};
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
    /// OAuth2 access tokens of the endpoints this sender authenticates to.
    tokens: Arc<crate::oauth::TokenCache>,
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
            tokens: Arc::default(),
        })
    }

    /// The cache of OAuth2 access tokens this sender uses.
    pub fn tokens(&self) -> &crate::oauth::TokenCache {
        &self.tokens
    }

    /// POSTs `body` to `url`. Never fails: every outcome is described in the response.
    pub async fn post(&self, url: &str, headers: HeaderMap, body: Vec<u8>) -> Response {
        let started = Instant::now();
        match self.exchange(url, headers, body, MAX_RESPONSE_READ).await {
            Ok(answer) => Response {
                status: Some(answer.status),
                latency: started.elapsed(),
                excerpt: truncate(&answer.body),
                // A status was received; a body cut short is noted but does not undo it.
                error: answer.body_error.map(|k| format!("body_{k}")),
                retry_after: answer.retry_after,
            },
            Err((kind, detail)) => failed(started, kind, &detail),
        }
    }

    /// POSTs a request rendered for `endpoint` (see [`crate::webhook::render`]) to its URL,
    /// authenticated as the endpoint asks, its credentials opened with `key`. With OAuth2, a
    /// 401 makes the token be fetched again and the request sent once more within the same
    /// attempt: the attempt's answer is the second one. Credentials that cannot be opened or
    /// a token that cannot be had fail the attempt with error `auth` (or `blocked`, for a
    /// token URL the policy refuses) before the receiver is called.
    pub async fn deliver(
        &self,
        endpoint: &Endpoint,
        key: Option<&CredentialsKey>,
        mut headers: HeaderMap,
        body: Vec<u8>,
    ) -> Response {
        let Some(sealed) = &endpoint.auth else {
            return self.post(&endpoint.url, headers, body).await;
        };
        let started = Instant::now();
        let Some(auth) = key.and_then(|k| k.open(sealed, endpoint.id).ok()) else {
            return failed(
                started,
                "auth",
                "the endpoint's credentials do not open with the configured credentials key",
            );
        };
        let creds = match &auth {
            ReceiverAuth::Basic { username, password } => {
                let basic = STANDARD.encode(format!("{username}:{password}"));
                return match secret_header(format!("Basic {basic}")) {
                    Some(v) => {
                        headers.insert(AUTHORIZATION, v);
                        self.post(&endpoint.url, headers, body).await
                    }
                    None => failed(started, "auth", "credentials unusable in a header"),
                };
            }
            ReceiverAuth::Bearer { token } => {
                return match secret_header(format!("Bearer {token}")) {
                    Some(v) => {
                        headers.insert(AUTHORIZATION, v);
                        self.post(&endpoint.url, headers, body).await
                    }
                    None => failed(started, "auth", "token unusable in a header"),
                };
            }
            ReceiverAuth::OAuth2 {
                token_url,
                client_id,
                client_secret,
                scope,
            } => ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope: scope.as_deref(),
            },
        };
        let mut refused: Option<String> = None;
        loop {
            let token = match self
                .tokens
                .token(
                    self,
                    endpoint.id,
                    &sealed.sealed,
                    &creds,
                    refused.as_deref(),
                )
                .await
            {
                Ok(token) => token,
                Err((kind, detail)) => return failed(started, kind, &detail),
            };
            let Some(value) = secret_header(format!("Bearer {token}")) else {
                return failed(started, "auth", "token unusable in a header");
            };
            headers.insert(AUTHORIZATION, value);
            let mut response = self
                .post(&endpoint.url, headers.clone(), body.clone())
                .await;
            if response.status == Some(401) && refused.is_none() {
                tracing::debug!(endpoint = %endpoint.id, "receiver refused the access token; fetching another");
                refused = Some(token);
                continue;
            }
            response.latency = started.elapsed();
            return response;
        }
    }

    /// POSTs `body` to `url` under the URL policy and reads up to `cap` bytes of the
    /// answer; `Err`: no status, as the kind of failure and its description.
    pub(crate) async fn exchange(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Vec<u8>,
        cap: usize,
    ) -> Result<Answer, (&'static str, String)> {
        if let Err(e) = self.policy.check_url(url) {
            return Err(("blocked", e.to_string()));
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
            Err(e) => return Err((kind_of(&e), describe(&e))),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let mut read = Vec::new();
        let mut body_error = None;
        while read.len() < cap {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = cap - read.len();
                    read.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                Err(e) => {
                    body_error = Some(kind_of(&e));
                    break;
                }
            }
        }
        Ok(Answer {
            status,
            retry_after,
            body: read,
            body_error,
        })
    }
}

/// A header value marked sensitive, which `http` and `hyper` never print.
fn secret_header(value: String) -> Option<HeaderValue> {
    let mut value = HeaderValue::try_from(value).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// What came back from a request that got a status.
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// Up to the cap asked for.
    pub body: Vec<u8>,
    /// The kind of failure that cut the body short, if one did.
    pub body_error: Option<&'static str>,
}

/// A response that got no status: `kind` of failure, described by `detail`.
pub(crate) fn failed(started: Instant, kind: &str, detail: &str) -> Response {
    Response {
        status: None,
        latency: started.elapsed(),
        excerpt: truncate(detail.as_bytes()),
        error: Some(kind.to_string()),
        retry_after: None,
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
