//! The `hookline` command: local mode (`hookline`, `hookline serve`, `cargo run`) or one
//! of the client subcommands of `hookline::cli`.

use std::process::ExitCode;

use clap::Parser;
use hookline::cli::{Cli, Command};
use hookline::{start, LocalConfig};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its place in the `mi_option_e` of the mimalloc the
/// -sys crate builds (v3), which the crate's constants do not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Has the allocator give freed pages back to the system at once rather than a second
/// later (mimalloc v3's default), unless `MIMALLOC_PURGE_DELAY` says otherwise. With
/// hundreds of deliveries in flight the delay kept a burst's freed buffers resident: peak
/// RSS at full load 42–43 MiB with the delay, 34 MiB without, for no CPU cost the
/// benchmark can tell from its noise (docs/benchmarks.md, "Thread hand-offs cut").
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of the allocator's options, which it reads at each purge; it
        // touches no memory of ours.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
    }
}

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
    init_logs()?;
    purge_freed_memory_at_once();
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

/// Logs filtered by `HOOKLINE_LOG` (default `info`), as text for people or, with
/// `HOOKLINE_LOG_FORMAT=json`, as one JSON object a line for a log pipeline.
fn init_logs() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_env("HOOKLINE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let format = std::env::var("HOOKLINE_LOG_FORMAT").unwrap_or_default();
    match format.trim().to_ascii_lowercase().as_str() {
        "" | "text" | "human" => tracing_subscriber::fmt().with_env_filter(filter).init(),
        "json" => tracing_subscriber::fmt()
            .json()
            .with_current_span(false)
            .with_env_filter(filter)
            .init(),
        other => anyhow::bail!("HOOKLINE_LOG_FORMAT must be text or json, not {other:?}"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The option set is the purge delay: the one just before the NUMA nodes in mimalloc's
    /// own `mi_option_e`, whose default in v3 is 1,000 ms, and setting it reads back.
    #[test]
    fn the_option_set_is_the_purge_delay() {
        use libmimalloc_sys::{mi_option_get, mi_option_use_numa_nodes};
        assert_eq!(MI_OPTION_PURGE_DELAY + 1, mi_option_use_numa_nodes);
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads an option.
            assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, 1000);
            purge_freed_memory_at_once();
            // SAFETY: reads an option.
            assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, 0);
        }
    }
}
