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

/// The name of the threads of a receiver started by [`Receiver::start_apart`].
pub const THREAD_NAME: &str = "bench-receiver";

/// A running receiver; it stops with the runtime that started it, or when dropped if it
/// has a runtime of its own.
pub struct Receiver {
    pub url: String,
    seen: Arc<Seen>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    /// Listens on a free loopback port; every request waits `delay` before its answer.
    pub async fn start(delay: Duration) -> anyhow::Result<Self> {
        let (url, seen, serve) = serve(delay)?;
        tokio::spawn(serve);
        Ok(Receiver {
            url,
            seen,
            runtime: None,
        })
    }

    /// The same on a runtime of its own, on two threads named [`THREAD_NAME`], so that the
    /// receiver's CPU time can be told apart from the rest of the process's.
    pub fn start_apart(delay: Duration) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()?;
        let (url, seen, serve) = serve(delay)?;
        runtime.spawn(serve);
        Ok(Receiver {
            url,
            seen,
            runtime: Some(runtime),
        })
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

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Dropped from async code, where waiting for the runtime's tasks may not block.
            runtime.shutdown_background();
        }
    }
}

/// The receiver's URL, what it saw, and the future that serves it (on whatever runtime
/// runs it).
fn serve(
    delay: Duration,
) -> anyhow::Result<(
    String,
    Arc<Seen>,
    impl std::future::Future<Output = ()> + Send + 'static,
)> {
    let seen = Arc::new(Seen::default());
    let state = AppState {
        seen: seen.clone(),
        delay,
    };
    let app = axum::Router::new()
        .route("/{*path}", post(receive))
        .with_state(state);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}/hooks", listener.local_addr()?);
    let serve = async move {
        if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
            let _ = axum::serve(listener, app).await;
        }
    };
    Ok((url, seen, serve))
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
