//! No secret reaches the log: the real binary runs with every log level on, is driven
//! through everything that handles a key or a signing secret (the operator key, tenant and
//! sub-account keys, key creation and revocation, endpoint secrets read, given and rotated,
//! ed25519 private keys made and rotated, signed deliveries and test sends, the Mailgun
//! facade, failed logins, receiver credentials of each kind with the OAuth2 token fetched
//! for them, and the credentials key local mode generates), and its whole output is
//! searched for each of those values.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{all_settled, TestApp, OPERATOR_KEY};
use crate::receiver::Receiver;

/// The binary, started with every log level on and its output in a file.
struct Logged {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn launch(dir: &std::path::Path) -> (Logged, String) {
    let port = free_port();
    let log = dir.join("output.log");
    let out = File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .env("HOOKLINE_LISTEN", format!("127.0.0.1:{port}"))
        .env("HOOKLINE_DATA", dir.join("hookline.db"))
        .env("HOOKLINE_OPERATOR_KEY", OPERATOR_KEY)
        .env("HOOKLINE_ALLOW_HTTP", "true")
        .env("HOOKLINE_ALLOWED_NETWORKS", "127.0.0.1/32")
        .env("HOOKLINE_RETRY_SCHEDULE", "0s,200ms,200ms")
        .env("HOOKLINE_REQUEST_TIMEOUT", "5s")
        // Everything, from every crate: Hookline's own, axum, hyper, reqwest, rustls, …
        .env("HOOKLINE_LOG", "trace")
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("the hookline binary starts");
    let logged = Logged { child, log };
    let base = format!("http://127.0.0.1:{port}");
    let client = crate::helpers::client();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .get(format!("{base}/v1/event-types"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "hookline did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (logged, base)
}

/// Every secret the run handled, with a label for the failure message.
#[derive(Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn add(&mut self, label: &str, value: &str) {
        assert!(
            value.len() >= 8,
            "{label} is too short to search for: {value:?}"
        );
        self.0.push((label.to_string(), value.to_string()));
    }

    /// A `whsec_` secret, and its base64 part on its own.
    fn add_signing_secret(&mut self, label: &str, value: &str) {
        let b64 = value
            .strip_prefix("whsec_")
            .unwrap_or_else(|| panic!("{label} is not a whsec_ secret: {value}"));
        self.add(label, value);
        self.add(&format!("{label} (base64 part)"), b64);
    }

