//! DNS rebinding, on loopback only: the policy exempts 127.0.0.2 alone, and a stub resolver
//! answers 127.0.0.2 to its first lookup and 127.0.0.1 (forbidden) afterwards. The client
//! connects only to the address it checked, and refuses the host once it resolves to a
//! forbidden address, without opening a connection; an OAuth2 token URL likewise.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookline_core::client::{Sender, SenderOptions};
use hookline_core::urlpolicy::{HostResolver, UrlPolicy};
use reqwest::header::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CHECKED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const FORBIDDEN: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// Answers `first` to the first lookup and `then` to every later one, counting lookups.
struct Rebinding {
    first: Vec<IpAddr>,
    then: Vec<IpAddr>,
    lookups: AtomicUsize,
}

impl Rebinding {
    fn new(first: &[Ipv4Addr], then: &[Ipv4Addr]) -> Arc<Self> {
        Arc::new(Rebinding {
            first: first.iter().copied().map(IpAddr::V4).collect(),
            then: then.iter().copied().map(IpAddr::V4).collect(),
            lookups: AtomicUsize::new(0),
        })
    }

    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

impl HostResolver for Rebinding {
    fn lookup(
        &self,
        _host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let n = self.lookups.fetch_add(1, Ordering::SeqCst);
        let addrs = if n == 0 {
            self.first.clone()
        } else {
            self.then.clone()
        };
        Box::pin(async move { Ok(addrs) })
    }
}

/// A plain HTTP receiver counting the connections it accepts; it answers 200 and closes.
struct Listener {
    connections: Arc<AtomicUsize>,
}

impl Listener {
    async fn bind(ip: Ipv4Addr, port: u16) -> std::io::Result<Listener> {
        let listener = TcpListener::bind((ip, port)).await?;
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    // The request is small; one read holds its headers.
                    let _ = tcp.read(&mut buf).await;
                    let _ = tcp
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = tcp.shutdown().await;
                });
            }
        });
        Ok(Listener { connections })
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Listeners on 127.0.0.1 and 127.0.0.2 sharing one port, so that only the address decides
/// which one a request reaches.
async fn twin_listeners() -> (u16, Listener, Listener) {
    for _ in 0..20 {
        // An ephemeral port of 127.0.0.1, then both addresses bound to it.
        let first = TcpListener::bind((FORBIDDEN, 0)).await.unwrap();
        let port = first.local_addr().unwrap().port();
        drop(first);
        let (Ok(forbidden), Ok(checked)) = (
            Listener::bind(FORBIDDEN, port).await,
            Listener::bind(CHECKED, port).await,
        ) else {
            continue;
        };
        return (port, forbidden, checked);
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

fn sender(resolver: Arc<Rebinding>) -> Sender {
    Sender::new(SenderOptions {
        policy: Arc::new(UrlPolicy {
            allow_http: true,
            allowed_networks: UrlPolicy::parse_networks("127.0.0.2/32").unwrap(),
        }),
        resolver,
        timeout: Duration::from_secs(5),
        extra_roots: Vec::new(),
    })
    .unwrap()
}

#[tokio::test]
async fn the_request_goes_to_the_checked_address_and_a_rebound_name_is_refused() {
    let (port, forbidden, checked) = twin_listeners().await;
    let resolver = Rebinding::new(&[CHECKED], &[FORBIDDEN]);
    let sender = sender(resolver.clone());
    let url = format!("http://rebind.test:{port}/hook");

    let first = sender.post(&url, HeaderMap::new(), b"{}".to_vec()).await;
    assert_eq!(first.status, Some(200), "{first:?}");
    assert_eq!(first.error, None);
    assert_eq!(
        resolver.lookups(),
        1,
        "one lookup, used for both check and connect"
    );
    assert_eq!(checked.connections(), 1);
    assert_eq!(forbidden.connections(), 0);

    // The name now resolves to 127.0.0.1: refused before any connection is made.
    let second = sender.post(&url, HeaderMap::new(), b"{}".to_vec()).await;
    assert_eq!(second.status, None, "{second:?}");
    assert_eq!(second.error.as_deref(), Some("blocked"), "{second:?}");
    assert!(second.excerpt.contains("127.0.0.1"), "{second:?}");
    assert_eq!(resolver.lookups(), 2);
    assert_eq!(forbidden.connections(), 0);
    assert_eq!(checked.connections(), 1);
}

#[tokio::test]
async fn a_name_with_one_forbidden_address_among_allowed_ones_is_refused_whole() {
    let (port, forbidden, checked) = twin_listeners().await;
    let resolver = Rebinding::new(&[CHECKED, FORBIDDEN], &[CHECKED, FORBIDDEN]);
    let sender = sender(resolver.clone());
    let got = sender
        .post(
            &format!("http://rebind.test:{port}/"),
            HeaderMap::new(),
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(got.error.as_deref(), Some("blocked"), "{got:?}");
    assert_eq!(resolver.lookups(), 1);
    assert_eq!(forbidden.connections(), 0);
    assert_eq!(checked.connections(), 0);
}

#[tokio::test]
async fn a_forbidden_first_answer_is_refused_without_a_connection() {
    let (port, forbidden, checked) = twin_listeners().await;
    let resolver = Rebinding::new(&[FORBIDDEN], &[CHECKED]);
    let sender = sender(resolver.clone());
    let got = sender
        .post(
            &format!("http://rebind.test:{port}/"),
            HeaderMap::new(),
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(got.error.as_deref(), Some("blocked"), "{got:?}");
    assert_eq!(forbidden.connections(), 0);
    assert_eq!(checked.connections(), 0);
    // Literal addresses never reach the resolver and are checked by the policy itself.
    let literal = sender
        .post(
            &format!("http://127.0.0.1:{port}/"),
            HeaderMap::new(),
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(literal.error.as_deref(), Some("blocked"), "{literal:?}");
    assert_eq!(resolver.lookups(), 1);
    assert_eq!(forbidden.connections(), 0);
}

/// Answers by host name: `tokens.test` is the forbidden address, anything else the checked one.
struct ByHost;

impl HostResolver for ByHost {
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let ip = if host == "tokens.test" {
            FORBIDDEN
        } else {
            CHECKED
        };
        Box::pin(async move { Ok(vec![IpAddr::V4(ip)]) })
    }
}

#[tokio::test]
async fn an_oauth2_token_url_resolving_to_a_forbidden_address_is_never_called() {
    use hookline_core::credentials::{CredentialsKey, ReceiverAuth};
    use hookline_core::ids::{EndpointId, TenantId};
    use hookline_core::model::{BodyFormat, Endpoint, EndpointStatus};
    use hookline_core::signing::{EndpointSecrets, Secret};

    let (port, forbidden, checked) = twin_listeners().await;
    let sender = Sender::new(SenderOptions {
        policy: Arc::new(UrlPolicy {
            allow_http: true,
            allowed_networks: UrlPolicy::parse_networks("127.0.0.2/32").unwrap(),
        }),
        resolver: Arc::new(ByHost),
        timeout: Duration::from_secs(5),
        extra_roots: Vec::new(),
    })
    .unwrap();
    let key = CredentialsKey::generate();
    let id = EndpointId::new();
    let auth = ReceiverAuth::OAuth2 {
        // A name passes the check made when saved; its address is checked when fetched.
        token_url: format!("http://tokens.test:{port}/token"),
        client_id: "c".into(),
        client_secret: "s".into(),
        scope: None,
    };
    let endpoint = Endpoint {
        id,
        tenant: TenantId::new(),
        url: format!("http://receiver.test:{port}/hook"),
        description: String::new(),
        event_types: None,
        domain: None,
        filter: None,
        format: BodyFormat::Raw,
        secrets: EndpointSecrets::new(Secret::generate()),
        status: EndpointStatus::Active,
        disabled_reason: None,
        disabled_at: None,
        failing_since: None,
        rate_limit: None,
        created_at: 0,
        updated_at: 0,
        version: 1,
        headers: Default::default(),
        auth: Some(key.seal(&auth, id).unwrap()),
        ordering: Default::default(),
    };
    let response = sender
        .deliver(&endpoint, Some(&key), HeaderMap::new(), b"{}".to_vec())
        .await;
    assert_eq!(response.status, None, "{response:?}");
    assert_eq!(response.error.as_deref(), Some("blocked"), "{response:?}");
    assert_eq!(forbidden.connections(), 0, "the token URL was called");
    assert_eq!(
        checked.connections(),
        0,
        "the receiver was called without a token"
    );

    // The same endpoint without credentials reaches its receiver: the refusal was the
    // token URL's.
    let plain = Endpoint {
        auth: None,
        ..endpoint
    };
    let response = sender
        .deliver(&plain, Some(&key), HeaderMap::new(), b"{}".to_vec())
        .await;
    assert_eq!(response.status, Some(200), "{response:?}");
    assert_eq!(checked.connections(), 1);
}
