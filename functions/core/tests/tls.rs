//! TLS at delivery time: HTTPS with TLS 1.2 or later only, with no fallback to an older
//! protocol; plain HTTP refused unless the deployment allows it; a receiver whose
//! certificate chains to a configured CA is reached. Everything stays on 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookline_core::client::{Sender, SenderOptions};
use hookline_core::urlpolicy::{SystemResolver, UrlPolicy};
use reqwest::header::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

fn sender(allow_http: bool, roots: Vec<CertificateDer<'static>>) -> Sender {
    Sender::new(SenderOptions {
        policy: Arc::new(UrlPolicy {
            allow_http,
            allowed_networks: UrlPolicy::parse_networks("127.0.0.1/32").unwrap(),
        }),
        resolver: Arc::new(SystemResolver),
        timeout: Duration::from_secs(5),
        extra_roots: roots,
    })
    .unwrap()
}

/// A test CA and a server certificate for 127.0.0.1 signed by it.
fn test_pki() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Hookline test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (
        ca.pem(),
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

/// An HTTPS receiver answering 200 to each request; returns its URL and the bodies seen.
async fn https_receiver(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then a body of Content-Length bytes.
                loop {
                    let n = tls.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            log.lock().unwrap().push(text[end + 4..].to_string());
                            break;
                        }
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn an_https_receiver_with_a_trusted_test_ca_is_reached() {
    let (ca_pem, cert, key) = test_pki();
    let (url, seen) = https_receiver(cert, key).await;
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
    let response = sender(false, vec![ca])
        .post(&url, HeaderMap::new(), b"{\"tls\":true}".to_vec())
        .await;
    assert_eq!(response.status, Some(200), "{response:?}");
    assert_eq!(*seen.lock().unwrap(), vec!["{\"tls\":true}".to_string()]);
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_failure() {
    let (_, cert, key) = test_pki();
    let (url, seen) = https_receiver(cert, key).await;
    let response = sender(false, Vec::new())
        .post(&url, HeaderMap::new(), b"{}".to_vec())
        .await;
    assert_eq!(response.status, None);
    assert_eq!(response.error.as_deref(), Some("tls"), "{response:?}");
    assert!(seen.lock().unwrap().is_empty());
}

/// A server that answers any ClientHello with a TLS 1.1 ServerHello, as a server offering
/// nothing newer would; counts the connections it gets.
async fn tls11_only_server() -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/hook", listener.local_addr().unwrap());
    let connections = Arc::new(Mutex::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            *count.lock().unwrap() += 1;
            tokio::spawn(async move {
                let mut hello = [0u8; 4096];
                let _ = tcp.read(&mut hello).await;
                let mut server_hello = vec![
                    0x16, 0x03, 0x02, 0x00, 0x2a, // handshake record, TLS 1.1, 42 bytes
                    0x02, 0x00, 0x00, 0x26, // ServerHello, 38 bytes
                    0x03, 0x02, // server_version TLS 1.1
                ];
                server_hello.extend_from_slice(&[0x42; 32]); // random
                server_hello.extend_from_slice(&[0x00, 0x00, 0x2f, 0x00]); // no session id, TLS_RSA_WITH_AES_128_CBC_SHA, no compression
                let _ = tcp.write_all(&server_hello).await;
                let mut rest = [0u8; 256];
                let _ = tcp.read(&mut rest).await;
            });
        }
    });
    (url, connections)
}

#[tokio::test]
async fn a_server_offering_only_tls_1_1_is_refused_without_fallback() {
    let (url, connections) = tls11_only_server().await;
    let response = sender(false, Vec::new())
        .post(&url, HeaderMap::new(), b"{}".to_vec())
        .await;
    assert_eq!(response.status, None);
    assert_eq!(response.error.as_deref(), Some("tls"), "{response:?}");
    // One handshake, refused; no second try with an older protocol.
    assert_eq!(*connections.lock().unwrap(), 1);
}

#[tokio::test]
async fn plain_http_is_refused_at_delivery_unless_allowed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let response = sender(false, Vec::new())
        .post(&url, HeaderMap::new(), b"{}".to_vec())
        .await;
    assert_eq!(response.status, None);
    assert_eq!(response.error.as_deref(), Some("blocked"));
    // Nothing connected: the listener has no pending connection.
    let pending = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(pending.is_err(), "a connection was made");
}
