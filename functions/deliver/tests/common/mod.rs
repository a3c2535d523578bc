//! What the deliver crate's test binaries share: a deliverer that may reach receivers on
//! 127.0.0.1 over plain HTTP, with a short retry schedule and request timeout.

use std::sync::Arc;
use std::time::Duration;

use hookline_core::config::CoreConfig;
use hookline_core::ports::{SharedClock, SharedQueue, SharedStore, SystemClock};
use hookline_core::urlpolicy::{SystemResolver, UrlPolicy};
use hookline_deliver::{Deliverer, Sender, SenderOptions};

// Each test binary includes this file; those that set their own clock use only
// `loopback_deliverer_at`.
#[allow(dead_code)]
pub fn loopback_deliverer(
    store: SharedStore,
    queue: SharedQueue,
    schedule: &str,
    timeout: Duration,
) -> Deliverer {
    loopback_deliverer_at(store, queue, schedule, timeout, Arc::new(SystemClock))
}

/// [`loopback_deliverer`] on the given clock.
pub fn loopback_deliverer_at(
    store: SharedStore,
    queue: SharedQueue,
    schedule: &str,
    timeout: Duration,
    clock: SharedClock,
) -> Deliverer {
    let config = Arc::new(CoreConfig {
        url_policy: Arc::new(UrlPolicy {
            allow_http: true,
            allowed_networks: UrlPolicy::parse_networks("127.0.0.1/32").unwrap(),
        }),
        retry: schedule.parse().unwrap(),
        request_timeout: timeout,
        ..CoreConfig::default()
    });
    let sender = Sender::new(SenderOptions {
        policy: config.url_policy.clone(),
        resolver: Arc::new(SystemResolver),
        timeout: config.request_timeout,
        extra_roots: Vec::new(),
    })
    .unwrap();
    Deliverer::new(store, queue, clock, config, Arc::new(sender))
}
