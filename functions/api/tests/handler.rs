//! The api function's handler fed real API Gateway HTTP API (payload v2) events, against
//! DynamoDB on moto: what the Lambda runtime hands the function, through the same router.

use std::sync::Arc;

use axum::body::Body;
use hookline_core::aws::testing::{moto_sdk_config, unique};
use hookline_core::aws::{create_table, DynamoStore};
use hookline_core::config::CoreConfig;
use hookline_core::http::{with_fallbacks, AppState};
use hookline_core::keys::KeyHash;
use hookline_core::lambda::NoQueue;
use hookline_core::ports::SystemClock;
use serde_json::Value;
use tower::ServiceExt;

const OPERATOR_KEY: &str = "hkop_fixture-operator-key";

/// A fixture from tests/fixtures with its `{{NAME}}` placeholders filled in.
fn event(name: &str, vars: &[(&str, &str)]) -> lambda_http::Request {
    let path = format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (k, v) in vars {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    lambda_http::request::from_str(&text).expect("a valid API Gateway v2 event")
}

async fn app() -> axum::Router {
    let client = aws_sdk_dynamodb::Client::new(&moto_sdk_config().await);
    let table = unique("hookline-api");
    create_table(&client, &table).await.unwrap();
    let state = AppState {
        store: Arc::new(DynamoStore::new(client, table)),
        queue: Arc::new(NoQueue),
        clock: Arc::new(SystemClock),
        config: Arc::new(CoreConfig::default()),
        operator_key: Some(KeyHash::of(OPERATOR_KEY)),
        sender: None,
        dead_letters: None,
    };
    with_fallbacks(hookline_api::router(state))
}

async fn send(app: &axum::Router, req: lambda_http::Request) -> (u16, Value) {
    let (parts, body) = req.into_parts();
    let req = http::Request::from_parts(parts, Body::from(body.to_vec()));
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, value)
}

#[tokio::test]
async fn api_gateway_events_drive_the_router_on_dynamodb() {
    let app = app().await;
    let (status, tenant) = send(
        &app,
        event(
            "apigw-v2-create-tenant.json",
            &[("OPERATOR_KEY", OPERATOR_KEY)],
        ),
    )
    .await;
    assert_eq!(status, 201, "{tenant}");
    assert_eq!(tenant["name"], "Acme Mail");
    let key = tenant["api_key"].as_str().unwrap().to_string();

    // API Gateway hands this body base64-encoded.
    let (status, endpoint) = send(
        &app,
        event("apigw-v2-create-endpoint.json", &[("API_KEY", &key)]),
    )
    .await;
    assert_eq!(status, 201, "{endpoint}");
    assert_eq!(endpoint["url"], "https://hooks.example.com/mail");
    assert_eq!(endpoint["event_types"][1], "permanent_fail");

    let (status, list) = send(
        &app,
        event("apigw-v2-list-endpoints.json", &[("API_KEY", &key)]),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains("whsec_"));

    let (status, refused) = send(
        &app,
        event(
            "apigw-v2-create-endpoint-private-url.json",
            &[("API_KEY", &key)],
        ),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"]["code"], "invalid_url");

    let (status, messages) = send(
        &app,
        event("apigw-v2-list-messages.json", &[("API_KEY", &key)]),
    )
    .await;
    assert_eq!(status, 200, "{messages}");
    assert_eq!(messages["data"], serde_json::json!([]));

    // A key that is not a tenant's.
    let (status, body) = send(
        &app,
        event("apigw-v2-list-endpoints.json", &[("API_KEY", "hk_nobody")]),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn the_mailgun_facade_answers_api_gateway_events() {
    let app = app().await;
    let (_, tenant) = send(
        &app,
        event(
            "apigw-v2-create-tenant.json",
            &[("OPERATOR_KEY", OPERATOR_KEY)],
        ),
    )
    .await;
    let key = tenant["api_key"].as_str().unwrap().to_string();
    let domain = "mg.acme.example";
    let create_domain = http::Request::builder()
        .method("POST")
        .uri("/v1/domains")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(lambda_http::Body::from(format!(r#"{{"name":"{domain}"}}"#)))
        .unwrap();
    let (status, _) = send(&app, create_domain).await;
    assert_eq!(status, 201);

    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("api:{key}"));
    let (status, created) = send(
        &app,
        event(
            "apigw-v2-mailgun-create-webhook.json",
            &[("DOMAIN", domain), ("BASIC", &basic)],
        ),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["message"], "Webhook has been created");
    assert_eq!(
        created["webhook"]["urls"],
        serde_json::json!([
            "https://backup.example.com/mailgun",
            "https://hooks.example.com/mailgun"
        ])
    );
    let (_, list) = send(
        &app,
        event("apigw-v2-list-endpoints.json", &[("API_KEY", &key)]),
    )
    .await;
    let endpoints = list["data"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2);
    assert!(endpoints
        .iter()
        .all(|e| e["format"] == "mailgun" && e["domain"] == domain));

    let wrong = base64::engine::general_purpose::STANDARD.encode("api:hk_wrong");
    let (status, _) = send(
        &app,
        event(
            "apigw-v2-mailgun-create-webhook.json",
            &[("DOMAIN", domain), ("BASIC", &wrong)],
        ),
    )
    .await;
    assert_eq!(status, 401);
}
