//! Hookline's core: the domain model, the rules (signing, retries, URL policy, validation),
//! the ports to storage and queue, and the embedded adapters for local mode. The api,
//! ingest and deliver crates and the local binary are thin layers over this crate.

pub mod cache;
pub mod catalog;
pub mod client;
pub mod config;
pub mod credentials;
pub mod envelope;
pub mod error;
pub mod fields;
pub mod filter;
pub mod ids;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod oauth;
pub mod operational;
pub mod ports;
pub mod retry;
pub mod signing;
pub mod task;
pub mod urlpolicy;
pub mod verdict;
pub mod webhook;

#[cfg(feature = "aws")]
pub mod aws;

#[cfg(any(test, feature = "contract"))]
pub mod contract;
#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(feature = "http-api")]
pub mod http;
#[cfg(feature = "lambda")]
pub mod lambda;

pub use error::{Error, Result};
