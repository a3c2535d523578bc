//! A minimal Lambda runtime API (`/2018-06-01/runtime/...`) for one function process:
//! hands out invocations on `next`, takes their answers on `response` and `error`, and
//! notes when the first `next` arrived (the end of the function's init).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Mutex, Notify};

type Reply = oneshot::Sender<Result<Value, String>>;

struct Pending {
    id: String,
    payload: Value,
    reply: Reply,
}

struct Inner {
    tx: mpsc::UnboundedSender<Pending>,
    rx: Mutex<mpsc::UnboundedReceiver<Pending>>,
    waiting: std::sync::Mutex<HashMap<String, Reply>>,
    first_next: std::sync::Mutex<Option<Instant>>,
    init_error: std::sync::Mutex<Option<String>>,
    changed: Notify,
}

/// A runtime API on a loopback port.
#[derive(Clone)]
pub struct Emulator {
    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub addr: String,
    inner: Arc<Inner>,
}

impl Emulator {
    pub async fn start() -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            tx,
            rx: Mutex::new(rx),
            waiting: Default::default(),
            first_next: Default::default(),
            init_error: Default::default(),
            changed: Notify::new(),
        });
        let app = axum::Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Emulator { addr, inner })
    }

    /// When the function first asked for an invocation, waiting up to `within`.
    pub async fn first_next(&self, within: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.inner.changed.notified();
            if let Some(at) = *self.inner.first_next.lock().expect("lock") {
                return Ok(at);
            }
            if let Some(e) = self.inner.init_error.lock().expect("lock").clone() {
                bail!("the function reported an init error: {e}");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("the function did not ask for an invocation within {within:?}");
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), notified).await;
        }
    }

    /// Invokes the function with `payload` and waits for its answer.
    pub async fn invoke(&self, payload: Value, within: Duration) -> anyhow::Result<Value> {
        let (reply, answer) = oneshot::channel();
        let id = ulid::Ulid::new().to_string();
        self.inner
            .tx
            .send(Pending { id, payload, reply })
            .map_err(|_| anyhow!("emulator stopped"))?;
        match tokio::time::timeout(within, answer).await {
            Err(_) => bail!("no answer within {within:?}"),
            Ok(Err(_)) => bail!("the invocation was dropped"),
            Ok(Ok(Err(e))) => bail!("the function failed: {e}"),
            Ok(Ok(Ok(v))) => Ok(v),
        }
    }
}

async fn next(State(inner): State<Arc<Inner>>) -> Response {
    {
        let mut first = inner.first_next.lock().expect("lock");
        if first.is_none() {
            *first = Some(Instant::now());
            inner.changed.notify_waiters();
        }
    }
    let pending = inner.rx.lock().await.recv().await;
    let Some(p) = pending else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        + 900_000;
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("lambda-runtime-aws-request-id", p.id.clone());
    set("lambda-runtime-deadline-ms", deadline.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:bench".into(),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000;Sampled=0".into(),
    );
    set("content-type", "application/json".into());
    inner.waiting.lock().expect("lock").insert(p.id, p.reply);
    (headers, p.payload.to_string()).into_response()
}

async fn response(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    let reply = inner.waiting.lock().expect("lock").remove(&id);
    if let Some(reply) = reply {
        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let _ = reply.send(Ok(value));
    }
    StatusCode::ACCEPTED
}

async fn error(State(inner): State<Arc<Inner>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let reply = inner.waiting.lock().expect("lock").remove(&id);
    if let Some(reply) = reply {
        let _ = reply.send(Err(String::from_utf8_lossy(&body).into_owned()));
    }
    StatusCode::ACCEPTED
}

async fn init_error(State(inner): State<Arc<Inner>>, body: Bytes) -> StatusCode {
    *inner.init_error.lock().expect("lock") = Some(String::from_utf8_lossy(&body).into_owned());
    inner.changed.notify_waiters();
    StatusCode::ACCEPTED
}
