//! Bad input gets a 4xx with a machine-readable error, and stores nothing.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};
use crate::receiver::Receiver;

async fn assert_nothing_stored(app: &TestApp, key: &str) {
    let (_, endpoints) = app.get("/v1/endpoints", key).await;
    assert_eq!(endpoints["data"], json!([]), "an endpoint was stored");
    // Give the worker time to store anything that was queued.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, messages) = app.get("/v1/messages", key).await;
    assert_eq!(messages["data"], json!([]), "a message was stored");
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn malformed_publish_requests_are_refused() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let big = "x".repeat(300 * 1024);
    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (b"{not json".to_vec(), StatusCode::BAD_REQUEST, "invalid_json"),
        (b"".to_vec(), StatusCode::BAD_REQUEST, "invalid_json"),
        (br#"{"payload": {}}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        (br#"{"type": "delivered"}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        (
            br#"{"type": "delivered", "payload": {}, "priority": 1}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            br#"{"type": "exploded", "payload": {}}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "unknown_event_type",
        ),
        (
            br#"{"type": "delivered", "payload": "text"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_payload",
        ),
        (
            format!(r#"{{"type": "delivered", "payload": {{"x": "{big}"}}}}"#).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            br#"{"type": "delivered", "payload": {}, "domain": "unknown.example.com"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "unknown_domain",
        ),
        (
            // One bad event spoils the batch: nothing of it is queued.
            br#"{"events": [{"type": "delivered", "payload": {}}, {"type": "nope", "payload": {}}]}"#
                .to_vec(),
            StatusCode::BAD_REQUEST,
            "unknown_event_type",
        ),
    ];
    for (body, status, expected) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).to_string();
        let (got, resp) = app
            .raw(Method::POST, "/v1/events", &t.key, "application/json", body)
            .await;
        assert_eq!(got, status, "{shown}: {resp}");
        assert_eq!(code(&resp), expected, "{shown}: {resp}");
        assert!(resp["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let (status, resp) = app
        .raw(
            Method::POST,
            "/v1/events",
            &t.key,
            "text/plain",
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&resp), "unsupported_media_type");
    let (_, resp) = app
        .raw(
            Method::POST,
            "/v1/events",
            &t.key,
            "application/json",
            br#"{"events": [{"type": "delivered", "payload": {}}, {"type": "nope", "payload": {}}]}"#.to_vec(),
        )
        .await;
    assert!(resp["error"]["message"]
        .as_str()
        .unwrap()
        .contains("events[1]"));
    assert_nothing_stored(&app, &t.key).await;
    app.stop().await;
}

#[tokio::test]
async fn bad_endpoints_are_refused() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::start(200).await;
    let cases = vec![
        (json!({}), "invalid_request"),
        (json!({"url": 5}), "invalid_request"),
        (json!({"url": "not a url"}), "invalid_url"),
        (json!({"url": "ftp://example.com/"}), "invalid_url"),
        (
            json!({"url": "https://169.254.169.254/latest"}),
            "invalid_url",
        ),
        (json!({"url": "https://10.0.0.1/hook"}), "invalid_url"),
        (json!({"url": "https://[::1]/hook"}), "invalid_url"),
        (json!({"url": "https://localhost/hook"}), "invalid_url"),
        (
            json!({"url": "https://user:pw@example.com/"}),
            "invalid_url",
        ),
        // 127.0.0.1 is allowed for the tests; its neighbour is not.
        (json!({"url": "http://127.0.0.2:9/"}), "invalid_url"),
        (
            json!({"url": "https://example.com/", "event_types": ["nope"]}),
            "unknown_event_type",
        ),
        (
            json!({"url": "https://example.com/", "event_types": []}),
            "invalid_event_types",
        ),
        (
            json!({"url": "https://example.com/", "domain": "nope.example.com"}),
            "unknown_domain",
        ),
        (
            json!({"url": "https://example.com/", "format": "xml"}),
            "invalid_format",
        ),
        (
            json!({"url": "https://example.com/", "secret": "whsec_short"}),
            "invalid_secret",
        ),
        (
            json!({"url": "https://example.com/", "colour": "red"}),
            "invalid_request",
        ),
    ];
    for (body, expected) in cases {
        let (status, resp) = app.post("/v1/endpoints", &t.key, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {resp}");
        assert_eq!(code(&resp), expected, "{body}: {resp}");
    }
    // A PATCH with a bad field changes nothing.
    let id = app
        .create_endpoint(&t.key, json!({"url": receiver.url("/ok")}))
        .await;
    let (status, resp) = app
        .call(
            Method::PATCH,
            &format!("/v1/endpoints/{id}"),
            Some(&t.key),
            Some(json!({"description": "new", "url": "https://10.1.1.1/"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&resp), "invalid_url");
    let (_, ep) = app.get(&format!("/v1/endpoints/{id}"), &t.key).await;
    assert_eq!(ep["description"], "");
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/endpoints/{id}"),
            Some(&t.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_nothing_stored(&app, &t.key).await;
    app.stop().await;
}

#[tokio::test]
async fn http_urls_are_refused_unless_allowed() {
    let app = crate::helpers::spawn_with(|cfg| cfg.allow_http = Some("false".into())).await;
    let t = app.create_tenant("a").await;
    let (status, resp) = app
        .post(
            "/v1/endpoints",
            &t.key,
            json!({"url": "http://example.com/hook"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&resp), "invalid_url");
    app.stop().await;
}

#[tokio::test]
async fn missing_or_wrong_keys_are_401_with_an_error_body() {
    let app = spawn_app().await;
    for key in [None, Some("hk_wrong"), Some("")] {
        let (status, body) = app
            .call(
                Method::POST,
                "/v1/events",
                key,
                Some(json!({"type": "delivered", "payload": {}})),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{key:?}");
        assert_eq!(code(&body), "unauthorized");
    }
    let resp = app
        .client
        .get(format!("{}/v1/endpoints", app.base))
        .header("authorization", "Basic YXBpOmtleQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let (status, body) = app.get("/v1/nothing-here", &t.key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "not_found");
    let (status, body) = app
        .call(Method::PUT, "/v1/events", Some(&t.key), None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(code(&body), "method_not_allowed");
    app.stop().await;
}
