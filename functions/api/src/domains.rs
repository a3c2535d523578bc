//! A tenant's sending domains, the scope of domain-scoped endpoints.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use hookline_core::envelope::check_domain_name;
use hookline_core::http::{no_content, ApiResult, AppState, Caller, ErrorBody, JsonBody};
use hookline_core::model::Domain;
use hookline_core::Error;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::openapi::DomainList;
use crate::views::DomainView;

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
        (status = 201, description = "The domain", body = DomainView),
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
) -> ApiResult<(StatusCode, Json<DomainView>)> {
    let tenant = caller.tenant()?;
    let name = req.name.trim().trim_end_matches('.').to_ascii_lowercase();
    check_domain_name(&name)?;
    let domain = Domain {
        tenant,
        name,
        created_at: state.clock.now(),
    };
    state.store.create_domain(&domain).await?;
    Ok((StatusCode::CREATED, Json(DomainView::from(&domain))))
}

#[utoipa::path(
    get,
    path = "/v1/domains",
    tag = "domains",
    operation_id = "list_domains",
    responses(
        (status = 200, description = "The caller's domains", body = DomainList),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant()?;
    let domains = state.store.list_domains(tenant).await?;
    let data: Vec<DomainView> = domains.iter().map(DomainView::from).collect();
    Ok(Json(json!({ "data": data })))
}

#[utoipa::path(
    get,
    path = "/v1/domains/{name}",
    tag = "domains",
    operation_id = "get_domain",
    params(("name" = String, Path, description = "Domain name")),
    responses(
        (status = 200, description = "The domain", body = DomainView),
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
) -> ApiResult<Json<DomainView>> {
    let tenant = caller.tenant()?;
    let domain = state
        .store
        .get_domain(tenant, &name.to_ascii_lowercase())
        .await?
        .ok_or(Error::NotFound("domain"))?;
    Ok(Json(DomainView::from(&domain)))
}

/// Deletes the domain and the endpoints scoped to it.
#[utoipa::path(
    delete,
    path = "/v1/domains/{name}",
    tag = "domains",
    operation_id = "delete_domain",
    params(("name" = String, Path, description = "Domain name")),
    responses(
        (status = 204, description = "Deleted, with its domain-scoped endpoints"),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
        (status = 404, description = "Not one of the caller's domains", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let tenant = caller.tenant()?;
    if !state
        .store
        .delete_domain(tenant, &name.to_ascii_lowercase())
        .await?
    {
        return Err(Error::NotFound("domain").into());
    }
    Ok(no_content())
}
