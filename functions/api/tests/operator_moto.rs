//! The api function's operator routes on SQS (moto): `GET /v1/dead-letters` lists the
//! dead-letter queue with each message's reason (`max_receives` for one the redrive policy
//! moved), tenant, time and body excerpt, only for the operator key; `POST
//! /v1/dead-letters/redrive` sends the chosen ones back to the events queue as they came;
//! and disabling an endpoint through the API, and enabling it again, queue
//! `hookline.endpoint.disabled` and `hookline.endpoint.enabled` for its tenant and for the
//! operator.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use hookline_core::aws::sqs::REASON_ATTRIBUTE;
use hookline_core::aws::testing::{moto_sdk_config, unique};
use hookline_core::aws::{create_queue_pair, create_table, DynamoStore, SqsDeadLetters, SqsQueue};
use hookline_core::config::CoreConfig;
use hookline_core::http::{with_fallbacks, AppState};
use hookline_core::keys::KeyHash;
use hookline_core::operational::{ENDPOINT_DISABLED, ENDPOINT_ENABLED, OPERATOR_TENANT};
use hookline_core::ports::SystemClock;
use hookline_core::urlpolicy::UrlPolicy;
use http::Method;
use serde_json::{json, Value};
use tower::ServiceExt;

const OPERATOR_KEY: &str = "hkop_dead-letter-operator-key";

struct Setup {
    app: axum::Router,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    dlq_url: String,
}

async fn setup() -> Setup {
    let sdk = moto_sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let table = unique("hookline-operator");
    create_table(&ddb, &table).await.unwrap();
    let (queue_url, dlq_url) = create_queue_pair(&sqs, &unique("hookline-operator"))
        .await
        .unwrap();
    let state = AppState {
        store: Arc::new(DynamoStore::new(ddb, table)),
        queue: Arc::new(SqsQueue::new(sqs.clone(), queue_url.clone())),
        clock: Arc::new(SystemClock),
        config: Arc::new(CoreConfig {
            url_policy: Arc::new(UrlPolicy {
                allow_http: true,
                allowed_networks: UrlPolicy::parse_networks("127.0.0.1/32").unwrap(),
            }),
            ..CoreConfig::default()
        }),
        operator_key: Some(KeyHash::of(OPERATOR_KEY)),
        sender: None,
        dead_letters: Some(Arc::new(SqsDeadLetters::new(
            sqs.clone(),
            dlq_url.clone(),
            queue_url.clone(),
        ))),
    };
    Setup {
        app: with_fallbacks(hookline_api::router(state)),
        sqs,
        queue_url,
        dlq_url,
    }
}

async fn call(
    app: &axum::Router,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, value)
}

/// The bodies of the next `want` messages of a queue (within a bound on failure).
async fn bodies(sqs: &aws_sdk_sqs::Client, url: &str, want: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < want {
        assert!(Instant::now() < deadline, "{} of {want} came", got.len());
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        got.extend(
            out.messages
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| m.body),
        );
    }
    got
}

