//! Tenants (created by the operator), their sub-accounts (created by a top-level tenant,
//! one level deep, so that events can be published for them with `"owner"`) and their API
//! keys.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use hookline_core::http::{
    no_content, page_body, with_etag, ApiResult, AppState, Caller, ErrorBody, IfMatch, JsonBody,
    Paging,
};
use hookline_core::ids::{ApiKeyId, TenantId};
use hookline_core::keys::PlainKey;
use hookline_core::model::{ApiKeyRecord, Tenant};
use hookline_core::ports::Written;
use hookline_core::Error;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::endpoints::{paging, IF_MATCH_DOC};
use crate::openapi::{ApiKeyCreated, ApiKeyList, TenantCreated, TenantList};
use crate::views::{ApiKeyView, TenantView};

/// The revision a tenant's `ETag` names: tenants do not change once made.
fn tenant_revision(t: &Tenant) -> String {
    format!("c{}", t.created_at)
}

/// The revision an API key's `ETag` names: live, or revoked (its only change).
fn key_revision(k: &ApiKeyRecord) -> String {
    match k.revoked_at {
        None => "live".to_string(),
        Some(at) => format!("revoked.{at}"),
    }
}

const MAX_NAME: usize = 200;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Acme Mail"}))]
pub struct CreateTenant {
    /// 1 to 200 printable characters (trimmed).
    #[schema(min_length = 1, max_length = 200)]
    name: String,
}

#[utoipa::path(
    post,
    path = "/v1/tenants",
    tag = "tenants",
    operation_id = "create_tenant",
    request_body = CreateTenant,
    responses(
        (status = 201, description = "The tenant, with its first API key (shown only here)", body = TenantCreated),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "Not the operator key", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ),
    security(("operator_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<CreateTenant>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_operator()?;
    let name = tenant_name(&req.name)?;
    let created = create_with_key(&state, name, None).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// A sub-account of the calling tenant, with its first key (shown only here).
#[utoipa::path(
    post,
    path = "/v1/sub-accounts",
    tag = "tenants",
    operation_id = "create_sub_account",
    request_body = CreateTenant,
    responses(
        (status = 201, description = "The sub-account, with its first API key (shown only here)", body = TenantCreated),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key, or the caller is a sub-account", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn create_sub_account(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<CreateTenant>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let parent = caller.tenant()?;
    let name = tenant_name(&req.name)?;
    let record = state
        .store
        .get_tenant(parent)
        .await?
        .ok_or(Error::NotFound("tenant"))?;
    if record.parent.is_some() {
        return Err(Error::Forbidden("a sub-account cannot have sub-accounts").into());
    }
    let created = create_with_key(&state, name, Some(parent)).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The calling tenant's sub-accounts, oldest first.
#[utoipa::path(
    get,
    path = "/v1/sub-accounts",
    tag = "tenants",
    operation_id = "list_sub_accounts",
    params(Paging),
    responses(
        (status = 200, description = "A page of the sub-accounts, without keys", body = TenantList),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 403, description = "The operator key", body = ErrorBody),
    ),
    security(("tenant_key" = []))
)]
pub async fn list_sub_accounts(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Paging>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let parent = caller.tenant()?;
    let page = state
        .store
        .list_sub_accounts(parent, &paging(query)?.query()?)
        .await?;
    let views: Vec<TenantView> = page.items.iter().map(TenantView::from).collect();
    Ok(Json(page_body(&views, page.next_cursor, |t| {
        t.id.to_string()
    })))
}

/// A tenant name: trimmed, 1 to [`MAX_NAME`] printable characters.
fn tenant_name(raw: &str) -> Result<String, Error> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "invalid_name",
            format!("name must be 1 to {MAX_NAME} printable characters"),
        ));
    }
    Ok(name.to_string())
}

