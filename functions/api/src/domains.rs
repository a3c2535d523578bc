//! A tenant's sending domains, the scope of domain-scoped endpoints.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use hookline_core::envelope::check_domain_name;
use hookline_core::http::{no_content, ApiResult, AppState, Caller, JsonBody};
use hookline_core::model::Domain;
use hookline_core::Error;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::views::DomainView;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDomain {
    name: String,
}

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

pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant()?;
    let domains = state.store.list_domains(tenant).await?;
    let data: Vec<DomainView> = domains.iter().map(DomainView::from).collect();
    Ok(Json(json!({ "data": data })))
}

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
