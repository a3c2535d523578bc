//! What an operator watches: `/metrics` as Prometheus text (read back by the Prometheus
//! client's own parser), one log line per API request under the id its answer carries, and
//! `/health`, which names the store when the data file is gone. The metrics and logs are a
//! process's own, so those tests run the real binary.

use std::collections::HashMap;
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{all_settled, spawn_app, TestApp, OPERATOR_KEY};
use crate::receiver::Receiver;

/// The binary, its output in a file; killed when dropped.
struct Process {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Stops the process once the last lines had time to reach the file, and reads it.
    async fn stop_and_read(&mut self) -> String {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary as the other tests configure local mode, with `env` on top, and a
/// client for it.
async fn launch(env: &[(&str, &str)]) -> (Process, TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("output.log");
    let out = File::create(&log).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookline"));
    command
        .env("HOOKLINE_LISTEN", format!("127.0.0.1:{port}"))
        .env("HOOKLINE_DATA", dir.path().join("hookline.db"))
        .env("HOOKLINE_OPERATOR_KEY", OPERATOR_KEY)
        .env("HOOKLINE_ALLOW_HTTP", "true")
        .env("HOOKLINE_ALLOWED_NETWORKS", "127.0.0.1/32")
        .env("HOOKLINE_RETRY_SCHEDULE", "0s,200ms,200ms")
        .env("HOOKLINE_REQUEST_TIMEOUT", "5s")
        .env("NO_COLOR", "1")
        .env_remove("HOOKLINE_LOG")
        .env_remove("HOOKLINE_LOG_FORMAT");
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("the hookline binary starts");
    let process = Process { child, log };
    let app = TestApp {
        base: format!("http://127.0.0.1:{port}"),
        client: crate::helpers::client(),
        running: None,
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while app
        .client
        .get(format!("{}/health", app.base))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "hookline did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (process, app)
}

/// One sample of a parsed exposition.
#[derive(Debug)]
struct Sample {
    family_type: String,
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// Parses Prometheus text with `prometheus_client`'s parser (tests/parse_prometheus.py).
fn parse_prometheus(dir: &std::path::Path, text: &str) -> Vec<Sample> {
    let python = std::env::var("HOOKLINE_TEST_PYTHON").expect(
        "HOOKLINE_TEST_PYTHON is unset: run the test command from README.md, which installs \
         prometheus-client and sets it",
    );
    let file = dir.join("metrics.txt");
    std::fs::write(&file, text).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/parse_prometheus.py");
    let out = Command::new(python)
        .arg(script)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the text:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            Sample {
                family_type: v["type"].as_str().unwrap().to_owned(),
                name: v["name"].as_str().unwrap().to_owned(),
                labels: serde_json::from_value(v["labels"].clone()).unwrap(),
                value: v["value"].as_f64().unwrap(),
            }
        })
        .collect()
}

/// The value of the sample `name` with exactly `labels` (histogram buckets aside).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

async fn scrape(app: &TestApp, base: &str, key: Option<&str>) -> (StatusCode, String) {
    let mut request = app.client.get(format!("{base}/metrics"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn metrics_count_a_publish_to_a_200_and_a_500_receiver_in_prometheus_text() {
    let metrics_port = free_port();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let (_process, app) = launch(&[("HOOKLINE_METRICS_LISTEN", &metrics_listen)]).await;
    let ok = Receiver::start(200).await;
    let failing = Receiver::start(500).await;
    let tenant = app.create_tenant("Metrics").await;
    app.create_endpoint(&tenant.key, json!({"url": ok.url("/ok")}))
        .await;
    app.create_endpoint(&tenant.key, json!({"url": failing.url("/fails")}))
        .await;
    let id = app
        .publish(
            &tenant.key,
            json!({"type": "delivered", "payload": {"n": 1}}),
        )
        .await;
    let message = app
        .wait_message(&tenant.key, &id, Duration::from_secs(15), all_settled)
        .await;
    let attempts: Vec<u64> = message["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["attempts"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts.iter().sum::<u64>(), 4, "1 + 3 tries: {message}");

    // The operator key alone reads it on the API's address.
    let (status, _) = scrape(&app, &app.base, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = scrape(&app, &app.base, Some(&tenant.key)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, text) = scrape(&app, &app.base, Some(OPERATOR_KEY)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let samples = parse_prometheus(app.dir.path(), &text);

    let family = |name: &str| {
        samples
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.family_type.clone())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert_eq!(family("hookline_events_accepted_total"), "counter");
    assert_eq!(family("hookline_attempt_duration_count"), "histogram");
    assert_eq!(family("hookline_queue_depth"), "gauge");

    let accepted = value(
        &samples,
        "hookline_events_accepted_total",
        &[("source", "http")],
    );
    assert_eq!(accepted, Some(1.0), "{text}");
    for (outcome, n) in [("2xx", 1.0), ("5xx", 3.0)] {
        assert_eq!(
            value(
                &samples,
                "hookline_delivery_attempts_total",
                &[("outcome", outcome)]
            ),
            Some(n),
            "{outcome}: {text}"
        );
        assert_eq!(
            value(
                &samples,
                "hookline_attempt_duration_count",
                &[("outcome", outcome)]
            ),
            Some(n),
            "{outcome}: {text}"
        );
        let infinite = value(
            &samples,
            "hookline_attempt_duration_bucket",
            &[("outcome", outcome), ("le", "+Inf")],
        );
        assert_eq!(infinite, Some(n), "{outcome}: {text}");
    }
    assert_eq!(
        value(&samples, "hookline_delivery_latency_count", &[]),
        Some(1.0),
        "only the success has a publish-to-delivery latency: {text}"
    );
    assert_eq!(
        value(&samples, "hookline_retries_scheduled_total", &[]),
        Some(2.0)
    );
    assert_eq!(
        value(&samples, "hookline_deliveries_exhausted_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "hookline_api_requests_total",
            &[("route", "/v1/events"), ("status", "202")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "hookline_api_request_duration_count",
            &[("route", "/v1/messages/{id}")]
        ),
        // Every answer of the route is timed, whatever its status (a poll may come before
        // the worker has recorded the message: 404).
        Some(
            samples
                .iter()
                .filter(|s| {
                    s.name == "hookline_api_requests_total"
                        && s.labels.get("route").map(String::as_str) == Some("/v1/messages/{id}")
                })
                .map(|s| s.value)
                .sum::<f64>()
        )
        .filter(|n| *n > 0.0),
        "route templates, not paths: {text}"
    );
    assert!(
        !text.contains(&id),
        "no message id among the labels: {text}"
    );
    assert_eq!(value(&samples, "hookline_queue_depth", &[]), Some(0.0));

    // The keyless address serves the same text.
    let (status, plain) = scrape(&app, &format!("http://{metrics_listen}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let again = parse_prometheus(app.dir.path(), &plain);
    assert_eq!(
        value(
            &again,
            "hookline_events_accepted_total",
            &[("source", "http")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn metrics_off_serves_no_metrics_route() {
    let (_process, app) = launch(&[("HOOKLINE_METRICS", "off")]).await;
    let (status, _) = scrape(&app, &app.base, Some(OPERATOR_KEY)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A request of the log test: method, path, key, the id sent (if any), and the route
/// template and status expected.
type Call<'a> = (
    &'a str,
    String,
    Option<&'a str>,
    Option<&'a str>,
    &'a str,
    u16,
);

#[tokio::test]
async fn every_request_logs_one_json_line_under_the_id_it_answers() {
    let (mut process, app) = launch(&[("HOOKLINE_LOG_FORMAT", "json")]).await;
    let tenant = app.create_tenant("Logged").await;
    let receiver = Receiver::start(200).await;
    let endpoint = app
        .create_endpoint(&tenant.key, json!({"url": receiver.url("/hook")}))
        .await;

    let calls: Vec<Call> = vec![
        ("GET", "/health".into(), None, None, "/health", 200),
        (
            "GET",
            "/v1/endpoints".into(),
            Some(&tenant.key),
            Some("ops-given-id-1"),
            "/v1/endpoints",
            200,
        ),
        (
            "GET",
            format!("/v1/tenants/{}", tenant.id),
            Some(OPERATOR_KEY),
            None,
            "/v1/tenants/{id}",
            200,
        ),
        (
            "GET",
            "/v1/endpoints".into(),
            None,
            None,
            "/v1/endpoints",
            401,
        ),
        (
            "GET",
            "/v1/no/such/route".into(),
            Some(&tenant.key),
            Some("ops-given-id-2"),
            "unmatched",
            404,
        ),
        (
            "POST",
            "/v1/events".into(),
            Some(&tenant.key),
            None,
            "/v1/events",
            202,
        ),
    ];
    let mut answered = Vec::new();
    for (method, path, key, given, route, status) in &calls {
        let mut request = app
            .client
            .request(method.parse().unwrap(), format!("{}{path}", app.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(id) = given {
            request = request.header("x-request-id", *id);
        }
        if *method == "POST" {
            request = request.json(&json!({"type": "delivered", "payload": {}}));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), *status, "{method} {path}");
        let id = response
            .headers()
            .get("x-request-id")
            .expect("every answer has x-request-id")
            .to_str()
            .unwrap()
            .to_owned();
        if let Some(given) = given {
            assert_eq!(id, *given, "the caller's id is kept");
        }
        answered.push((
            id,
            *method,
            *route,
            *status,
            key.is_some_and(|k| k == tenant.key),
        ));
    }

    receiver.wait_for(1, Duration::from_secs(10)).await;
    let log = process.stop_and_read().await;
    let requests: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "hookline::request")
        .collect();
    assert!(!requests.is_empty(), "no request lines in:\n{log}");
    let mut seen = std::collections::HashSet::new();
    for line in &requests {
        let id = line["fields"]["request_id"].as_str().unwrap();
        assert!(seen.insert(id.to_owned()), "two lines for {id}:\n{log}");
    }
    for (id, method, route, status, as_tenant) in answered {
        let lines: Vec<&Value> = requests
            .iter()
            .filter(|l| l["fields"]["request_id"] == id.as_str())
            .collect();
        assert_eq!(lines.len(), 1, "one line for {id}:\n{log}");
        let fields = &lines[0]["fields"];
        assert_eq!(fields["method"], method, "{fields}");
        assert_eq!(fields["route"], route, "{fields}");
        assert_eq!(fields["status"], status, "{fields}");
        assert!(fields["latency_ms"].as_f64().is_some(), "{fields}");
        if as_tenant && status < 400 {
            assert_eq!(fields["tenant"], tenant.id.as_str(), "{fields}");
        } else {
            assert!(fields.get("tenant").is_none(), "{fields}");
        }
    }
    // One line for the delivery attempt, with what an operator searches by.
    let attempts: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "delivery attempt")
        .collect();
    assert_eq!(attempts.len(), 1, "{log}");
    let attempt = &attempts[0]["fields"];
    assert!(attempt["message_id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(attempt["endpoint_id"], endpoint.as_str());
    assert_eq!(attempt["attempt"], 1);
    assert_eq!(attempt["status"], 200);
    assert_eq!(attempt["class"], "2xx");
    assert_eq!(attempt["outcome"], "succeeded");
    assert!(attempt["latency_ms"].is_u64(), "{attempt}");
    for key in [OPERATOR_KEY, tenant.key.as_str()] {
        assert!(!log.contains(key), "a key in the log:\n{log}");
    }
}

#[tokio::test]
async fn health_is_ok_and_503_naming_the_store_once_the_data_file_is_gone() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/health", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "storage": "ok",
            "queue": "ok",
        })
    );

    // The file removed under the running process (which still holds it open).
    let data = app.dir.path().join("hookline.db");
    std::fs::remove_file(&data).unwrap();
    let response = app
        .client
        .get(format!("{}/health", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["storage"], "error", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("storage"),
        "{body}"
    );
    assert!(
        !body.to_string().contains(&data.display().to_string()),
        "no path in the answer: {body}"
    );
    app.stop().await;
}
