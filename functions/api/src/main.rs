//! The api Lambda function: the `/v1` router behind API Gateway's HTTP API. It sends to
//! the events queue only to replay failed deliveries, redrive dead letters and publish
//! `hookline.endpoint.enabled`; it reads the dead-letter queue for the operator.

use hookline_core::lambda::{flush_metrics_after, init_metrics, init_tracing, LambdaEnv};

// One thread: a function instance serves one invocation at a time on at most a vCPU or
// two, and its work is waiting on the network; the multi-thread scheduler would only add
// start-up work and size.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    init_tracing();
    let metrics = init_metrics();
    let env = LambdaEnv::load().await?;
    let mut state = env.app_state(env.queue("QUEUE_URL")?, Some(env.sender()?))?;
    state.dead_letters = Some(env.dead_letters()?);
    let app = hookline_core::http::with_fallbacks(hookline_api::router(state));
    let app = flush_metrics_after(app, metrics);
    lambda_http::run(app).await
}
