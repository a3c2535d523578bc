//! A webhook receiver on a loopback port that records every request and answers as told:
//! a scripted sequence of statuses, optionally after a delay.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    /// The Standard Webhooks signature a receiver computes for this request with `secret`,
    /// done apart from Hookline's own code.
    pub fn standard_signature(&self, secret: &str) -> String {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine;
        use hmac::{Hmac, Mac};
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap())
            .unwrap();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(self.header("webhook-id").as_bytes());
        mac.update(b".");
        mac.update(self.header("webhook-timestamp").as_bytes());
        mac.update(b".");
        mac.update(&self.body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Inner {
    script: VecDeque<u16>,
    default_status: u16,
    received: Vec<Received>,
    /// While set, requests wait for the gate to open before being answered.
    gate: Option<Arc<tokio::sync::Semaphore>>,
    retry_after: Option<String>,
    location: Option<String>,
}

#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Mutex<Inner>>,
    pub addr: SocketAddr,
}

impl Receiver {
    /// A receiver answering `status` to everything.
    pub async fn start(status: u16) -> Receiver {
        Self::scripted(&[], status).await
    }

    /// Answers the statuses of `script` in turn, then `then` for ever.
    pub async fn scripted(script: &[u16], then: u16) -> Receiver {
        let inner = Arc::new(Mutex::new(Inner {
            script: script.iter().copied().collect(),
            default_status: then,
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/{*path}", post(handle))
            .route("/", post(handle))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { inner, addr }
    }

    /// Holds every request (after recording it) until [`Receiver::release`].
    pub fn hold(&self) {
        self.inner.lock().unwrap().gate = Some(Arc::new(tokio::sync::Semaphore::new(0)));
    }

    pub fn release(&self) {
        if let Some(gate) = self.inner.lock().unwrap().gate.take() {
            gate.close();
        }
    }

    /// Sends this `Retry-After` with every answer.
    pub fn set_retry_after(&self, value: Option<&str>) {
        self.inner.lock().unwrap().retry_after = value.map(str::to_string);
    }

    /// Sends this `Location` with every answer (for redirects).
    pub fn set_location(&self, url: &str) {
        self.inner.lock().unwrap().location = Some(url.to_string());
    }

    /// Answers these statuses to the next requests, before the usual one again.
    pub fn script(&self, statuses: &[u16]) {
        self.inner.lock().unwrap().script.extend(statuses);
    }

    pub fn set_status(&self, status: u16) {
        self.inner.lock().unwrap().default_status = status;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    pub fn count(&self) -> usize {
        self.inner.lock().unwrap().received.len()
    }

    /// Waits until at least `n` requests arrived; panics after `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "receiver got {} requests, expected {n}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let (status, gate, retry_after, location) = {
        let mut g = inner.lock().unwrap();
        g.received.push(Received {
            headers,
            body,
            at: Instant::now(),
        });
        let status = g.script.pop_front().unwrap_or(g.default_status);
        (
            status,
            g.gate.clone(),
            g.retry_after.clone(),
            g.location.clone(),
        )
    };
    if let Some(gate) = gate {
        // Closed on release; acquiring then fails and the request goes on.
        let _ = gate.acquire().await;
    }
    let mut headers = HeaderMap::new();
    if let Some(v) = retry_after {
        headers.insert("retry-after", v.parse().unwrap());
    }
    if let Some(v) = location {
        headers.insert("location", v.parse().unwrap());
    }
    (StatusCode::from_u16(status).unwrap(), headers, "ok")
}
