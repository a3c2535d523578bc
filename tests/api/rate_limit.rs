//! Per-endpoint rate limits: a limited endpoint gets its messages at its rate, held back
//! without holding up an unlimited one, each message once and as one attempt.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_with};
use crate::receiver::Receiver;

const RATE: usize = 5;
const EVENTS: usize = 20;

#[tokio::test]
async fn a_limited_endpoint_gets_its_messages_at_its_rate_without_holding_up_others() {
    let app = spawn_with(|cfg| cfg.retry_schedule = Some("0s".into())).await;
    let limited = Receiver::start(200).await;
    let unlimited = Receiver::start(200).await;
    let tenant = app.create_tenant("Rates").await;
    let a = app
        .create_endpoint(
            &tenant.key,
            json!({"url": limited.url("/a"), "rate_limit": RATE}),
        )
        .await;
    app.create_endpoint(&tenant.key, json!({"url": unlimited.url("/b")}))
        .await;

    let events: Vec<Value> = (0..EVENTS)
        .map(|n| json!({"type": "delivered", "payload": {"n": n}}))
        .collect();
    let (status, body) = app
        .post("/v1/events", &tenant.key, json!({ "events": events }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ids: Vec<String> = body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), EVENTS);

    unlimited.wait_for(EVENTS, Duration::from_secs(10)).await;
    let early = limited.count();
    assert!(
        early < EVENTS,
        "the unlimited endpoint got all {EVENTS} while the limited one had {early}"
    );

    let got = limited.wait_for(EVENTS, Duration::from_secs(30)).await;
    // Anything sent twice would arrive about now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_after = limited.received();
    assert_eq!(got_after.len(), EVENTS, "each message arrives once");
    let distinct: HashSet<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(distinct.len(), EVENTS, "no message arrives twice");

    // In any one-second window: at most the rate plus a full burst of the rate.
    let times: Vec<_> = got.iter().map(|r| r.at).collect();
    for (i, start) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .filter(|t| t.duration_since(*start) < Duration::from_secs(1))
            .count();
        assert!(
            in_window <= 2 * RATE,
            "{in_window} requests within one second of request {i}"
        );
    }

    // Held-back tries are not attempts: one attempt per message to the limited endpoint.
    for id in &ids {
        let (status, attempts) = app
            .get(&format!("/v1/messages/{id}/attempts"), &tenant.key)
            .await;
        assert_eq!(status, StatusCode::OK, "{attempts}");
        let to_a: Vec<&Value> = attempts["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["endpoint_id"] == a.as_str())
            .collect();
        assert_eq!(to_a.len(), 1, "{attempts}");
        assert_eq!(to_a[0]["attempt"], 1);
        assert_eq!(to_a[0]["outcome"], "succeeded");
    }
    app.stop().await;
}

#[tokio::test]
async fn rate_limits_are_validated_shown_and_changed() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Rate rules").await;
    let url = "http://127.0.0.1:9/hook";
    for bad in [
        json!(0),
        json!(-1),
        json!(1.5),
        json!("5"),
        json!(10_001),
        json!([5]),
    ] {
        let (status, body) = app
            .post(
                "/v1/endpoints",
                &tenant.key,
                json!({"url": url, "rate_limit": bad}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_rate_limit", "{body}");
    }
    let (_, list) = app.get("/v1/endpoints", &tenant.key).await;
    assert_eq!(list["data"], json!([]), "a refused endpoint is not stored");

    let (status, created) = app
        .post("/v1/endpoints", &tenant.key, json!({"url": url}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["rate_limit"], Value::Null);
    let path = format!("/v1/endpoints/{}", created["id"].as_str().unwrap());
    let patch = |body: Value| app.call(Method::PATCH, &path, Some(&tenant.key), Some(body));
    let (status, patched) = patch(json!({"rate_limit": 3})).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["rate_limit"], 3);
    let (status, body) = patch(json!({"rate_limit": 0, "description": "changed"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, shown) = app.get(&path, &tenant.key).await;
    assert_eq!(shown["rate_limit"], 3, "a refused change stores nothing");
    assert_eq!(shown["description"], "");
    let (status, patched) = patch(json!({"description": "kept"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        patched["rate_limit"], 3,
        "an absent rate_limit is left as it is"
    );
    let (status, patched) = patch(json!({"rate_limit": null})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["rate_limit"], Value::Null, "null removes the limit");
    app.stop().await;
}
