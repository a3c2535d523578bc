//! Ordered delivery: a strict endpoint gets its messages one at a time in the order they
//! were accepted, retries included, each ordering key on its own; an unordered endpoint of
//! the same tenant is not held up by it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_with};
use crate::receiver::{Received, Receiver};

const MESSAGES: usize = 200;

fn seq(r: &Received) -> u64 {
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    body["seq"].as_u64().unwrap()
}

fn key_of(r: &Received) -> String {
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    body["key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_strict_endpoint_gets_every_message_in_publish_order_through_failures() {
    // Three attempts, 200 ms apart. The receiver's answers go by request: the first
    // attempt of a few messages fails, one message fails twice.
    let app = spawn_app().await;
    let failing_once = [0, 17, 99, 150, 199];
    let failing_twice = 60;
    let mut script = Vec::new();
    for n in 0..MESSAGES {
        if failing_once.contains(&n) {
            script.push(500);
        }
        if n == failing_twice {
            script.extend([500, 503]);
        }
        script.push(200);
    }
    let strict = Receiver::scripted(&script, 200).await;
    let tenant = app.create_tenant("Ordered").await;
    let endpoint = app
        .create_endpoint(
            &tenant.key,
            json!({"url": strict.url("/strict"), "ordering": "strict"}),
        )
        .await;
    let (status, view) = app
        .get(&format!("/v1/endpoints/{endpoint}"), &tenant.key)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["ordering"], "strict", "{view}");

    for n in 0..MESSAGES {
        app.publish(
            &tenant.key,
            json!({"type": "delivered", "payload": {"seq": n}}),
        )
        .await;
    }
    let expected_requests = MESSAGES + failing_once.len() + 2;
    strict
        .wait_for(expected_requests, Duration::from_secs(60))
        .await;
    // A request sent out of turn or twice would arrive about now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = strict.received();
    assert_eq!(got.len(), expected_requests, "each attempt once");
    let seqs: Vec<u64> = got.iter().map(seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] <= w[1]),
        "requests out of publish order: {seqs:?}"
    );
    let mut delivered = seqs.clone();
    delivered.dedup();
    assert_eq!(delivered, (0..MESSAGES as u64).collect::<Vec<_>>());
    assert_eq!(
        seqs.iter().filter(|s| **s == failing_twice as u64).count(),
        3,
        "the message failing twice is retried before the next one goes"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_stuck_strict_endpoint_holds_up_only_its_own_sequence() {
    // A retry far away: a failed first attempt keeps its sequence waiting.
    let app = spawn_with(|cfg| cfg.retry_schedule = Some("0s,1h".into())).await;
    let strict = Receiver::start(500).await;
    let unordered = Receiver::start(200).await;
    let tenant = app.create_tenant("Stuck").await;
    app.create_endpoint(
        &tenant.key,
        json!({"url": strict.url("/strict"), "ordering": "strict"}),
    )
    .await;
    let (status, body) = app
        .post(
            "/v1/endpoints",
            &tenant.key,
            json!({"url": unordered.url("/all"), "ordering": "none"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["ordering"], "none");

    const EACH: usize = 15;
    let mut first_of_a = None;
    for n in 0..2 * EACH {
        let key = if n % 2 == 0 { "a" } else { "b" };
        let id = app
            .publish(
                &tenant.key,
                json!({"type": "delivered", "ordering_key": key,
                       "payload": {"seq": n, "key": key}}),
            )
            .await;
        first_of_a.get_or_insert(id);
    }
    unordered.wait_for(2 * EACH, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One failed head per ordering key, and nothing behind them.
    let heads = strict.received();
    let mut firsts: Vec<(String, u64)> = heads.iter().map(|r| (key_of(r), seq(r))).collect();
    firsts.sort();
    assert_eq!(firsts, vec![("a".into(), 0), ("b".into(), 1)]);
    assert_eq!(unordered.count(), 2 * EACH, "each message once");

    // The backlog shows: the head is pending with its next attempt due.
    let (_, message) = app
        .get(
            &format!("/v1/messages/{}", first_of_a.unwrap()),
            &tenant.key,
        )
        .await;
    let strict_delivery = message["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["attempts"] == 1 && d["status"] == "pending");
    assert!(strict_delivery.is_some(), "{message}");
    app.stop().await;
}

#[tokio::test]
async fn ordering_and_ordering_keys_are_checked() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Checks").await;
    let (status, body) = app
        .post(
            "/v1/endpoints",
            &tenant.key,
            json!({"url": "http://127.0.0.1:9/x", "ordering": "fifo"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_ordering");
    let (_, list) = app.get("/v1/endpoints", &tenant.key).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(0), "{list}");

    let id = app
        .create_endpoint(&tenant.key, json!({"url": "http://127.0.0.1:9/x"}))
        .await;
    let (status, body) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/endpoints/{id}"),
            Some(&tenant.key),
            Some(json!({"ordering": "strict"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ordering"], "strict");

    for (bad, code) in [
        (json!(""), "invalid_ordering_key"),
        (json!("has space"), "invalid_ordering_key"),
        (json!("k".repeat(65)), "invalid_ordering_key"),
        (json!(7), "invalid_request"),
    ] {
        let (status, body) = app
            .post(
                "/v1/events",
                &tenant.key,
                json!({"type": "delivered", "payload": {}, "ordering_key": bad}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["code"], code, "{bad}: {body}");
    }
    let (_, log) = app.get("/v1/messages", &tenant.key).await;
    assert_eq!(log["data"].as_array().map(Vec::len), Some(0), "{log}");
    app.stop().await;
}