/// Creates a tenant and its first key; the body shows the key, once.
async fn create_with_key(
    state: &AppState,
    name: String,
    parent: Option<TenantId>,
) -> ApiResult<Value> {
    let now = state.clock.now();
    let tenant = Tenant {
        id: TenantId::new(),
        name,
        parent,
        created_at: now,
    };
    let (key, record) = new_key(tenant.id, now);
    state.store.create_tenant(&tenant, &record).await?;
    tracing::info!(tenant = %tenant.id, parent = ?tenant.parent, "tenant created");
    let mut body = serde_json::to_value(TenantView::from(&tenant)).expect("view serializes");
    body["api_key"] = json!(key.expose());
    Ok(body)
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{id}",
    tag = "tenants",
    operation_id = "get_tenant",
    params(("id" = String, Path, description = "Tenant id (`tn_…`)")),
    responses(
        (status = 200, description = "The tenant", body = TenantView,
            headers(("ETag" = String, description = "The tenant's revision"))),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant, or not the caller", body = ErrorBody),
    ),
    security(("operator_key" = []), ("tenant_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let tenant = tenant_for(&state, caller, &id).await?;
    Ok(with_etag(
        &tenant_revision(&tenant),
        Json(TenantView::from(&tenant)),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/api-keys",
    tag = "tenants",
    operation_id = "create_api_key",
    params(("id" = String, Path, description = "Tenant id (`tn_…`)")),
    responses(
        (status = 201, description = "The new key (shown only here)", body = ApiKeyCreated),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant, or not the caller", body = ErrorBody),
    ),
    security(("operator_key" = []), ("tenant_key" = []))
)]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let tenant = tenant_for(&state, caller, &id).await?;
    let (key, record) = new_key(tenant.id, state.clock.now());
    state.store.insert_api_key(&record).await?;
    tracing::info!(tenant = %tenant.id, key = %record.id, "API key created");
    let mut body = serde_json::to_value(ApiKeyView::from(&record)).expect("view serializes");
    body["api_key"] = json!(key.expose());
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/api-keys",
    tag = "tenants",
    operation_id = "list_api_keys",
    params(("id" = String, Path, description = "Tenant id (`tn_…`)"), Paging),
    responses(
        (status = 200, description = "A page of the tenant's keys (oldest first), never the keys themselves", body = ApiKeyList),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant, or not the caller", body = ErrorBody),
    ),
    security(("operator_key" = []), ("tenant_key" = []))
)]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<Paging>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let tenant = tenant_for(&state, caller, &id).await?;
    let page = state
        .store
        .list_api_keys(tenant.id, &paging(query)?.query()?)
        .await?;
    let views: Vec<ApiKeyView> = page.items.iter().map(ApiKeyView::from).collect();
    Ok(Json(page_body(&views, page.next_cursor, |k| {
        k.id.to_string()
    })))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/api-keys/{key_id}",
    tag = "tenants",
    operation_id = "get_api_key",
    params(
        ("id" = String, Path, description = "Tenant id (`tn_…`)"),
        ("key_id" = String, Path, description = "API key id (`key_…`)"),
    ),
    responses(
        (status = 200, description = "The key's record, never the key itself", body = ApiKeyView,
            headers(("ETag" = String, description = "The key's revision (live or revoked), for `If-Match`"))),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant or key, or not the caller's", body = ErrorBody),
    ),
    security(("operator_key" = []), ("tenant_key" = []))
)]
pub async fn get_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, key_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let key = key_for(&state, caller, &id, &key_id).await?;
    Ok(with_etag(&key_revision(&key), Json(ApiKeyView::from(&key))))
}

async fn key_for(
    state: &AppState,
    caller: Caller,
    tenant: &str,
    key_id: &str,
) -> ApiResult<ApiKeyRecord> {
    let tenant = tenant_for(state, caller, tenant).await?;
    let key_id = ApiKeyId::parse(key_id).ok_or(Error::NotFound("API key"))?;
    Ok(state
        .store
        .get_api_key(tenant.id, key_id)
        .await?
        .ok_or(Error::NotFound("API key"))?)
}

#[utoipa::path(
    delete,
    path = "/v1/tenants/{id}/api-keys/{key_id}",
    tag = "tenants",
    operation_id = "revoke_api_key",
    params(
        ("id" = String, Path, description = "Tenant id (`tn_…`)"),
        ("key_id" = String, Path, description = "API key id (`key_…`)"),
        ("If-Match" = Option<String>, Header, description = IF_MATCH_DOC),
    ),
    responses(
        (status = 204, description = "Revoked (revoking a revoked key keeps its first revocation)"),
        (status = 400, description = "Invalid If-Match", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant or key, or not the caller's", body = ErrorBody),
        (status = 412, description = "`precondition_failed`: the key is no longer at the `If-Match` revision (revoked meanwhile)", body = ErrorBody),
    ),
    security(("operator_key" = []), ("tenant_key" = []))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    if_match: IfMatch,
    Path((id, key_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let key = key_for(&state, caller, &id, &key_id).await?;
    if_match.check(&key_revision(&key))?;
    // With If-Match on a live key, only a key still live is revoked: one revoked since
    // is at another revision.
    let only_if_live = if_match.is_set() && key.revoked_at.is_none();
    match state
        .store
        .revoke_api_key(key.tenant, key.id, state.clock.now(), only_if_live)
        .await?
    {
        Written::Done => {}
        Written::Missing => return Err(Error::NotFound("API key").into()),
        Written::Stale => {
            return Err(Error::PreconditionFailed(
                "the key changed since the ETag given in If-Match; read it again",
            )
            .into())
        }
    }
    tracing::info!(tenant = %key.tenant, key = %key.id, "API key revoked");
    Ok(no_content())
}

/// The tenant named in the path, if the caller may act on it; 404 otherwise.
async fn tenant_for(state: &AppState, caller: Caller, id: &str) -> ApiResult<Tenant> {
    let id = TenantId::parse(id).ok_or(Error::NotFound("tenant"))?;
    caller.may_act_on(id)?;
    Ok(state
        .store
        .get_tenant(id)
        .await?
        .ok_or(Error::NotFound("tenant"))?)
}

fn new_key(tenant: TenantId, now: i64) -> (PlainKey, ApiKeyRecord) {
    let key = PlainKey::generate_tenant();
    let record = ApiKeyRecord {
        id: ApiKeyId::new(),
        tenant,
        hash: key.hash(),
        prefix: key.shown_prefix(),
        created_at: now,
        revoked_at: None,
    };
    (key, record)
}
