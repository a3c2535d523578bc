//! The Mailgun-compatible webhooks API (`/v3/domains/{domain}/webhooks`): every route with
//! multipart and urlencoded forms, aliases, the 3-URL limit, Basic auth, domains of other
//! tenants, Mailgun's response and error shapes, and the endpoints underneath as `/v1`
//! shows them and as delivery uses them.

use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{spawn_app, TestApp, OPERATOR_KEY};
use crate::receiver::Receiver;

const DOMAIN: &str = "mg.acme.example";

/// A request body as Mailgun's clients send it.
enum Form<'a> {
    None,
    Multipart(Vec<(&'a str, &'a str)>),
    Urlencoded(Vec<(&'a str, &'a str)>),
}

/// Credentials of a request.
enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Header(&'a str),
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

fn urlencode(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn send(app: &TestApp, method: Method, path: &str, auth: Auth<'_>, form: Form<'_>) -> Answer {
    let mut req = app.client.request(method, format!("{}{}", app.base, path));
    req = match auth {
        Auth::None => req,
        Auth::Basic(user, key) => req.basic_auth(user, Some(key)),
        Auth::Header(value) => req.header("authorization", value),
    };
    req = match form {
        Form::None => req,
        Form::Multipart(fields) => {
            let mut mp = reqwest::multipart::Form::new();
            for (k, v) in fields {
                mp = mp.text(k.to_string(), v.to_string());
            }
            req.multipart(mp)
        }
        Form::Urlencoded(fields) => req
            .header("content-type", "application/x-www-form-urlencoded")
            .body(urlencode(&fields)),
    };
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    Answer {
        status,
        headers,
        body,
    }
}

/// A call with a tenant key, as mailgun.js makes it.
async fn mg(app: &TestApp, key: &str, method: Method, path: &str, form: Form<'_>) -> Answer {
    send(app, method, path, Auth::Basic("api", key), form).await
}

fn hooks(domain: &str) -> String {
    format!("/v3/domains/{domain}/webhooks")
}

fn hook(domain: &str, name: &str) -> String {
    format!("/v3/domains/{domain}/webhooks/{name}")
}

/// The webhook test call's path.
fn test_path(domain: &str, name: &str) -> String {
    format!("/v3/domains/{domain}/webhooks/{name}/test")
}

/// Checks a Mailgun body's signature with `key`, as a Mailgun receiver does.
fn mailgun_signed_with(body: &Value, key: &str) -> bool {
    let sig = &body["signature"];
    let (ts, token) = (
        sig["timestamp"].as_str().unwrap(),
        sig["token"].as_str().unwrap(),
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{ts}{token}").as_bytes());
    sig["signature"].as_str().unwrap() == hex::encode(mac.finalize().into_bytes())
}

/// The signing secret of the endpoint `/v1` shows for this URL.
async fn secret_of(app: &TestApp, key: &str, url: &str) -> String {
    let (_, list) = app.get("/v1/endpoints", key).await;
    let ep = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == url)
        .unwrap_or_else(|| panic!("no endpoint for {url}: {list}"));
    let (_, secret) = app
        .get(
            &format!("/v1/endpoints/{}/secret", ep["id"].as_str().unwrap()),
            key,
        )
        .await;
    secret["key"].as_str().unwrap().to_string()
}

/// The catalog's sample payload of an event type.
async fn sample_of(app: &TestApp, key: &str, name: &str) -> Value {
    let (_, types) = app.get("/v1/event-types", key).await;
    types["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .map(|t| t["sample"].clone())
        .unwrap_or_else(|| panic!("{name} is not in the catalog"))
}

/// An error in Mailgun's shape, with Hookline's machine-readable code beside it.
fn assert_error(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    let message = a.body["message"].as_str().expect("a Mailgun message");
    assert!(!message.is_empty());
    assert_eq!(a.body["code"], code, "{}", a.body);
    assert!(
        a.body.get("error").is_none(),
        "mailgun.js would show an error object"
    );
}

/// The endpoints `/v1` shows for one webhook name, as (url, endpoint) pairs sorted by url.
async fn endpoints_of(app: &TestApp, key: &str, name: &str) -> Vec<(String, Value)> {
    let (status, list) = app.get("/v1/endpoints", key).await;
    assert_eq!(status, StatusCode::OK);
    let mut out: Vec<(String, Value)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_types"] == json!([name]))
        .map(|e| (e["url"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn tenant_with_domain(app: &TestApp, name: &str) -> String {
    let t = app.create_tenant(name).await;
    let (status, body) = app
        .post("/v1/domains", &t.key, json!({"name": DOMAIN}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    t.key
}

#[tokio::test]
async fn webhooks_are_created_listed_read_replaced_and_deleted() {
    let app = spawn_app().await;
    let key = tenant_with_domain(&app, "acme").await;
    let a = "https://hooks.acme.example/delivered";
    let (b, c, d) = (
        "https://hooks.acme.example/c1",
        "https://hooks.acme.example/c2",
        "https://hooks.acme.example/c3",
    );

    // Nothing yet.
    let r = mg(&app, &key, Method::GET, &hooks(DOMAIN), Form::None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"webhooks": {}}));

    // Create over multipart, then over urlencoded with an alias and a repeated url.
    let r = mg(
        &app,
        &key,
        Method::POST,
        &hooks(DOMAIN),
        Form::Multipart(vec![("id", "delivered"), ("url", a)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"message": "Webhook has been created", "webhook": {"urls": [a]}})
    );
    let r = mg(
        &app,
        &key,
        Method::POST,
        &hooks(DOMAIN),
        Form::Urlencoded(vec![("id", "click"), ("url", b), ("url", c)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"message": "Webhook has been created", "webhook": {"urls": [b, c]}})
    );

    // List (canonical names, only those with URLs) and get (by name and by alias).
    let r = mg(&app, &key, Method::GET, &hooks(DOMAIN), Form::None).await;
    assert_eq!(
        r.body,
        json!({"webhooks": {"delivered": {"urls": [a]}, "clicked": {"urls": [b, c]}}})
    );
    for name in ["clicked", "click"] {
        let r = mg(&app, &key, Method::GET, &hook(DOMAIN, name), Form::None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, json!({"webhook": {"urls": [b, c]}}));
    }
    // The domain name is matched as /v1 stores it.
    let r = mg(
        &app,
        &key,
        Method::GET,
        &hook("MG.Acme.Example", "deliver"),
        Form::None,
    )
    .await;
    assert_eq!(r.body, json!({"webhook": {"urls": [a]}}));

    // Underneath: one ordinary endpoint per URL.
    let clicked = endpoints_of(&app, &key, "clicked").await;
    assert_eq!(clicked.len(), 2);
    for (url, e) in &clicked {
        assert!(url == b || url == c);
        assert_eq!(e["domain"], DOMAIN);
        assert_eq!(e["format"], "mailgun");
        assert_eq!(e["status"], "active");
        assert_eq!(e["description"], "mailgun webhook clicked");
    }
    let kept_id = clicked[1].1["id"].clone(); // c
    assert_eq!(endpoints_of(&app, &key, "delivered").await.len(), 1);

    // Replace clicked's URLs over multipart: c stays (same endpoint), b goes, d comes.
    let r = mg(
        &app,
        &key,
        Method::PUT,
        &hook(DOMAIN, "clicked"),
        Form::Multipart(vec![("url", c), ("url", d)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"message": "Webhook has been updated", "webhook": {"urls": [c, d]}})
    );
    let clicked = endpoints_of(&app, &key, "clicked").await;
    let urls: Vec<&str> = clicked.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(urls, vec![c, d]);
    assert_eq!(
        clicked[0].1["id"], kept_id,
        "an unchanged URL keeps its endpoint"
    );

    // And over urlencoded, by alias.
    let r = mg(
        &app,
        &key,
        Method::PUT,
        &hook(DOMAIN, "click"),
        Form::Urlencoded(vec![("url", b)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["webhook"]["urls"], json!([b]));
    assert_eq!(endpoints_of(&app, &key, "clicked").await.len(), 1);

    // Delete returns the removed URLs; then the name is gone everywhere.
    let r = mg(
        &app,
        &key,
        Method::DELETE,
        &hook(DOMAIN, "delivered"),
        Form::None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"message": "Webhook has been deleted", "webhook": {"urls": [a]}})
    );
    assert!(endpoints_of(&app, &key, "delivered").await.is_empty());
    let r = mg(
        &app,
        &key,
        Method::GET,
        &hook(DOMAIN, "delivered"),
        Form::None,
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = mg(
        &app,
        &key,
        Method::DELETE,
        &hook(DOMAIN, "delivered"),
        Form::None,
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = mg(&app, &key, Method::GET, &hooks(DOMAIN), Form::None).await;
    assert_eq!(r.body, json!({"webhooks": {"clicked": {"urls": [b]}}}));

    // Deleting through /v1 removes it from the Mailgun view too.
    let id = endpoints_of(&app, &key, "clicked").await[0].1["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/endpoints/{id}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let r = mg(&app, &key, Method::GET, &hooks(DOMAIN), Form::None).await;
    assert_eq!(r.body, json!({"webhooks": {}}));
    app.stop().await;
}

#[tokio::test]
async fn every_alias_maps_to_its_canonical_name() {
    let app = spawn_app().await;
    let key = tenant_with_domain(&app, "acme").await;
    for (alias, name) in [
        ("open", "opened"),
        ("unsubscribe", "unsubscribed"),
        ("deliver", "delivered"),
        ("bounce", "permanent_fail"),
        ("spam", "complained"),
    ] {
        let url = format!("https://hooks.acme.example/{alias}");
        let r = mg(
            &app,
            &key,
            Method::POST,
            &hooks(DOMAIN),
            Form::Urlencoded(vec![("id", alias), ("url", &url)]),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{alias}: {}", r.body);
        let r = mg(&app, &key, Method::GET, &hook(DOMAIN, name), Form::None).await;
        assert_eq!(r.body, json!({"webhook": {"urls": [url]}}), "{alias}");
    }
    // drop is permanent_fail too: that name has its URL already.
    let r = mg(
        &app,
        &key,
        Method::POST,
        &hooks(DOMAIN),
        Form::Urlencoded(vec![
            ("id", "drop"),
            ("url", "https://hooks.acme.example/drop"),
        ]),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "webhook_exists");
    assert_eq!(r.body["message"], "Webhook already exists");
    let r = mg(
        &app,
        &key,
        Method::DELETE,
        &hook(DOMAIN, "drop"),
        Form::None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body["webhook"]["urls"],
        json!(["https://hooks.acme.example/bounce"])
    );
    for name in ["accepted", "temporary_fail"] {
        let r = mg(
            &app,
            &key,
            Method::POST,
            &hooks(DOMAIN),
            Form::Multipart(vec![("id", name), ("url", "https://hooks.acme.example/x")]),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.body);
    }
    let r = mg(&app, &key, Method::GET, &hooks(DOMAIN), Form::None).await;
    let mut names: Vec<&String> = r.body["webhooks"].as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "accepted",
            "complained",
            "delivered",
            "opened",
            "temporary_fail",
            "unsubscribed"
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_in_mailgun_shape_and_store_nothing() {
    let app = spawn_app().await;
    let key = tenant_with_domain(&app, "acme").await;
    let four = [
        ("id", "opened"),
        ("url", "https://h.example/1"),
        ("url", "https://h.example/2"),
        ("url", "https://h.example/3"),
        ("url", "https://h.example/4"),
    ];
    let three: Vec<(&str, &str)> = four[..4].to_vec();
    let r = mg(
        &app,
        &key,
        Method::POST,
        &hooks(DOMAIN),
        Form::Multipart(four.to_vec()),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "too_many_urls");
    let r = mg(
        &app,
        &key,
        Method::POST,
        &hooks(DOMAIN),
        Form::Urlencoded(four.to_vec()),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "too_many_urls");
    // Three is the most.
    let r = mg(
        &app,
        &key,
        Method::POST,
        &hooks(DOMAIN),
        Form::Urlencoded(three.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(endpoints_of(&app, &key, "opened").await.len(), 3);
    // A create on a name that has URLs (it would also go over 3).
    let r = mg(
        &app,
        &key,
        Method::POST,
        &hooks(DOMAIN),
        Form::Multipart(vec![("id", "opened"), ("url", "https://h.example/5")]),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "webhook_exists");
    assert_eq!(r.body["message"], "Webhook already exists");
    let r = mg(
        &app,
        &key,
        Method::PUT,
        &hook(DOMAIN, "opened"),
        Form::Multipart(four[1..].to_vec()),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "too_many_urls");
    assert_eq!(endpoints_of(&app, &key, "opened").await.len(), 3);

    let url = "https://h.example/x";
    let cases: Vec<(Method, String, Form, StatusCode, &str)> = vec![
        // Unknown names: 400 on create and update, 404 on get and delete.
        (
            Method::POST,
            hooks(DOMAIN),
            Form::Urlencoded(vec![("id", "state_change"), ("url", url)]),
            StatusCode::BAD_REQUEST,
            "unknown_webhook",
        ),
        (
            Method::PUT,
            hook(DOMAIN, "state_change"),
            Form::Urlencoded(vec![("url", url)]),
            StatusCode::BAD_REQUEST,
            "unknown_webhook",
        ),
        (
            Method::GET,
            hook(DOMAIN, "state_change"),
            Form::None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::DELETE,
            hook(DOMAIN, "bogus"),
            Form::None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        // A known name without URLs.
        (
            Method::GET,
            hook(DOMAIN, "clicked"),
            Form::None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::DELETE,
            hook(DOMAIN, "clicked"),
            Form::None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        // No URL, or no name.
        (
            Method::POST,
            hooks(DOMAIN),
            Form::Multipart(vec![("id", "clicked")]),
            StatusCode::BAD_REQUEST,
            "missing_url",
        ),
        (
            Method::POST,
            hooks(DOMAIN),
            Form::Urlencoded(vec![("id", "clicked"), ("url", "  ")]),
            StatusCode::BAD_REQUEST,
            "missing_url",
        ),
        (
            Method::PUT,
            hook(DOMAIN, "opened"),
            Form::None,
            StatusCode::BAD_REQUEST,
            "missing_url",
        ),
        (
            Method::POST,
            hooks(DOMAIN),
            Form::Multipart(vec![("url", url)]),
            StatusCode::BAD_REQUEST,
            "missing_id",
        ),
        // URLs the URL policy refuses.
        (
            Method::POST,
            hooks(DOMAIN),
            Form::Multipart(vec![("id", "clicked"), ("url", "http://10.0.0.1/hook")]),
            StatusCode::BAD_REQUEST,
            "invalid_url",
        ),
        (
            Method::POST,
            hooks(DOMAIN),
            Form::Urlencoded(vec![("id", "clicked"), ("url", "ftp://h.example/")]),
            StatusCode::BAD_REQUEST,
            "invalid_url",
        ),
        (
            Method::PUT,
            hook(DOMAIN, "opened"),
            Form::Urlencoded(vec![("url", url), ("url", "https://u:p@h.example/")]),
            StatusCode::BAD_REQUEST,
            "invalid_url",
        ),
    ];
    for (method, path, form, status, code) in cases {
        let what = format!("{method} {path}");
        let r = mg(&app, &key, method, &path, form).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert_error(&r, status, code);
    }
    // The policy's reason is told.
    let r = mg(
        &app,
        &key,
        Method::POST,
        &hooks(DOMAIN),
        Form::Multipart(vec![("id", "clicked"), ("url", "http://10.0.0.1/hook")]),
    )
    .await;
    assert!(
        r.body["message"].as_str().unwrap().contains("10.0.0.1"),
        "{}",
        r.body
    );
    // A JSON body is not a form.
    let resp = app
        .client
        .post(format!("{}{}", app.base, hooks(DOMAIN)))
        .basic_auth("api", Some(&key))
        .json(&json!({"id": "clicked", "url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Nothing of it was stored; opened is as it was.
    let (_, list) = app.get("/v1/endpoints", &key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3, "{list}");
    let r = mg(&app, &key, Method::GET, &hooks(DOMAIN), Form::None).await;
    assert_eq!(
        r.body["webhooks"],
        json!({"opened": {"urls": ["https://h.example/1", "https://h.example/2", "https://h.example/3"]}})
    );
    app.stop().await;
}

#[tokio::test]
async fn credentials_are_http_basic_with_the_user_api_and_a_tenant_key() {
    let app = spawn_app().await;
    let key = tenant_with_domain(&app, "acme").await;
    let path = hooks(DOMAIN);
    let bearer = format!("Bearer {key}");
    let wrong = format!("{key}x");
    let unauthorized = [
        Auth::None,
        Auth::Basic("api", &wrong),
        Auth::Basic("someone", &key),
        Auth::Basic("api", ""),
        Auth::Header(&bearer),
        Auth::Header("Basic !!!"),
    ];
    for auth in unauthorized {
        let r = send(&app, Method::GET, &path, auth, Form::None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(r.headers["www-authenticate"], "Basic realm=\"Hookline\"");
    }
    // Every route asks, before anything else.
    for (method, path) in [
        (Method::POST, hooks(DOMAIN)),
        (Method::GET, hook(DOMAIN, "clicked")),
        (Method::PUT, hook(DOMAIN, "clicked")),
        (Method::DELETE, hook(DOMAIN, "clicked")),
        (Method::PUT, test_path(DOMAIN, "clicked")),
        (Method::GET, hooks("unknown.example")),
    ] {
        let r = send(&app, method, &path, Auth::None, Form::None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // The operator key is valid but holds no tenant's data.
    let r = send(
        &app,
        Method::GET,
        &path,
        Auth::Basic("api", OPERATOR_KEY),
        Form::None,
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_key_no_longer_works() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    app.post("/v1/domains", &t.key, json!({"name": DOMAIN}))
        .await;
    let r = mg(&app, &t.key, Method::GET, &hooks(DOMAIN), Form::None).await;
    assert_eq!(r.status, StatusCode::OK);
    let (_, keys) = app
        .get(&format!("/v1/tenants/{}/api-keys", t.id), OPERATOR_KEY)
        .await;
    let key_id = keys["data"][0]["id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/tenants/{}/api-keys/{key_id}", t.id),
            Some(OPERATOR_KEY),
            None,
        )
        .await;
    assert!(status.is_success());
    let r = mg(&app, &t.key, Method::GET, &hooks(DOMAIN), Form::None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    app.stop().await;
}

#[tokio::test]
async fn unknown_domains_and_other_tenants_domains_are_not_found() {
    let app = spawn_app().await;
    let a = tenant_with_domain(&app, "a").await;
    let b = app.create_tenant("b").await;
    let url = "https://hooks.a.example/d";
    let r = mg(
        &app,
        &a,
        Method::POST,
        &hooks(DOMAIN),
        Form::Urlencoded(vec![("id", "delivered"), ("url", url)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    for (key, domain) in [(&a, "unknown.example"), (&b.key, DOMAIN)] {
        let routes: Vec<(Method, String, Form)> = vec![
            (Method::GET, hooks(domain), Form::None),
            (
                Method::POST,
                hooks(domain),
                Form::Urlencoded(vec![("id", "delivered"), ("url", url)]),
            ),
            (Method::GET, hook(domain, "delivered"), Form::None),
            (
                Method::PUT,
                hook(domain, "delivered"),
                Form::Urlencoded(vec![("url", url)]),
            ),
            (Method::DELETE, hook(domain, "delivered"), Form::None),
            (
                Method::PUT,
                test_path(domain, "delivered"),
                Form::Urlencoded(vec![("url", url)]),
            ),
        ];
        for (method, path, form) in routes {
            let what = format!("{method} {path}");
            let r = mg(&app, key, method, &path, form).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{what}: {}", r.body);
            assert_error(&r, StatusCode::NOT_FOUND, "not_found");
        }
    }
    // a's webhook is untouched, and b has no endpoints.
    let r = mg(
        &app,
        &a,
        Method::GET,
        &hook(DOMAIN, "delivered"),
        Form::None,
    )
    .await;
    assert_eq!(r.body, json!({"webhook": {"urls": [url]}}));
    let (_, list) = app.get("/v1/endpoints", &b.key).await;
    assert_eq!(list["data"], json!([]));
    // b's own domain of the same name is b's own: a's webhooks do not show there.
    let (status, _) = app
        .post("/v1/domains", &b.key, json!({"name": DOMAIN}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let r = mg(&app, &b.key, Method::GET, &hooks(DOMAIN), Form::None).await;
    assert_eq!(r.body, json!({"webhooks": {}}));
    app.stop().await;
}

#[tokio::test]
async fn only_the_facades_own_endpoints_are_managed() {
    let app = spawn_app().await;
    let key = tenant_with_domain(&app, "acme").await;
    // Endpoints made through /v1 that do not stand for a Mailgun webhook of the domain.
    for body in [
        json!({"url": "https://h.example/raw", "event_types": ["clicked"], "domain": DOMAIN}),
        json!({"url": "https://h.example/two", "event_types": ["clicked", "opened"],
               "domain": DOMAIN, "format": "mailgun"}),
        json!({"url": "https://h.example/org", "event_types": ["clicked"], "format": "mailgun"}),
        json!({"url": "https://h.example/all", "domain": DOMAIN, "format": "mailgun"}),
    ] {
        app.create_endpoint(&key, body).await;
    }
    let r = mg(&app, &key, Method::GET, &hooks(DOMAIN), Form::None).await;
    assert_eq!(r.body, json!({"webhooks": {}}));
    let r = mg(
        &app,
        &key,
        Method::POST,
        &hooks(DOMAIN),
        Form::Urlencoded(vec![("id", "clicked"), ("url", "https://h.example/mg")]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = mg(
        &app,
        &key,
        Method::DELETE,
        &hook(DOMAIN, "clicked"),
        Form::None,
    )
    .await;
    assert_eq!(r.body["webhook"]["urls"], json!(["https://h.example/mg"]));
    let (_, list) = app.get("/v1/endpoints", &key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 4);
    // One made through /v1 in the facade's shape is one of its webhooks.
    app.create_endpoint(
        &key,
        json!({"url": "https://h.example/v1", "event_types": ["opened"], "domain": DOMAIN,
               "format": "mailgun"}),
    )
    .await;
    let r = mg(&app, &key, Method::GET, &hook(DOMAIN, "open"), Form::None).await;
    assert_eq!(
        r.body,
        json!({"webhook": {"urls": ["https://h.example/v1"]}})
    );
    app.stop().await;
}

#[tokio::test]
async fn a_webhook_made_here_receives_events_of_its_domain_signed_as_mailgun_signs() {
    let app = spawn_app().await;
    let key = tenant_with_domain(&app, "acme").await;
    let receiver = Receiver::start(200).await;
    let r = mg(
        &app,
        &key,
        Method::POST,
        &hooks(DOMAIN),
        Form::Multipart(vec![("id", "deliver"), ("url", &receiver.url("/mailgun"))]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let ep = endpoints_of(&app, &key, "delivered").await[0].1["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, secret) = app.get(&format!("/v1/endpoints/{ep}/secret"), &key).await;
    let signing_key = secret["key"].as_str().unwrap();

    // Another domain's event and another type do not reach it.
    app.publish(&key, json!({"type": "delivered", "payload": {"n": 0}}))
        .await;
    app.publish(
        &key,
        json!({"type": "opened", "domain": DOMAIN, "payload": {"n": 1}}),
    )
    .await;
    let payload = json!({"event": "delivered", "recipient": "alice@example.com"});
    app.publish(
        &key,
        json!({"type": "delivered", "domain": DOMAIN, "payload": payload}),
    )
    .await;
    let got = receiver.wait_for(1, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 1);
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["event-data"], payload);
    let sig = &body["signature"];
    let (ts, token) = (
        sig["timestamp"].as_str().unwrap(),
        sig["token"].as_str().unwrap(),
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(signing_key.as_bytes()).unwrap();
    mac.update(format!("{ts}{token}").as_bytes());
    assert_eq!(
        sig["signature"].as_str().unwrap(),
        hex::encode(mac.finalize().into_bytes())
    );
    app.stop().await;
}

#[tokio::test]
async fn the_test_call_sends_the_sample_event_signed_and_answers_what_the_receiver_said() {
    let app = spawn_app().await;
    let key = tenant_with_domain(&app, "acme").await;
    let receiver = Receiver::start(200).await;
    let (saved, shared, fresh) = (
        receiver.url("/saved"),
        receiver.url("/shared"),
        receiver.url("/fresh"),
    );
    for (name, url) in [("delivered", &saved), ("clicked", &shared)] {
        let r = mg(
            &app,
            &key,
            Method::POST,
            &hooks(DOMAIN),
            Form::Urlencoded(vec![("id", name), ("url", url)]),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let before = app.get("/v1/endpoints", &key).await.1;

    // A URL of the webhook itself (named by an alias, sent as mailgun.js sends it): the
    // receiver gets what deliveries to it will bring, signed with its endpoint's key.
    let r = mg(
        &app,
        &key,
        Method::PUT,
        &test_path(DOMAIN, "deliver"),
        Form::Multipart(vec![("url", &saved)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!({"code": 200, "message": "ok"}));
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["event-data"], sample_of(&app, &key, "delivered").await);
    let saved_key = secret_of(&app, &key, &saved).await;
    assert!(mailgun_signed_with(&body, &saved_key), "{body}");
    assert_eq!(body["signature"]["token"].as_str().unwrap().len(), 50);
    assert_eq!(
        got[0].header("webhook-signature"),
        got[0].standard_signature(&saved_key)
    );
    assert_eq!(got[0].header("hookline-test"), "true");
    assert_eq!(got[0].header("content-type"), "application/json");

    // A URL another webhook of the domain has: signed with the key that receiver holds.
    let r = mg(
        &app,
        &key,
        Method::PUT,
        &test_path(DOMAIN, "opened"),
        Form::Urlencoded(vec![("url", &shared)]),
    )
    .await;
    assert_eq!(r.body, json!({"code": 200, "message": "ok"}));
    let got = receiver.received();
    let body: Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(body["event-data"], sample_of(&app, &key, "opened").await);
    let shared_key = secret_of(&app, &key, &shared).await;
    assert!(mailgun_signed_with(&body, &shared_key), "{body}");

    // A URL no webhook has: Mailgun's body, signed with a key of its own.
    let r = mg(
        &app,
        &key,
        Method::PUT,
        &test_path(DOMAIN, "temporary_fail"),
        Form::Urlencoded(vec![("url", &fresh)]),
    )
    .await;
    assert_eq!(r.body, json!({"code": 200, "message": "ok"}));
    let got = receiver.received();
    let body: Value = serde_json::from_slice(&got[2].body).unwrap();
    assert_eq!(
        body["event-data"],
        sample_of(&app, &key, "temporary_fail").await
    );
    assert!(!mailgun_signed_with(&body, &saved_key));
    assert!(!mailgun_signed_with(&body, &shared_key));
    let signature = body["signature"]["signature"].as_str().unwrap();
    assert_eq!(signature.len(), 64);
    assert!(signature.chars().all(|c| c.is_ascii_hexdigit()));

    // What the receiver answered, whatever it is, in a 200.
    receiver.set_status(500);
    let r = mg(
        &app,
        &key,
        Method::PUT,
        &test_path(DOMAIN, "delivered"),
        Form::Urlencoded(vec![("url", &saved)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"code": 500, "message": "ok"}));

    // No answer at all: code 0 and why.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}/gone")
    };
    let r = mg(
        &app,
        &key,
        Method::PUT,
        &test_path(DOMAIN, "delivered"),
        Form::Urlencoded(vec![("url", &closed)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["code"], 0, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .starts_with("no answer (connect)"),
        "{}",
        r.body
    );

    // Tests change nothing.
    assert_eq!(app.get("/v1/endpoints", &key).await.1, before);
    let (_, messages) = app.get("/v1/messages", &key).await;
    assert_eq!(messages["data"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn the_test_call_refuses_bad_input_in_mailgun_shape_and_sends_nothing() {
    let app = spawn_app().await;
    let key = tenant_with_domain(&app, "acme").await;
    let other = app.create_tenant("other").await.key;
    let receiver = Receiver::start(200).await;
    let url = receiver.url("/t");
    let other_url = receiver.url("/u");
    let cases: Vec<(&str, Form, StatusCode, &str)> = vec![
        (
            "state_change",
            Form::Urlencoded(vec![("url", &url)]),
            StatusCode::BAD_REQUEST,
            "unknown_webhook",
        ),
        (
            "delivered",
            Form::None,
            StatusCode::BAD_REQUEST,
            "missing_url",
        ),
        (
            "delivered",
            Form::Multipart(vec![("url", " ")]),
            StatusCode::BAD_REQUEST,
            "missing_url",
        ),
        (
            "delivered",
            Form::Urlencoded(vec![("url", &url), ("url", &other_url)]),
            StatusCode::BAD_REQUEST,
            "too_many_urls",
        ),
        (
            "delivered",
            Form::Multipart(vec![("url", "http://10.0.0.1/hook")]),
            StatusCode::BAD_REQUEST,
            "invalid_url",
        ),
        (
            "delivered",
            Form::Urlencoded(vec![("url", "http://169.254.169.254/latest")]),
            StatusCode::BAD_REQUEST,
            "invalid_url",
        ),
        (
            "delivered",
            Form::Urlencoded(vec![("url", "ftp://h.example/")]),
            StatusCode::BAD_REQUEST,
            "invalid_url",
        ),
    ];
    for (name, form, status, code) in cases {
        let r = mg(&app, &key, Method::PUT, &test_path(DOMAIN, name), form).await;
        assert_error(&r, status, code);
    }
    // The policy's reason is told.
    let r = mg(
        &app,
        &key,
        Method::PUT,
        &test_path(DOMAIN, "delivered"),
        Form::Urlencoded(vec![("url", "http://10.0.0.1/hook")]),
    )
    .await;
    assert!(
        r.body["message"].as_str().unwrap().contains("10.0.0.1"),
        "{}",
        r.body
    );
    // A domain that is not the caller's.
    for (k, domain) in [(&key, "unknown.example"), (&other, DOMAIN)] {
        let r = mg(
            &app,
            k,
            Method::PUT,
            &test_path(domain, "delivered"),
            Form::Urlencoded(vec![("url", &url)]),
        )
        .await;
        assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    }
    // No credentials, and the operator key.
    let r = send(
        &app,
        Method::PUT,
        &test_path(DOMAIN, "delivered"),
        Auth::None,
        Form::Urlencoded(vec![("url", &url)]),
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(r.headers["www-authenticate"], "Basic realm=\"Hookline\"");
    let r = send(
        &app,
        Method::PUT,
        &test_path(DOMAIN, "delivered"),
        Auth::Basic("api", OPERATOR_KEY),
        Form::Urlencoded(vec![("url", &url)]),
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");

    assert_eq!(receiver.count(), 0, "nothing was sent");
    let (_, list) = app.get("/v1/endpoints", &key).await;
    assert_eq!(list["data"], json!([]), "nothing was stored");
    app.stop().await;
}
