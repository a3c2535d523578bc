//! Test before save: an endpoint created or changed with `"verify": true` is saved only if
//! a test event gets a 2xx; otherwise 422 with what the receiver answered, and nothing is
//! stored. A saved endpoint can be tested at any time.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::spawn_app;
use crate::receiver::Receiver;

fn closed_port_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/")
}

#[tokio::test]
async fn a_passing_test_event_saves_the_endpoint() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::start(204).await;
    let (status, ep) = app
        .post(
            "/v1/endpoints",
            &t.key,
            json!({"url": receiver.url("/"), "event_types": ["clicked"], "verify": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ep}");
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("hookline-test"), "true");
    assert!(got[0].header("webhook-signature").starts_with("v1,"));
    let (_, types) = app.get("/v1/event-types", &t.key).await;
    let sample = types["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "clicked")
        .unwrap()["sample"]
        .clone();
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(
        body, sample,
        "the test event carries the type's sample payload"
    );
    let (_, list) = app.get("/v1/endpoints", &t.key).await;
    assert_eq!(list["data"][0]["id"], ep["id"]);
    app.stop().await;
}

#[tokio::test]
async fn a_failing_receiver_is_refused_with_its_answer_and_nothing_is_stored() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let failing = Receiver::start(500).await;
    let (status, body) = app
        .post(
            "/v1/endpoints",
            &t.key,
            json!({"url": failing.url("/"), "verify": true}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "endpoint_test_failed");
    assert_eq!(body["error"]["receiver"]["status"], 500);
    assert!(body["error"]["message"].as_str().unwrap().contains("500"));
    assert_eq!(failing.count(), 1);

    let (status, body) = app
        .post(
            "/v1/endpoints",
            &t.key,
            json!({"url": closed_port_url(), "verify": true}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["receiver"]["status"], Value::Null);
    assert_eq!(body["error"]["receiver"]["error"], "connect");

    let (_, list) = app.get("/v1/endpoints", &t.key).await;
    assert_eq!(list["data"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn a_change_that_fails_its_test_is_not_saved() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let good = Receiver::start(200).await;
    let bad = Receiver::start(410).await;
    let id = app
        .create_endpoint(&t.key, json!({"url": good.url("/")}))
        .await;
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/endpoints/{id}"),
            Some(&t.key),
            Some(json!({"url": bad.url("/"), "verify": true})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["receiver"]["status"], 410);
    assert_eq!(bad.count(), 1);
    let (_, ep) = app.get(&format!("/v1/endpoints/{id}"), &t.key).await;
    assert_eq!(ep["url"], good.url("/"));
    assert_eq!(ep["status"], "active");

    // Without verify the change is saved as before.
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/v1/endpoints/{id}"),
            Some(&t.key),
            Some(json!({"url": bad.url("/")})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bad.count(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_saved_endpoint_can_be_tested() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let receiver = Receiver::scripted(&[200], 503).await;
    let id = app
        .create_endpoint(&t.key, json!({"url": receiver.url("/")}))
        .await;
    let (status, first) = app
        .post(
            &format!("/v1/endpoints/{id}/test"),
            &t.key,
            json!({"event_type": "permanent_fail"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["ok"], true);
    assert_eq!(first["status"], 200);
    assert_eq!(first["event_type"], "permanent_fail");
    assert_eq!(
        receiver.received()[0].header("webhook-id"),
        first["webhook_id"].as_str().unwrap()
    );
    let (status, second) = app
        .post(&format!("/v1/endpoints/{id}/test"), &t.key, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["ok"], false);
    assert_eq!(second["status"], 503);
    let (status, body) = app
        .post(
            &format!("/v1/endpoints/{id}/test"),
            &t.key,
            json!({"event_type": "nope"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "unknown_event_type");
    // Test sends are not messages.
    let (_, messages) = app.get("/v1/messages", &t.key).await;
    assert_eq!(messages["data"], json!([]));
    app.stop().await;
}