#[tokio::test]
async fn dead_letters_are_listed_for_the_operator_and_redriven_to_the_events_queue() {
    let s = setup().await;
    let (status, tenant) = call(
        &s.app,
        Method::POST,
        "/v1/tenants",
        OPERATOR_KEY,
        Some(json!({"name": "dlq"})),
    )
    .await;
    assert_eq!(status, 201, "{tenant}");
    let (tenant_id, tenant_key) = (
        tenant["id"].as_str().unwrap().to_string(),
        tenant["api_key"].as_str().unwrap().to_string(),
    );

    // As the deliver function dead-letters: the body with its reason.
    let refused =
        json!({"tenant": tenant_id, "type": "invoice.paid", "payload": {"n": 1}}).to_string();
    s.sqs
        .send_message()
        .queue_url(&s.dlq_url)
        .message_body(&refused)
        .message_attributes(
            REASON_ATTRIBUTE,
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value("unknown event type \"invoice.paid\"; see GET /v1/event-types")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    // As the redrive policy moves one: no reason attached.
    s.sqs
        .send_message()
        .queue_url(&s.dlq_url)
        .message_body("{\"kind\": \"attempt\"}")
        .send()
        .await
        .unwrap();

    let (status, body) = call(&s.app, Method::GET, "/v1/dead-letters", &tenant_key, None).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(
        &s.app,
        Method::POST,
        "/v1/dead-letters/redrive",
        &tenant_key,
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");

    let (status, page) = call(&s.app, Method::GET, "/v1/dead-letters", OPERATOR_KEY, None).await;
    assert_eq!(status, 200, "{page}");
    let items = page["data"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    let unknown = items
        .iter()
        .find(|d| d["tenant_id"] == tenant_id.as_str())
        .expect("{page}");
    assert!(unknown["reason"]
        .as_str()
        .unwrap()
        .starts_with("unknown event type"));
    assert_eq!(unknown["body_excerpt"], refused.as_str());
    assert!(unknown["at"].as_str().unwrap().ends_with('Z'));
    let moved = items.iter().find(|d| d["id"] != unknown["id"]).unwrap();
    assert_eq!(moved["reason"], "max_receives");
    assert!(moved["tenant_id"].is_null());
    // The listing hid nothing: both are still there for the next one.
    let (_, again) = call(
        &s.app,
        Method::GET,
        "/v1/dead-letters?limit=1",
        OPERATOR_KEY,
        None,
    )
    .await;
    assert_eq!(again["data"].as_array().unwrap().len(), 1);
    assert!(again["next_cursor"].is_string());

    let (status, body) = call(
        &s.app,
        Method::POST,
        "/v1/event-types",
        OPERATOR_KEY,
        Some(json!({"name": "invoice.paid", "description": "", "sample": {}})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = unknown["id"].as_str().unwrap();
    let (status, body) = call(
        &s.app,
        Method::POST,
        "/v1/dead-letters/redrive",
        OPERATOR_KEY,
        Some(json!({"ids": [id]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["redriven"], json!([id]));
    assert_eq!(bodies(&s.sqs, &s.queue_url, 1).await, vec![refused]);
    let (_, left) = call(&s.app, Method::GET, "/v1/dead-letters", OPERATOR_KEY, None).await;
    let left = left["data"].as_array().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], moved["id"]);
}

#[tokio::test]
async fn disabling_and_enabling_through_the_api_queue_their_events_for_the_tenant_and_the_operator()
{
    let s = setup().await;
    let (_, tenant) = call(
        &s.app,
        Method::POST,
        "/v1/tenants",
        OPERATOR_KEY,
        Some(json!({"name": "on"})),
    )
    .await;
    let (tenant_id, key) = (
        tenant["id"].as_str().unwrap().to_string(),
        tenant["api_key"].as_str().unwrap().to_string(),
    );
    let (status, endpoint) = call(
        &s.app,
        Method::POST,
        "/v1/endpoints",
        &key,
        Some(json!({"url": "http://127.0.0.1:9/"})),
    )
    .await;
    assert_eq!(status, 201, "{endpoint}");
    let path = format!("/v1/endpoints/{}", endpoint["id"].as_str().unwrap());
    let (status, _) = call(
        &s.app,
        Method::PATCH,
        &path,
        &key,
        Some(json!({"status": "disabled"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &s.app,
        Method::PATCH,
        &path,
        &key,
        Some(json!({"status": "active"})),
    )
    .await;
    assert_eq!(status, 200);
    // Active already: no second event.
    let (status, _) = call(
        &s.app,
        Method::PATCH,
        &path,
        &key,
        Some(json!({"status": "active"})),
    )
    .await;
    assert_eq!(status, 200);

    // The disabling and the enabling, each for the tenant and the operator.
    let tasks: Vec<Value> = bodies(&s.sqs, &s.queue_url, 4)
        .await
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    let operator = OPERATOR_TENANT.to_string();
    for event_type in [ENDPOINT_DISABLED, ENDPOINT_ENABLED] {
        let of_type: Vec<&Value> = tasks.iter().filter(|t| t["type"] == event_type).collect();
        let mut owners: Vec<&str> = of_type
            .iter()
            .map(|t| t["tenant"].as_str().unwrap())
            .collect();
        owners.sort();
        let mut expected = vec![tenant_id.as_str(), operator.as_str()];
        expected.sort();
        assert_eq!(owners, expected, "{event_type}");
        for t in of_type {
            assert_eq!(t["payload"]["data"]["endpoint_id"], endpoint["id"]);
        }
    }
    let more = s
        .sqs
        .receive_message()
        .queue_url(&s.queue_url)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    assert!(
        more.messages.unwrap_or_default().is_empty(),
        "one event for one change"
    );
}
