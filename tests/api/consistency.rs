//! Edits that race: a change made while another request is in flight is never undone by
//! it (a deleted endpoint stays deleted, a disabled one stays disabled), two changes of
//! different fields both take effect, two of the same field end in a clear 409, and
//! `If-Match` with a stale `ETag` is 412 with nothing stored. Also the limit on a tenant's
//! endpoints, and Mailgun's limit of 3 URLs under concurrent creates.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_with, TestApp};
use crate::receiver::Receiver;

/// What a request needs of a running app, to move into a task.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn of(app: &TestApp) -> Api {
        Api {
            client: app.client.clone(),
            base: app.base.clone(),
        }
    }
}

/// A request with an optional `If-Match`; the answer's status, body and `ETag`.
pub async fn send(
    app: &Api,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> (StatusCode, Value, Option<String>) {
    let mut req = app
        .client
        .request(method, format!("{}{}", app.base, path))
        .bearer_auth(key);
    if let Some(tag) = if_match {
        req = req.header("if-match", tag);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let etag = resp
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (status, value, etag)
}

/// An endpoint to a receiver that holds every request until released, and a PATCH with
/// `verify` in flight against it (its test event held by the receiver).
async fn patch_held_in_verify(
    app: &TestApp,
    key: &str,
    patch: Value,
) -> (
    Receiver,
    String,
    tokio::task::JoinHandle<(StatusCode, Value, Option<String>)>,
) {
    let receiver = Receiver::start(200).await;
    let id = app
        .create_endpoint(key, json!({"url": receiver.url("/hook")}))
        .await;
    receiver.hold();
    let path = format!("/v1/endpoints/{id}");
    let held = {
        let (api, key) = (Api::of(app), key.to_string());
        let path = path.clone();
        tokio::spawn(async move { send(&api, Method::PATCH, &path, &key, Some(patch), None).await })
    };
    receiver.wait_for(1, Duration::from_secs(10)).await;
    (receiver, id, held)
}

#[tokio::test]
async fn a_delete_during_a_verifying_patch_leaves_the_endpoint_deleted() {
    let app = spawn_app().await;
    let api = Api::of(&app);
    let t = app.create_tenant("acme").await;
    let (receiver, id, held) = patch_held_in_verify(
        &app,
        &t.key,
        json!({"verify": true, "description": "checked"}),
    )
    .await;
    let path = format!("/v1/endpoints/{id}");
    let (status, body, _) = send(&api, Method::DELETE, &path, &t.key, None, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    receiver.release();
    let (status, body, _) = held.await.unwrap();
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the PATCH must not bring it back: {body}"
    );
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = app.get(&path, &t.key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = app.get("/v1/endpoints", &t.key).await;
    assert_eq!(list["data"], json!([]), "not listed again");
}

#[tokio::test]
async fn a_disable_during_a_verifying_patch_of_another_field_keeps_both() {
    let app = spawn_app().await;
    let api = Api::of(&app);
    let t = app.create_tenant("acme").await;
    let (receiver, id, held) = patch_held_in_verify(
        &app,
        &t.key,
        json!({"verify": true, "description": "checked"}),
    )
    .await;
    let path = format!("/v1/endpoints/{id}");
    let (status, body, _) = send(
        &api,
        Method::PATCH,
        &path,
        &t.key,
        Some(json!({"status": "disabled"})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    receiver.release();
    let (status, body, _) = held.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["status"], &body["description"]),
        (&json!("disabled"), &json!("checked")),
        "the verified change is made on the disabled endpoint"
    );
    let (_, stored) = app.get(&path, &t.key).await;
    assert_eq!(stored["status"], "disabled", "the endpoint stays disabled");
    assert_eq!(stored["description"], "checked");
}

#[tokio::test]
async fn a_verifying_patch_that_would_undo_a_concurrent_change_of_its_field_is_refused() {
    let app = spawn_app().await;
    let api = Api::of(&app);
    let t = app.create_tenant("acme").await;
    let (receiver, id, held) =
        patch_held_in_verify(&app, &t.key, json!({"verify": true, "status": "active"})).await;
    let path = format!("/v1/endpoints/{id}");
    let (status, _, _) = send(
        &api,
        Method::PATCH,
        &path,
        &t.key,
        Some(json!({"status": "disabled"})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    receiver.release();
    let (status, body, _) = held.await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "concurrent_update");
    let (_, stored) = app.get(&path, &t.key).await;
    assert_eq!(
        stored["status"], "disabled",
        "the refused change stored nothing"
    );
}

#[tokio::test]
async fn if_match_with_a_stale_etag_is_412_and_stores_nothing() {
    let app = spawn_app().await;
    let api = Api::of(&app);
    let t = app.create_tenant("acme").await;
    let id = app
        .create_endpoint(&t.key, json!({"url": "http://127.0.0.1:9/a"}))
        .await;
    let path = format!("/v1/endpoints/{id}");
    let (status, _, first) = send(&api, Method::GET, &path, &t.key, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let first = first.expect("GET carries an ETag");

    let (status, body, second) = send(
        &api,
        Method::PATCH,
        &path,
        &t.key,
        Some(json!({"description": "one"})),
        Some(&first),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = second.expect("PATCH carries the new ETag");
    assert_ne!(first, second, "a change gives another ETag");

    let (status, body, _) = send(
        &api,
        Method::PATCH,
        &path,
        &t.key,
        Some(json!({"description": "two"})),
        Some(&first),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    assert_eq!(body["error"]["code"], "precondition_failed");
    let (_, stored, now) = send(&api, Method::GET, &path, &t.key, None, None).await;
    assert_eq!(
        stored["description"], "one",
        "the refused change stored nothing"
    );
    assert_eq!(now.as_deref(), Some(second.as_str()));

    // A secret rotation moves the revision too.
    let (status, _, rotated) = send(
        &api,
        Method::POST,
        &format!("{path}/secret/rotate"),
        &t.key,
        None,
        Some(&second),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let rotated = rotated.expect("a rotation carries the new ETag");

    let (status, body, _) = send(&api, Method::DELETE, &path, &t.key, None, Some(&second)).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    assert_eq!(
        app.get(&path, &t.key).await.0,
        StatusCode::OK,
        "not deleted"
    );
    let (status, body, _) =
        send(&api, Method::DELETE, &path, &t.key, None, Some("W/\"x\", ")).await;
    assert_eq!(
        status,
        StatusCode::PRECONDITION_FAILED,
        "weak tags never match: {body}"
    );
    let (status, body, _) = send(
        &api,
        Method::DELETE,
        &path,
        &t.key,
        None,
        Some("not-quoted"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_if_match");
    let (status, _, _) = send(&api, Method::DELETE, &path, &t.key, None, Some(&rotated)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn domains_and_keys_take_if_match_on_delete() {
    let app = spawn_app().await;
    let api = Api::of(&app);
    let t = app.create_tenant("acme").await;
    let (status, _, made) = send(
        &api,
        Method::POST,
        "/v1/domains",
        &t.key,
        Some(json!({"name": "mg.acme.example"})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let made = made.expect("a domain's ETag");
    let path = "/v1/domains/mg.acme.example";
    let (status, _, got) = send(&api, Method::GET, path, &t.key, None, None).await;
    assert_eq!(
        (status, got.as_deref()),
        (StatusCode::OK, Some(made.as_str()))
    );
    let (status, _, _) = send(&api, Method::DELETE, path, &t.key, None, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Made again under the same name: the old ETag names the domain that was deleted.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (status, _) = app
        .post("/v1/domains", &t.key, json!({"name": "mg.acme.example"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body, _) = send(&api, Method::DELETE, path, &t.key, None, Some(&made)).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    assert_eq!(app.get(path, &t.key).await.0, StatusCode::OK, "kept");

    let (status, created) = app
        .post(&format!("/v1/tenants/{}/api-keys", t.id), &t.key, json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let key_path = format!(
        "/v1/tenants/{}/api-keys/{}",
        t.id,
        created["id"].as_str().unwrap()
    );
    let (status, view, live) = send(&api, Method::GET, &key_path, &t.key, None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        view.get("api_key").is_none() && view.get("hash").is_none(),
        "{view}"
    );
    let live = live.expect("a key's ETag");
    let (status, _, _) = send(&api, Method::DELETE, &key_path, &t.key, None, Some(&live)).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "revoked at the live revision"
    );
    let (status, body, _) = send(&api, Method::DELETE, &key_path, &t.key, None, Some(&live)).await;
    assert_eq!(
        status,
        StatusCode::PRECONDITION_FAILED,
        "revoked since: {body}"
    );
    let (_, view, _) = send(&api, Method::GET, &key_path, &t.key, None, None).await;
    assert!(view["revoked_at"].is_string());
}

#[tokio::test]
async fn a_tenant_stops_at_its_endpoint_limit() {
    let app = spawn_with(|cfg| cfg.max_endpoints = Some("3".into())).await;
    let t = app.create_tenant("acme").await;
    for i in 0..3 {
        app.create_endpoint(&t.key, json!({"url": format!("http://127.0.0.1:9/{i}")}))
            .await;
    }
    let (status, body) = app
        .post(
            "/v1/endpoints",
            &t.key,
            json!({"url": "http://127.0.0.1:9/x"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "too_many_endpoints");
    let (_, list) = app.get("/v1/endpoints", &t.key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3, "nothing stored");
    let other = app.create_tenant("other").await;
    app.create_endpoint(&other.key, json!({"url": "http://127.0.0.1:9/o"}))
        .await;
}

#[tokio::test]
async fn concurrent_mailgun_creates_never_pass_three_urls() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    let (status, _) = app
        .post("/v1/domains", &t.key, json!({"name": "mg.acme.example"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (client, base, key) = (app.client.clone(), app.base.clone(), t.key.clone());
        creates.spawn(async move {
            let form = format!(
                "id=delivered&url=https%3A%2F%2Fhooks.example.com%2F{i}%2Fa\
                 &url=https%3A%2F%2Fhooks.example.com%2F{i}%2Fb\
                 &url=https%3A%2F%2Fhooks.example.com%2F{i}%2Fc"
            );
            client
                .post(format!("{base}/v3/domains/mg.acme.example/webhooks"))
                .basic_auth("api", Some(key))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    let statuses = creates.join_all().await;
    let created = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(created, 1, "one create wins: {statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::BAD_REQUEST),
        "{statuses:?}"
    );
    let (_, list) = app.get("/v1/endpoints", &t.key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3, "{list}");
    let resp = app
        .client
        .get(format!(
            "{}/v3/domains/mg.acme.example/webhooks/delivered",
            app.base
        ))
        .basic_auth("api", Some(&t.key))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("etag").is_some());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["webhook"]["urls"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn mailgun_webhooks_take_if_match_on_put_and_delete() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    let (status, _) = app
        .post("/v1/domains", &t.key, json!({"name": "mg.acme.example"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let hook = format!("{}/v3/domains/mg.acme.example/webhooks", app.base);
    let form = |urls: &[&str]| {
        urls.iter()
            .map(|u| format!("url={}", u.replace(':', "%3A").replace('/', "%2F")))
            .collect::<Vec<_>>()
            .join("&")
    };
    let mailgun = |method: Method, url: String, body: Option<String>, tag: Option<&str>| {
        let mut req = app
            .client
            .request(method, url)
            .basic_auth("api", Some(&t.key));
        if let Some(body) = body {
            req = req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
        }
        if let Some(tag) = tag {
            req = req.header("if-match", tag);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let etag = resp
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap().to_string());
            let body: Value = resp.json().await.unwrap();
            (status, body, etag)
        }
    };
    let (status, body, created) = mailgun(
        Method::POST,
        hook.clone(),
        Some(format!(
            "id=delivered&{}",
            form(&["https://a.example.com/1"])
        )),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let created = created.expect("a create carries the webhook's ETag");
    let (_, _, got) = mailgun(Method::GET, format!("{hook}/delivered"), None, None).await;
    assert_eq!(got.as_deref(), Some(created.as_str()));

    let (status, _, updated) = mailgun(
        Method::PUT,
        format!("{hook}/delivered"),
        Some(form(&["https://a.example.com/2"])),
        Some(&created),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let updated = updated.expect("an update carries the new ETag");
    assert_ne!(updated, created);
    let (status, body, _) = mailgun(
        Method::PUT,
        format!("{hook}/delivered"),
        Some(form(&["https://a.example.com/3"])),
        Some(&created),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    assert!(body["message"].is_string(), "Mailgun's error shape: {body}");
    let (status, _, _) = mailgun(
        Method::DELETE,
        format!("{hook}/delivered"),
        None,
        Some(&created),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (_, body, _) = mailgun(Method::GET, format!("{hook}/delivered"), None, None).await;
    assert_eq!(body["webhook"]["urls"], json!(["https://a.example.com/2"]));
    let (status, _, _) = mailgun(
        Method::DELETE,
        format!("{hook}/delivered"),
        None,
        Some(&updated),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}
