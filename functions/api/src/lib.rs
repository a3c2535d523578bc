//! The tenant and operator API (`/v1`): tenants, their sub-accounts and keys, domains,
//! endpoints and their secrets, the message and attempt log, the event-type catalog, the
//! operator's endpoints and the dead-letter queue, `GET /health`, and the tenant portal
//! (`/portal/`) over them. The same router serves local mode and the api Lambda function.

mod domains;
mod endpoints;
mod event_types;
mod health;
mod mailgun;
mod messages;
mod openapi;
mod operator;
mod portal;
mod replay;
mod tenants;
mod views;

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use hookline_core::http::AppState;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use endpoints::validate_url;
pub use mailgun::{parse_form as parse_mailgun_form, Form as MailgunForm, MailgunError};

/// Every `/v1` route but publishing (which the ingest crate serves), Mailgun's `/v3`
/// webhooks API, and `GET /openapi.json` (no key needed), which documents them all and
/// publishing too.
pub fn router(state: AppState) -> Router {
    let (router, _) = routes().split_for_parts();
    let doc = Bytes::from(
        openapi()
            .to_json()
            .expect("the OpenAPI document serializes"),
    );
    router
        .route(
            "/openapi.json",
            get(move || async move { ([(CONTENT_TYPE, "application/json")], doc) }),
        )
        .merge(portal::router())
        .with_state(state)
}

/// The OpenAPI document of the whole HTTP API: these routes and the ingest crate's.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes().into_openapi();
    doc.merge(hookline_ingest::routes().into_openapi());
    doc
}

/// The routes with their documentation. Each is registered from its `#[utoipa::path]`
/// annotation, so none is served undocumented.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(tenants::create))
        .routes(routes!(tenants::get))
        .routes(routes!(
            tenants::create_sub_account,
            tenants::list_sub_accounts
        ))
        .routes(routes!(tenants::create_key, tenants::list_keys))
        .routes(routes!(tenants::get_key, tenants::revoke_key))
        .routes(routes!(domains::create, domains::list))
        .routes(routes!(domains::get, domains::delete))
        .routes(routes!(endpoints::create, endpoints::list))
        .routes(routes!(
            endpoints::get,
            endpoints::update,
            endpoints::delete
        ))
        .routes(routes!(endpoints::secret))
        .routes(routes!(endpoints::rotate))
        .routes(routes!(endpoints::public_key))
        .routes(routes!(endpoints::test))
        .routes(routes!(replay::endpoint))
        .routes(routes!(messages::list))
        .routes(routes!(messages::get))
        .routes(routes!(messages::attempts))
        .routes(routes!(replay::message))
        .routes(routes!(event_types::list, event_types::create))
        .routes(routes!(event_types::get))
        .routes(routes!(operator::create_endpoint, operator::list_endpoints))
        .routes(routes!(
            operator::get_endpoint,
            operator::update_endpoint,
            operator::delete_endpoint
        ))
        .routes(routes!(operator::endpoint_secret))
        .routes(routes!(operator::list_dead_letters))
        .routes(routes!(operator::redrive))
        // Mailgun's webhooks API over the same endpoints (see `mailgun`).
        .routes(routes!(mailgun::list, mailgun::create))
        .routes(routes!(mailgun::get, mailgun::update, mailgun::delete))
        .routes(routes!(mailgun::test))
        .routes(routes!(portal::session::create_session))
}
