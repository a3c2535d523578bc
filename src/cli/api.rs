//! The HTTP client of the subcommands: one request at a time to the `/v1` API, and the
//! API's `{"error": {"code", "message"}}` answers turned into [`Refused`].

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A request the API answered with an error status.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub body: Value,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, HTTP {})",
            self.message,
            self.code,
            self.status.as_u16()
        )
    }
}

impl std::error::Error for Refused {}

/// An answer of any status, for the callers that handle some refusals themselves.
pub struct Answer {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub body: Value,
}

impl Answer {
    pub fn into_result(self) -> Result<Value, Refused> {
        if self.status.is_success() {
            return Ok(self.body);
        }
        let error = &self.body["error"];
        let code = error["code"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("http_{}", self.status.as_u16()));
        let message = error["message"]
            .as_str()
            .map(str::to_string)
            .or_else(|| self.body.as_str().map(str::to_string))
            .unwrap_or_else(|| {
                self.status
                    .canonical_reason()
                    .unwrap_or("refused")
                    .to_string()
            });
        Err(Refused {
            status: self.status,
            code,
            message,
            body: self.body,
        })
    }
}

pub struct Api {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Api {
    pub fn new(url: &str, key: Option<String>) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|e| super::usage(format!("--url {url:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(super::usage(format!("--url {url:?} is not http(s)")));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("hookline-cli/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(60))
            .tls_backend_preconfigured(hookline_core::client::tls_config(Vec::new())?)
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            http,
            base: url.trim_end_matches('/').to_string(),
            key,
        })
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(body)?);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("no answer from {}", self.base))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.context("reading the answer")?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        Ok(self.call(method, path, body).await?.into_result()?)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// Follows `next_cursor` until `limit` items (all with `None`) or the last page.
    pub async fn list(&self, path: &str, limit: Option<usize>) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        let sep = if path.contains('?') { '&' } else { '?' };
        loop {
            let want = limit.map(|l| l - items.len()).unwrap_or(250).clamp(1, 250);
            let mut page_path = format!("{path}{sep}limit={want}");
            if let Some(c) = &cursor {
                page_path.push_str("&cursor=");
                page_path.push_str(&encode(c));
            }
            let page = self.get(&page_path).await?;
            if let Some(data) = page["data"].as_array() {
                items.extend(data.iter().cloned());
            }
            cursor = page["next_cursor"].as_str().map(str::to_string);
            let full = limit.is_some_and(|l| items.len() >= l);
            if cursor.is_none() || full {
                break;
            }
        }
        if let Some(l) = limit {
            items.truncate(l);
        }
        Ok(items)
    }
}

/// A path segment or query value, percent-encoded.
pub fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
