//! The `hookline` command: `serve` (local mode, also what a bare `hookline` runs) and the
//! client subcommands that drive a running Hookline over its HTTP API, local or on AWS.
//! Exit status: 0 on success, 1 when the API refuses a request, 2 on a usage error.

mod api;
mod config;
mod events;
mod messages;
mod output;
mod receive;
mod resources;

use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

pub use api::Refused;
pub use receive::{verify_mailgun, verify_standard, Verdict};

use crate::LocalConfig;

/// Everything `hookline` takes: local mode's settings when no subcommand is named (so
/// `cargo run` starts the service as it always did), or one subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "hookline",
    version,
    about = "Hookline webhook delivery: run it locally, or manage and inspect a running one",
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  hookline                                  # local mode, as `hookline serve`\n  hookline login --url http://127.0.0.1:8080 --key hk_...\n  hookline endpoints list\n  hookline events publish --file events.jsonl"
)]
pub struct Cli {
    #[command(flatten)]
    pub serve: LocalConfig,
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The Hookline to talk to and how to show answers; on every client subcommand.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Base URL of the Hookline API (else the profile's).
    #[arg(long, global = true, env = "HOOKLINE_URL")]
    pub url: Option<String>,
    /// API key, tenant or operator (else the profile's).
    #[arg(long, global = true, env = "HOOKLINE_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Profile of the config file written by `hookline login` (default: its default).
    #[arg(long, global = true, env = "HOOKLINE_PROFILE")]
    pub profile: Option<String>,
    /// Print JSON (for scripts) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run Hookline in local mode (what `hookline` alone does).
    #[command(
        after_help = "Example:\n  HOOKLINE_OPERATOR_KEY=hkop_demo hookline serve --listen 127.0.0.1:8080"
    )]
    Serve(Box<LocalConfig>),
    /// Save a URL and key as a profile in the config file (created with mode 0600).
    #[command(
        after_help = "Example:\n  hookline login --url https://hooks.example.com --key hk_... --profile prod"
    )]
    Login(config::Login),
    /// Tenants and sub-accounts.
    #[command(
        subcommand,
        after_help = "Example:\n  hookline tenants create \"Acme Mail\" --key hkop_..."
    )]
    Tenants(resources::Tenants),
    /// A tenant's API keys.
    #[command(
        subcommand,
        after_help = "Example:\n  hookline keys list --tenant tn_..."
    )]
    Keys(resources::Keys),
    /// Sending domains.
    #[command(
        subcommand,
        after_help = "Example:\n  hookline domains create mg.acme.example"
    )]
    Domains(resources::Domains),
    /// Endpoints, their secrets and test sends.
    #[command(
        subcommand,
        after_help = "Example:\n  hookline endpoints create https://hooks.acme.example/all"
    )]
    Endpoints(resources::Endpoints),
    /// The catalog of event types.
    #[command(subcommand, after_help = "Example:\n  hookline event-types list")]
    EventTypes(resources::EventTypes),
    /// Publishing events.
    #[command(
        subcommand,
        after_help = "Example:\n  hookline events publish --file events.jsonl"
    )]
    Events(events::Events),
    /// The message log: messages, their deliveries and attempts.
    #[command(subcommand, after_help = "Example:\n  hookline messages tail")]
    Messages(messages::Messages),
    /// Send failed deliveries again.
    #[command(
        subcommand,
        after_help = "Example:\n  hookline replay endpoint ep_... --since 2h"
    )]
    Replay(messages::Replay),
    /// Receive webhooks on 127.0.0.1 and print each with its signature check.
    #[command(after_help = "Example:\n  hookline listen --port 9000 --secret whsec_...")]
    Listen(receive::Listen),
    /// Check the signature of one delivery (Standard Webhooks, and Mailgun's body format).
    #[command(
        after_help = "Example:\n  hookline verify --secret whsec_... -H 'webhook-id: msg_...' \\\n    -H 'webhook-timestamp: 1700000000' -H 'webhook-signature: v1,...' < body.json"
    )]
    Verify(receive::Verify),
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  hookline completions bash > ~/.local/share/bash-completion/completions/hookline"
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: Shell,
    },
}

/// A mistake in how the command was called, found after clap's own checks (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    Usage(msg.into()).into()
}

/// Runs one client subcommand and gives the exit status it earned.
pub async fn run(global: Global, command: Command) -> ExitCode {
    let result = match command {
        Command::Serve(_) => unreachable!("main starts the service itself"),
        Command::Completions { shell } => {
            // Written whole, so that a closed pipe is an error and not a panic.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "hookline", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script).map_err(Into::into)
        }
        Command::Login(login) => config::login(login, &global).await,
        Command::Tenants(c) => resources::tenants(c, &global).await,
        Command::Keys(c) => resources::keys(c, &global).await,
        Command::Domains(c) => resources::domains(c, &global).await,
        Command::Endpoints(c) => resources::endpoints(c, &global).await,
        Command::EventTypes(c) => resources::event_types(c, &global).await,
        Command::Events(c) => events::run(c, &global).await,
        Command::Messages(c) => messages::messages(c, &global).await,
        Command::Replay(c) => messages::replay(c, &global).await,
        Command::Listen(c) => receive::listen(c, &global).await,
        Command::Verify(c) => receive::verify(c, &global),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<Usage>().is_some() {
                output::error(&format!("{e}"));
                ExitCode::from(2)
            } else if let Some(refused) = e.downcast_ref::<Refused>() {
                output::error(&refused.to_string());
                ExitCode::from(1)
            } else {
                output::error(&format!("{e:#}"));
                ExitCode::from(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand, at every depth, shows an example under `--help`.
    #[test]
    fn every_subcommand_has_an_example() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                let help = sub
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                if !help.contains("Example") {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing);
            }
        }
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&cmd, "hookline", &mut missing);
        assert!(missing.is_empty(), "no example in --help of: {missing:?}");
    }
}
