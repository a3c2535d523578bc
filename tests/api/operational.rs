//! Operational webhooks: Hookline's own `hookline.` events, signed and delivered to the
//! tenant's endpoints that name them and to the operator's endpoints; the reserved prefix;
//! the operator's endpoint routes; and the rule that keeps them from looping.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_with, TestApp, OPERATOR_KEY};
use crate::receiver::{Received, Receiver};

const WAIT: Duration = Duration::from_secs(15);
/// How long a test waits after the expected requests for any that should not come.
const QUIET: Duration = Duration::from_millis(1500);

const DISABLED: &str = "hookline.endpoint.disabled";
const ENABLED: &str = "hookline.endpoint.enabled";
const EXHAUSTED: &str = "hookline.message.attempt.exhausted";
const FAILING: &str = "hookline.message.attempt.failing";

fn body_of(r: &Received) -> Value {
    serde_json::from_slice(&r.body).expect("a JSON body")
}

/// The requests of one operational type a receiver got.
fn of_type(receiver: &Receiver, event_type: &str) -> Vec<Received> {
    receiver
        .received()
        .into_iter()
        .filter(|r| body_of(r)["type"] == event_type)
        .collect()
}

async fn operator_endpoint(app: &TestApp, body: Value) -> (String, String) {
    let (status, created) = app.post("/v1/operator/endpoints", OPERATOR_KEY, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let (status, secret) = app
        .get(&format!("/v1/operator/endpoints/{id}/secret"), OPERATOR_KEY)
        .await;
    assert_eq!(status, StatusCode::OK, "{secret}");
    (id, secret["key"].as_str().unwrap().to_string())
}

async fn secret_of(app: &TestApp, key: &str, endpoint: &str) -> String {
    let (_, body) = app
        .get(&format!("/v1/endpoints/{endpoint}/secret"), key)
        .await;
    body["key"].as_str().unwrap().to_string()
}

fn assert_signed(r: &Received, secret: &str) {
    let expected = r.standard_signature(secret);
    assert!(
        r.header("webhook-signature")
            .split(' ')
            .any(|s| s == expected),
        "signature {:?} is not {expected}",
        r.header("webhook-signature")
    );
}

#[tokio::test]
async fn an_endpoint_answering_410_is_disabled_and_the_tenant_and_operator_are_told_once() {
    let app = spawn_app().await;
    let t = app.create_tenant("gone").await;
    let gone = Receiver::start(410).await;
    let ops = Receiver::start(200).await;
    let catch_all = Receiver::start(200).await;
    let operator = Receiver::start(200).await;
    let mail = app
        .create_endpoint(
            &t.key,
            json!({"url": gone.url("/mail"), "event_types": ["delivered"]}),
        )
        .await;
    let tenant_ops = app
        .create_endpoint(
            &t.key,
            json!({"url": ops.url("/ops"), "event_types": [DISABLED, ENABLED]}),
        )
        .await;
    app.create_endpoint(&t.key, json!({"url": catch_all.url("/all")}))
        .await;
    let tenant_secret = secret_of(&app, &t.key, &tenant_ops).await;
    let (_, operator_secret) = operator_endpoint(
        &app,
        json!({"url": operator.url("/operator"), "event_types": [DISABLED]}),
    )
    .await;

    app.publish(&t.key, json!({"type": "delivered", "payload": {"n": 1}}))
        .await;
    ops.wait_for(1, WAIT).await;
    operator.wait_for(1, WAIT).await;
    tokio::time::sleep(QUIET).await;

    for (receiver, secret) in [(&ops, &tenant_secret), (&operator, &operator_secret)] {
        let got = receiver.received();
        assert_eq!(got.len(), 1, "exactly one operational event each");
        let event = body_of(&got[0]);
        assert_eq!(event["type"], DISABLED);
        assert_eq!(event["data"]["endpoint_id"], mail.as_str());
        assert_eq!(event["data"]["tenant_id"], t.id.as_str());
        assert!(
            event["data"]["reason"].as_str().unwrap().contains("410"),
            "{event}"
        );
        assert!(event["data"]["failing_since"].is_string(), "{event}");
        assert_signed(&got[0], secret);
    }
    assert_ne!(
        ops.received()[0].header("webhook-id"),
        operator.received()[0].header("webhook-id"),
        "the tenant's and the operator's copies are messages of their own"
    );
    assert_eq!(
        catch_all.count(),
        1,
        "an endpoint of every event gets the mail event and no operational one"
    );
    let (_, endpoint) = app.get(&format!("/v1/endpoints/{mail}"), &t.key).await;
    assert_eq!(endpoint["status"], "disabled");
    // The tenant's copy is in its log like any message.
    let (status, log) = app
        .get(&format!("/v1/messages?type={DISABLED}"), &t.key)
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    assert_eq!(log["data"].as_array().unwrap().len(), 1, "{log}");

    // Enabled again through the API: the tenant's operational endpoint hears of that too.
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/endpoints/{mail}"),
            Some(&t.key),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ops.wait_for(2, WAIT).await;
    let enabled = of_type(&ops, ENABLED);
    assert_eq!(enabled.len(), 1);
    assert_eq!(body_of(&enabled[0])["data"]["endpoint_id"], mail.as_str());
    assert_signed(&enabled[0], &tenant_secret);

    // Disabled through the API (twice: the second changes nothing): told once, with the
    // API's reason, to the tenant and to the operator.
    for _ in 0..2 {
        let (status, body) = app
            .call(
                Method::PATCH,
                &format!("/v1/endpoints/{mail}"),
                Some(&t.key),
                Some(json!({"status": "disabled"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "disabled");
    }
    ops.wait_for(3, WAIT).await;
    operator.wait_for(2, WAIT).await;
    tokio::time::sleep(QUIET).await;
    for (receiver, secret) in [(&ops, &tenant_secret), (&operator, &operator_secret)] {
        let disabled = of_type(receiver, DISABLED);
        assert_eq!(disabled.len(), 2, "one by delivery, one by the API");
        let event = body_of(&disabled[1]);
        assert_eq!(event["data"]["endpoint_id"], mail.as_str());
        assert_eq!(
            event["data"]["reason"], "disabled through the API",
            "{event}"
        );
        assert!(event["data"]["disabled_at"].is_string(), "{event}");
        assert_signed(&disabled[1], secret);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_delivery_out_of_retries_publishes_one_failing_and_one_exhausted_event() {
    // Three attempts (the tests' schedule); `failing` after the second.
    let app = spawn_with(|cfg| cfg.failing_after = Some("2".into())).await;
    let t = app.create_tenant("failing").await;
    let down = Receiver::start(500).await;
    let ops = Receiver::start(200).await;
    let operator = Receiver::start(200).await;
    let mail = app
        .create_endpoint(
            &t.key,
            json!({"url": down.url("/"), "event_types": ["opened"]}),
        )
        .await;
    app.create_endpoint(
        &t.key,
        json!({"url": ops.url("/ops"), "event_types": [FAILING, EXHAUSTED]}),
    )
    .await;
    operator_endpoint(&app, json!({"url": operator.url("/operator")})).await;

    let id = app
        .publish(&t.key, json!({"type": "opened", "payload": {"n": 2}}))
        .await;
    ops.wait_for(2, WAIT).await;
    operator.wait_for(2, WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(down.count(), 3, "the schedule's three attempts");

    for receiver in [&ops, &operator] {
        assert_eq!(receiver.count(), 2, "one failing and one exhausted event");
        let failing = of_type(receiver, FAILING);
        assert_eq!(failing.len(), 1);
        let data = &body_of(&failing[0])["data"];
        assert_eq!(data["attempts"], 2);
        assert_eq!(data["last_status"], 500);
        let exhausted = of_type(receiver, EXHAUSTED);
        assert_eq!(exhausted.len(), 1);
        let data = &body_of(&exhausted[0])["data"];
        assert_eq!(data["message_id"], id.as_str());
        assert_eq!(data["endpoint_id"], mail.as_str());
        assert_eq!(data["event_type"], "opened");
        assert_eq!(data["attempts"], 3);
        assert_eq!(data["last_status"], 500);
    }
    app.stop().await;
}

#[tokio::test]
async fn failing_operational_deliveries_publish_nothing_about_themselves() {
    let app = spawn_with(|cfg| cfg.failing_after = Some("off".into())).await;
    let t = app.create_tenant("loops").await;
    let down = Receiver::start(500).await;
    // One operational endpoint is gone (disabled by its first operational delivery), the
    // other fails every attempt.
    let gone = Receiver::start(410).await;
    let failing = Receiver::start(500).await;
    let operator = Receiver::start(200).await;
    app.create_endpoint(
        &t.key,
        json!({"url": down.url("/"), "event_types": ["clicked"]}),
    )
    .await;
    let gone_ops = app
        .create_endpoint(
            &t.key,
            json!({"url": gone.url("/gone"), "event_types": [EXHAUSTED, DISABLED]}),
        )
        .await;
    app.create_endpoint(
        &t.key,
        json!({"url": failing.url("/failing"), "event_types": [EXHAUSTED]}),
    )
    .await;
    operator_endpoint(&app, json!({"url": operator.url("/operator")})).await;

    app.publish(&t.key, json!({"type": "clicked", "payload": {}}))
        .await;
    operator.wait_for(2, WAIT).await;
    failing.wait_for(3, WAIT).await;
    tokio::time::sleep(QUIET * 2).await;

    // The mail delivery's exhaustion, and the disabling of the gone endpoint: nothing
    // about the operational deliveries that failed.
    assert_eq!(operator.count(), 2);
    assert_eq!(of_type(&operator, EXHAUSTED).len(), 1);
    let disabled = of_type(&operator, DISABLED);
    assert_eq!(disabled.len(), 1);
    assert_eq!(
        body_of(&disabled[0])["data"]["endpoint_id"],
        gone_ops.as_str()
    );
    assert_eq!(gone.count(), 1, "a disabled endpoint hears nothing more");
    assert_eq!(
        failing.count(),
        3,
        "its own attempts, and no event about them"
    );
    let (_, log) = app
        .get(&format!("/v1/messages?type={EXHAUSTED}"), &t.key)
        .await;
    assert_eq!(log["data"].as_array().unwrap().len(), 1, "{log}");
    app.stop().await;
}

#[tokio::test]
async fn the_hookline_prefix_is_reserved() {
    let app = spawn_app().await;
    let t = app.create_tenant("prefix").await;
    let (status, body) = app
        .post(
            "/v1/event-types",
            OPERATOR_KEY,
            json!({"name": "hookline.custom", "description": "", "sample": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "reserved_event_type");
    let (status, _) = app.get("/v1/event-types/hookline.custom", &t.key).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");

    let (status, body) = app
        .post(
            "/v1/events",
            &t.key,
            json!({"type": DISABLED, "payload": {"forged": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "reserved_event_type");
    let (_, log) = app.get("/v1/messages", &t.key).await;
    assert_eq!(
        log["data"].as_array().unwrap().len(),
        0,
        "nothing was queued"
    );

    // Hookline's own types are in the catalog, to subscribe to.
    let (status, def) = app
        .get(&format!("/v1/event-types/{EXHAUSTED}"), &t.key)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(def["provider"], "hookline");
    app.stop().await;
}

#[tokio::test]
async fn operator_endpoints_have_the_shape_of_a_tenants_and_only_the_operator_reaches_them() {
    let app = spawn_app().await;
    let t = app.create_tenant("ops").await;
    let receiver = Receiver::start(200).await;
    let body = json!({"url": receiver.url("/ops"), "description": "pager"});

    let (status, refused) = app
        .post("/v1/operator/endpoints", &t.key, body.clone())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["error"]["code"], "forbidden");
    let (status, _) = app.get("/v1/operator/endpoints", &t.key).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let resp = app
        .client
        .post(format!("{}/v1/operator/endpoints", app.base))
        .bearer_auth(OPERATOR_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["description"], "pager");
    assert!(created.get("secret").is_none() && created.get("key").is_none());

    for i in 0..2 {
        operator_endpoint(&app, json!({"url": receiver.url(&format!("/more{i}"))})).await;
    }
    let (status, page) = app
        .get("/v1/operator/endpoints?limit=2", OPERATOR_KEY)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["data"][0]["id"], id.as_str(), "oldest first");
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, rest) = app
        .get(
            &format!("/v1/operator/endpoints?limit=2&cursor={cursor}"),
            OPERATOR_KEY,
        )
        .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());

    // A tenant neither sees it among its endpoints nor by id.
    let (status, _) = app.get(&format!("/v1/endpoints/{id}"), &t.key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, mine) = app.get("/v1/endpoints", &t.key).await;
    assert_eq!(mine["data"].as_array().unwrap().len(), 0);

    let patch = |if_match: &str| {
        app.client
            .patch(format!("{}/v1/operator/endpoints/{id}", app.base))
            .bearer_auth(OPERATOR_KEY)
            .header("if-match", if_match)
            .json(&json!({"event_types": [DISABLED]}))
            .send()
    };
    let resp = patch(&etag).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let changed: Value = resp.json().await.unwrap();
    assert_eq!(changed["event_types"], json!([DISABLED]));
    let resp = patch(&etag).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::PRECONDITION_FAILED,
        "a stale ETag"
    );

    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/operator/endpoints/{id}"),
            Some(&t.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/operator/endpoints/{id}"),
            Some(OPERATOR_KEY),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .get(&format!("/v1/operator/endpoints/{id}"), OPERATOR_KEY)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}
