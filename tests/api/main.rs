//! Integration tests: the real local service on port 0, driven over HTTP, delivering to
//! real local receivers.

mod helpers;
mod receiver;

mod api_basics;
mod bad_input;
mod delivery;
mod event_types;
mod formats;
mod isolation;
mod mailgun_api;
mod mailgun_js;
mod owners;
mod restart;
mod standard_webhooks;
mod verify;
