//! Sub-accounts and owners: a tenant creates sub-accounts (one level deep) and publishes
//! events for them with `"owner"`; such an event is the sub-account's (its endpoints, its
//! log, its domains) and records who published it. Any other owner is not found.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{all_settled, spawn_app, Tenant, TestApp, OPERATOR_KEY};
use crate::receiver::Receiver;

const WAIT: Duration = Duration::from_secs(15);

async fn create_sub_account(app: &TestApp, parent: &Tenant, name: &str) -> (Tenant, Value) {
    let (status, body) = app
        .post("/v1/sub-accounts", &parent.key, json!({ "name": name }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sub = Tenant {
        id: body["id"].as_str().unwrap().to_string(),
        key: body["api_key"].as_str().unwrap().to_string(),
    };
    (sub, body)
}

#[tokio::test]
async fn sub_accounts_are_created_listed_and_one_level_deep() {
    let app = spawn_app().await;
    let parent = app.create_tenant("parent").await;
    let other = app.create_tenant("other").await;

    let (sub, body) = create_sub_account(&app, &parent, "  Child One ").await;
    assert_eq!(body["name"], "Child One");
    assert_eq!(body["parent"], parent.id.as_str());
    assert!(body["created_at"].is_string());
    assert!(sub.key.starts_with("hk_"));
    let (second, _) = create_sub_account(&app, &parent, "Child Two").await;

    // The listing holds both, oldest first, without keys.
    let (status, list) = app.get("/v1/sub-accounts", &parent.key).await;
    assert_eq!(status, StatusCode::OK);
    let data = list["data"].as_array().unwrap();
    let ids: Vec<_> = data.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![sub.id.as_str(), second.id.as_str()]);
    assert!(data.iter().all(|t| t["parent"] == parent.id.as_str()));
    assert!(!list.to_string().contains("hk_"), "{list}");
    for t in [&other, &sub] {
        let (_, list) = app.get("/v1/sub-accounts", &t.key).await;
        assert_eq!(list["data"], json!([]));
    }

    // The sub-account's key works, and its record names its parent; the parent's none.
    let (status, me) = app.get(&format!("/v1/tenants/{}", sub.id), &sub.key).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["parent"], parent.id.as_str());
    let (_, me) = app
        .get(&format!("/v1/tenants/{}", parent.id), &parent.key)
        .await;
    assert_eq!(me["parent"], Value::Null);

    // One level only.
    let (status, err) = app
        .post("/v1/sub-accounts", &sub.key, json!({"name": "grandchild"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(err["error"]["code"], "forbidden");

    // Tenant routes: the operator key is refused.
    let (status, _) = app
        .post("/v1/sub-accounts", OPERATOR_KEY, json!({"name": "x"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.get("/v1/sub-accounts", OPERATOR_KEY).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, err) = app
        .post("/v1/sub-accounts", &parent.key, json!({"name": " "}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["code"], "invalid_name");
    let (_, list) = app.get("/v1/sub-accounts", &parent.key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn an_owned_event_goes_to_the_owner_and_shows_its_publisher() {
    let app = spawn_app().await;
    let parent = app.create_tenant("parent").await;
    let (sub, _) = create_sub_account(&app, &parent, "child").await;
    let parent_rx = Receiver::start(200).await;
    let sub_rx = Receiver::start(200).await;
    app.create_endpoint(&parent.key, json!({"url": parent_rx.url("/")}))
        .await;
    app.create_endpoint(&sub.key, json!({"url": sub_rx.url("/")}))
        .await;
    app.post(
        "/v1/domains",
        &sub.key,
        json!({"name": "child.example.com"}),
    )
    .await;

    let id = app
        .publish(
            &parent.key,
            json!({"type": "delivered", "owner": sub.id, "domain": "child.example.com",
                   "idempotency_key": "k1", "payload": {"to": "sub"}}),
        )
        .await;
    let message = app.wait_message(&sub.key, &id, WAIT, all_settled).await;
    assert_eq!(message["published_by"], parent.id.as_str());
    assert_eq!(message["deliveries"].as_array().unwrap().len(), 1);
    let got = sub_rx.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("webhook-id"), id);

    // It is the sub-account's message: in its log, not in the parent's.
    let (_, log) = app.get("/v1/messages", &sub.key).await;
    assert_eq!(log["data"][0]["id"], id.as_str());
    assert_eq!(log["data"][0]["published_by"], parent.id.as_str());
    let (status, _) = app.get(&format!("/v1/messages/{id}"), &parent.key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, log) = app.get("/v1/messages", &parent.key).await;
    assert_eq!(log["data"], json!([]));

    // The domain must be the owner's: the parent has not registered it.
    let (status, err) = app
        .post(
            "/v1/events",
            &parent.key,
            json!({"type": "delivered", "domain": "child.example.com", "payload": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["code"], "unknown_domain");

    // Idempotency keys are the publisher's: the parent's repeat is the same message, the
    // sub-account's own "k1" is another.
    let again = app
        .publish(
            &parent.key,
            json!({"type": "delivered", "owner": sub.id, "idempotency_key": "k1",
                   "payload": {"to": "sub"}}),
        )
        .await;
    assert_eq!(again, id);
    let own = app
        .publish(
            &sub.key,
            json!({"type": "delivered", "idempotency_key": "k1", "payload": {}}),
        )
        .await;
    assert_ne!(own, id);
    let own_message = app.wait_message(&sub.key, &own, WAIT, all_settled).await;
    assert_eq!(own_message["published_by"], Value::Null);

    // Naming oneself as owner is publishing as usual.
    let self_owned = app
        .publish(
            &parent.key,
            json!({"type": "delivered", "owner": parent.id, "payload": {}}),
        )
        .await;
    let m = app
        .wait_message(&parent.key, &self_owned, WAIT, all_settled)
        .await;
    assert_eq!(m["published_by"], Value::Null);
    parent_rx.wait_for(1, WAIT).await;

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sub_rx.count(),
        2,
        "the owned event and the sub-account's own"
    );
    assert_eq!(parent_rx.count(), 1, "only the parent's own event");
    app.stop().await;
}

#[tokio::test]
async fn owners_outside_the_family_are_not_found_and_nothing_is_queued() {
    let app = spawn_app().await;
    let parent = app.create_tenant("parent").await;
    let (sub, _) = create_sub_account(&app, &parent, "child").await;
    let unrelated = app.create_tenant("unrelated").await;
    let (unrelated_sub, _) = create_sub_account(&app, &unrelated, "their child").await;
    let receivers = [
        Receiver::start(200).await,
        Receiver::start(200).await,
        Receiver::start(200).await,
        Receiver::start(200).await,
    ];
    let everyone = [&parent, &sub, &unrelated, &unrelated_sub];
    for (t, rx) in everyone.iter().zip(&receivers) {
        app.create_endpoint(&t.key, json!({"url": rx.url("/")}))
            .await;
    }

    let refused = [
        (&parent, json!(unrelated.id)),
        (&parent, json!(unrelated_sub.id)),
        (&sub, json!(parent.id)),
        (&parent, json!("tn_01J00000000000000000000000")),
        (&parent, json!("not-an-id")),
    ];
    for (publisher, owner) in refused {
        let (status, err) = app
            .post(
                "/v1/events",
                &publisher.key,
                json!({"type": "delivered", "owner": owner, "payload": {}}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{owner}: {err}");
        assert_eq!(err["error"]["code"], "not_found");
        assert_eq!(err["error"]["message"], "owner not found");
    }
    // One bad owner in a batch refuses the whole batch.
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/events",
            Some(&parent.key),
            Some(json!({"events": [
                {"type": "delivered", "owner": sub.id, "payload": {}},
                {"type": "delivered", "owner": unrelated.id, "payload": {}},
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    tokio::time::sleep(Duration::from_millis(500)).await;
    for (t, rx) in everyone.iter().zip(&receivers) {
        assert_eq!(rx.count(), 0);
        let (_, log) = app.get("/v1/messages", &t.key).await;
        assert_eq!(log["data"], json!([]));
    }
    app.stop().await;
}
