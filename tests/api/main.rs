//! Integration tests: the real local service on port 0, driven over HTTP, delivering to
//! real local receivers.

mod helpers;
mod receiver;

mod api_basics;
mod auth_matrix;
mod bad_input;
mod body_limits;
mod consistency;
mod dead_letters;
mod delivery;
mod event_types;
mod filters;
mod formats;
mod health;
mod isolation;
mod load;
mod logs;
mod mailgun_api;
mod mailgun_js;
mod operational;
mod operations;
mod ordering;
mod owners;
mod paging;
mod panics;
mod rate_limit;
mod receiver_auth;
mod replay;
mod restart;
mod retention;
mod signing;
mod standard_webhooks;
mod verify;
