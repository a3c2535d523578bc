//! The `hookline` command: local mode (`hookline`, `hookline serve`, `cargo run`) or one
//! of the client subcommands of `hookline::cli`.

use std::process::ExitCode;

use clap::Parser;
use hookline::cli::{Cli, Command};
use hookline::{start, LocalConfig};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let cfg = match cli.command {
        None => cli.serve,
        Some(Command::Serve(cfg)) => *cfg,
        Some(command) => {
            #[cfg(unix)]
            // SAFETY: set once, before any thread of ours writes to a pipe; the service
            // keeps Rust's default (ignored, seen as EPIPE on the socket it concerns).
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
            return Ok(hookline::cli::run(cli.global, command).await);
        }
    };
    serve(cfg).await?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(cfg: LocalConfig) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("HOOKLINE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let mut running = start(cfg).await?;
    if let Some(key) = &running.generated_operator_key {
        // Printed once, on the first start; only its hash is stored.
        println!("Operator key (shown only now, keep it safe): {key}");
    }
    println!("Hookline listening on http://{}", running.addr);
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = running.wait() => {}
    }
    running.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = ctrl_c => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
