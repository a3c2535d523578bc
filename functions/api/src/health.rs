//! `GET /health`: whether the storage and the queue of this deployment answer, for load
//! balancers, uptime checks and operators. No key: it tells nothing about the data, and
//! the cause of a failure goes to the log, not the answer.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookline_core::http::AppState;
use serde::Serialize;
use utoipa::ToSchema;

/// How long each probe may take before its part counts as failing: a health check must
/// answer quickly even when a dependency hangs.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The state of the service and of each part it needs.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` when every part answers, else `error`.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// The running release.
    #[schema(example = "0.1.0")]
    pub version: &'static str,
    /// `ok` or `error`: the store (SQLite file, or the DynamoDB table).
    #[schema(example = "ok")]
    pub storage: &'static str,
    /// `ok` or `error`: the events queue (embedded, or SQS).
    #[schema(example = "ok")]
    pub queue: &'static str,
    /// With `error`: which parts did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "storage did not answer")]
    pub message: Option<String>,
}

/// Probes one part; the cause of a failure is logged.
async fn probe(
    part: &'static str,
    call: impl std::future::Future<Output = hookline_core::Result<()>>,
) -> bool {
    match tokio::time::timeout(PROBE_TIMEOUT, call).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::error!(part, error = %e, "health probe failed");
            false
        }
        Err(_) => {
            tracing::error!(part, timeout = ?PROBE_TIMEOUT, "health probe timed out");
            false
        }
    }
}

#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    operation_id = "health",
    responses(
        (status = 200, description = "Storage and queue answer", body = Health),
        (status = 503, description = "A part does not answer: `storage` or `queue` is `error`, and `message` names it", body = Health),
    ),
    security(())
)]
pub(crate) async fn health(State(state): State<AppState>) -> Response {
    let (storage, queue) = tokio::join!(
        probe("storage", state.store.probe()),
        probe("queue", state.queue.probe())
    );
    let word = |ok: bool| if ok { "ok" } else { "error" };
    let failing: Vec<&str> = [("storage", storage), ("queue", queue)]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(part, _)| part)
        .collect();
    let healthy = failing.is_empty();
    let body = Health {
        status: word(healthy),
        version: env!("CARGO_PKG_VERSION"),
        storage: word(storage),
        queue: word(queue),
        message: (!healthy).then(|| format!("{} did not answer", failing.join(" and "))),
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
