//! The ingest Lambda function: `POST /v1/events` behind API Gateway's HTTP API, onto SQS.

use hookline_core::lambda::{init_tracing, LambdaEnv};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_tracing();
    let env = LambdaEnv::load().await?;
    let state = env.app_state(env.queue("QUEUE_URL")?, None)?;
    let app = hookline_core::http::with_fallbacks(hookline_ingest::router(state));
    lambda_http::run(app).await
}
