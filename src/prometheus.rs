//! Local mode's metrics: the process-wide Prometheus recorder behind the `metrics` facade
//! (names prefixed `hookline_`, counters suffixed `_total`), and `GET /metrics`, which reads
//! the embedded queue's gauges and renders everything as Prometheus text.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hookline_core::embedded::SqliteQueue;
use hookline_core::http::{ApiResult, AppState, Caller};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::layers::{Layer, PrefixLayer};

/// Histogram buckets, in seconds, of requests (to receivers, and answered by the API).
const REQUEST_BUCKETS: [f64; 13] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of publish-to-delivery latency, which spans retries: up to a day.
const LATENCY_BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0,
];
/// How often histogram samples are folded into their buckets.
const UPKEEP: Duration = Duration::from_secs(5);

/// The recorder of this process, installed by the first start that asks for it: a process
/// has one `metrics` recorder, so local modes started in one process (tests) share it.
pub fn exporter() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .with_recommended_naming(true)
                .set_buckets(&REQUEST_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix(hookline_core::metrics::DELIVERY_LATENCY.to_owned()),
                        &LATENCY_BUCKETS,
                    )
                })
                .expect("the buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            let prefixed = PrefixLayer::new("hookline").layer(recorder);
            if let Err(e) = metrics::set_global_recorder(prefixed) {
                tracing::error!(error = %e, "metrics recorder not installed");
            }
            let upkeep = handle.clone();
            // A thread of its own: it must outlive any one runtime a test starts.
            let _ = std::thread::Builder::new()
                .name("hookline-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP);
                    upkeep.run_upkeep();
                });
            handle
        })
        .clone()
}

#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    queue: Arc<SqliteQueue>,
    /// The API's state, to check the operator key; `None` on the keyless metrics address.
    app: Option<AppState>,
}

impl FromRef<Scrape> for AppState {
    fn from_ref(scrape: &Scrape) -> AppState {
        scrape
            .app
            .clone()
            .expect("only the keyed router identifies callers")
    }
}

/// `GET /metrics`: with `app`, on the API's listener, for the operator key only; without,
/// for anyone who reaches the address.
pub fn router(handle: PrometheusHandle, queue: Arc<SqliteQueue>, app: Option<AppState>) -> Router {
    let keyed = app.is_some();
    let scrape = Scrape { handle, queue, app };
    if keyed {
        Router::new()
            .route("/metrics", get(keyed_metrics))
            .with_state(scrape)
    } else {
        Router::new()
            .route("/metrics", get(render))
            .with_state(scrape)
    }
}

async fn keyed_metrics(State(scrape): State<Scrape>, caller: Caller) -> ApiResult<Response> {
    caller.require_operator()?;
    Ok(render(State(scrape)).await)
}

async fn render(State(scrape): State<Scrape>) -> Response {
    if let Err(e) = scrape.queue.record_gauges().await {
        tracing::warn!(error = %e, "queue gauges not read");
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        scrape.handle.render(),
    )
        .into_response()
}
