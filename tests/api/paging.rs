//! Every list pages with `limit` and `cursor`: no item twice, none left out, pages no
//! longer than asked, and no answer larger than a Lambda function may return.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_with, TestApp};

/// Follows `next_cursor` from the first page; every item's `key` field in order, and the
/// number of pages.
async fn every_page(
    app: &TestApp,
    key: &str,
    path: &str,
    limit: usize,
    id: &str,
) -> (Vec<String>, usize) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = format!("{path}{sep}limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={}", url_escape(c)));
        }
        let (status, body) = app.get(&url, key).await;
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
        let data = body["data"].as_array().expect("data");
        assert!(data.len() <= limit, "{url}: more than the limit");
        pages += 1;
        items.extend(data.iter().map(|v| v[id].as_str().unwrap().to_string()));
        match body["next_cursor"].as_str() {
            Some(next) => {
                assert!(!data.is_empty(), "{url}: an empty page with a cursor");
                cursor = Some(next.to_string());
            }
            None => return (items, pages),
        }
        assert!(pages < 10_000);
    }
}

/// Percent-encodes everything but unreserved characters.
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn unique(items: &[String]) -> bool {
    items.iter().collect::<BTreeSet<_>>().len() == items.len()
}

#[tokio::test]
async fn ten_at_a_time_through_500_endpoints_with_no_repeats_or_gaps() {
    let app = spawn_app().await;
    let t = app.create_tenant("big").await;
    let mut created = Vec::new();
    for i in 0..500 {
        created.push(
            app.create_endpoint(
                &t.key,
                json!({"url": format!("http://127.0.0.1:9/{i}"), "description": "x".repeat(200)}),
            )
            .await,
        );
    }
    let (listed, pages) = every_page(&app, &t.key, "/v1/endpoints", 10, "id").await;
    assert_eq!(pages, 50);
    assert!(unique(&listed), "no endpoint twice");
    let mut want = created.clone();
    want.sort();
    assert_eq!(
        listed, want,
        "every endpoint once, oldest (lowest id) first"
    );

    let (status, body) = app.get("/v1/endpoints", &t.key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"].as_array().unwrap().len(), 50, "50 by default");
    for bad in ["limit=0", "limit=251", "limit=ten", "other=1"] {
        let (status, body) = app.get(&format!("/v1/endpoints?{bad}"), &t.key).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query");
    }
}

#[tokio::test]
async fn domains_keys_sub_accounts_and_the_catalog_page() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    let mut domains = Vec::new();
    for i in 0..5 {
        let name = format!("d{i}.acme.example");
        let (status, _) = app.post("/v1/domains", &t.key, json!({"name": name})).await;
        assert_eq!(status, StatusCode::CREATED);
        domains.push(name);
    }
    let (listed, pages) = every_page(&app, &t.key, "/v1/domains", 2, "name").await;
    assert_eq!((listed, pages), (domains, 3));

    let mut keys = Vec::new();
    for _ in 0..4 {
        let (_, made) = app
            .post(&format!("/v1/tenants/{}/api-keys", t.id), &t.key, json!({}))
            .await;
        keys.push(made["id"].as_str().unwrap().to_string());
    }
    let (listed, _) = every_page(
        &app,
        &t.key,
        &format!("/v1/tenants/{}/api-keys", t.id),
        2,
        "id",
    )
    .await;
    assert_eq!(listed.len(), 5, "the first key and four more");
    assert!(unique(&listed) && keys.iter().all(|k| listed.contains(k)));

    let mut subs = Vec::new();
    for i in 0..3 {
        let (_, made) = app
            .post(
                "/v1/sub-accounts",
                &t.key,
                json!({"name": format!("sub {i}")}),
            )
            .await;
        subs.push(made["id"].as_str().unwrap().to_string());
    }
    let (listed, _) = every_page(&app, &t.key, "/v1/sub-accounts", 1, "id").await;
    subs.sort();
    assert_eq!(listed, subs);

    for name in ["zz.added", "aa.added"] {
        let (status, body) = app
            .post(
                "/v1/event-types",
                crate::helpers::OPERATOR_KEY,
                json!({"name": name, "description": "added", "sample": {"a": 1}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (all, _) = every_page(&app, &t.key, "/v1/event-types", 250, "name").await;
    let (paged, pages) = every_page(&app, &t.key, "/v1/event-types", 7, "name").await;
    assert_eq!(paged, all, "pages of 7 list the catalog as one page does");
    assert!(pages > 2 && unique(&paged));
    assert_eq!(
        &all[all.len() - 2..],
        ["aa.added", "zz.added"],
        "added types last, by name"
    );
    let (status, one) = app.get("/v1/event-types/aa.added", &t.key).await;
    assert_eq!((status, &one["name"]), (StatusCode::OK, &json!("aa.added")));
    let (status, _) = app.get("/v1/event-types/delivered", &t.key).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.get("/v1/event-types/no.such.type", &t.key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_page_of_large_messages_stops_short_of_the_size_limit() {
    let app = spawn_with(|_| {}).await;
    let t = app.create_tenant("acme").await;
    let filler = "m".repeat(200 * 1024);
    let mut published = Vec::new();
    for i in 0..14 {
        published.push(
            app.publish(
                &t.key,
                json!({"type": "delivered", "payload": {"n": i, "filler": filler}}),
            )
            .await,
        );
    }
    // The worker stores each message as it takes it from the queue.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = app.get("/v1/messages?limit=250", &t.key).await;
        let shown = body["data"].as_array().unwrap().len();
        if shown > 0 && body["next_cursor"].is_string() || shown == 14 {
            let (listed, pages) = every_page(&app, &t.key, "/v1/messages", 250, "id").await;
            if listed.len() == 14 {
                assert!(pages >= 2, "14 messages of 200 KiB do not fit one page");
                assert!(unique(&listed));
                let mut want = published.clone();
                want.sort();
                want.reverse();
                assert_eq!(listed, want, "newest first, each once");
                break;
            }
        }
        assert!(Instant::now() < deadline, "messages never stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = app
        .client
        .get(format!("{}/v1/messages?limit=250", app.base))
        .bearer_auth(&t.key)
        .send()
        .await
        .unwrap();
    let size = resp.bytes().await.unwrap().len();
    assert!(
        size <= 2 * 1024 * 1024 + 64 * 1024,
        "a page of {size} bytes"
    );
}

#[tokio::test]
async fn attempts_page_and_refuse_cursors_not_issued() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    let receiver = crate::receiver::Receiver::start(500).await;
    for i in 0..3 {
        app.create_endpoint(&t.key, json!({"url": receiver.url(&format!("/{i}"))}))
            .await;
    }
    let id = app
        .publish(&t.key, json!({"type": "delivered", "payload": {"a": 1}}))
        .await;
    // Three endpoints, three tries each on the tests' schedule.
    app.wait_message(
        &t.key,
        &id,
        Duration::from_secs(30),
        crate::helpers::all_settled,
    )
    .await;
    let path = format!("/v1/messages/{id}/attempts");
    let (all, _) = every_page(&app, &t.key, &path, 250, "id").await;
    assert_eq!(all.len(), 9);
    let (paged, pages) = every_page(&app, &t.key, &path, 2, "id").await;
    assert_eq!((paged, pages), (all, 5));
    let (status, body) = app
        .get(
            &format!("{path}?cursor=att_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
            &t.key,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_cursor");
}
