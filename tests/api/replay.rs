//! Replays: all failed deliveries of an endpoint since a time, or one message's; refused
//! for a disabled endpoint (409), a bad time (422) and another tenant's ids (404).

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{all_settled, spawn_with, Tenant, TestApp};
use crate::receiver::Receiver;

/// One try only, so a failure is final at once.
async fn app() -> TestApp {
    spawn_with(|cfg| cfg.retry_schedule = Some("0s".into())).await
}

async fn publish_settled(app: &TestApp, tenant: &Tenant, n: usize) -> Value {
    let id = app
        .publish(
            &tenant.key,
            json!({"type": "delivered", "payload": {"n": n}}),
        )
        .await;
    app.wait_message(&tenant.key, &id, Duration::from_secs(10), all_settled)
        .await
}

/// Requests the receiver got, by `webhook-id`.
fn arrivals(receiver: &Receiver) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in receiver.received() {
        *counts
            .entry(r.header("webhook-id").to_string())
            .or_default() += 1;
    }
    counts
}

fn id(message: &Value) -> String {
    message["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn bulk_replay_resends_the_failed_messages_since_a_time() {
    let app = app().await;
    let receiver = Receiver::start(500).await;
    let tenant = app.create_tenant("Replay").await;
    let ep = app
        .create_endpoint(&tenant.key, json!({"url": receiver.url("/hook")}))
        .await;

    let old = publish_settled(&app, &tenant, 0).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let new1 = publish_settled(&app, &tenant, 1).await;
    let new2 = publish_settled(&app, &tenant, 2).await;
    receiver.set_status(200);
    let ok = publish_settled(&app, &tenant, 3).await;
    for (m, status) in [
        (&old, "failed"),
        (&new1, "failed"),
        (&new2, "failed"),
        (&ok, "succeeded"),
    ] {
        assert_eq!(m["deliveries"][0]["status"], status, "{m}");
    }

    let since = new1["received_at"].as_str().unwrap();
    let (status, body) = app
        .post(
            &format!("/v1/endpoints/{ep}/replay"),
            &tenant.key,
            json!({ "since": since }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, json!({"queued": 2, "complete": true}));

    for m in [&new1, &new2] {
        let replayed = app
            .wait_message(&tenant.key, &id(m), Duration::from_secs(10), |m| {
                m["deliveries"][0]["status"] == "succeeded"
            })
            .await;
        assert_eq!(replayed["deliveries"][0]["attempts"], 2, "{replayed}");
        let (_, attempts) = app
            .get(&format!("/v1/messages/{}/attempts", id(m)), &tenant.key)
            .await;
        let numbers: Vec<(u64, &str)> = attempts["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["attempt"].as_u64().unwrap(),
                    a["outcome"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(numbers, vec![(1, "failed"), (2, "succeeded")], "{attempts}");
    }
    // Give anything wrongly queued time to arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = arrivals(&receiver);
    assert_eq!(
        counts[&id(&old)],
        1,
        "a message older than since is not replayed"
    );
    assert_eq!(counts[&id(&new1)], 2);
    assert_eq!(counts[&id(&new2)], 2);
    assert_eq!(counts[&id(&ok)], 1, "a succeeded message is not replayed");
    let (_, old_now) = app
        .get(&format!("/v1/messages/{}", id(&old)), &tenant.key)
        .await;
    assert_eq!(old_now["deliveries"][0]["status"], "failed");

    // Nothing failed is left since then: a second replay queues nothing.
    let (status, body) = app
        .post(
            &format!("/v1/endpoints/{ep}/replay"),
            &tenant.key,
            json!({ "since": since }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["queued"], 0);
    app.stop().await;
}

#[tokio::test]
async fn replay_is_refused_for_bad_times_disabled_endpoints_and_other_tenants() {
    let app = app().await;
    let receiver = Receiver::start(500).await;
    let tenant = app.create_tenant("Refused").await;
    let other = app.create_tenant("Other").await;
    let ep = app
        .create_endpoint(&tenant.key, json!({"url": receiver.url("/hook")}))
        .await;
    let failed = publish_settled(&app, &tenant, 1).await;
    assert_eq!(failed["deliveries"][0]["status"], "failed");
    receiver.set_status(200);
    let path = format!("/v1/endpoints/{ep}/replay");

    for bad in [
        json!({}),
        json!({"since": "yesterday"}),
        json!({"since": 1_700_000_000}),
        json!({"since": "2024-05-01T00:00:00Z", "until": "2024-04-01T00:00:00Z"}),
        json!({"since": "2024-05-01T00:00:00Z", "until": "soon"}),
    ] {
        let (status, body) = app.post(&path, &tenant.key, bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_time", "{body}");
    }
    let (status, body) = app.call(Method::POST, &path, Some(&tenant.key), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "no body: {body}");

    let since = json!({"since": "2000-01-01T00:00:00Z"});
    let (status, body) = app.post(&path, &other.key, since.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = app
        .post(
            &format!("/v1/messages/{}/replay", id(&failed)),
            &other.key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let endpoint_path = format!("/v1/endpoints/{ep}");
    let patch = |status: &'static str| {
        app.call(
            Method::PATCH,
            &endpoint_path,
            Some(&tenant.key),
            Some(json!({ "status": status })),
        )
    };
    assert_eq!(patch("disabled").await.0, StatusCode::OK);
    let (status, body) = app.post(&path, &tenant.key, since.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "endpoint_disabled");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("re-enable"),
        "{body}"
    );

    // Nothing refused was queued: the failed delivery is untouched.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 1);
    let (_, now) = app
        .get(&format!("/v1/messages/{}", id(&failed)), &tenant.key)
        .await;
    assert_eq!(now["deliveries"][0]["status"], "failed", "{now}");
    assert_eq!(now["deliveries"][0]["attempts"], 1, "{now}");

    // Re-enabled, the same replay goes through.
    assert_eq!(patch("active").await.0, StatusCode::OK);
    let (status, body) = app.post(&path, &tenant.key, since).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["queued"], 1);
    receiver.wait_for(2, Duration::from_secs(10)).await;
    app.stop().await;
}

#[tokio::test]
async fn a_message_is_replayed_to_its_failed_endpoints() {
    let app = app().await;
    let failing = Receiver::start(500).await;
    let working = Receiver::start(200).await;
    let tenant = app.create_tenant("One message").await;
    let bad_ep = app
        .create_endpoint(&tenant.key, json!({"url": failing.url("/hook")}))
        .await;
    let good_ep = app
        .create_endpoint(&tenant.key, json!({"url": working.url("/hook")}))
        .await;
    let message = publish_settled(&app, &tenant, 1).await;
    let path = format!("/v1/messages/{}/replay", id(&message));

    // Only a failed delivery can be replayed on its own.
    let (status, body) = app
        .post(&path, &tenant.key, json!({ "endpoint_id": good_ep }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "delivery_not_failed");
    let (status, _) = app
        .post(
            &path,
            &tenant.key,
            json!({ "endpoint_id": "ep_01JQ8C9HT5N6R0D4X5W1V2Z3YK" }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not a target of the message");

    failing.set_status(200);
    let (status, body) = app.call(Method::POST, &path, Some(&tenant.key), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, json!({"queued": 1, "skipped": []}));
    let replayed = app
        .wait_message(&tenant.key, &id(&message), Duration::from_secs(10), |m| {
            m["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["status"] == "succeeded")
        })
        .await;
    for d in replayed["deliveries"].as_array().unwrap() {
        let want = if d["endpoint_id"] == bad_ep.as_str() {
            2
        } else {
            1
        };
        assert_eq!(d["attempts"], want, "{replayed}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(failing.count(), 2);
    assert_eq!(
        working.count(),
        1,
        "the endpoint that succeeded gets nothing again"
    );
    app.stop().await;
}
