//! Racing edits on DynamoDB (moto), through the api function's router: a DELETE or a
//! disable made while a PATCH with `"verify": true` waits for its receiver is not undone
//! by that PATCH, and `If-Match` with a stale `ETag` is 412 with nothing stored. The same
//! races run on SQLite in tests/api/consistency.rs.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::routing::post;
use hookline_core::aws::testing::{moto_sdk_config, unique};
use hookline_core::aws::{create_table, DynamoStore};
use hookline_core::client::{Sender, SenderOptions};
use hookline_core::config::CoreConfig;
use hookline_core::http::{with_fallbacks, AppState};
use hookline_core::keys::KeyHash;
use hookline_core::lambda::NoQueue;
use hookline_core::ports::SystemClock;
use hookline_core::urlpolicy::{SystemResolver, UrlPolicy};
use http::Method;
use serde_json::{json, Value};
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;

const OPERATOR_KEY: &str = "hkop_race-operator-key";

async fn app() -> axum::Router {
    let client = aws_sdk_dynamodb::Client::new(&moto_sdk_config().await);
    let table = unique("hookline-races");
    create_table(&client, &table).await.unwrap();
    let policy = Arc::new(UrlPolicy {
        allow_http: true,
        allowed_networks: UrlPolicy::parse_networks("127.0.0.1/32").unwrap(),
    });
    hookline_core::client::install_crypto_provider();
    let sender = Sender::new(SenderOptions {
        policy: policy.clone(),
        resolver: Arc::new(SystemResolver),
        timeout: Duration::from_secs(20),
        extra_roots: Vec::new(),
    })
    .unwrap();
    let state = AppState {
        store: Arc::new(DynamoStore::new(client, table)),
        queue: Arc::new(NoQueue),
        clock: Arc::new(SystemClock),
        config: Arc::new(CoreConfig {
            url_policy: policy,
            ..CoreConfig::default()
        }),
        operator_key: Some(KeyHash::of(OPERATOR_KEY)),
        sender: Some(Arc::new(sender)),
        dead_letters: None,
    };
    with_fallbacks(hookline_api::router(state))
}

async fn call(
    app: &axum::Router,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> (u16, Value, Option<String>) {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {key}"));
    if let Some(tag) = if_match {
        req = req.header("if-match", tag);
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, value, etag)
}

/// A receiver that tells when a request arrived and answers 200 once released.
struct HeldReceiver {
    url: String,
    arrived: Arc<Notify>,
    gate: Arc<Semaphore>,
}

async fn held_receiver() -> HeldReceiver {
    let arrived = Arc::new(Notify::new());
    let gate = Arc::new(Semaphore::new(0));
    let (a, g) = (arrived.clone(), gate.clone());
    let router = axum::Router::new().route(
        "/hook",
        post(move || {
            let (a, g) = (a.clone(), g.clone());
            async move {
                a.notify_one();
                let _ = g.acquire().await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    HeldReceiver { url, arrived, gate }
}

/// A tenant's key and an endpoint to a held receiver, and a PATCH with `verify` whose
/// test event the receiver is holding.
async fn patch_in_verify(
    app: &axum::Router,
    patch: Value,
) -> (
    String,
    String,
    HeldReceiver,
    tokio::task::JoinHandle<(u16, Value, Option<String>)>,
) {
    let (status, tenant, _) = call(
        app,
        Method::POST,
        "/v1/tenants",
        OPERATOR_KEY,
        Some(json!({"name": "racer"})),
        None,
    )
    .await;
    assert_eq!(status, 201, "{tenant}");
    let key = tenant["api_key"].as_str().unwrap().to_string();
    let receiver = held_receiver().await;
    let (status, endpoint, _) = call(
        app,
        Method::POST,
        "/v1/endpoints",
        &key,
        Some(json!({"url": receiver.url})),
        None,
    )
    .await;
    assert_eq!(status, 201, "{endpoint}");
    let path = format!("/v1/endpoints/{}", endpoint["id"].as_str().unwrap());
    let held = {
        let (app, path, key) = (app.clone(), path.clone(), key.clone());
        tokio::spawn(async move { call(&app, Method::PATCH, &path, &key, Some(patch), None).await })
    };
    tokio::time::timeout(Duration::from_secs(20), receiver.arrived.notified())
        .await
        .expect("the test event reached the receiver");
    (key, path, receiver, held)
}

#[tokio::test]
async fn a_delete_during_a_verifying_patch_leaves_the_endpoint_deleted() {
    let app = app().await;
    let (key, path, receiver, held) =
        patch_in_verify(&app, json!({"verify": true, "description": "checked"})).await;
    let (status, body, _) = call(&app, Method::DELETE, &path, &key, None, None).await;
    assert_eq!(status, 204, "{body}");
    receiver.gate.close();
    let (status, body, _) = held.await.unwrap();
    assert_eq!(status, 404, "{body}");
    let (status, _, _) = call(&app, Method::GET, &path, &key, None, None).await;
    assert_eq!(status, 404, "not brought back");
    let (_, list, _) = call(&app, Method::GET, "/v1/endpoints", &key, None, None).await;
    assert_eq!(list["data"], json!([]));
}

#[tokio::test]
async fn a_disable_during_a_verifying_patch_leaves_the_endpoint_disabled() {
    let app = app().await;
    let (key, path, receiver, held) =
        patch_in_verify(&app, json!({"verify": true, "description": "checked"})).await;
    let (status, body, _) = call(
        &app,
        Method::PATCH,
        &path,
        &key,
        Some(json!({"status": "disabled"})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    receiver.gate.close();
    let (status, body, _) = held.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, stored, _) = call(&app, Method::GET, &path, &key, None, None).await;
    assert_eq!(stored["status"], "disabled", "{stored}");
    assert_eq!(stored["description"], "checked");
}

#[tokio::test]
async fn a_stale_if_match_is_412_and_stores_nothing() {
    let app = app().await;
    let (key, path, receiver, held) = patch_in_verify(&app, json!({"verify": true})).await;
    receiver.gate.close();
    assert_eq!(held.await.unwrap().0, 200);
    let (_, _, old) = call(&app, Method::GET, &path, &key, None, None).await;
    let old = old.expect("an ETag");
    let (status, _, new) = call(
        &app,
        Method::PATCH,
        &path,
        &key,
        Some(json!({"description": "first"})),
        Some(&old),
    )
    .await;
    assert_eq!(status, 200);
    assert_ne!(new.as_deref(), Some(old.as_str()));
    let (status, body, _) = call(
        &app,
        Method::PATCH,
        &path,
        &key,
        Some(json!({"description": "second"})),
        Some(&old),
    )
    .await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["error"]["code"], "precondition_failed");
    let (status, _, _) = call(&app, Method::DELETE, &path, &key, None, Some(&old)).await;
    assert_eq!(status, 412);
    let (_, stored, _) = call(&app, Method::GET, &path, &key, None, None).await;
    assert_eq!(stored["description"], "first");
}
