//! Delivery: fan-out to subscribed endpoints only, Standard Webhooks signatures, retries
//! with an attempt log, permanent failures, idempotency and no head-of-line blocking.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{all_settled, spawn_app, spawn_with, TestApp};
use crate::receiver::Receiver;

const WAIT: Duration = Duration::from_secs(15);

async fn secret_of(app: &TestApp, key: &str, endpoint: &str) -> String {
    let (_, body) = app
        .get(&format!("/v1/endpoints/{endpoint}/secret"), key)
        .await;
    body["key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn each_subscribed_endpoint_gets_one_signed_post_and_others_none() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let wants_delivered = Receiver::start(200).await;
    let wants_all = Receiver::start(204).await;
    let wants_opened = Receiver::start(200).await;
    let a = app
        .create_endpoint(
            &t.key,
            json!({"url": wants_delivered.url("/a"), "event_types": ["delivered"]}),
        )
        .await;
    let b = app
        .create_endpoint(&t.key, json!({"url": wants_all.url("/b")}))
        .await;
    let c = app
        .create_endpoint(
            &t.key,
            json!({"url": wants_opened.url("/c"), "event_types": ["opened"]}),
        )
        .await;

    let payload = r#"{"recipient":"alice@example.com","event":"delivered","n":[1,2]}"#;
    let raw: Value = serde_json::from_str(payload).unwrap();
    let id = app
        .publish(&t.key, json!({"type": "delivered", "payload": raw}))
        .await;
    let message = app
        .wait_message(&t.key, &id, WAIT, |m| {
            all_settled(m) && m["deliveries"].as_array().unwrap().len() == 2
        })
        .await;
    let targets: Vec<_> = message["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["endpoint_id"].as_str().unwrap().to_string())
        .collect();
    assert!(targets.contains(&a) && targets.contains(&b) && !targets.contains(&c));
    assert!(message["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["status"] == "succeeded" && d["attempts"] == 1));

    for (receiver, endpoint) in [(&wants_delivered, &a), (&wants_all, &b)] {
        let got = receiver.wait_for(1, WAIT).await;
        assert_eq!(got.len(), 1);
        let req = &got[0];
        assert_eq!(req.header("webhook-id"), id);
        assert_eq!(req.header("content-type"), "application/json");
        assert!(req.header("user-agent").starts_with("Hookline/"));
        let ts: i64 = req.header("webhook-timestamp").parse().unwrap();
        let now = chrono_like_now();
        assert!((now - ts).abs() < 120, "timestamp {ts} is not now ({now})");
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body, raw);
        let secret = secret_of(&app, &t.key, endpoint).await;
        assert_eq!(
            req.header("webhook-signature"),
            req.standard_signature(&secret)
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(wants_opened.count(), 0);
    assert_eq!(wants_delivered.count(), 1);
    app.stop().await;
}

fn chrono_like_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn the_raw_payload_reaches_the_receiver_byte_for_byte() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::start(200).await;
    app.create_endpoint(&t.key, json!({"url": receiver.url("/")}))
        .await;
    let body = r#"{"type":"opened","payload":{"z": 1, "a":  "é\u00e9"}}"#;
    let (status, _) = app
        .raw(
            Method::POST,
            "/v1/events",
            &t.key,
            "application/json",
            body.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(&got[0].body[..], r#"{"z": 1, "a":  "é\u00e9"}"#.as_bytes());
    app.stop().await;
}

#[tokio::test]
async fn a_failed_attempt_is_retried_and_the_log_shows_both() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::scripted(&[500], 200).await;
    let ep = app
        .create_endpoint(&t.key, json!({"url": receiver.url("/flaky")}))
        .await;
    let id = app
        .publish(&t.key, json!({"type": "delivered", "payload": {"a": 1}}))
        .await;
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert_eq!(got[0].body, got[1].body);
    let message = app.wait_message(&t.key, &id, WAIT, all_settled).await;
    assert_eq!(message["deliveries"][0]["status"], "succeeded");
    assert_eq!(message["deliveries"][0]["attempts"], 2);

    let (status, attempts) = app
        .get(&format!("/v1/messages/{id}/attempts"), &t.key)
        .await;
    assert_eq!(status, StatusCode::OK);
    let attempts = attempts["data"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["attempt"], 1);
    assert_eq!(attempts[0]["status_code"], 500);
    assert_eq!(attempts[0]["outcome"], "retrying");
    assert_eq!(attempts[1]["attempt"], 2);
    assert_eq!(attempts[1]["status_code"], 200);
    assert_eq!(attempts[1]["outcome"], "succeeded");
    assert_eq!(attempts[1]["response"], "ok");
    assert!(attempts.iter().all(|a| a["endpoint_id"] == ep.as_str()));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.count(), 2, "a succeeded delivery was sent again");
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_failing_every_time_exhausts_the_schedule() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::start(503).await;
    app.create_endpoint(&t.key, json!({"url": receiver.url("/down")}))
        .await;
    let id = app
        .publish(&t.key, json!({"type": "delivered", "payload": {}}))
        .await;
    let message = app.wait_message(&t.key, &id, WAIT, all_settled).await;
    let d = &message["deliveries"][0];
    assert_eq!(d["status"], "failed");
    assert_eq!(d["attempts"], 3, "the schedule has three tries");
    assert_eq!(d["last_status_code"], 503);
    assert_eq!(receiver.count(), 3);
    app.stop().await;
}

#[tokio::test]
async fn connection_errors_are_retried_and_logged_with_their_kind() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    // Nothing listens here: bind a port, then free it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    app.create_endpoint(&t.key, json!({"url": format!("http://127.0.0.1:{port}/")}))
        .await;
    let id = app
        .publish(&t.key, json!({"type": "delivered", "payload": {}}))
        .await;
    app.wait_message(&t.key, &id, WAIT, all_settled).await;
    let (_, attempts) = app
        .get(&format!("/v1/messages/{id}/attempts"), &t.key)
        .await;
    let attempts = attempts["data"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(attempts
        .iter()
        .all(|a| a["error"] == "connect" && a["status_code"].is_null()));
    app.stop().await;
}

#[tokio::test]
async fn status_406_is_permanent_and_not_retried() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::start(406).await;
    let ep = app
        .create_endpoint(&t.key, json!({"url": receiver.url("/no")}))
        .await;
    let id = app
        .publish(&t.key, json!({"type": "delivered", "payload": {}}))
        .await;
    let message = app.wait_message(&t.key, &id, WAIT, all_settled).await;
    assert_eq!(message["deliveries"][0]["status"], "failed");
    assert_eq!(message["deliveries"][0]["attempts"], 1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.count(), 1);
    let (_, endpoint) = app.get(&format!("/v1/endpoints/{ep}"), &t.key).await;
    assert_eq!(endpoint["status"], "active", "406 does not disable");
    app.stop().await;
}

#[tokio::test]
async fn status_410_fails_permanently_and_disables_the_endpoint() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::start(410).await;
    let ep = app
        .create_endpoint(&t.key, json!({"url": receiver.url("/gone")}))
        .await;
    let id = app
        .publish(&t.key, json!({"type": "delivered", "payload": {}}))
        .await;
    let message = app.wait_message(&t.key, &id, WAIT, all_settled).await;
    assert_eq!(message["deliveries"][0]["attempts"], 1);
    let (_, endpoint) = app.get(&format!("/v1/endpoints/{ep}"), &t.key).await;
    assert_eq!(endpoint["status"], "disabled");
    assert!(endpoint["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("410"));
    // A disabled endpoint is not subscribed any more.
    app.publish(&t.key, json!({"type": "delivered", "payload": {}}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 1);
    app.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::scripted(&[429], 200).await;
    receiver.set_retry_after(Some("2"));
    app.create_endpoint(&t.key, json!({"url": receiver.url("/")}))
        .await;
    app.publish(&t.key, json!({"type": "delivered", "payload": {}}))
        .await;
    let got = receiver.wait_for(2, WAIT).await;
    let gap = got[1].at - got[0].at;
    // The schedule alone would retry after about 200 ms.
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_slow_endpoint_does_not_hold_up_a_fast_one() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let slow = Receiver::start(200).await;
    let fast = Receiver::start(200).await;
    slow.hold();
    app.create_endpoint(&t.key, json!({"url": slow.url("/slow")}))
        .await;
    app.create_endpoint(&t.key, json!({"url": fast.url("/fast")}))
        .await;
    for i in 0..5 {
        app.publish(&t.key, json!({"type": "delivered", "payload": {"i": i}}))
            .await;
    }
    // Every message reaches the fast receiver while the slow one still holds its requests.
    fast.wait_for(5, WAIT).await;
    slow.wait_for(5, WAIT).await;
    assert_eq!(fast.count(), 5);
    slow.release();
    app.stop().await;
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_first_id_and_delivers_once() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::start(200).await;
    app.create_endpoint(&t.key, json!({"url": receiver.url("/")}))
        .await;
    let event = json!({"type": "delivered", "payload": {"a": 1}, "idempotency_key": "order-42"});
    let first = app.publish(&t.key, event.clone()).await;
    let again = app.publish(&t.key, event.clone()).await;
    assert_eq!(first, again);
    app.wait_message(&t.key, &first, WAIT, all_settled).await;
    let third = app.publish(&t.key, event).await;
    assert_eq!(first, third);
    let other = app
        .publish(
            &t.key,
            json!({"type": "delivered", "payload": {"a": 1}, "idempotency_key": "order-43"}),
        )
        .await;
    assert_ne!(first, other);
    receiver.wait_for(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 2);
    let (_, list) = app.get("/v1/messages", &t.key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);

    // Another tenant's identical key is its own.
    let u = app.create_tenant("b").await;
    let theirs = app
        .publish(
            &u.key,
            json!({"type": "delivered", "payload": {}, "idempotency_key": "order-42"}),
        )
        .await;
    assert_ne!(theirs, first);
    app.stop().await;
}

#[tokio::test]
async fn batches_are_accepted_and_each_event_delivered() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::start(200).await;
    app.create_endpoint(&t.key, json!({"url": receiver.url("/")}))
        .await;
    let events: Vec<Value> = (0..20)
        .map(|i| json!({"type": "clicked", "payload": {"i": i}}))
        .collect();
    let (status, body) = app
        .post("/v1/events", &t.key, json!({ "events": events }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ids = body["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 20);
    let got = receiver.wait_for(20, WAIT).await;
    let mut seen: Vec<String> = got
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    seen.sort();
    let mut expected: Vec<String> = ids
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
    app.stop().await;
}

#[tokio::test]
async fn domain_scoped_endpoints_get_only_their_domain() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    for d in ["a.example.com", "b.example.com"] {
        let (status, _) = app.post("/v1/domains", &t.key, json!({ "name": d })).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let scoped = Receiver::start(200).await;
    let org = Receiver::start(200).await;
    app.create_endpoint(
        &t.key,
        json!({"url": scoped.url("/"), "domain": "a.example.com"}),
    )
    .await;
    app.create_endpoint(&t.key, json!({"url": org.url("/")}))
        .await;
    let in_a = app
        .publish(
            &t.key,
            json!({"type": "delivered", "payload": {}, "domain": "a.example.com"}),
        )
        .await;
    let in_b = app
        .publish(
            &t.key,
            json!({"type": "delivered", "payload": {}, "domain": "b.example.com"}),
        )
        .await;
    let none = app
        .publish(&t.key, json!({"type": "delivered", "payload": {}}))
        .await;
    let got = org.wait_for(3, WAIT).await;
    assert_eq!(got.len(), 3);
    for id in [&in_a, &in_b, &none] {
        app.wait_message(&t.key, id, WAIT, all_settled).await;
    }
    let scoped_got = scoped.received();
    assert_eq!(scoped_got.len(), 1);
    assert_eq!(scoped_got[0].header("webhook-id"), in_a);
    app.stop().await;
}

#[tokio::test]
async fn after_rotation_both_secrets_sign_during_the_grace_period() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::start(200).await;
    let ep = app
        .create_endpoint(&t.key, json!({"url": receiver.url("/")}))
        .await;
    let old = secret_of(&app, &t.key, &ep).await;
    let (_, rotated) = app
        .post(
            &format!("/v1/endpoints/{ep}/secret/rotate"),
            &t.key,
            json!({}),
        )
        .await;
    let new = rotated["key"].as_str().unwrap().to_string();
    app.publish(&t.key, json!({"type": "delivered", "payload": {}}))
        .await;
    let got = receiver.wait_for(1, WAIT).await;
    let sigs: Vec<&str> = got[0].header("webhook-signature").split(' ').collect();
    assert_eq!(
        sigs,
        vec![
            got[0].standard_signature(&new).as_str(),
            got[0].standard_signature(&old).as_str()
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_deleted_endpoint_gets_no_retries() {
    let app = spawn_with(|cfg| cfg.retry_schedule = Some("0s,1s,1s".into())).await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::start(500).await;
    let ep = app
        .create_endpoint(&t.key, json!({"url": receiver.url("/")}))
        .await;
    let id = app
        .publish(&t.key, json!({"type": "delivered", "payload": {}}))
        .await;
    receiver.wait_for(1, WAIT).await;
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/endpoints/{ep}"),
            Some(&t.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let message = app.wait_message(&t.key, &id, WAIT, all_settled).await;
    assert_eq!(message["deliveries"][0]["status"], "failed");
    assert_eq!(message["deliveries"][0]["last_error"], "endpoint_deleted");
    assert_eq!(receiver.count(), 1);
    app.stop().await;
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let target = Receiver::start(200).await;
    let redirecting = Receiver::start(307).await;
    redirecting.set_location(&target.url("/elsewhere"));
    app.create_endpoint(&t.key, json!({"url": redirecting.url("/")}))
        .await;
    let id = app
        .publish(&t.key, json!({"type": "delivered", "payload": {}}))
        .await;
    let message = app.wait_message(&t.key, &id, WAIT, all_settled).await;
    // A redirect is an answer like any non-2xx: retried on the schedule, never followed.
    assert_eq!(message["deliveries"][0]["status"], "failed");
    assert_eq!(message["deliveries"][0]["last_status_code"], 307);
    assert_eq!(redirecting.count(), 3);
    assert_eq!(target.count(), 0);
    app.stop().await;
}

#[tokio::test]
async fn ten_events_of_200_kib_in_one_publish_are_queued_and_delivered_whole() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::start(200).await;
    app.create_endpoint(&t.key, json!({"url": receiver.url("/")}))
        .await;
    // 2 MB in one request: over what SQS takes in one batch, which local mode shares the
    // publishing code with.
    let events: Vec<_> = (0..10)
        .map(|n| json!({"type": "opened", "payload": {"n": n, "fill": "x".repeat(200 * 1024)}}))
        .collect();
    let (status, body) = app
        .post("/v1/events", &t.key, json!({ "events": events }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{}", body["error"]);
    let mut ids: Vec<String> = body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 10);
    let got = receiver.wait_for(10, WAIT).await;
    let mut delivered: Vec<String> = got
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    ids.sort();
    delivered.sort();
    assert_eq!(delivered, ids);
    for r in &got {
        let payload: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(payload["fill"].as_str().unwrap().len(), 200 * 1024);
    }
    app.stop().await;
}
