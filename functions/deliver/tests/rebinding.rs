//! DNS rebinding through the whole delivery path, on loopback only: the deliverer's client
//! is the one local mode and the deliver function build, here with a stub resolver that
//! answers 127.0.0.2 (the one exempt address) first and 127.0.0.1 afterwards. The first
//! message reaches the listener on 127.0.0.2; the second is recorded as blocked, and the
//! listener on 127.0.0.1 never sees a connection.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookline_core::config::CoreConfig;
use hookline_core::contract::{endpoint_to, stored_tenant};
use hookline_core::ids::{MessageId, TenantId};
use hookline_core::ports::{SharedStore, SystemClock};
use hookline_core::task::Origin;
use hookline_core::urlpolicy::{HostResolver, UrlPolicy};
use hookline_deliver::{Deliverer, Sender, SenderOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CHECKED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const FORBIDDEN: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// 127.0.0.2 to the first lookup, 127.0.0.1 to every later one.
#[derive(Default)]
struct Rebinding(AtomicUsize);

impl HostResolver for Rebinding {
    fn lookup(
        &self,
        _host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let ip = if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            CHECKED
        } else {
            FORBIDDEN
        };
        Box::pin(async move { Ok(vec![IpAddr::V4(ip)]) })
    }
}

/// Counts connections; answers 200 and closes, so every delivery resolves afresh.
async fn listen(listener: TcpListener) -> Arc<AtomicUsize> {
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
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
    connections
}

/// Listeners on 127.0.0.1 and 127.0.0.2 on one port: (port, forbidden, checked).
async fn twin_listeners() -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    for _ in 0..20 {
        let forbidden = TcpListener::bind((FORBIDDEN, 0)).await.unwrap();
        let port = forbidden.local_addr().unwrap().port();
        let Ok(checked) = TcpListener::bind((CHECKED, port)).await else {
            continue;
        };
        return (port, listen(forbidden).await, listen(checked).await);
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

fn deliverer(store: SharedStore, queue: hookline_core::ports::SharedQueue) -> Deliverer {
    let config = Arc::new(CoreConfig {
        url_policy: Arc::new(UrlPolicy {
            allow_http: true,
            allowed_networks: UrlPolicy::parse_networks("127.0.0.2/32").unwrap(),
        }),
        retry: "0s".parse().unwrap(),
        request_timeout: Duration::from_secs(5),
        ..CoreConfig::default()
    });
    let sender = Sender::new(SenderOptions {
        policy: config.url_policy.clone(),
        resolver: Arc::new(Rebinding::default()),
        timeout: config.request_timeout,
        extra_roots: Vec::new(),
    })
    .unwrap();
    Deliverer::new(
        store,
        queue,
        Arc::new(SystemClock),
        config,
        Arc::new(sender),
    )
}

async fn publish(deliverer: &Deliverer, tenant: TenantId, n: u32) -> MessageId {
    let origin = Origin {
        message_id: MessageId::new(),
        received_at: 1_000,
    };
    let body = format!(r#"{{"tenant":"{tenant}","type":"delivered","payload":{{"n":{n}}}}}"#);
    deliverer.handle(&body, origin).await;
    origin.message_id
}

#[tokio::test]
async fn a_delivery_to_a_rebound_name_is_blocked_and_never_connects() {
    let (port, forbidden, checked) = twin_listeners().await;
    let (store, queue) = hookline_core::embedded::open_in_memory().unwrap();
    let store: SharedStore = store;
    let deliverer = deliverer(store.clone(), queue);
    let (tenant, _) = stored_tenant(store.as_ref(), None).await;
    let endpoint = endpoint_to(tenant, &format!("http://rebind.test:{port}/hook"), None);
    store.create_endpoint(&endpoint, 1_000).await.unwrap();

    let first = publish(&deliverer, tenant, 1).await;
    let attempts = store.list_attempts(tenant, first).await.unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].status_code, Some(200), "{attempts:?}");
    assert_eq!(checked.load(Ordering::SeqCst), 1);
    assert_eq!(forbidden.load(Ordering::SeqCst), 0);

    let second = publish(&deliverer, tenant, 2).await;
    let attempts = store.list_attempts(tenant, second).await.unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].status_code, None, "{attempts:?}");
    assert_eq!(
        attempts[0].error.as_deref(),
        Some("blocked"),
        "{attempts:?}"
    );
    assert_eq!(forbidden.load(Ordering::SeqCst), 0);
    assert_eq!(checked.load(Ordering::SeqCst), 1);
}
