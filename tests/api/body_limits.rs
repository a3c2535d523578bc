//! Request bodies are read only up to a cap: an oversize body, announced or streamed
//! without a length, gets 413 with a machine-readable error, stores nothing, and is not
//! read to its end.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app, OPERATOR_KEY};

/// Over the 6 MiB every JSON route reads.
const OVER_JSON_CAP: usize = 6 * 1024 * 1024 + 1;
/// Over the 64 KiB the Mailgun form routes read.
const OVER_FORM_CAP: usize = 64 * 1024 + 1;

/// A JSON document of `len` bytes: one string field.
fn json_of_len(len: usize) -> Vec<u8> {
    let mut body = br#"{"name": ""#.to_vec();
    body.resize(len - 2, b'x');
    body.extend_from_slice(br#""}"#);
    body
}

fn assert_too_large(route: &str, status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{route}: {body}");
    assert_eq!(
        body["error"]["code"], "payload_too_large",
        "{route}: {body}"
    );
    assert!(body["error"]["message"].is_string(), "{route}: {body}");
}

#[tokio::test]
async fn oversize_json_bodies_are_413_on_every_route_and_store_nothing() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let big = json_of_len(OVER_JSON_CAP);
    for (path, key) in [
        ("/v1/events", t.key.as_str()),
        ("/v1/endpoints", t.key.as_str()),
        ("/v1/domains", t.key.as_str()),
        ("/v1/sub-accounts", t.key.as_str()),
        ("/v1/tenants", OPERATOR_KEY),
    ] {
        let (status, body) = app
            .raw(Method::POST, path, key, "application/json", big.clone())
            .await;
        assert_too_large(path, status, &body);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for path in ["/v1/endpoints", "/v1/domains", "/v1/messages"] {
        let (status, body) = app.get(path, &t.key).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"], json!([]), "{path} stored something");
    }
    let (_, subs) = app.get("/v1/sub-accounts", &t.key).await;
    assert_eq!(subs["data"], json!([]), "{subs}");
    app.stop().await;
}

#[tokio::test]
async fn an_oversize_mailgun_form_is_413_and_creates_no_webhook() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let (status, _) = app
        .post("/v1/domains", &t.key, json!({"name": "mg.limits.example"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut form = b"id=delivered&url=https%3A%2F%2Fhooks.limits.example%2F&pad=".to_vec();
    form.resize(OVER_FORM_CAP, b'x');
    let resp = app
        .client
        .post(format!(
            "{}/v3/domains/mg.limits.example/webhooks",
            app.base
        ))
        .basic_auth("api", Some(&t.key))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // Mailgun's error shape: a `message`, with the machine-readable code beside it.
    assert!(body["message"].is_string(), "{body}");
    let code = body["code"].as_str().or(body["error"]["code"].as_str());
    assert_eq!(code, Some("payload_too_large"), "{body}");
    let (_, endpoints) = app.get("/v1/endpoints", &t.key).await;
    assert_eq!(endpoints["data"], json!([]), "{endpoints}");
    app.stop().await;
}

#[tokio::test]
async fn an_endless_chunked_body_is_refused_without_being_read_to_the_end() {
    let app = spawn_app().await;
    let t = app.create_tenant("a").await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let stream = TcpStream::connect(&addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        t.key
    );
    write.write_all(head.as_bytes()).await.unwrap();
    // Offers up to 256 MiB in 64 KiB chunks, stopping when the server stops reading.
    let limit: u64 = 256 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
        chunk.extend(std::iter::repeat_n(b' ', 64 * 1024));
        chunk.extend_from_slice(b"\r\n");
        let mut sent = 0u64;
        while sent < limit {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
            sent += 64 * 1024;
        }
        sent
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(60), read.read(&mut buf))
            .await
            .expect("no answer to an oversize body")
            .unwrap();
        assert!(n > 0, "connection closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer).to_string();
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    // The server stops reading: the writer fails long before everything is sent.
    drop(read);
    let sent = tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("the server kept reading the body")
        .unwrap();
    assert!(sent < limit, "all {sent} bytes were read");
    let (_, messages) = app.get("/v1/messages", &t.key).await;
    assert_eq!(messages["data"], json!([]), "{messages}");
    app.stop().await;
}
