//! Payload filters: several endpoints with several filters receive exactly the messages a
//! reference evaluation written here says, with no delivery record for the others; a
//! filter is shown as saved, changed and removed by PATCH; a bad one is a 422 naming the
//! node at fault, and nothing is stored.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{all_settled, spawn_app, TestApp};
use crate::receiver::Receiver;

/// The `n` of each payload a receiver got.
fn received_ns(receiver: &Receiver) -> Vec<u64> {
    let mut ns: Vec<u64> = receiver
        .received()
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            body["n"].as_u64().unwrap()
        })
        .collect();
    ns.sort_unstable();
    ns
}

fn payloads() -> Vec<Value> {
    let base = [
        json!({"amount": 250, "customer": {"tier": "gold", "email": "a@example.com"},
               "items": [{"sku": "STD-1", "qty": 1}]}),
        json!({"amount": 99.99, "customer": {"tier": "silver"},
               "items": [{"sku": "STD-2", "qty": 3}, {"sku": "VIP-7", "qty": 1}]}),
        json!({"amount": 100, "customer": {"tier": "platinum", "email": null}, "test": true,
               "items": []}),
        json!({"amount": "1000", "customer": {"email": "c@example.com"},
               "items": [{"sku": "VIP-1", "qty": 5}]}),
        json!({"customer": {"tier": "bronze", "email": "d@example.com"}, "test": false,
               "items": [{"sku": "STD-3", "qty": 0}]}),
        json!({"amount": 5000.5, "customer": "anonymous", "items": {"sku": "VIP-2"}}),
        json!({"amount": -3, "customer": {"tier": ["gold"]}, "items": [{"qty": 1.5}]}),
        json!({}),
    ];
    base.into_iter()
        .enumerate()
        .map(|(n, mut p)| {
            p["n"] = json!(n);
            p
        })
        .collect()
}

type Reference = fn(&Value) -> bool;

/// Each endpoint's filter and the same condition written out by hand, apart from the
/// service's code.
fn cases() -> Vec<(Option<Value>, Reference)> {
    fn tier(p: &Value) -> Vec<&Value> {
        match &p["customer"]["tier"] {
            Value::Array(items) => items.iter().collect(),
            Value::Null => Vec::new(),
            other => vec![other],
        }
    }
    fn items(p: &Value) -> Vec<&Value> {
        match &p["items"] {
            Value::Array(items) => items.iter().collect(),
            Value::Object(_) => vec![&p["items"]],
            _ => Vec::new(),
        }
    }
    vec![
        (None, |_| true),
        (Some(json!({"path": "amount", "gte": 100})), |p| {
            p["amount"].as_f64().is_some_and(|a| a >= 100.0)
        }),
        (
            Some(json!({"or": [
                {"path": "customer.tier", "in": ["gold", "platinum"]},
                {"path": "items.sku", "prefix": "VIP-"}
            ]})),
            |p| {
                tier(p).iter().any(|t| *t == "gold" || *t == "platinum")
                    || items(p)
                        .iter()
                        .any(|i| i["sku"].as_str().is_some_and(|s| s.starts_with("VIP-")))
            },
        ),
        (
            Some(json!({"and": [
                {"path": "customer.email", "exists": true},
                {"not": {"path": "test", "equals": true}}
            ]})),
            |p| {
                p["customer"]
                    .as_object()
                    .is_some_and(|c| c.contains_key("email"))
                    && p["test"] != json!(true)
            },
        ),
        (Some(json!({"path": "items.0.qty", "lt": 2})), |p| {
            p["items"][0]["qty"].as_f64().is_some_and(|q| q < 2.0)
        }),
    ]
}

async fn publish_all(app: &TestApp, key: &str, payloads: &[Value]) -> Vec<String> {
    let events: Vec<Value> = payloads
        .iter()
        .map(|p| json!({"type": "delivered", "payload": p}))
        .collect();
    let (status, body) = app
        .post("/v1/events", key, json!({ "events": events }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ids: Vec<String> = body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), payloads.len());
    ids
}

/// The endpoints each message has a delivery record for, once all are settled.
async fn targets_of(app: &TestApp, key: &str, ids: &[String]) -> Vec<BTreeSet<String>> {
    let mut out = Vec::new();
    for id in ids {
        let message = app
            .wait_message(key, id, Duration::from_secs(20), all_settled)
            .await;
        let deliveries = message["deliveries"].as_array().unwrap();
        assert!(
            deliveries.iter().all(|d| d["status"] == "succeeded"),
            "{message}"
        );
        out.push(
            deliveries
                .iter()
                .map(|d| d["endpoint_id"].as_str().unwrap().to_string())
                .collect(),
        );
    }
    out
}

