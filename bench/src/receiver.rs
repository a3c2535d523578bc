//! A loopback webhook receiver: HTTP/1.1 with keep-alive, answers 200 (after an optional
//! delay, to stand in for a slow endpoint), and notes when each `webhook-id` arrived.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;

#[derive(Default)]
struct Seen {
    count: AtomicU64,
    arrivals: Mutex<Vec<(String, Instant)>>,
}

#[derive(Clone)]
struct AppState {
    seen: Arc<Seen>,
    delay: Duration,
}

/// A running receiver; it stops with the runtime that started it.
pub struct Receiver {
    pub url: String,
    seen: Arc<Seen>,
}

impl Receiver {
    /// Listens on a free loopback port; every request waits `delay` before its answer.
    pub async fn start(delay: Duration) -> anyhow::Result<Self> {
        let seen = Arc::new(Seen::default());
        let state = AppState {
            seen: seen.clone(),
            delay,
        };
        let app = axum::Router::new()
            .route("/{*path}", post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver { url, seen })
    }

    /// Requests received so far.
    pub fn count(&self) -> u64 {
        self.seen.count.load(Ordering::Relaxed)
    }

    /// Every arrival so far: webhook id and when it came.
    pub fn arrivals(&self) -> Vec<(String, Instant)> {
        self.seen.arrivals.lock().expect("arrivals lock").clone()
    }
}

async fn receive(State(state): State<AppState>, headers: HeaderMap) -> &'static str {
    let at = Instant::now();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    state
        .seen
        .arrivals
        .lock()
        .expect("arrivals lock")
        .push((id, at));
    state.seen.count.fetch_add(1, Ordering::Relaxed);
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    "ok"
}
