//! A tenant's sending domains, the scope of domain-scoped endpoints.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use hookline_core::envelope::check_domain_name;
use hookline_core::fields::domain_name;
use hookline_core::http::{
    no_content, page_body, with_etag, ApiResult, AppState, Caller, ErrorBody, IfMatch, JsonBody,
    Paging,
};
use hookline_core::model::Domain;
use hookline_core::ports::Written;
use hookline_core::Error;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::endpoints::{paging, IF_MATCH_DOC};
use crate::openapi::DomainList;
use crate::views::DomainView;

/// The revision a domain's `ETag` names: a domain never changes, so it is the one made at
/// that time (another made under the same name later has another).
fn revision(d: &Domain) -> String {
    format!("c{}", d.created_at)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "mg.acme.example"}))]
pub struct CreateDomain {
    /// A DNS name; stored in lower case without a trailing dot.
    name: String,
}

#[utoipa::path(
    post,
    path = "/v1/domains",
    tag = "domains",
    operation_id = "create_domain",
    request_body = CreateDomain,
    responses(
        (status = 201, description = "The domain", body = DomainView,
            headers(("ETag" = String, description = "The domain's revision, for `If-Match`"))),
        (status = 400, description = "Invalid body or domain name", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 409, description = "The domain exists", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<CreateDomain>,
) -> ApiResult<Response> {
    let tenant = caller.tenant()?;
    let name = domain_name(&req.name);
    check_domain_name(&name)?;
    let domain = Domain {
        tenant,
        name,
        created_at: state.clock.now(),
    };
    state.store.create_domain(&domain).await?;
    Ok(with_etag(
        &revision(&domain),
        (StatusCode::CREATED, Json(DomainView::from(&domain))),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/domains",
    tag = "domains",
    operation_id = "list_domains",
    params(Paging),
    responses(
        (status = 200, description = "A page of the caller's domains, by name", body = DomainList),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Paging>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant()?;
    let page = state
        .store
        .list_domains(tenant, &paging(query)?.query()?)
        .await?;
    let views: Vec<DomainView> = page.items.iter().map(DomainView::from).collect();
    Ok(Json(page_body(&views, page.next_cursor, |d| {
        d.name.clone()
    })))
}

#[utoipa::path(
    get,
    path = "/v1/domains/{name}",
    tag = "domains",
    operation_id = "get_domain",
    params(("name" = String, Path, description = "Domain name")),
    responses(
        (status = 200, description = "The domain", body = DomainView,
            headers(("ETag" = String, description = "The domain's revision, for `If-Match`"))),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 404, description = "Not one of the caller's domains", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let domain = load(&state, caller, &name).await?;
    Ok(with_etag(
        &revision(&domain),
        Json(DomainView::from(&domain)),
    ))
}

async fn load(state: &AppState, caller: Caller, name: &str) -> ApiResult<Domain> {
    let tenant = caller.tenant()?;
    Ok(state
        .store
        .get_domain(tenant, &domain_name(name))
        .await?
        .ok_or(Error::NotFound("domain"))?)
}

/// Deletes the domain and the endpoints scoped to it.
#[utoipa::path(
    delete,
    path = "/v1/domains/{name}",
    tag = "domains",
    operation_id = "delete_domain",
    params(
        ("name" = String, Path, description = "Domain name"),
        ("If-Match" = Option<String>, Header, description = IF_MATCH_DOC),
    ),
    responses(
        (status = 204, description = "Deleted, with its domain-scoped endpoints"),
        (status = 400, description = "Invalid If-Match", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 404, description = "Not one of the caller's domains", body = ErrorBody),
        (status = 412, description = "`precondition_failed`: not the domain of the `If-Match` revision (deleted and made again since); nothing was deleted", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    if_match: IfMatch,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let tenant = caller.tenant()?;
    let name = domain_name(&name);
    let made_at = if if_match.is_set() {
        let domain = load(&state, caller, &name).await?;
        if_match.check(&revision(&domain))?;
        Some(domain.created_at)
    } else {
        None
    };
    match state.store.delete_domain(tenant, &name, made_at).await? {
        Written::Done => Ok(no_content()),
        Written::Missing => Err(Error::NotFound("domain").into()),
        Written::Stale => Err(Error::PreconditionFailed(
            "the domain changed since the ETag given in If-Match; read it again",
        )
        .into()),
    }
}
