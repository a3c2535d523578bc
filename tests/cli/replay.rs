//! `replay`: an endpoint's failures since a time, calling until the API answers
//! `complete` (more than one page here), and one message again.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::spawn_app;
use crate::receiver::Receiver;
use crate::support::User;

#[tokio::test]
async fn an_endpoint_replay_pages_until_complete() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    // 406 fails a delivery at once, with no retry.
    let receiver = Receiver::start(406).await;
    let ep = app
        .create_endpoint(&t.key, json!({"url": receiver.url("/")}))
        .await;
    let user = User::new();
    let b = app.base.as_str();
    let since = chrono::Utc::now() - chrono::Duration::seconds(5);

    // More than the API replays in one call (1000).
    const N: usize = 1050;
    let file = user.home.path().join("events.jsonl");
    let lines: String = (0..N)
        .map(|i| format!("{}\n", json!({"type": "delivered", "payload": {"n": i}})))
        .collect();
    std::fs::write(&file, lines).unwrap();
    let published = user
        .at(
            b,
            &t.key,
            &[
                "events",
                "publish",
                "--file",
                file.to_str().unwrap(),
                "--json",
            ],
        )
        .await
        .ok()
        .json();
    let ids: Vec<String> = published["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), N);
    // Every delivery failed and recorded.
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        loop {
            let (_, m) = app.get(&format!("/v1/messages/{id}"), &t.key).await;
            if m["deliveries"][0]["status"] == "failed" {
                break;
            }
            assert!(Instant::now() < deadline, "never failed: {m}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(receiver.count(), N);

    receiver.set_status(200);
    let since = since.to_rfc3339();
    let out = user
        .at(
            b,
            &t.key,
            &["replay", "endpoint", &ep, "--since", &since, "--json"],
        )
        .await
        .ok()
        .json();
    assert_eq!(out["queued"], N, "{out}");
    assert!(out["calls"].as_u64().unwrap() >= 2, "{out}");
    assert_eq!(out["complete"], true);
    receiver.wait_for(2 * N, Duration::from_secs(120)).await;
    // Nothing failed is left: a second replay (a relative time) queues none.
    let out = user
        .at(b, &t.key, &["replay", "endpoint", &ep, "--since", "1h"])
        .await
        .ok();
    assert!(
        out.stdout.contains("Queued 0 deliveries again"),
        "{}",
        out.stdout
    );

    // Refusals: a time that is neither form (usage), a disabled endpoint (the API's 409).
    let out = user
        .at(
            b,
            &t.key,
            &["replay", "endpoint", &ep, "--since", "yesterday-ish"],
        )
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = user.at(b, &t.key, &["replay", "endpoint", &ep]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    app.call(
        reqwest::Method::PATCH,
        &format!("/v1/endpoints/{ep}"),
        Some(&t.key),
        Some(json!({"status": "disabled"})),
    )
    .await;
    let out = user
        .at(b, &t.key, &["replay", "endpoint", &ep, "--since", "1h"])
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("endpoint_disabled"), "{}", out.stderr);
    app.stop().await;
}

#[tokio::test]
async fn one_message_is_replayed_to_its_failed_endpoint() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::start(406).await;
    let ep = app
        .create_endpoint(&t.key, json!({"url": receiver.url("/")}))
        .await;
    let id = app
        .publish(&t.key, json!({"type": "delivered", "payload": {}}))
        .await;
    app.wait_message(&t.key, &id, Duration::from_secs(15), |m| {
        m["deliveries"][0]["status"] == "failed"
    })
    .await;
    receiver.set_status(200);
    let user = User::new();
    let b = app.base.as_str();
    let out = user
        .at(
            b,
            &t.key,
            &["replay", "message", &id, "--endpoint", &ep, "--json"],
        )
        .await
        .ok()
        .json();
    assert_eq!(out["queued"], 1);
    app.wait_message(&t.key, &id, Duration::from_secs(15), |m| {
        m["deliveries"][0]["status"] == "succeeded"
    })
    .await;
    // Now it succeeded: replaying it to that endpoint is refused by the API.
    let out = user
        .at(b, &t.key, &["replay", "message", &id, "--endpoint", &ep])
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let out = user.at(b, &t.key, &["replay", "message", &id]).await.ok();
    assert!(
        out.stdout.contains("Queued 0 deliveries again"),
        "{}",
        out.stdout
    );
    let out = user.at(b, &t.key, &["replay", "message", "msg_nope"]).await;
    assert_eq!(out.code, 1);
    app.stop().await;
}
