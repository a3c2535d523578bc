//! A panic costs one request or one job, never the process. Local mode's test build (with
//! the `fault-injection` routes, as `--all-features` builds it) is made to panic in a
//! handler, in a job of the database's writer thread and in a delivery task of the worker:
//! each time it answers or carries on, logs the panic, and keeps serving. Cargo builds
//! everything a test runs with unwinding; a second test checks that the release profile,
//! which `cargo run --release` builds local mode with, unwinds too.
#![cfg_attr(not(feature = "fault-injection"), allow(dead_code, unused_imports))]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{all_settled, TestApp, OPERATOR_KEY};
use crate::receiver::Receiver;

/// The panic strategy (`-C panic=`) of the release profile in this workspace, as cargo
/// resolves it from Cargo.toml, `.cargo/config.toml` files, `CARGO_PROFILE_RELEASE_PANIC`
/// and RUSTFLAGS: the verbose command line of a release check of one small dependency, in
/// a target directory of its own so that it compiles (a profile's `panic` applies to every
/// crate of a build, and cargo refuses it in per-package overrides).
fn release_panic_strategy() -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = tempfile::tempdir().unwrap();
    let output = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["check", "--release", "--locked", "--verbose"])
        .args(["-p", "cfg-if", "--target-dir"])
        .arg(target.path())
        .output()
        .expect("cargo runs");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the release check failed:\n{log}");
    let rustc = log
        .lines()
        .find(|line| line.contains("Running `") && line.contains("--crate-name cfg_if"))
        .unwrap_or_else(|| panic!("no rustc command line for cfg-if in:\n{log}"));
    // The last `-C panic=` wins, as rustc reads it; none is rustc's default, unwind.
    let words: Vec<&str> = rustc.split_whitespace().collect();
    let mut strategy = "unwind".to_string();
    for (i, word) in words.iter().enumerate() {
        let setting = match *word {
            "-C" | "--codegen" => words.get(i + 1).copied().unwrap_or_default(),
            word => word
                .strip_prefix("-C")
                .or_else(|| word.strip_prefix("--codegen="))
                .unwrap_or_default(),
        };
        if let Some(value) = setting.strip_prefix("panic=") {
            strategy = value.trim_end_matches('`').to_string();
        }
    }
    strategy
}

#[test]
fn the_release_profile_unwinds_like_the_build_the_panic_test_runs() {
    assert_eq!(
        release_panic_strategy(),
        "unwind",
        "local mode's release build must unwind: a panic would otherwise take the process down"
    );
}

/// The process, killed when the test ends however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_log(log: &Path, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logged = std::fs::read_to_string(log).unwrap_or_default();
        if logged.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never logged {text:?}; the log:\n{logged}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(feature = "fault-injection")]
#[tokio::test]
async fn panics_in_a_handler_a_database_job_and_a_delivery_task_leave_the_process_serving() {
    let binary = env!("CARGO_BIN_EXE_hookline");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("output.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut process = Process(
        Command::new(binary)
            .env("HOOKLINE_LISTEN", format!("127.0.0.1:{port}"))
            .env("HOOKLINE_DATA", dir.path().join("hookline.db"))
            .env("HOOKLINE_OPERATOR_KEY", OPERATOR_KEY)
            .env("HOOKLINE_ALLOW_HTTP", "true")
            .env("HOOKLINE_ALLOWED_NETWORKS", "127.0.0.1/32")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("the binary starts"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let app = TestApp {
        base: base.clone(),
        client: crate::helpers::client(),
        running: None,
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while app
        .client
        .get(format!("{base}/v1/event-types"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "hookline did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let internal_error = json!({"error": {"code": "internal_error", "message": "internal error"}});

    // A handler: a bare 500 in our format, the panic in the log, and the next request served.
    let (status, body) = app.call(Method::POST, "/_fault/handler", None, None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, internal_error);
    wait_for_log(&log, "request handler panicked").await;
    wait_for_log(&log, "injected panic in a request handler").await;
    let tenant = app.create_tenant("after a handler panic").await;

    // A job of the writer thread: it panics there, and its caller's request gets the 500;
    // the writer lives on and commits the next write.
    let (status, body) = app.call(Method::POST, "/_fault/database", None, None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, internal_error);
    wait_for_log(&log, "injected panic in a database write").await;
    let receiver = Receiver::start(200).await;
    app.create_endpoint(&tenant.key, json!({"url": receiver.url("/hooks")}))
        .await;

    // A delivery task: that task fails, the worker delivers the next event.
    let (status, _) = app.call(Method::POST, "/_fault/delivery", None, None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_for_log(&log, "delivery task panicked").await;
    wait_for_log(&log, "injected panic in a delivery task").await;
    let id = app
        .publish(
            &tenant.key,
            json!({"type": "delivered", "payload": {"after": "panics"}}),
        )
        .await;
    let message = app
        .wait_message(&tenant.key, &id, Duration::from_secs(30), all_settled)
        .await;
    assert_eq!(message["deliveries"][0]["status"], "succeeded", "{message}");
    assert_eq!(receiver.count(), 1);

    assert!(
        process.0.try_wait().unwrap().is_none(),
        "the process is still running"
    );
    let (status, _) = app.get("/v1/event-types", &tenant.key).await;
    assert_eq!(status, StatusCode::OK);
}
