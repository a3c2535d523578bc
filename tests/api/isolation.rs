//! One tenant never sees or touches another's data: their ids are 404s, listings hold only
//! the caller's own, and events go only to the publisher's endpoints.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{all_settled, spawn_app};
use crate::receiver::Receiver;

#[tokio::test]
async fn another_tenants_ids_are_not_found() {
    let app = spawn_app().await;
    let a = app.create_tenant("a").await;
    let b = app.create_tenant("b").await;
    let receiver = Receiver::start(200).await;
    app.post("/v1/domains", &a.key, json!({"name": "a.example.com"}))
        .await;
    let ep = app
        .create_endpoint(&a.key, json!({"url": receiver.url("/")}))
        .await;
    let msg = app
        .publish(&a.key, json!({"type": "delivered", "payload": {}}))
        .await;
    app.wait_message(&a.key, &msg, Duration::from_secs(10), all_settled)
        .await;
    let (_, keys) = app
        .get(&format!("/v1/tenants/{}/api-keys", a.id), &a.key)
        .await;
    let key_id = keys["data"][0]["id"].as_str().unwrap().to_string();

    let attempts: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (Method::GET, format!("/v1/tenants/{}", a.id), None),
        (Method::GET, format!("/v1/tenants/{}/api-keys", a.id), None),
        (
            Method::POST,
            format!("/v1/tenants/{}/api-keys", a.id),
            Some(json!({})),
        ),
        (
            Method::DELETE,
            format!("/v1/tenants/{}/api-keys/{key_id}", a.id),
            None,
        ),
        (Method::GET, format!("/v1/endpoints/{ep}"), None),
        (
            Method::PATCH,
            format!("/v1/endpoints/{ep}"),
            Some(json!({"description": "mine"})),
        ),
        (Method::DELETE, format!("/v1/endpoints/{ep}"), None),
        (Method::GET, format!("/v1/endpoints/{ep}/secret"), None),
        (
            Method::POST,
            format!("/v1/endpoints/{ep}/secret/rotate"),
            Some(json!({})),
        ),
        (Method::GET, format!("/v1/messages/{msg}"), None),
        (Method::GET, format!("/v1/messages/{msg}/attempts"), None),
        (Method::GET, "/v1/domains/a.example.com".to_string(), None),
        (
            Method::DELETE,
            "/v1/domains/a.example.com".to_string(),
            None,
        ),
    ];
    for (method, path, body) in attempts {
        let (status, resp) = app.call(method.clone(), &path, Some(&b.key), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {resp}");
        assert_eq!(resp["error"]["code"], "not_found");
        assert!(!resp.to_string().contains("whsec_"));
    }
    // B's listings are empty, and A's data is untouched.
    for path in ["/v1/endpoints", "/v1/messages", "/v1/domains"] {
        let (_, list) = app.get(path, &b.key).await;
        assert_eq!(list["data"], json!([]), "{path}");
    }
    let (status, ep_body) = app.get(&format!("/v1/endpoints/{ep}"), &a.key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ep_body["description"], "");
    let (_, keys) = app
        .get(&format!("/v1/tenants/{}/api-keys", a.id), &a.key)
        .await;
    assert!(keys["data"][0]["revoked_at"].is_null());
    let (status, _) = app.get("/v1/domains/a.example.com", &a.key).await;
    assert_eq!(status, StatusCode::OK);

    // B's events never reach A's endpoints.
    app.publish(&b.key, json!({"type": "delivered", "payload": {}}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 1);
    app.stop().await;
}
