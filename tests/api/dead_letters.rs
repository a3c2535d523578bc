//! Dead letters in local mode: a message written straight to the embedded queue that the
//! worker refuses shows in `GET /v1/dead-letters` with its reason and tenant, and a redrive
//! puts it back as a new arrival: delivered once its event type exists, dead-lettered again
//! with its reason otherwise.

use std::time::{Duration, Instant};

use hookline_core::ports::{Outgoing, Queue};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, OPERATOR_KEY};
use crate::receiver::Receiver;

const WAIT: Duration = Duration::from_secs(15);

/// Writes a producer's envelope straight to the running app's queue, as a producer on SQS
/// would.
async fn send_to_queue(app: &TestApp, body: Value) {
    let (_, queue) = hookline_core::embedded::open(&app.dir.path().join("hookline.db"))
        .expect("the data file opens beside the running app");
    queue
        .send(vec![Outgoing {
            body: body.to_string(),
            delay: Duration::ZERO,
        }])
        .await
        .expect("queued");
}

/// Polls the dead letters until there are `n`.
async fn wait_dead_letters(app: &TestApp, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, page) = app.get("/v1/dead-letters", OPERATOR_KEY).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["data"].as_array().unwrap().clone();
        if items.len() == n {
            return items;
        }
        assert!(Instant::now() < deadline, "dead letters: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_unknown_type_is_dead_lettered_and_delivered_after_its_type_is_added_and_a_redrive() {
    let app = spawn_app().await;
    let t = app.create_tenant("dlq").await;
    let receiver = Receiver::start(200).await;
    app.create_endpoint(&t.key, json!({"url": receiver.url("/all")}))
        .await;

    send_to_queue(
        &app,
        json!({"tenant": t.id, "type": "order.shipped", "payload": {"order": 7}}),
    )
    .await;
    let letters = wait_dead_letters(&app, 1).await;
    let letter = &letters[0];
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .contains("unknown event type"),
        "{letter}"
    );
    assert_eq!(letter["tenant_id"], t.id.as_str());
    assert!(letter["at"].is_string());
    assert!(letter["body_excerpt"]
        .as_str()
        .unwrap()
        .contains("order.shipped"));
    let id = letter["id"].as_str().unwrap().to_string();

    // Only the operator sees or redrives them.
    let (status, _) = app.get("/v1/dead-letters", &t.key).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .post("/v1/dead-letters/redrive", &t.key, json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app
        .post("/v1/dead-letters/redrive", OPERATOR_KEY, json!({"ids": []}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(wait_dead_letters(&app, 1).await.len(), 1, "nothing moved");

    let (status, body) = app
        .post(
            "/v1/event-types",
            OPERATOR_KEY,
            json!({"name": "order.shipped", "description": "shipped", "sample": {"order": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .post(
            "/v1/dead-letters/redrive",
            OPERATOR_KEY,
            json!({"ids": [id]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["redriven"], json!([id]));

    let got = receiver.wait_for(1, WAIT).await;
    let delivered: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(delivered, json!({"order": 7}));
    assert_eq!(wait_dead_letters(&app, 0).await.len(), 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 1, "delivered once");
    app.stop().await;
}

#[tokio::test]
async fn a_redriven_message_that_fails_again_goes_back_with_its_reason() {
    let app = spawn_app().await;
    let t = app.create_tenant("again").await;
    for n in 0..3 {
        send_to_queue(
            &app,
            json!({"tenant": t.id, "type": "order.lost", "payload": {"n": n}}),
        )
        .await;
    }
    let first = wait_dead_letters(&app, 3).await;
    // Cursor pages, oldest first.
    let (status, page) = app.get("/v1/dead-letters?limit=2", OPERATOR_KEY).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, rest) = app
        .get(
            &format!("/v1/dead-letters?limit=2&cursor={cursor}"),
            OPERATOR_KEY,
        )
        .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    assert_eq!(rest["data"][0]["id"], first[2]["id"]);
    let (status, body) = app
        .get("/v1/dead-letters?cursor=nonsense", OPERATOR_KEY)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_cursor");

    // All of them, with no body: the type is still unknown, so each comes back.
    let resp = app
        .client
        .post(format!("{}/v1/dead-letters/redrive", app.base))
        .bearer_auth(OPERATOR_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["redriven"].as_array().unwrap().len(), 3);
    let again = wait_dead_letters(&app, 3).await;
    for letter in &again {
        assert!(
            letter["reason"]
                .as_str()
                .unwrap()
                .contains("unknown event type"),
            "{letter}"
        );
        assert!(
            first.iter().all(|f| f["id"] != letter["id"]),
            "a new arrival, dead-lettered anew"
        );
    }
    app.stop().await;
}
