//! The `hookline` command's client subcommands, run as a separate process against local
//! mode started by each test, with their own config directory.

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "../api/receiver.rs"]
mod receiver;
mod support;

mod events;
mod login;
mod messages;
mod output;
mod receive;
mod replay;
mod resources;
