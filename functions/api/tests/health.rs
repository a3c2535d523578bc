//! `GET /health` of the api function, on DynamoDB and SQS: 200 while moto answers, and 503
//! naming the store and the queue when their endpoint is dead, as when moto is stopped.

use std::sync::Arc;

use axum::body::Body;
use hookline_core::aws::testing::{moto_sdk_config, sdk_config_at, unique};
use hookline_core::aws::{create_queue_pair, create_table, DynamoStore, SqsQueue};
use hookline_core::config::CoreConfig;
use hookline_core::http::{with_fallbacks, AppState};
use hookline_core::ports::SystemClock;
use serde_json::{json, Value};
use tower::ServiceExt;

fn router(sdk: &aws_config::SdkConfig, table: String, queue_url: String) -> axum::Router {
    let state = AppState {
        store: Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), table)),
        queue: Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(sdk), queue_url)),
        clock: Arc::new(SystemClock),
        config: Arc::new(CoreConfig::default()),
        operator_key: None,
        sender: None,
        dead_letters: None,
    };
    with_fallbacks(hookline_api::router(state))
}

async fn health(app: &axum::Router) -> (u16, Value) {
    // No Authorization header: the route needs no key.
    let request = http::Request::get("/health").body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    assert!(response.headers().contains_key("x-request-id"));
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn health_is_ok_on_moto_and_503_naming_store_and_queue_when_they_are_gone() {
    let sdk = moto_sdk_config().await;
    let table = unique("hookline-health");
    create_table(&aws_sdk_dynamodb::Client::new(&sdk), &table)
        .await
        .unwrap();
    let (queue_url, _) = create_queue_pair(&aws_sdk_sqs::Client::new(&sdk), &unique("health"))
        .await
        .unwrap();

    let (status, body) = health(&router(&sdk, table.clone(), queue_url.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "storage": "ok",
            "queue": "ok",
        })
    );

    // A table that does not exist: storage fails, the queue still answers.
    let (status, body) = health(&router(&sdk, unique("missing"), queue_url.clone())).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "error");
    assert_eq!(body["storage"], "error");
    assert_eq!(body["queue"], "ok");
    assert_eq!(body["message"], "storage did not answer");

    // Nothing listening where moto was: both parts fail, within the probes' timeout.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let stopped = sdk_config_at(&dead).await;
    let (status, body) = health(&router(&stopped, table, queue_url)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["storage"], "error");
    assert_eq!(body["queue"], "error");
    assert_eq!(body["message"], "storage and queue did not answer");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "no internals in the answer: {body}"
    );
}
