//! `hookline-bench`: measures Hookline in local mode and as Lambda functions.
//!
//! - `local`: the release binary under load (throughput, latency, CPU, memory, disk);
//! - `lambda`: the function bootstraps under a runtime API emulator on moto (size, init,
//!   memory, batch time, AWS calls per delivery);
//! - `sizes`: the bootstraps as `sam build` makes them for Lambda (`cargo lambda build
//!   --release` in each function's folder);
//! - `portal`: the tenant portal's pages over a large log, in local mode;
//! - `filters`: what payload filters cost the fan-out, per endpoint (in process);
//! - `smoke`: every path at tiny scale, checking that the numbers are sane.

mod emulator;
mod filters;
mod lambda;
mod local;
mod portal;
mod procstat;
mod proxy;
mod receiver;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "hookline-bench", about = "Hookline benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Local mode: the real binary under publishing load.
    Local(local::LocalArgs),
    /// The Lambda functions under a runtime API emulator, on moto.
    Lambda(lambda::LambdaArgs),
    /// The tenant portal's pages over a large log, in local mode.
    Portal(portal::PortalArgs),
    /// Builds the bootstraps with `cargo lambda build --release` and reports their sizes.
    Sizes(SizesArgs),
    /// What payload filters cost the fan-out: N filtered endpoints, in process.
    Filters(filters::FilterArgs),
    /// Every measurement at tiny scale; ends with `bench: smoke passed` or `failed`.
    Smoke(SmokeArgs),
}

#[derive(clap::Args)]
struct SizesArgs {
    /// Build for arm64 (as the template deploys); `--arm64 false` builds for x86_64.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    arm64: bool,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SmokeArgs {
    /// Directory of the builds of hookline and the three function binaries.
    #[arg(long, default_value = "target/debug")]
    bin_dir: PathBuf,
    /// moto_server's URL; without it, moto_server is started.
    #[arg(long, env = "HOOKLINE_TEST_AWS_ENDPOINT")]
    moto: Option<String>,
    /// Where the smoke run writes its JSON.
    #[arg(long, default_value = "target/bench-smoke.json")]
    json: PathBuf,
}

/// The machine the figures were taken on.
#[derive(Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
    load_average: String,
}

fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model,
        load_average: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

fn write_json(path: &Path, key: &str, value: impl Serialize) -> anyhow::Result<()> {
    let doc = json!({ "machine": machine(), key: value });
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", path.display()))
}

