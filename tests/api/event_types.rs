//! Event types the operator adds: listed after the built-in ones, subscribable, publishable
//! and delivered like them; only the operator adds them, once per name.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{all_settled, spawn_app, OPERATOR_KEY};
use crate::receiver::Receiver;

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn an_added_type_is_listed_subscribed_to_published_and_delivered() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let wants_it = Receiver::start(200).await;
    let wants_delivered = Receiver::start(200).await;

    // Unknown until added, for endpoints and for publishing alike.
    let (status, err) = app
        .post(
            "/v1/endpoints",
            &t.key,
            json!({"url": wants_it.url("/"), "event_types": ["acme.parcel shipped"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["code"], "unknown_event_type");
    let (status, err) = app
        .post(
            "/v1/events",
            &t.key,
            json!({"type": "acme.parcel shipped", "payload": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["code"], "unknown_event_type");

    let (status, created) = app
        .post(
            "/v1/event-types",
            OPERATOR_KEY,
            json!({"name": "acme.parcel shipped", "description": "A parcel left the depot.",
                   "provider": "acme", "sample": {"parcel": "P-1", "at": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created,
        json!({"name": "acme.parcel shipped", "provider": "acme",
               "description": "A parcel left the depot.", "sample": {"parcel": "P-1", "at": 1}})
    );
    let (status, defaulted) = app
        .post(
            "/v1/event-types",
            OPERATOR_KEY,
            json!({"name": "acme.another", "description": "", "sample": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{defaulted}");
    assert_eq!(defaulted["provider"], "custom");

    // Listed after the built-ins, by name.
    let (status, list) = app.get("/v1/event-types", &t.key).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[0], "accepted", "the built-ins come first");
    assert_eq!(
        names[names.len() - 2..],
        ["acme.another", "acme.parcel shipped"]
    );
    assert_eq!(list["data"][names.len() - 1], created);

    let ep = app
        .create_endpoint(
            &t.key,
            json!({"url": wants_it.url("/"), "event_types": ["acme.parcel shipped", "delivered"]}),
        )
        .await;
    let other = app
        .create_endpoint(
            &t.key,
            json!({"url": wants_delivered.url("/"), "event_types": ["delivered"]}),
        )
        .await;
    let (status, patched) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/endpoints/{other}"),
            Some(&t.key),
            Some(json!({"event_types": ["delivered", "acme.another"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");

    let payload: Value = json!({"parcel": "P-9"});
    let id = app
        .publish(
            &t.key,
            json!({"type": "acme.parcel shipped", "payload": payload}),
        )
        .await;
    let message = app.wait_message(&t.key, &id, WAIT, all_settled).await;
    assert_eq!(message["type"], "acme.parcel shipped");
    assert_eq!(message["deliveries"][0]["endpoint_id"], ep.as_str());
    assert_eq!(message["deliveries"][0]["status"], "succeeded");
    let got = wants_it.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("webhook-id"), id);
    assert_eq!(
        serde_json::from_slice::<Value>(&got[0].body).unwrap(),
        payload
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(wants_delivered.count(), 0);
    app.stop().await;
}

#[tokio::test]
async fn only_the_operator_adds_types_once_each_with_an_object_sample() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let good = json!({"name": "acme.new", "description": "d", "sample": {"a": 1}});

    let (status, err) = app.post("/v1/event-types", &t.key, good.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(err["error"]["code"], "forbidden");

    let (status, _) = app
        .post("/v1/event-types", OPERATOR_KEY, good.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut same_name = good.clone();
    same_name["description"] = json!("another");
    for (body, what) in [
        (same_name, "an added name"),
        (
            json!({"name": "delivered", "description": "d", "sample": {}}),
            "a built-in name",
        ),
    ] {
        let (status, err) = app.post("/v1/event-types", OPERATOR_KEY, body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{what}: {err}");
        assert_eq!(err["error"]["code"], "event_type_exists");
    }

    let bad = [
        (
            json!({"name": "x", "description": "d", "sample": [1]}),
            "invalid_sample",
        ),
        (
            json!({"name": "x", "description": "d", "sample": "text"}),
            "invalid_sample",
        ),
        (
            json!({"name": "x", "description": "d", "sample": null}),
            "invalid_sample",
        ),
        (
            json!({"name": " x", "description": "d", "sample": {}}),
            "invalid_name",
        ),
        (
            json!({"name": "", "description": "d", "sample": {}}),
            "invalid_name",
        ),
        (
            json!({"name": "x", "description": "d", "provider": "", "sample": {}}),
            "invalid_provider",
        ),
    ];
    for (body, code) in bad {
        let (status, err) = app
            .post("/v1/event-types", OPERATOR_KEY, body.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert_eq!(err["error"]["code"], code, "{body}");
    }

    // The first version stands; nothing refused was added.
    let (_, list) = app.get("/v1/event-types", &t.key).await;
    let added: Vec<&Value> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["name"] == "acme.new" || d["name"] == "x")
        .collect();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["description"], "d");
    app.stop().await;
}
