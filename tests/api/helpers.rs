//! `spawn_app`: a local Hookline on port 0 with its own data file, and a client for it.

use std::time::{Duration, Instant};

use hookline::{LocalConfig, Running};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const OPERATOR_KEY: &str = "hkop_integration-test-operator-key";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
}

/// Local mode as the tests run it: http allowed, 127.0.0.1 exempt from the SSRF block, and
/// a short retry schedule.
pub fn test_config(dir: &tempfile::TempDir) -> LocalConfig {
    let mut cfg = LocalConfig::with_data(dir.path().join("hookline.db"));
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.operator_key = Some(OPERATOR_KEY.into());
    cfg.allow_http = Some("true".into());
    cfg.allowed_networks = Some("127.0.0.1/32".into());
    cfg.retry_schedule = Some("0s,200ms,200ms".into());
    cfg.request_timeout = Some("5s".into());
    cfg
}

/// A plain client for the tests' requests. reqwest is built without a crypto provider of
/// its own (the service's TLS runs on the one hookline-core configures): install it first.
pub fn client() -> reqwest::Client {
    hookline_core::client::install_crypto_provider();
    reqwest::Client::new()
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(tweak: impl FnOnce(&mut LocalConfig)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(&dir);
    tweak(&mut cfg);
    let running = hookline::start(cfg).await.expect("local mode starts");
    TestApp {
        base: format!("http://{}", running.addr),
        client: client(),
        running: Some(running),
        dir,
    }
}

pub struct Tenant {
    pub id: String,
    pub key: String,
}

impl TestApp {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (status, value)
    }

    /// Sends a raw body with a content type, for malformed-input tests.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        key: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let resp = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let value = resp.json().await.unwrap_or(Value::Null);
        (status, value)
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    pub async fn create_tenant(&self, name: &str) -> Tenant {
        let (status, body) = self
            .post("/v1/tenants", OPERATOR_KEY, json!({ "name": name }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Tenant {
            id: body["id"].as_str().unwrap().to_string(),
            key: body["api_key"].as_str().unwrap().to_string(),
        }
    }

    pub async fn create_endpoint(&self, key: &str, body: Value) -> String {
        let (status, body) = self.post("/v1/endpoints", key, body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    pub async fn publish(&self, key: &str, body: Value) -> String {
        let (status, body) = self.post("/v1/events", key, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// Polls a message until `done` holds for it.
    pub async fn wait_message(
        &self,
        key: &str,
        id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.get(&format!("/v1/messages/{id}"), key).await;
            if status == StatusCode::OK && done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "message never reached the state: {body}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

/// True when every delivery of a message is settled.
pub fn all_settled(message: &Value) -> bool {
    message["deliveries"]
        .as_array()
        .is_some_and(|ds| ds.iter().all(|d| d["status"] != "pending"))
}
