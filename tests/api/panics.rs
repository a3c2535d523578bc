//! A panic costs one request or one job, never the process. Local mode is built with the
//! release profile's panic strategy (the `panic-check` profile inherits `release`, and only
//! compiles faster) and the `fault-injection` routes, then made to panic in a handler, in a
//! job of the database's writer thread and in a delivery task of the worker: each time it
//! answers or carries on, logs the panic, and keeps serving.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{all_settled, TestApp, OPERATOR_KEY};
use crate::receiver::Receiver;

const PROFILE: &str = "panic-check";

/// Builds local mode as scripts/test.sh does before the test run (then this is a no-op);
/// returns the binary.
fn build() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    // Without what cargo set for this test's own package: build scripts that watch such a
    // variable (ring's watches CARGO_MANIFEST_DIR) would see a change and rebuild.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_")
            || name.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
            ]
            .contains(&name.as_ref())
        {
            command.env_remove(name.as_ref());
        }
    }
    let status = command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--locked", "--quiet", "--profile", PROFILE])
        .args(["--bin", "hookline", "--features", "fault-injection"])
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "local mode builds with the {PROFILE} profile"
    );
    // This test runs from <target>/debug/deps.
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).expect("the target directory");
    target.join(PROFILE).join("hookline")
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

#[tokio::test]
async fn panics_in_a_handler_a_database_job_and_a_delivery_task_leave_the_process_serving() {
    let binary = build();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("output.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut process = Process(
        Command::new(&binary)
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
