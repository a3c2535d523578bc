//! Endpoint health: an endpoint whose every attempt fails for the configured period is
//! disabled automatically with a reason; a success in between starts the clock again; a
//! PATCH re-enables it and deliveries flow again.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{all_settled, spawn_with, TestApp};
use crate::receiver::Receiver;

async fn endpoint(app: &TestApp, key: &str, id: &str) -> Value {
    let (status, body) = app.get(&format!("/v1/endpoints/{id}"), key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Polls an endpoint until `done` holds for it.
async fn wait_endpoint(
    app: &TestApp,
    key: &str,
    id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let body = endpoint(app, key, id).await;
        if done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "endpoint never reached the state: {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn event(n: usize) -> Value {
    json!({"type": "delivered", "payload": {"n": n}})
}

#[tokio::test]
async fn an_endpoint_failing_for_the_period_is_disabled_then_re_enabled() {
    let app = spawn_with(|cfg| {
        cfg.retry_schedule = Some("0s,300ms,300ms,300ms,300ms,300ms,300ms,300ms".into());
        cfg.disable_after = Some("1s".into());
    })
    .await;
    let receiver = Receiver::start(500).await;
    let tenant = app.create_tenant("Health").await;
    let ep = app
        .create_endpoint(&tenant.key, json!({"url": receiver.url("/hook")}))
        .await;
    let fresh = endpoint(&app, &tenant.key, &ep).await;
    assert_eq!(fresh["status"], "active");
    assert_eq!(fresh["failing_since"], Value::Null);
    assert_eq!(fresh["disabled_at"], Value::Null);

    let id = app.publish(&tenant.key, event(1)).await;
    // The first failure starts the clock; the endpoint stays active for now.
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let failing = wait_endpoint(&app, &tenant.key, &ep, Duration::from_secs(10), |e| {
        e["failing_since"].is_string()
    })
    .await;
    assert_eq!(failing["status"], "active", "{failing}");

    let disabled = wait_endpoint(&app, &tenant.key, &ep, Duration::from_secs(15), |e| {
        e["status"] == "disabled"
    })
    .await;
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("disabled automatically"), "{reason}");
    assert!(
        reason.contains(
            failing["failing_since"]
                .as_str()
                .unwrap()
                .get(..19)
                .unwrap()
        ),
        "the reason names when the failures began: {reason}"
    );
    assert!(disabled["disabled_at"].is_string(), "{disabled}");
    assert_eq!(disabled["failing_since"], failing["failing_since"]);
    // The period is 1 s and tries come every 300 ms: disabled well before the 8 tries.
    let message = app
        .wait_message(&tenant.key, &id, Duration::from_secs(15), all_settled)
        .await;
    let delivery = &message["deliveries"][0];
    assert_eq!(delivery["status"], "failed", "{message}");
    assert!(
        delivery["attempts"].as_u64().unwrap() < 8,
        "the rest of the schedule was not tried: {message}"
    );

    // Disabled: a new event does not go to it.
    let sent = receiver.count();
    app.publish(&tenant.key, event(2)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), sent, "a disabled endpoint gets nothing");

    // Re-enabled: reason, time and failure clock are cleared, and deliveries flow.
    let (status, patched) = app
        .call(
            Method::PATCH,
            &format!("/v1/endpoints/{ep}"),
            Some(&tenant.key),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["status"], "active");
    assert_eq!(patched["disabled_reason"], Value::Null);
    assert_eq!(patched["disabled_at"], Value::Null);
    assert_eq!(patched["failing_since"], Value::Null);
    receiver.set_status(200);
    let id = app.publish(&tenant.key, event(3)).await;
    let message = app
        .wait_message(&tenant.key, &id, Duration::from_secs(10), all_settled)
        .await;
    assert_eq!(message["deliveries"][0]["status"], "succeeded", "{message}");
    let after = endpoint(&app, &tenant.key, &ep).await;
    assert_eq!(after["status"], "active");
    assert_eq!(after["failing_since"], Value::Null);
    app.stop().await;
}

#[tokio::test]
async fn a_success_in_between_starts_the_clock_again() {
    // Three tries 400 ms apart: one message's failures span 0.8 s, under the 1 s period,
    // while two messages' failures back to back span more than it.
    let app = spawn_with(|cfg| {
        cfg.retry_schedule = Some("0s,400ms,400ms".into());
        cfg.disable_after = Some("1s".into());
    })
    .await;
    // The first message fails twice, then succeeds; everything after fails.
    let receiver = Receiver::scripted(&[500, 500, 200], 500).await;
    let tenant = app.create_tenant("Flaky").await;
    let ep = app
        .create_endpoint(&tenant.key, json!({"url": receiver.url("/hook")}))
        .await;

    let first = app.publish(&tenant.key, event(1)).await;
    let message = app
        .wait_message(&tenant.key, &first, Duration::from_secs(10), all_settled)
        .await;
    assert_eq!(message["deliveries"][0]["status"], "succeeded", "{message}");
    let recovered = wait_endpoint(&app, &tenant.key, &ep, Duration::from_secs(5), |e| {
        e["failing_since"].is_null()
    })
    .await;
    assert_eq!(recovered["status"], "active");

    let second = app.publish(&tenant.key, event(2)).await;
    let message = app
        .wait_message(&tenant.key, &second, Duration::from_secs(10), all_settled)
        .await;
    let delivery = &message["deliveries"][0];
    assert_eq!(delivery["status"], "failed", "{message}");
    assert_eq!(delivery["attempts"], 3, "{message}");
    let after = endpoint(&app, &tenant.key, &ep).await;
    assert_eq!(
        after["status"], "active",
        "failures since the success are shorter than the period: {after}"
    );
    assert_eq!(after["disabled_reason"], Value::Null);
    // Both in the same RFC 3339 form, so they compare as text.
    assert!(
        after["failing_since"].as_str().unwrap() >= message["received_at"].as_str().unwrap(),
        "the clock started at the second message's first failure: {after} {message}"
    );
    app.stop().await;
}
