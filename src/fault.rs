//! Routes that panic on purpose, compiled only with the `fault-injection` feature: in a
//! handler, in a job of the database's writer thread, and in a delivery task of the worker.
//! tests/api/panics.rs drives them against a build with the release profile's panic strategy.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use hookline_core::embedded::{SqliteQueue, SqliteStore};
use hookline_core::http::{ApiError, ApiResult};
use hookline_core::ports::{Outgoing, Queue};

#[derive(Clone)]
struct Faults {
    store: Arc<SqliteStore>,
    queue: Arc<SqliteQueue>,
}

pub fn router(store: Arc<SqliteStore>, queue: Arc<SqliteQueue>) -> Router {
    Router::new()
        .route("/_fault/handler", post(panic_in_handler))
        .route("/_fault/database", post(panic_in_database))
        .route("/_fault/delivery", post(panic_in_delivery))
        .with_state(Faults { store, queue })
}

async fn panic_in_handler() -> StatusCode {
    panic!("injected panic in a request handler");
}

/// The write's job panics on the writer thread; the panic comes back here, in the handler.
async fn panic_in_database(State(faults): State<Faults>) -> ApiResult<StatusCode> {
    faults.store.panicking_write().await.map_err(ApiError)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queues a task that panics in the worker, and answers once it is queued.
async fn panic_in_delivery(State(faults): State<Faults>) -> ApiResult<StatusCode> {
    let task = Outgoing {
        body: hookline_deliver::PANICKING_TASK.to_string(),
        delay: Duration::ZERO,
    };
    faults
        .queue
        .send(vec![task])
        .await
        .map_err(|e| ApiError(e.into()))?;
    Ok(StatusCode::ACCEPTED)
}