    /// Each `v1,<base64>` or `v1a,<base64>` signature of a header, and its base64 part on
    /// its own.
    fn add_signatures(&mut self, label: &str, header: &str) {
        assert!(!header.is_empty(), "{label}: no signature header");
        for sig in header.split(' ') {
            self.add(label, sig);
            self.add(label, sig.split_once(',').unwrap().1);
        }
    }
}

async fn basic(
    app: &TestApp,
    method: Method,
    path: &str,
    password: &str,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = app
        .client
        .request(method, format!("{}{}", app.base, path))
        .basic_auth("api", Some(password));
    if !form.is_empty() {
        let multipart = form
            .iter()
            .fold(reqwest::multipart::Form::new(), |f, (k, v)| {
                f.text(k.to_string(), v.to_string())
            });
        req = req.multipart(multipart);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn no_key_secret_or_signature_appears_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut process, base) = launch(dir.path()).await;
    let app = TestApp {
        base,
        client: crate::helpers::client(),
        running: None,
        dir: tempfile::tempdir().unwrap(),
    };
    let mut secrets = Secrets::default();
    secrets.add("operator key", OPERATOR_KEY);

    // Tenants, their first keys, and the keys' life cycle.
    let tenant = app.create_tenant("log-check").await;
    secrets.add("tenant key", &tenant.key);
    let (status, sub) = app
        .post("/v1/sub-accounts", &tenant.key, json!({"name": "sub"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");
    secrets.add("sub-account key", sub["api_key"].as_str().unwrap());
    let keys_path = format!("/v1/tenants/{}/api-keys", tenant.id);
    let (status, second) = app.post(&keys_path, OPERATOR_KEY, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second_key = second["api_key"].as_str().unwrap().to_string();
    secrets.add("second tenant key", &second_key);
    let (status, listed) = app.get(&keys_path, &second_key).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let (status, revoked) = app
        .call(
            Method::DELETE,
            &format!("{keys_path}/{}", second["id"].as_str().unwrap()),
            Some(&tenant.key),
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {revoked}");
    let (status, _) = app.get(&keys_path, &second_key).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a revoked key still works"
    );

    // Failed logins, with keys that look real.
    let wrong = format!("hk_{}", "W".repeat(43));
    secrets.add("wrong key", &wrong);
    let (status, _) = app.get("/v1/endpoints", &wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let wrong_operator = "hkop_not-the-operator-key-at-all";
    secrets.add("wrong operator key", wrong_operator);
    let (status, _) = app
        .post("/v1/tenants", wrong_operator, json!({"name": "x"}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Endpoints: one with a generated secret read back and rotated, one with a given secret.
    let receiver = Receiver::start(200).await;
    let (status, _) = app
        .post(
            "/v1/domains",
            &tenant.key,
            json!({"name": "mg.logs.example"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let rotated = app
        .create_endpoint(
            &tenant.key,
            json!({"url": receiver.url("/rotated"), "event_types": ["opened"], "verify": true,
                   "signing": "both"}),
        )
        .await;
    let (status, first) = app
        .get(&format!("/v1/endpoints/{rotated}/secret"), &tenant.key)
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    secrets.add_signing_secret("generated secret", first["key"].as_str().unwrap());
    let (status, next) = app
        .post(
            &format!("/v1/endpoints/{rotated}/secret/rotate"),
            &tenant.key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{next}");
    let (_, next) = app
        .get(&format!("/v1/endpoints/{rotated}/secret"), &tenant.key)
        .await;
    secrets.add_signing_secret("rotated secret", next["key"].as_str().unwrap());
    let private = crate::signing::stored_private_keys(dir.path());
    assert_eq!(private.len(), 2, "the ed25519 key and the one it replaced");
    for key in &private {
        secrets.add("ed25519 private key", key);
    }
    let given = format!("whsec_{}", STANDARD.encode([0x5au8; 32]));
    secrets.add_signing_secret("given secret", &given);
    app.create_endpoint(
        &tenant.key,
        json!({"url": receiver.url("/given"), "event_types": ["opened"], "secret": given}),
    )
    .await;
    let (status, tested) = app
        .post(
            &format!("/v1/endpoints/{rotated}/test"),
            &tenant.key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tested}");
    assert_eq!(tested["ok"], true, "{tested}");

    // The Mailgun facade, with its Basic credentials, right and wrong.
    let webhooks = "/v3/domains/mg.logs.example/webhooks";
    let mailgun_url = receiver.url("/mailgun");
    let (status, created) = basic(
        &app,
        Method::POST,
        webhooks,
        &tenant.key,
        &[("id", "delivered"), ("url", &mailgun_url)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let (status, _) = basic(&app, Method::GET, webhooks, &wrong, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    secrets.add(
        "Basic credentials",
        &STANDARD.encode(format!("api:{}", tenant.key)),
    );
    secrets.add(
        "wrong Basic credentials",
        &STANDARD.encode(format!("api:{wrong}")),
    );

    // Receiver credentials of each kind, given, replaced and used; the OAuth2 token is
    // fetched (and fetched again after a 401) from a loopback token endpoint.
    let stub = crate::receiver_auth::TokenStub::start().await;
    let password = "basic-password-for-the-log-test";
    let bearer = "bearer-token-for-the-log-test";
    let client_secret = "client-secret-for-the-log-test";
    secrets.add("basic password", password);
    secrets.add(
        "Basic receiver credentials",
        &STANDARD.encode(format!("log-user:{password}")),
    );
    secrets.add("bearer token", bearer);
    secrets.add("client secret", client_secret);
    secrets.add(
        "client Basic credentials",
        &STANDARD.encode(format!("log-client:{client_secret}")),
    );
    let authed = app
        .create_endpoint(
            &tenant.key,
            json!({"url": receiver.url("/authed"), "event_types": ["clicked"],
                   "auth": {"type": "basic", "username": "log-user", "password": password}}),
        )
        .await;
    app.create_endpoint(
        &tenant.key,
        json!({"url": receiver.url("/bearer"), "event_types": ["complained"],
               "auth": {"type": "bearer", "token": bearer}, "verify": true}),
    )
    .await;
    let (status, replaced) = app
        .call(
            Method::PATCH,
            &format!("/v1/endpoints/{authed}"),
            Some(&tenant.key),
            Some(
                json!({"auth": {"type": "oauth2_client_credentials", "token_url": stub.url,
                                 "client_id": "log-client", "client_secret": client_secret}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    let before_auth = receiver.count();
    receiver.script(&[401]);
    let clicked = app
        .publish(&tenant.key, json!({"type": "clicked", "payload": {"n": 1}}))
        .await;
    app.wait_message(&tenant.key, &clicked, Duration::from_secs(30), all_settled)
        .await;
    assert_eq!(
        stub.calls().len(),
        2,
        "the token fetched, then again after a 401"
    );
    for n in 1..=2 {
        secrets.add("OAuth2 access token", &format!("Bearer tok-{n}"));
    }
    let auth_received = receiver.received().split_off(before_auth);
    assert_eq!(auth_received.len(), 2, "{auth_received:?}");
    for r in &auth_received {
        secrets.add_signatures("webhook-signature", r.header("webhook-signature"));
    }
    let key_file = dir.path().join("hookline.db.credentials-key");
    let credentials_key = std::fs::read_to_string(&key_file).expect("a generated key");
    secrets.add("credentials key", credentials_key.trim());

    // Signed deliveries in both shapes, both secrets signing after the rotation.
    let opened = app
        .publish(
            &tenant.key,
            json!({"type": "opened", "payload": {"recipient": "a@logs.example"}}),
        )
        .await;
    let delivered = app
        .publish(
            &tenant.key,
            json!({"type": "delivered", "domain": "mg.logs.example",
                   "payload": {"event": "delivered"}}),
        )
        .await;
    for id in [&opened, &delivered] {
        let m = app
            .wait_message(&tenant.key, id, Duration::from_secs(30), all_settled)
            .await;
        assert!(
            m["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["status"] == "succeeded"),
            "{m}"
        );
    }
    let received: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|r| r.header("authorization").is_empty())
        .collect();
    // Two verify/test sends, two `opened` deliveries, one Mailgun delivery.
    assert_eq!(received.len(), 5, "{received:?}");
    for r in &received {
        secrets.add_signatures("webhook-signature", r.header("webhook-signature"));
    }
    let rotated_header = received
        .iter()
        .find(|r| r.header("webhook-id") == opened && r.header("webhook-signature").contains(' '))
        .expect("the rotated endpoint signs with both secrets");
    let parts: Vec<&str> = rotated_header
        .header("webhook-signature")
        .split(' ')
        .collect();
    let count = |version: &str| parts.iter().filter(|p| p.starts_with(version)).count();
    assert_eq!((count("v1,"), count("v1a,")), (2, 2), "{parts:?}");
    let mailgun = received
        .iter()
        .find(|r| r.header("webhook-id") == delivered)
        .expect("the Mailgun delivery");
    let body: Value = serde_json::from_slice(&mailgun.body).unwrap();
    secrets.add(
        "Mailgun signature",
        body["signature"]["signature"].as_str().unwrap(),
    );
    secrets.add(
        "Mailgun token",
        body["signature"]["token"].as_str().unwrap(),
    );

    // Let the last lines reach the file, then stop the process.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = process.child.kill();
    let _ = process.child.wait();
    let log = std::fs::read_to_string(&process.log).unwrap();

    // The log is there and says what happened, so an empty or silent log cannot pass.
    assert!(log.lines().count() > 20, "log too short:\n{log}");
    for expected in [
        "delivery attempt",
        opened.as_str(),
        delivered.as_str(),
        "API key revoked",
        "endpoint secret rotated",
        "mailgun webhook url added",
        clicked.as_str(),
        "receiver refused the access token",
    ] {
        assert!(
            log.contains(expected),
            "the log never mentions {expected:?}"
        );
    }
    // Protocol-level detail is logged too: the filter reached the HTTP libraries.
    assert!(
        log.contains("hyper") || log.contains("reqwest"),
        "no HTTP library logged at trace level"
    );

    let leaks: Vec<String> = secrets
        .0
        .iter()
        .filter_map(|(label, value)| {
            log.lines()
                .find(|line| line.contains(value.as_str()))
                .map(|line| format!("{label} in: {line}"))
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "secrets in the log:\n{}",
        leaks.join("\n")
    );
}
