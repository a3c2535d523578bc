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

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use hookline_core::http::AppState;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use endpoints::validate_url;
pub use mailgun::{parse_form as parse_mailgun_form, Form as MailgunForm, MailgunError};

/// The OpenAPI document of the whole HTTP API as `openapi()` generates it (compact JSON,
/// `jq .` shows it), committed and served as it is: the binaries then carry none of the
/// code that builds it. A test checks that it is the generated one, and rewrites it when
/// `HOOKLINE_WRITE_OPENAPI` is set.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Every documented handler, in one list for the router that serves them (`router`) and
/// the document that describes them (`routes`), so that neither has one the other lacks.
macro_rules! with_handlers {
    ($callback:ident) => {
        $callback!(
            health::health,
            tenants::create,
            tenants::get,
            tenants::create_sub_account,
            tenants::list_sub_accounts,
            tenants::create_key,
            tenants::list_keys,
            tenants::get_key,
            tenants::revoke_key,
            domains::create,
            domains::list,
            domains::get,
            domains::delete,
            endpoints::create,
            endpoints::list,
            endpoints::get,
            endpoints::update,
            endpoints::delete,
            endpoints::secret,
            endpoints::rotate,
            endpoints::public_key,
            endpoints::test,
            replay::endpoint,
            messages::list,
            messages::get,
            messages::attempts,
            replay::message,
            event_types::list,
            event_types::create,
            event_types::get,
            operator::create_endpoint,
            operator::list_endpoints,
            operator::get_endpoint,
            operator::update_endpoint,
            operator::delete_endpoint,
            operator::endpoint_secret,
            operator::list_dead_letters,
            operator::redrive,
            // Mailgun's webhooks API over the same endpoints (see `mailgun`).
            mailgun::list,
            mailgun::create,
            mailgun::get,
            mailgun::update,
            mailgun::delete,
            mailgun::test,
            portal::session::create_session,
        )
    };
}

macro_rules! served {
    ($($handler:path),+ $(,)?) => {
        hookline_core::route_documented!(Router::new(), $($handler),+)
    };
}

macro_rules! documented {
    ($($handler:path),+ $(,)?) => {
        OpenApiRouter::with_openapi(openapi::ApiDoc::openapi()) $(.routes(routes!($handler)))+
    };
}

/// Every `/v1` route but publishing (which the ingest crate serves), Mailgun's `/v3`
/// webhooks API, and `GET /openapi.json` (no key needed), which documents them all and
/// publishing too.
pub fn router(state: AppState) -> Router {
    with_handlers!(served)
        .route(
            "/openapi.json",
            get(|| async { ([(CONTENT_TYPE, "application/json")], OPENAPI_JSON) }),
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
    with_handlers!(documented)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_openapi_document_is_the_generated_one() {
        let generated = openapi()
            .to_json()
            .expect("the OpenAPI document serializes");
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        if std::env::var_os("HOOKLINE_WRITE_OPENAPI").is_some() {
            std::fs::write(file, &generated).expect("openapi.json is written");
            return;
        }
        // One line, as served: name the first difference rather than print both.
        let first_difference = generated
            .bytes()
            .zip(OPENAPI_JSON.bytes())
            .position(|(generated, committed)| generated != committed)
            .unwrap_or(generated.len().min(OPENAPI_JSON.len()));
        assert!(
            generated == OPENAPI_JSON,
            "{file} is not what the annotations generate (from byte {first_difference}: {:?}); \
             rewrite it with `HOOKLINE_WRITE_OPENAPI=1 cargo test -p hookline-api --lib \
             the_committed_openapi_document`",
            generated.get(first_difference..(first_difference + 80).min(generated.len())),
        );
    }
}
