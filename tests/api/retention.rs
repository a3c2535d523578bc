//! Retention in local mode, end to end: with a short retention (`HOOKLINE_RETENTION`, the
//! setting for tests), a delivered message leaves the log, and one whose delivery is still
//! under way stays until it settles.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_with, TestApp};
use crate::receiver::Receiver;

/// Polls until the message is gone from the log; panics after `within`.
async fn wait_gone(app: &TestApp, key: &str, id: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (status, _) = app.get(&format!("/v1/messages/{id}"), key).await;
        if status == StatusCode::NOT_FOUND {
            return;
        }
        assert!(Instant::now() < deadline, "{id} is still in the log");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn settled_messages_leave_the_log_after_the_retention_and_pending_ones_stay() {
    let retention = Duration::from_millis(500);
    let app = spawn_with(|cfg| {
        cfg.retention = Some(format!("{}ms", retention.as_millis()));
        // The held request must stay unanswered, not time out, while the test looks.
        cfg.request_timeout = Some("60s".into());
    })
    .await;
    let t = app.create_tenant("acme").await;
    let quick = Receiver::start(200).await;
    let slow = Receiver::start(200).await;
    slow.hold();
    app.create_endpoint(
        &t.key,
        json!({"url": quick.url("/q"), "event_types": ["delivered"]}),
    )
    .await;
    app.create_endpoint(
        &t.key,
        json!({"url": slow.url("/s"), "event_types": ["opened"]}),
    )
    .await;

    let delivered = app
        .publish(&t.key, json!({"type": "delivered", "payload": {"n": 1}}))
        .await;
    let held = app
        .publish(&t.key, json!({"type": "opened", "payload": {"n": 2}}))
        .await;
    quick.wait_for(1, Duration::from_secs(10)).await;
    slow.wait_for(1, Duration::from_secs(10)).await;
    wait_gone(&app, &t.key, &delivered, Duration::from_secs(15)).await;
    let (status, _) = app
        .get(&format!("/v1/messages/{delivered}/attempts"), &t.key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "its attempts went with it");

    // Many retentions later, the message whose request is still out is in the log.
    tokio::time::sleep(retention * 4).await;
    let (status, body) = app.get(&format!("/v1/messages/{held}"), &t.key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deliveries"][0]["status"], "pending", "{body}");

    // Once its answer is recorded it goes too (at once: it is old enough already).
    slow.release();
    wait_gone(&app, &t.key, &held, Duration::from_secs(15)).await;
    app.stop().await;
}
