//! Local mode under load: publishing is turned away (503 with `Retry-After`) while too many
//! events wait for the worker, and the worker keeps at most its limit of requests in flight
//! whatever the fan-out of the messages in hand.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::spawn_with;
use crate::receiver::Receiver;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn publishing_is_turned_away_while_too_many_events_wait_and_resumes_after() {
    // One message at a time: while the receiver holds it, the rest wait in the queue.
    let app = spawn_with(|cfg| {
        cfg.concurrency = Some("1".into());
        cfg.max_waiting = 1;
    })
    .await;
    let receiver = Receiver::start(200).await;
    receiver.hold();
    let t = app.create_tenant("a").await;
    app.create_endpoint(&t.key, json!({"url": receiver.url("/")}))
        .await;

    let url = format!("{}/v1/events", app.base);
    let mut accepted = Vec::new();
    let refused = loop {
        let resp = app
            .client
            .post(&url)
            .bearer_auth(&t.key)
            .json(&json!({"type": "delivered", "payload": {"n": accepted.len()}}))
            .send()
            .await
            .unwrap();
        if resp.status() != StatusCode::ACCEPTED {
            break resp;
        }
        let body: Value = resp.json().await.unwrap();
        accepted.push(body["id"].as_str().unwrap().to_string());
        // One in the worker's hands, and at most two waiting (the limit is checked before
        // an event is queued).
        assert!(accepted.len() <= 3, "never turned away: {accepted:?}");
    };
    assert!(accepted.len() >= 2, "turned away too early: {accepted:?}");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.headers()["retry-after"].to_str().unwrap(),
        "1",
        "a turned-away publisher is told when to come back"
    );
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");

    // The turned-away event was not queued: exactly the accepted ones arrive.
    receiver.release();
    receiver.wait_for(accepted.len(), WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    assert_eq!(ids, accepted);

    // With the queue drained, publishing is accepted again.
    let again = app
        .post(
            "/v1/events",
            &t.key,
            json!({"type": "delivered", "payload": {"after": true}}),
        )
        .await;
    assert_eq!(again.0, StatusCode::ACCEPTED, "{}", again.1);
    receiver.wait_for(accepted.len() + 1, WAIT).await;
    app.stop().await;
}

#[tokio::test]
async fn requests_in_flight_stay_within_the_limit_whatever_the_fan_out() {
    let app = spawn_with(|cfg| cfg.concurrency = Some("3".into())).await;
    let receiver = Receiver::start(200).await;
    receiver.hold();
    let t = app.create_tenant("a").await;
    for path in ["/a", "/b"] {
        app.create_endpoint(&t.key, json!({"url": receiver.url(path)}))
            .await;
    }
    for n in 0..3 {
        app.publish(&t.key, json!({"type": "delivered", "payload": {"n": n}}))
            .await;
    }
    // Each message is two requests: one message's pair fits in three permits, a second
    // pair does not, so two requests are held and the rest wait their turn.
    receiver.wait_for(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.count(),
        2,
        "more requests in flight than the limit"
    );

    receiver.release();
    receiver.wait_for(6, WAIT).await;
    app.stop().await;
}

#[tokio::test]
async fn an_endpoint_that_stops_answering_cannot_stall_the_others() {
    // Four request slots; no endpoint may hold more than half of them.
    let app = spawn_with(|cfg| cfg.concurrency = Some("4".into())).await;
    let stuck = Receiver::start(200).await;
    let fast = Receiver::start(200).await;
    stuck.hold();
    let t = app.create_tenant("a").await;
    app.create_endpoint(&t.key, json!({"url": stuck.url("/stuck")}))
        .await;
    app.create_endpoint(&t.key, json!({"url": fast.url("/fast")}))
        .await;
    const EVENTS: usize = 12;
    for n in 0..EVENTS {
        app.publish(&t.key, json!({"type": "delivered", "payload": {"n": n}}))
            .await;
    }
    // Every message reaches the answering endpoint while the other holds two requests,
    // its share; the rest of its requests wait on the queue, holding no slot.
    fast.wait_for(EVENTS, WAIT).await;
    stuck.wait_for(2, WAIT).await;
    assert_eq!(
        stuck.count(),
        2,
        "the stuck endpoint has its share in flight"
    );

    // Once it answers again, it gets every message too, each once.
    stuck.release();
    let got = stuck.wait_for(EVENTS, WAIT).await;
    let mut ids: Vec<String> = got
        .iter()
        .map(|r| r.header("webhook-id").to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), EVENTS);
    app.stop().await;
}
