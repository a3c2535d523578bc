//! Extra headers and receiver authentication, end to end on loopback: each kind arrives as
//! configured, the OAuth2 token is fetched once and again after a 401, credentials are
//! write-only, and bad headers or credentials are refused by name with nothing stored.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{all_settled, spawn_app, spawn_with, TestApp};
use crate::receiver::Receiver;

/// An OAuth2 token endpoint on loopback: records each request and hands out `tok-1`,
/// `tok-2`, … valid for an hour.
/// Each token request: its headers and body.
type Calls = Arc<Mutex<Vec<(HeaderMap, String)>>>;

#[derive(Clone, Default)]
pub struct TokenStub {
    calls: Calls,
    pub url: String,
}

impl TokenStub {
    pub async fn start() -> TokenStub {
        let mut stub = TokenStub::default();
        let app = Router::new()
            .route("/token", post(issue))
            .with_state(stub.calls.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        stub.url = format!("http://{}/token", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        stub
    }

    pub fn calls(&self) -> Vec<(HeaderMap, String)> {
        self.calls.lock().unwrap().clone()
    }
}

async fn issue(State(calls): State<Calls>, headers: HeaderMap, body: Bytes) -> Json<Value> {
    let mut calls = calls.lock().unwrap();
    calls.push((headers, String::from_utf8_lossy(&body).into_owned()));
    Json(json!({
        "access_token": format!("tok-{}", calls.len()),
        "token_type": "Bearer",
        "expires_in": 3600,
    }))
}

fn path_of(r: &crate::receiver::Received) -> String {
    r.headers
        .get("x-path")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn settle(app: &TestApp, key: &str, id: &str) -> Value {
    let m = app
        .wait_message(key, id, Duration::from_secs(30), all_settled)
        .await;
    for d in m["deliveries"].as_array().unwrap() {
        assert_eq!(d["status"], "succeeded", "{m}");
    }
    m
}

#[tokio::test]
async fn custom_headers_and_each_auth_kind_arrive_exactly_as_configured() {
    let app = spawn_app().await;
    let t = app.create_tenant("auth-kinds").await;
    let receiver = Receiver::start(200).await;
    let stub = TokenStub::start().await;
    let endpoints = [
        json!({"headers": {"X-Path": "plain", "X-Tenant": "acme", "Authorization": "Token own"}}),
        json!({"headers": {"x-path": "basic"},
               "auth": {"type": "basic", "username": "hookline", "password": "pa:ss wörd"}}),
        json!({"headers": {"x-path": "bearer"},
               "auth": {"type": "bearer", "token": "bearer-token-123"}}),
        json!({"headers": {"x-path": "oauth2"},
               "auth": {"type": "oauth2_client_credentials", "token_url": stub.url,
                        "client_id": "client id", "client_secret": "s&cret=1", "scope": "hooks:write"}}),
    ];
    for mut body in endpoints {
        body["url"] = json!(receiver.url("/hook"));
        app.create_endpoint(&t.key, body).await;
    }
    let id = app
        .publish(&t.key, json!({"type": "delivered", "payload": {"n": 1}}))
        .await;
    settle(&app, &t.key, &id).await;
    let got = receiver.received();
    assert_eq!(got.len(), 4);
    let by = |path: &str| {
        got.iter()
            .find(|r| path_of(r) == path)
            .unwrap_or_else(|| panic!("no request for {path}"))
            .clone()
    };
    let plain = by("plain");
    assert_eq!(plain.header("x-tenant"), "acme");
    assert_eq!(plain.header("authorization"), "Token own");
    assert_eq!(plain.header("webhook-id"), id);
    assert_eq!(plain.header("content-type"), "application/json");
    assert_eq!(
        by("basic").header("authorization"),
        format!("Basic {}", STANDARD.encode("hookline:pa:ss wörd"))
    );
    assert_eq!(
        by("bearer").header("authorization"),
        "Bearer bearer-token-123"
    );
    assert_eq!(by("oauth2").header("authorization"), "Bearer tok-1");
    for r in &got {
        // The signature headers are Hookline's whatever the endpoint adds.
        assert!(r.header("webhook-signature").starts_with("v1,"));
    }

    // The token request: client credentials grant with the scope, the client in Basic,
    // each part form-encoded first (RFC 6749 §2.3.1).
    let calls = stub.calls();
    assert_eq!(calls.len(), 1);
    let (headers, body) = &calls[0];
    assert_eq!(body, "grant_type=client_credentials&scope=hooks%3Awrite");
    assert_eq!(
        headers["authorization"],
        format!("Basic {}", STANDARD.encode("client+id:s%26cret%3D1"))
    );
    assert_eq!(headers["content-type"], "application/x-www-form-urlencoded");
    app.stop().await;
}

#[tokio::test]
async fn the_oauth2_token_is_fetched_once_reused_and_fetched_again_after_a_401() {
    let app = spawn_app().await;
    let t = app.create_tenant("oauth2").await;
    let receiver = Receiver::start(200).await;
    let stub = TokenStub::start().await;
    app.create_endpoint(
        &t.key,
        json!({"url": receiver.url("/hook"),
               "auth": {"type": "oauth2_client_credentials", "token_url": stub.url,
                        "client_id": "c", "client_secret": "oauth-secret-xyz"}}),
    )
    .await;
    // Many deliveries at once: one token fetch between them.
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(
            app.publish(&t.key, json!({"type": "delivered", "payload": {"n": n}}))
                .await,
        );
    }
    for id in &ids {
        settle(&app, &t.key, id).await;
    }
    assert_eq!(stub.calls().len(), 1, "the token is fetched once");
    let got = receiver.received();
    assert_eq!(got.len(), 20);
    assert!(got
        .iter()
        .all(|r| r.header("authorization") == "Bearer tok-1"));
    assert_eq!(stub.calls()[0].1, "grant_type=client_credentials");

    // The receiver refuses the token once: a new one is fetched and the request sent
    // again within the same attempt.
    receiver.script(&[401]);
    let id = app
        .publish(
            &t.key,
            json!({"type": "delivered", "payload": {"n": "after"}}),
        )
        .await;
    let m = settle(&app, &t.key, &id).await;
    assert_eq!(m["deliveries"][0]["attempts"], 1, "{m}");
    assert_eq!(stub.calls().len(), 2, "fetched again after the 401");
    let got = receiver.received();
    assert_eq!(got.len(), 22);
    assert_eq!(got[20].header("authorization"), "Bearer tok-1");
    assert_eq!(got[21].header("authorization"), "Bearer tok-2");

    // And the new token is kept.
    let id = app
        .publish(
            &t.key,
            json!({"type": "delivered", "payload": {"n": "last"}}),
        )
        .await;
    settle(&app, &t.key, &id).await;
    assert_eq!(stub.calls().len(), 2);
    assert_eq!(
        receiver.received()[22].header("authorization"),
        "Bearer tok-2"
    );
    app.stop().await;
}

#[tokio::test]
async fn credentials_are_write_only_replaceable_and_removable() {
    let app = spawn_app().await;
    let t = app.create_tenant("write-only").await;
    let receiver = Receiver::start(200).await;
    let secrets = ["basic-password-Q1", "bearer-token-Q2", "client-secret-Q3"];
    let mut answers: Vec<Value> = Vec::new();
    let (status, created) = app
        .post(
            "/v1/endpoints",
            &t.key,
            json!({"url": receiver.url("/a"), "headers": {"X-Path": "a"},
                   "auth": {"type": "basic", "username": "user-a", "password": secrets[0]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["auth"],
        json!({"type": "basic", "username": "user-a"})
    );
    assert_eq!(created["headers"], json!({"x-path": "a"}));
    let id = created["id"].as_str().unwrap().to_string();
    answers.push(created);
    let path = format!("/v1/endpoints/{id}");

    let (status, bearer) = app
        .call(
            Method::PATCH,
            &path,
            Some(&t.key),
            Some(json!({"auth": {"type": "bearer", "token": secrets[1]}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{bearer}");
    assert_eq!(bearer["auth"], json!({"type": "bearer"}));
    assert_eq!(bearer["headers"], json!({"x-path": "a"}), "headers kept");
    answers.push(bearer);
    let published = app
        .publish(&t.key, json!({"type": "delivered", "payload": {}}))
        .await;
    settle(&app, &t.key, &published).await;
    assert_eq!(
        receiver.received()[0].header("authorization"),
        format!("Bearer {}", secrets[1]),
        "the replaced credentials are used"
    );

    let (status, oauth) = app
        .call(
            Method::PATCH,
            &path,
            Some(&t.key),
            Some(json!({"auth": {"type": "oauth2_client_credentials",
                                 "token_url": "https://id.example.com/token",
                                 "client_id": "client-a", "client_secret": secrets[2]}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{oauth}");
    assert_eq!(
        oauth["auth"],
        json!({"type": "oauth2_client_credentials",
               "token_url": "https://id.example.com/token", "client_id": "client-a"})
    );
    answers.push(oauth);
    answers.push(app.get(&path, &t.key).await.1);
    answers.push(app.get("/v1/endpoints", &t.key).await.1);
    for answer in &answers {
        let text = answer.to_string();
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    // Removed: requests carry no Authorization, and headers can go too.
    let (status, removed) = app
        .call(
            Method::PATCH,
            &path,
            Some(&t.key),
            Some(json!({"auth": null, "headers": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(removed["auth"], Value::Null);
    assert_eq!(removed["headers"], json!({}));
    let published = app
        .publish(&t.key, json!({"type": "delivered", "payload": {}}))
        .await;
    settle(&app, &t.key, &published).await;
    let last = receiver.received().pop().unwrap();
    assert_eq!(last.header("authorization"), "");
    assert_eq!(last.header("x-path"), "");
    app.stop().await;
}

#[tokio::test]
async fn reserved_headers_and_malformed_auth_are_422_naming_the_field_and_store_nothing() {
    let app = spawn_app().await;
    let t = app.create_tenant("refusals").await;
    let url = "http://127.0.0.1:9/hook";
    let basic = json!({"type": "basic", "username": "u", "password": "p"});
    let cases = [
        (
            json!({"headers": {"webhook-signature": "v1,x"}}),
            "invalid_headers",
            "headers.webhook-signature",
        ),
        (
            json!({"headers": {"Webhook-Id": "x"}}),
            "invalid_headers",
            "headers.Webhook-Id",
        ),
        (
            json!({"headers": {"webhook-timestamp": "1"}}),
            "invalid_headers",
            "headers.webhook-timestamp",
        ),
        (
            json!({"headers": {"Content-Type": "text/plain"}}),
            "invalid_headers",
            "headers.Content-Type",
        ),
        (
            json!({"headers": {"content-length": "1"}}),
            "invalid_headers",
            "headers.content-length",
        ),
        (
            json!({"headers": {"Host": "x"}}),
            "invalid_headers",
            "headers.Host",
        ),
        (
            json!({"headers": {"connection": "close"}}),
            "invalid_headers",
            "headers.connection",
        ),
        (
            json!({"headers": {"transfer-encoding": "chunked"}}),
            "invalid_headers",
            "headers.transfer-encoding",
        ),
        (
            json!({"headers": {"proxy-authorization": "x"}}),
            "invalid_headers",
            "headers.proxy-authorization",
        ),
        (
            json!({"headers": {"Authorization": "x"}, "auth": basic}),
            "invalid_headers",
            "headers.Authorization",
        ),
        (
            json!({"headers": {"bad name": "x"}}),
            "invalid_headers",
            "headers.bad name",
        ),
        (
            json!({"headers": {"x-a": "line\nbreak"}}),
            "invalid_headers",
            "headers.x-a",
        ),
        (json!({"headers": ["x-a"]}), "invalid_headers", "headers"),
        (
            json!({"auth": {"type": "digest"}}),
            "invalid_auth",
            "auth.type",
        ),
        (
            json!({"auth": {"type": "basic", "username": "u"}}),
            "invalid_auth",
            "auth.password",
        ),
        (
            json!({"auth": {"type": "bearer"}}),
            "invalid_auth",
            "auth.token",
        ),
        (
            json!({"auth": {"type": "bearer", "token": "t", "extra": 1}}),
            "invalid_auth",
            "auth.extra",
        ),
        (
            json!({"auth": {"type": "oauth2_client_credentials", "token_url": "http://10.1.2.3/token",
                         "client_id": "c", "client_secret": "s"}}),
            "invalid_auth",
            "auth.token_url",
        ),
        (
            json!({"auth": {"type": "oauth2_client_credentials", "token_url": "ftp://127.0.0.1/token",
                         "client_id": "c", "client_secret": "s"}}),
            "invalid_auth",
            "auth.token_url",
        ),
        (
            json!({"auth": {"type": "oauth2_client_credentials", "token_url": "http://127.0.0.1/token",
                         "client_secret": "s"}}),
            "invalid_auth",
            "auth.client_id",
        ),
    ];
    for (extra, code, field) in &cases {
        let mut body = extra.clone();
        body["url"] = json!(url);
        let (status, answer) = app.post("/v1/endpoints", &t.key, body).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{extra}: {answer}"
        );
        assert_eq!(answer["error"]["code"], *code, "{extra}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{field}:")),
            "{extra}: {message}"
        );
    }
    let (_, list) = app.get("/v1/endpoints", &t.key).await;
    assert_eq!(list["data"], json!([]), "nothing stored: {list}");

    // PATCH: the same refusals, and the endpoint is left as it was; `authorization` is
    // refused once the endpoint has auth, whichever of the two the PATCH sets.
    let with_header = app
        .create_endpoint(
            &t.key,
            json!({"url": url, "headers": {"authorization": "Token x"}}),
        )
        .await;
    let with_auth = app
        .create_endpoint(&t.key, json!({"url": url, "auth": basic}))
        .await;
    let (_, before) = app.get("/v1/endpoints", &t.key).await;
    for (id, patch, field) in [
        (
            &with_header,
            json!({"auth": basic}),
            "headers.authorization",
        ),
        (
            &with_auth,
            json!({"headers": {"Authorization": "Token y"}}),
            "headers.authorization",
        ),
        (
            &with_auth,
            json!({"headers": {"upgrade": "h2c"}}),
            "headers.upgrade",
        ),
        (
            &with_auth,
            json!({"auth": {"type": "basic", "username": "u"}}),
            "auth.password",
        ),
    ] {
        let (status, answer) = app
            .call(
                Method::PATCH,
                &format!("/v1/endpoints/{id}"),
                Some(&t.key),
                Some(patch.clone()),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{patch}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{field}:")),
            "{patch}: {message}"
        );
    }
    let (_, after) = app.get("/v1/endpoints", &t.key).await;
    assert_eq!(before, after, "a refused PATCH changes nothing");
    app.stop().await;
}

#[tokio::test]
async fn local_mode_uses_the_given_credentials_key_or_keeps_a_generated_one() {
    let app = spawn_with(|cfg| {
        cfg.credentials_key = Some(STANDARD.encode([7u8; 32]));
    })
    .await;
    assert!(
        !app.dir.path().join("hookline.db.credentials-key").exists(),
        "a configured key is not replaced by a generated one"
    );
    let t = app.create_tenant("keyed").await;
    let receiver = Receiver::start(200).await;
    app.create_endpoint(
        &t.key,
        json!({"url": receiver.url("/k"), "auth": {"type": "bearer", "token": "keyed-token"}}),
    )
    .await;
    let id = app
        .publish(&t.key, json!({"type": "delivered", "payload": {}}))
        .await;
    settle(&app, &t.key, &id).await;
    assert_eq!(
        receiver.received()[0].header("authorization"),
        "Bearer keyed-token"
    );
    app.stop().await;

    let generated = spawn_app().await;
    let key_file = generated.dir.path().join("hookline.db.credentials-key");
    let text = std::fs::read_to_string(&key_file).expect("a key is generated and kept");
    assert_eq!(STANDARD.decode(text.trim()).unwrap().len(), 32);
    generated.stop().await;
}

/// A portal session of the tenant: the session cookie, from a magic link.
async fn portal_cookie(app: &TestApp, key: &str) -> String {
    let (status, link) = app.post("/v1/portal/sessions", key, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let url = link["url"].as_str().unwrap();
    let path = &url[url.find("/portal/").unwrap()..];
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .unwrap();
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("hookline_portal="))
        .map(|c| c.split(';').next().unwrap().to_string())
        .expect("a session cookie")
}

async fn portal_page(app: &TestApp, cookie: &str, path: &str) -> String {
    let resp = app
        .client
        .get(format!("{}{path}", app.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.unwrap()
}

#[tokio::test]
async fn the_portal_sets_replaces_keeps_and_removes_credentials_and_never_shows_them() {
    let app = spawn_app().await;
    let t = app.create_tenant("portal-auth").await;
    let id = app
        .create_endpoint(
            &t.key,
            json!({"url": "http://127.0.0.1:9/hook", "headers": {"X-Tenant": "acme"},
                   "auth": {"type": "oauth2_client_credentials",
                            "token_url": "http://127.0.0.1:9/token",
                            "client_id": "portal-client", "client_secret": "portal-secret-one"}}),
        )
        .await;
    let cookie = portal_cookie(&app, &t.key).await;
    let page_path = format!("/portal/endpoints/{id}");
    let page = portal_page(&app, &cookie, &page_path).await;
    assert!(page.contains("OAuth2 client portal-client"), "{page}");
    assert!(page.contains("x-tenant: acme"));
    let csrf = {
        let at = page.find(r#"name="_csrf" value=""#).expect("a form token") + 20;
        page[at..at + page[at..].find('"').unwrap()].to_string()
    };
    let submit = |fields: Vec<(&'static str, String)>| {
        let (app, cookie, csrf, page_path) = (&app, &cookie, &csrf, &page_path);
        async move {
            let mut form = vec![
                ("_csrf", csrf.clone()),
                ("action", "update".to_string()),
                ("url", "http://127.0.0.1:9/hook".to_string()),
                ("description", String::new()),
                ("format", "raw".to_string()),
                ("headers", "X-Tenant: acme\nX-Extra: 1".to_string()),
            ];
            form.extend(fields);
            let resp = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap()
                .post(format!("{}{page_path}", app.base))
                .header("cookie", cookie)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(&form)
                        .finish(),
                )
                .send()
                .await
                .unwrap();
            let status = resp.status();
            (status, resp.text().await.unwrap())
        }
    };
    let api_path = format!("/v1/endpoints/{id}");
    let endpoint = || async { app.get(&api_path, &t.key).await.1 };

    // Replaced by basic credentials typed into the form.
    let (status, _) = submit(vec![
        ("auth_type", "basic".into()),
        ("auth_username", "portal-user".into()),
        ("auth_password", "portal-secret-two".into()),
    ])
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let stored = endpoint().await;
    assert_eq!(
        stored["auth"],
        json!({"type": "basic", "username": "portal-user"})
    );
    assert_eq!(
        stored["headers"],
        json!({"x-tenant": "acme", "x-extra": "1"})
    );

    // A missing password is named next to the field; nothing changes.
    let (status, refused) = submit(vec![("auth_type", "bearer".into())]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.contains("auth.token: required"), "{refused}");
    assert_eq!(endpoint().await["auth"], stored["auth"]);

    // Kept as they are, then removed.
    let (status, _) = submit(vec![("auth_type", "keep".into())]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(endpoint().await["auth"], stored["auth"]);
    let page = portal_page(&app, &cookie, &page_path).await;
    let list = portal_page(&app, &cookie, "/portal/endpoints").await;
    for text in [&page, &list, &refused] {
        for secret in ["portal-secret-one", "portal-secret-two"] {
            assert!(!text.contains(secret), "{secret} shown");
        }
    }
    assert!(page.contains("basic, user portal-user"));
    let (status, _) = submit(vec![("auth_type", String::new())]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(endpoint().await["auth"], Value::Null);
    app.stop().await;
}
