//! The ingest Lambda function: `POST /v1/events` behind API Gateway's HTTP API, onto SQS.

use std::sync::Arc;
use std::time::Duration;

use hookline_core::cache::CachedStore;
use hookline_core::lambda::{flush_metrics_after, init_metrics, init_tracing, LambdaEnv};

/// How long a warm function reuses an API key's record (and so how long a revoked key may
/// still publish through it).
const KEY_CACHE: Duration = Duration::from_secs(5);

// One thread: a function instance serves one invocation at a time on at most a vCPU or
// two, and its work is waiting on the network; the multi-thread scheduler would only add
// start-up work and size.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    init_tracing();
    let metrics = init_metrics();
    let env = LambdaEnv::load().await?;
    let mut state = env.app_state(env.queue("QUEUE_URL")?, None)?;
    state.store = Arc::new(CachedStore::new(state.store).with_api_keys(KEY_CACHE));
    let app = hookline_core::http::with_fallbacks(hookline_ingest::router(state));
    let app = flush_metrics_after(app, metrics);
    lambda_http::run(app).await
}