#[tokio::test]
async fn several_filters_fan_out_exactly_as_the_reference_evaluation_says() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Filters").await;
    let payloads = payloads();
    let cases = cases();
    let mut endpoints = Vec::new();
    for (filter, reference) in &cases {
        let receiver = Receiver::start(200).await;
        let mut body = json!({"url": receiver.url("/in")});
        if let Some(filter) = filter {
            body["filter"] = filter.clone();
        }
        let (status, created) = app.post("/v1/endpoints", &tenant.key, body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(
            created["filter"],
            filter.clone().unwrap_or(Value::Null),
            "the view shows the filter as saved"
        );
        let id = created["id"].as_str().unwrap().to_string();
        let expected: Vec<u64> = payloads
            .iter()
            .filter(|p| reference(p))
            .map(|p| p["n"].as_u64().unwrap())
            .collect();
        endpoints.push((id, receiver, expected));
    }
    for (_, _, expected) in &endpoints[1..] {
        assert!(
            !expected.is_empty() && expected.len() < payloads.len(),
            "each filter lets some payloads through and stops others: {expected:?}"
        );
    }

    let ids = publish_all(&app, &tenant.key, &payloads).await;
    let targets = targets_of(&app, &tenant.key, &ids).await;
    for (n, targets) in targets.iter().enumerate() {
        let expected: BTreeSet<String> = endpoints
            .iter()
            .filter(|(_, _, ns)| ns.contains(&(n as u64)))
            .map(|(id, _, _)| id.clone())
            .collect();
        assert_eq!(
            targets, &expected,
            "message {n} has delivery records for exactly its matching endpoints"
        );
    }
    // Anything sent to a non-matching endpoint would have arrived by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, (_, receiver, expected)) in endpoints.iter().enumerate() {
        assert_eq!(
            &received_ns(receiver),
            expected,
            "endpoint {i} ({:?}) got exactly the matching payloads",
            cases[i].0
        );
    }

    // A changed filter applies to the next messages; `null` removes it.
    let (id, receiver, _) = &endpoints[1];
    let path = format!("/v1/endpoints/{id}");
    let changed = json!({"path": "customer.tier", "equals": "silver"});
    let (status, body) = app
        .call(
            Method::PATCH,
            &path,
            Some(&tenant.key),
            Some(json!({"filter": changed})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["filter"], changed);
    let before = receiver.count();
    let again = publish_all(&app, &tenant.key, &payloads).await;
    targets_of(&app, &tenant.key, &again).await;
    let got: Vec<u64> = received_ns(receiver);
    assert_eq!(
        receiver.count() - before,
        1,
        "only the silver customer: {got:?}"
    );

    let (status, body) = app
        .call(
            Method::PATCH,
            &path,
            Some(&tenant.key),
            Some(json!({"filter": null, "description": "all"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["filter"], Value::Null, "null removes the filter");
    let before = receiver.count();
    let last = publish_all(&app, &tenant.key, &payloads).await;
    targets_of(&app, &tenant.key, &last).await;
    assert_eq!(receiver.count() - before, payloads.len(), "every payload");
    app.stop().await;
}

#[tokio::test]
async fn bad_filters_get_422_naming_the_fault_and_store_nothing() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Bad filters").await;
    let url = "http://127.0.0.1:9/hook";
    let mut deep = json!({"path": "a", "exists": true});
    for _ in 0..8 {
        deep = json!({"not": deep});
    }
    let cases: BTreeMap<&str, (Value, &str)> = BTreeMap::from([
        (
            "not an object",
            (json!("amount > 5"), "filter at /: expected an object"),
        ),
        (
            "unknown operator",
            (
                json!({"and": [{"path": "a", "exists": true}, {"path": "b", "like": "x%"}]}),
                "filter at /and/1/like: unknown operator \"like\"",
            ),
        ),
        (
            "no operator",
            (
                json!({"or": [{"path": "a"}]}),
                "filter at /or/0: a condition needs one operator",
            ),
        ),
        (
            "number expected",
            (
                json!({"path": "amount", "gt": "100"}),
                "filter at /gt: expected a number",
            ),
        ),
        (
            "bad path",
            (
                json!({"not": {"path": "a..b", "exists": true}}),
                "filter at /not/path: \"a..b\" is not a dotted path",
            ),
        ),
        (
            "empty in",
            (
                json!({"path": "a", "in": []}),
                "filter at /in: expected 1 to 100 values",
            ),
        ),
        (
            "too deep",
            (
                deep,
                "filter at /not/not/not/not/not/not/not/not: filters nest at most 8 deep",
            ),
        ),
    ]);
    for (name, (filter, message)) in &cases {
        let (status, body) = app
            .post(
                "/v1/endpoints",
                &tenant.key,
                json!({"url": url, "filter": filter}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {body}");
        assert_eq!(body["error"]["code"], "invalid_filter", "{name}: {body}");
        let text = body["error"]["message"].as_str().unwrap();
        assert!(text.starts_with(message), "{name}: {text}");
    }
    let (_, list) = app.get("/v1/endpoints", &tenant.key).await;
    assert_eq!(list["data"], json!([]), "a refused endpoint is not stored");

    let kept = json!({"path": "a", "equals": 1});
    let (status, created) = app
        .post(
            "/v1/endpoints",
            &tenant.key,
            json!({"url": url, "filter": kept}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let path = format!("/v1/endpoints/{}", created["id"].as_str().unwrap());
    let (status, body) = app
        .call(
            Method::PATCH,
            &path,
            Some(&tenant.key),
            Some(json!({"filter": {"path": "a", "equals": [1]}, "description": "changed"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_filter", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("filter at /equals:"),
        "{body}"
    );
    let (_, shown) = app.get(&path, &tenant.key).await;
    assert_eq!(shown["filter"], kept, "a refused change stores nothing");
    assert_eq!(shown["description"], "");
    let (status, patched) = app
        .call(
            Method::PATCH,
            &path,
            Some(&tenant.key),
            Some(json!({"description": "kept"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["filter"], kept, "an absent filter is left as it is");
    app.stop().await;
}