#[tokio::main]
async fn main() -> ExitCode {
    // The benchmark's own plain-HTTP clients need a rustls provider (see hookline-core).
    hookline_core::client::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Local(args) => run_local(&args).await,
        Cmd::Lambda(args) => run_lambda(&args).await,
        Cmd::Portal(args) => run_portal(&args).await,
        Cmd::Sizes(args) => run_sizes(&args).await,
        Cmd::Filters(args) => run_filters(&args),
        Cmd::Smoke(args) => return smoke(&args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_filters(args: &filters::FilterArgs) -> anyhow::Result<()> {
    let m = machine();
    println!(
        "machine: {} × {}, load {}",
        m.cpus, m.cpu_model, m.load_average
    );
    let r = filters::run(args)?;
    println!(
        "{} endpoints, {} messages of {} bytes: fan-out {:.0} ns/message unfiltered, \
         {:.0} ns/message filtered ({:.0}% of targets kept)",
        r.endpoints,
        r.messages,
        r.payload_bytes,
        r.unfiltered_ns_per_message,
        r.filtered_ns_per_message,
        r.matched_share * 100.0
    );
    println!(
        "filters add {:.0} ns per endpoint (payload read included); one filter alone: {:.0} ns",
        r.added_ns_per_endpoint, r.eval_ns_per_filter
    );
    if let Some(path) = &args.json {
        write_json(path, "filters", &r)?;
    }
    Ok(())
}

async fn run_local(args: &local::LocalArgs) -> anyhow::Result<()> {
    let m = machine();
    println!(
        "machine: {} x {}, load {}",
        m.cpus, m.cpu_model, m.load_average
    );
    let results = local::run(args).await?;
    print!("{}", local::table(&results));
    print!("{}", local::disk_table(&results));
    if let Some(path) = &args.json {
        write_json(path, "local", &results)?;
    }
    Ok(())
}

async fn run_lambda(args: &lambda::LambdaArgs) -> anyhow::Result<()> {
    let m = machine();
    println!(
        "machine: {} x {}, load {}",
        m.cpus, m.cpu_model, m.load_average
    );
    let result = lambda::run(args).await?;
    print!("{}", lambda::table(&result));
    if let Some(path) = &args.json {
        write_json(path, "lambda", &result)?;
    }
    Ok(())
}

async fn run_portal(args: &portal::PortalArgs) -> anyhow::Result<()> {
    let m = machine();
    println!(
        "machine: {} x {}, load {}",
        m.cpus, m.cpu_model, m.load_average
    );
    let result = portal::run(args).await?;
    print!("{}", portal::table(&result));
    if let Some(path) = &args.json {
        write_json(path, "portal", &result)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct Size {
    function: String,
    target: String,
    bytes: u64,
}

async fn run_sizes(args: &SizesArgs) -> anyhow::Result<()> {
    // cargo-lambda finds zig through `python3 -m ziglang`: the venv that holds both goes first.
    let venv = [".venv/bin", "/tmp/venv/bin"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cargo-lambda").exists())
        .context("cargo-lambda not found in .venv/bin or /tmp/venv/bin")?;
    let path = format!(
        "{}:{}",
        std::fs::canonicalize(&venv)?.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let target = if args.arm64 { "arm64" } else { "x86_64" };
    let mut sizes = Vec::new();
    for f in ["api", "ingest", "deliver"] {
        // From the function's folder, as `sam build` runs it: functions/.cargo/config.toml
        // (the functions' panic strategy) applies only there.
        let mut command = tokio::process::Command::new("cargo");
        command
            .env("PATH", &path)
            .current_dir(format!("functions/{f}"))
            .args(["lambda", "build", "--release"]);
        // Without what `cargo run` set for this package: a build script that watches one
        // of those variables (ring's watches CARGO_MANIFEST_DIR) would see it change, and
        // this build and the next `sam build` would each rebuild much of the tree.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_BIN_")
                || name.starts_with("CARGO_MANIFEST_")
                || ["CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE"].contains(&name.as_ref())
            {
                command.env_remove(name.as_ref());
            }
        }
        if args.arm64 {
            command.arg("--arm64");
        } else {
            command.arg("--x86-64");
        }
        let status = command.status().await?;
        anyhow::ensure!(status.success(), "cargo lambda build of {f} failed");
        let bootstrap = PathBuf::from(format!("target/lambda/hookline-{f}/bootstrap"));
        let bytes = std::fs::metadata(&bootstrap)
            .with_context(|| format!("{}", bootstrap.display()))?
            .len();
        sizes.push(Size {
            function: f.to_string(),
            target: target.to_string(),
            bytes,
        });
    }
    println!("| function | target | bootstrap bytes | MB |\n| --- | --- | ---: | ---: |");
    for s in &sizes {
        println!(
            "| {} | {} | {} | {:.2} |",
            s.function,
            s.target,
            s.bytes,
            s.bytes as f64 / 1e6
        );
    }
    if let Some(path) = &args.json {
        write_json(path, "sizes", &sizes)?;
    }
    Ok(())
}

async fn smoke(args: &SmokeArgs) -> ExitCode {
    let outcome = smoke_checks(args).await;
    match outcome {
        Ok(()) => {
            println!("bench: smoke passed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("bench: {e:#}");
            println!("bench: smoke failed");
            ExitCode::FAILURE
        }
    }
}

fn check(ok: bool, what: &str) -> anyhow::Result<()> {
    println!("{} {what}", if ok { "ok  " } else { "FAIL" });
    anyhow::ensure!(ok, "{what}: not so");
    Ok(())
}

async fn smoke_checks(args: &SmokeArgs) -> anyhow::Result<()> {
    let local_args = local::LocalArgs {
        binary: args.bin_dir.join("hookline"),
        endpoints: 2,
        rate: vec![local::Rate::PerSecond(50)],
        duration: 3.0,
        concurrency: 4,
        drain: 60.0,
        log: "warn".into(),
        retention: Some(std::time::Duration::from_secs(1)),
        metrics: vec![true, false],
        json: None,
    };
    let local = local::run(&local_args).await?;
    print!("{}", local::table(&local));
    print!("{}", local::disk_table(&local));
    let lambda_args = lambda::LambdaArgs {
        bin_dir: args.bin_dir.clone(),
        moto: args.moto.clone(),
        moto_server: None,
        starts: 3,
        batch: 3,
        endpoints: 2,
        receiver_latency_ms: 50,
        cost_events: 3,
        publish_batch: 2,
        key_events: 5,
        key_rate: 10_000,
        key_instances: 200,
        json: None,
    };
    let lambda = lambda::run(&lambda_args).await?;
    print!("{}", lambda::table(&lambda));
    let portal_args = portal::PortalArgs {
        binary: args.bin_dir.join("hookline"),
        messages: 150,
        endpoints: 2,
        requests: 5,
        json: None,
    };
    let portal = portal::run(&portal_args).await?;
    print!("{}", portal::table(&portal));
    write_json(
        &args.json,
        "smoke",
        json!({ "local": &local, "lambda": &lambda, "portal": &portal }),
    )?;

    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&args.json)?)
        .context("reading back the JSON")?;
    let l = &doc["smoke"]["local"][0];
    let n = |v: &Value| v.as_f64().unwrap_or(-1.0);
    check(n(&l["accepted"]) > 0.0, "local: events were accepted")?;
    check(
        n(&l["deliveries"]) == n(&l["deliveries_expected"]) && n(&l["deliveries"]) > 0.0,
        "local: every accepted event reached both endpoints",
    )?;
    check(
        n(&l["latency"]["count"]) == n(&l["deliveries"]),
        "local: every delivery has a latency",
    )?;
    check(
        n(&l["latency"]["p99_ms"]) >= n(&l["latency"]["p50_ms"])
            && n(&l["latency"]["p50_ms"]) > 0.0,
        "local: latency percentiles are ordered and positive",
    )?;
    check(n(&l["cpu_s"]) > 0.0, "local: the service used CPU")?;
    check(n(&l["peak_rss_mib"]) > 0.0, "local: peak RSS was read")?;
    let split = &l["cpu_split"];
    check(
        n(&split["receiver_cpu_s"]) > 0.0
            && n(&split["publisher_cpu_s"]) >= 0.0
            && n(&split["total_us_per_event"]) >= n(&split["service_us_per_event"])
            && n(&split["service_us_per_event"]) > 0.0
            && n(&split["bound_events_per_s"]) > 0.0,
        "local: CPU per event split between service, publisher and receiver, with its bound",
    )?;
    check(
        n(&l["disk_bytes_per_delivery"]) > 0.0,
        "local: the data file grew",
    )?;
    check(
        l["disk_samples"]
            .as_array()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|s| n(&s["db_bytes"]) > 0.0)),
        "local: the data file's size was sampled through the run",
    )?;
    check(
        n(&l["messages_left"]) == 0.0,
        "local: a 1 s retention emptied the log of delivered messages",
    )?;
    let p = &doc["smoke"]["portal"];
    check(
        n(&p["messages"]) == 150.0,
        "portal: the log holds every published message",
    )?;
    check(
        p["pages"].as_array().is_some_and(|pages| {
            pages.len() == 5
                && pages.iter().all(|p| {
                    n(&p["bytes"]) > 0.0
                        && n(&p["latency"]["count"]) == 5.0
                        && n(&p["latency"]["p95_ms"]) >= n(&p["latency"]["p50_ms"])
                        && n(&p["latency"]["p50_ms"]) > 0.0
                })
        }),
        "portal: every page answered and was timed",
    )?;
    let off = &doc["smoke"]["local"][1];
    check(
        l["metrics"] == true
            && off["metrics"] == false
            && n(&off["deliveries"]) == n(&off["deliveries_expected"])
            && n(&off["deliveries"]) > 0.0,
        "local: a run with metrics off delivered everything too",
    )?;
    check(
        local::metrics_cost(&local)
            .iter()
            .any(|(_, accepted, delivered)| *accepted > 0.0 && *delivered > 0.0),
        "local: the cost of metrics is a ratio of the two runs",
    )?;
    let m = &doc["smoke"]["lambda"];
    check(
        m["binaries"]
            .as_array()
            .is_some_and(|b| b.len() == 3 && b.iter().all(|b| n(&b["bytes"]) > 0.0)),
        "lambda: three bootstraps with sizes",
    )?;
    check(
        m["init"]
            .as_array()
            .is_some_and(|i| i.len() == 3 && i.iter().all(|i| n(&i["median_ms"]) > 0.0)),
        "lambda: init measured for each function",
    )?;
    let b = &m["deliver_batch"];
    let per_batch = n(&b["messages"]) * n(&b["endpoints"]);
    check(
        b["deliveries"]
            .as_array()
            .is_some_and(|d| d.len() == 2 && d.iter().all(|d| n(d) == per_batch)),
        "lambda: each deliver batch reached every endpoint",
    )?;
    check(
        n(&b["cold_wall_ms"]) > 0.0 && n(&b["peak_rss_mib"]) > 0.0,
        "lambda: batch time and RSS measured",
    )?;
    for c in m["cost"].as_array().into_iter().flatten() {
        check(
            n(&c["deliveries"]) == n(&c["events"]) * n(&c["endpoints"]),
            "lambda: the cost scenario delivered everything",
        )?;
        check(
            c["deliver"]
                .as_object()
                .is_some_and(|o| o.keys().any(|k| k.starts_with("DynamoDB."))),
            "lambda: the deliver function's DynamoDB calls were counted",
        )?;
        check(
            c["ingest"]
                .as_object()
                .is_some_and(|o| o.keys().any(|k| k.starts_with("SQS."))),
            "lambda: the ingest function's SQS calls were counted",
        )?;
    }
    let families = m["keys"]["families"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let family = |name: &str| families.iter().find(|f| f["family"] == name);
    check(
        family("T#<tenant>#S<nn>").is_some_and(|f| n(&f["wru_per_event"]) > 0.0)
            && family("T#<tenant>#I<nn>").is_some_and(|f| n(&f["wru_per_event"]) > 0.0),
        "lambda: messages and idempotency bindings were written to shard keys",
    )?;
    check(
        families
            .iter()
            .all(|f| !(f["family"] == "T#<tenant>" && n(&f["wru_per_event"]) > 0.0)),
        "lambda: no event wrote under the tenant's own key",
    )?;
    check(
        families
            .iter()
            .all(|f| n(&f["peak_wru_per_s"]) >= 0.0 && n(&f["peak_rru_per_s"]) >= 0.0)
            && !families.is_empty(),
        "lambda: a projected peak for every key family",
    )?;
    Ok(())
}
