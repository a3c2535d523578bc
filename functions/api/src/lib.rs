//! The tenant and operator API (`/v1`): tenants, their sub-accounts and keys, domains,
//! endpoints and their secrets, the message and attempt log, and the event-type catalog. The same router
//! serves local mode and the api Lambda function.

mod domains;
mod endpoints;
mod event_types;
mod mailgun;
mod messages;
mod tenants;
mod views;

use axum::routing::{get, post};
use axum::Router;
use hookline_core::http::AppState;

pub use endpoints::validate_url;

/// Every `/v1` route but publishing (which the ingest crate serves).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/tenants", post(tenants::create))
        .route("/v1/tenants/{id}", get(tenants::get))
        .route(
            "/v1/sub-accounts",
            post(tenants::create_sub_account).get(tenants::list_sub_accounts),
        )
        .route(
            "/v1/tenants/{id}/api-keys",
            post(tenants::create_key).get(tenants::list_keys),
        )
        .route(
            "/v1/tenants/{id}/api-keys/{key_id}",
            axum::routing::delete(tenants::revoke_key),
        )
        .route("/v1/domains", post(domains::create).get(domains::list))
        .route(
            "/v1/domains/{name}",
            get(domains::get).delete(domains::delete),
        )
        .route(
            "/v1/endpoints",
            post(endpoints::create).get(endpoints::list),
        )
        .route(
            "/v1/endpoints/{id}",
            get(endpoints::get)
                .patch(endpoints::update)
                .delete(endpoints::delete),
        )
        .route("/v1/endpoints/{id}/secret", get(endpoints::secret))
        .route("/v1/endpoints/{id}/secret/rotate", post(endpoints::rotate))
        .route("/v1/endpoints/{id}/test", post(endpoints::test))
        .route("/v1/messages", get(messages::list))
        .route("/v1/messages/{id}", get(messages::get))
        .route("/v1/messages/{id}/attempts", get(messages::attempts))
        .route(
            "/v1/event-types",
            get(event_types::list).post(event_types::create),
        )
        // Mailgun's webhooks API over the same endpoints (see `mailgun`).
        .route(
            "/v3/domains/{domain}/webhooks",
            get(mailgun::list).post(mailgun::create),
        )
        .route(
            "/v3/domains/{domain}/webhooks/{name}",
            get(mailgun::get)
                .put(mailgun::update)
                .delete(mailgun::delete),
        )
        .with_state(state)
}
