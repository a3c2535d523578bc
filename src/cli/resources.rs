//! The record subcommands: tenants and sub-accounts, API keys, domains, endpoints (with
//! their secrets and test sends) and event types, each a thin map onto its `/v1` routes.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::api::{encode, Api};
use super::output::{self, Column};
use super::{config, usage, Global};

/// How much of a list to read.
#[derive(Debug, Args)]
pub struct Page {
    /// Show at most this many (pages are followed until then).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    /// Show them all, however many pages that takes.
    #[arg(long, conflicts_with = "limit")]
    pub all: bool,
}

impl Page {
    pub fn limit(&self) -> Option<usize> {
        (!self.all).then_some(self.limit as usize)
    }
}

pub fn show(global: &Global, value: &Value) {
    if global.json {
        output::json(value);
    } else {
        output::record(value);
    }
}

pub fn show_list(global: &Global, items: Vec<Value>, columns: &[Column]) {
    if global.json {
        output::json(&Value::Array(items));
    } else {
        output::list(&items, columns);
    }
}

/// Parses a flag's JSON text, a usage error when it is not JSON.
pub fn json_arg(flag: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).map_err(|e| usage(format!("{flag} is not JSON: {e}")))
}

#[derive(Debug, Subcommand)]
pub enum Tenants {
    /// Create a tenant (operator key); its first API key is shown, once.
    #[command(after_help = "Example:\n  hookline tenants create \"Acme Mail\" --key hkop_...")]
    Create { name: String },
    /// Show a tenant.
    #[command(after_help = "Example:\n  hookline tenants get tn_01JQ8C9HT5N6R0D4X5W1V2Z3YK")]
    Get { id: String },
    /// List the caller's sub-accounts.
    #[command(after_help = "Example:\n  hookline tenants sub-accounts --json")]
    SubAccounts(Page),
    /// Create a sub-account of the caller; its first API key is shown, once.
    #[command(after_help = "Example:\n  hookline tenants create-sub-account \"Acme EU\"")]
    CreateSubAccount { name: String },
}

const TENANT_COLUMNS: &[Column] = &[("ID", "id"), ("NAME", "name"), ("CREATED", "created_at")];

pub async fn tenants(cmd: Tenants, global: &Global) -> anyhow::Result<()> {
    let api = config::target(global)?;
    match cmd {
        Tenants::Create { name } => show(
            global,
            &api.post("/v1/tenants", &json!({"name": name})).await?,
        ),
        Tenants::Get { id } => show(
            global,
            &api.get(&format!("/v1/tenants/{}", encode(&id))).await?,
        ),
        Tenants::SubAccounts(page) => {
            let items = api.list("/v1/sub-accounts", page.limit()).await?;
            show_list(global, items, TENANT_COLUMNS);
        }
        Tenants::CreateSubAccount { name } => show(
            global,
            &api.post("/v1/sub-accounts", &json!({"name": name})).await?,
        ),
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum Keys {
    /// List a tenant's API keys (never the keys themselves).
    #[command(after_help = "Example:\n  hookline keys list --tenant tn_...")]
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        page: Page,
    },
    /// Show one API key.
    #[command(after_help = "Example:\n  hookline keys get --tenant tn_... key_...")]
    Get {
        #[arg(long)]
        tenant: String,
        id: String,
    },
    /// Create an API key; it is shown once.
    #[command(after_help = "Example:\n  hookline keys create --tenant tn_...")]
    Create {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke an API key.
    #[command(after_help = "Example:\n  hookline keys revoke --tenant tn_... key_...")]
    Revoke {
        #[arg(long)]
        tenant: String,
        id: String,
    },
}

pub async fn keys(cmd: Keys, global: &Global) -> anyhow::Result<()> {
    let api = config::target(global)?;
    let base = |tenant: &str| format!("/v1/tenants/{}/api-keys", encode(tenant));
    match cmd {
        Keys::List { tenant, page } => {
            let items = api.list(&base(&tenant), page.limit()).await?;
            show_list(
                global,
                items,
                &[
                    ("ID", "id"),
                    ("PREFIX", "prefix"),
                    ("CREATED", "created_at"),
                    ("REVOKED", "revoked_at"),
                ],
            );
        }
        Keys::Get { tenant, id } => show(
            global,
            &api.get(&format!("{}/{}", base(&tenant), encode(&id)))
                .await?,
        ),
        Keys::Create { tenant } => show(global, &api.post(&base(&tenant), &json!({})).await?),
        Keys::Revoke { tenant, id } => {
            let path = format!("{}/{}", base(&tenant), encode(&id));
            let answer = api.send(Method::DELETE, &path, None).await?;
            done(global, &answer, &format!("Revoked {id}"));
        }
    }
    Ok(())
}

/// A change's answer: the API's body under `--json` (what was deleted, for an empty
/// answer), else one line.
fn done(global: &Global, answer: &Value, line: &str) {
    if global.json {
        match answer {
            Value::Null => output::json(&json!({"deleted": true})),
            answer => output::json(answer),
        }
    } else {
        output::success(line);
    }
}

#[derive(Debug, Subcommand)]
pub enum Domains {
    /// List the caller's sending domains.
    #[command(after_help = "Example:\n  hookline domains list")]
    List(Page),
    /// Show a domain.
    #[command(after_help = "Example:\n  hookline domains get mg.acme.example")]
    Get { name: String },
    /// Register a sending domain.
    #[command(after_help = "Example:\n  hookline domains create mg.acme.example")]
    Create { name: String },
    /// Delete a domain and its domain-scoped endpoints.
    #[command(after_help = "Example:\n  hookline domains delete mg.acme.example")]
    Delete { name: String },
}

pub async fn domains(cmd: Domains, global: &Global) -> anyhow::Result<()> {
    let api = config::target(global)?;
    match cmd {
        Domains::List(page) => {
            let items = api.list("/v1/domains", page.limit()).await?;
            show_list(
                global,
                items,
                &[("NAME", "name"), ("CREATED", "created_at")],
            );
        }
        Domains::Get { name } => show(
            global,
            &api.get(&format!("/v1/domains/{}", encode(&name))).await?,
        ),
        Domains::Create { name } => show(
            global,
            &api.post("/v1/domains", &json!({"name": name})).await?,
        ),
        Domains::Delete { name } => {
            let answer = api
                .send(
                    Method::DELETE,
                    &format!("/v1/domains/{}", encode(&name)),
                    None,
                )
                .await?;
            done(global, &answer, &format!("Deleted {name}"));
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct EndpointFields {
    /// Event types it receives (repeat the flag); every event when none is given.
    #[arg(long = "event-type", value_name = "TYPE")]
    pub event_types: Vec<String>,
    /// A registered domain to scope it to.
    #[arg(long)]
    pub domain: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// Body format: raw, envelope or mailgun.
    #[arg(long)]
    pub format: Option<String>,
    /// Requests per second at most (1 to 10000).
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// A payload filter as JSON, e.g. '{"path": "amount", "gte": 100}' (see the README's
    /// "Payload filters"); only matching messages are sent.
    #[arg(long, value_name = "JSON", value_parser = json_value)]
    pub filter: Option<Value>,
    /// Send a test event first and save only if the receiver answers 2xx.
    #[arg(long)]
    pub verify: bool,
    /// Signatures: hmac (`v1`), ed25519 (`v1a`, checked with `endpoints public-key`) or
    /// both.
    #[arg(long, value_parser = ["hmac", "ed25519", "both"])]
    pub signing: Option<String>,
    /// An extra header every request carries, as 'Name: value' (repeat the flag); on
    /// update, the headers given replace all of them.
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = header_pair)]
    pub headers: Vec<(String, String)>,
    /// Receiver authentication as JSON: '{"type": "basic", "username", "password"}',
    /// '{"type": "bearer", "token"}' or '{"type": "oauth2_client_credentials", "token_url",
    /// "client_id", "client_secret", "scope"?}'. Write-only: never shown back. Prefer
    /// --auth "$(cat auth.json)" to keep secrets out of the shell's history.
    #[arg(long, value_name = "JSON", value_parser = json_value)]
    pub auth: Option<Value>,
    /// strict: one message at a time in the order accepted (per ordering key); none: side
    /// by side (see the README's "Ordered delivery").
    #[arg(long, value_name = "none|strict")]
    pub ordering: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Endpoints {
    /// List the caller's endpoints.
    #[command(after_help = "Example:\n  hookline endpoints list --all --json")]
    List(Page),
    /// Show an endpoint.
    #[command(after_help = "Example:\n  hookline endpoints get ep_...")]
    Get { id: String },
    /// Create an endpoint.
    #[command(
        after_help = "Example:\n  hookline endpoints create https://hooks.acme.example/bounces \\\n    --event-type permanent_fail --domain mg.acme.example"
    )]
    Create {
        /// Where deliveries go.
        #[arg(value_name = "URL")]
        endpoint_url: String,
        /// A signing secret of your choosing (`whsec_...`); generated when absent.
        #[arg(long)]
        secret: Option<String>,
        #[command(flatten)]
        fields: EndpointFields,
    },
    /// Change an endpoint (only the fields given).
    #[command(after_help = "Example:\n  hookline endpoints update ep_... --status active")]
    Update {
        id: String,
        /// A new URL for deliveries.
        #[arg(long, value_name = "URL")]
        set_url: Option<String>,
        /// Receive every event type again.
        #[arg(long, conflicts_with = "event_types")]
        all_events: bool,
        /// Organisation-wide again, not scoped to a domain.
        #[arg(long, conflicts_with = "domain")]
        no_domain: bool,
        /// No rate limit any more.
        #[arg(long, conflicts_with = "rate_limit")]
        no_rate_limit: bool,
        /// No payload filter any more: every message of its event types.
        #[arg(long, conflicts_with = "filter")]
        no_filter: bool,
        /// No extra headers any more.
        #[arg(long, conflicts_with = "headers")]
        no_headers: bool,
        /// No receiver authentication any more.
        #[arg(long, conflicts_with = "auth")]
        no_auth: bool,
        /// active or disabled.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        fields: EndpointFields,
    },
    /// Delete an endpoint.
    #[command(after_help = "Example:\n  hookline endpoints delete ep_...")]
    Delete { id: String },
    /// Show an endpoint's signing secret.
    #[command(after_help = "Example:\n  hookline endpoints secret ep_...")]
    Secret { id: String },
    /// Rotate an endpoint's signing secret and ed25519 key (the old ones sign for 24 hours
    /// more).
    #[command(after_help = "Example:\n  hookline endpoints rotate ep_...")]
    Rotate {
        id: String,
        /// The new secret (`whsec_...`); generated when absent.
        #[arg(long)]
        secret: Option<String>,
    },
    /// Show an endpoint's ed25519 public key (`whpk_...`), to check its `v1a` signatures.
    #[command(after_help = "Example:\n  hookline endpoints public-key ep_...")]
    PublicKey { id: String },
    /// Send a test event to an endpoint and show what it answered.
    #[command(after_help = "Example:\n  hookline endpoints test ep_... --event-type delivered")]
    Test {
        id: String,
        #[arg(long)]
        event_type: Option<String>,
    },
}

const ENDPOINT_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("URL", "url"),
    ("STATUS", "status"),
    ("EVENT TYPES", "event_types"),
    ("DOMAIN", "domain"),
    ("FORMAT", "format"),
];

/// A `Name: value` header flag (checked by the API, not here).
fn header_pair(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| "expected 'Name: value'".to_string())?;
    Ok((name.trim().to_string(), value.trim().to_string()))
}

/// A flag's JSON text, parsed (checked by the API, not here).
fn json_value(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
}

fn endpoint_fields(body: &mut Map<String, Value>, f: EndpointFields) {
    if !f.event_types.is_empty() {
        body.insert("event_types".into(), json!(f.event_types));
    }
    if let Some(d) = f.domain {
        body.insert("domain".into(), json!(d));
    }
    if let Some(d) = f.description {
        body.insert("description".into(), json!(d));
    }
    if let Some(fmt) = f.format {
        body.insert("format".into(), json!(fmt));
    }
    if let Some(r) = f.rate_limit {
        body.insert("rate_limit".into(), json!(r));
    }
    if let Some(filter) = f.filter {
        body.insert("filter".into(), filter);
    }
    if !f.headers.is_empty() {
        let headers: Map<String, Value> = f
            .headers
            .into_iter()
            .map(|(name, value)| (name, Value::String(value)))
            .collect();
        body.insert("headers".into(), Value::Object(headers));
    }
    if let Some(auth) = f.auth {
        body.insert("auth".into(), auth);
    }
    if let Some(ordering) = f.ordering {
        body.insert("ordering".into(), json!(ordering));
    }
    if f.verify {
        body.insert("verify".into(), json!(true));
    }
    if let Some(signing) = f.signing {
        body.insert("signing".into(), json!(signing));
    }
}

pub async fn endpoints(cmd: Endpoints, global: &Global) -> anyhow::Result<()> {
    let api = config::target(global)?;
    let one = |id: &str| format!("/v1/endpoints/{}", encode(id));
    match cmd {
        Endpoints::List(page) => {
            let items = api.list("/v1/endpoints", page.limit()).await?;
            show_list(global, items, ENDPOINT_COLUMNS);
        }
        Endpoints::Get { id } => show(global, &api.get(&one(&id)).await?),
        Endpoints::Create {
            endpoint_url,
            secret,
            fields,
        } => {
            let mut body = Map::new();
            body.insert("url".into(), json!(endpoint_url));
            if let Some(s) = secret {
                body.insert("secret".into(), json!(s));
            }
            endpoint_fields(&mut body, fields);
            show(
                global,
                &api.post("/v1/endpoints", &Value::Object(body)).await?,
            );
        }
        Endpoints::Update {
            id,
            set_url,
            all_events,
            no_domain,
            no_rate_limit,
            no_filter,
            no_headers,
            no_auth,
            status,
            fields,
        } => {
            let mut body = Map::new();
            if let Some(u) = set_url {
                body.insert("url".into(), json!(u));
            }
            if let Some(s) = status {
                body.insert("status".into(), json!(s));
            }
            for (flag, name) in [
                (all_events, "event_types"),
                (no_domain, "domain"),
                (no_rate_limit, "rate_limit"),
                (no_filter, "filter"),
                (no_headers, "headers"),
                (no_auth, "auth"),
            ] {
                if flag {
                    body.insert(name.into(), Value::Null);
                }
            }
            endpoint_fields(&mut body, fields);
            if body.is_empty() || (body.len() == 1 && body.contains_key("verify")) {
                return Err(usage(
                    "nothing to change: give at least one field to update",
                ));
            }
            let answer = api
                .send(Method::PATCH, &one(&id), Some(&Value::Object(body)))
                .await?;
            show(global, &answer);
        }
        Endpoints::Delete { id } => {
            let answer = api.send(Method::DELETE, &one(&id), None).await?;
            done(global, &answer, &format!("Deleted {id}"));
        }
        Endpoints::Secret { id } => show(global, &api.get(&format!("{}/secret", one(&id))).await?),
        Endpoints::Rotate { id, secret } => {
            let body = match secret {
                Some(s) => json!({"key": s}),
                None => json!({}),
            };
            show(
                global,
                &api.post(&format!("{}/secret/rotate", one(&id)), &body)
                    .await?,
            );
        }
        Endpoints::PublicKey { id } => {
            show(global, &api.get(&format!("{}/public-key", one(&id))).await?)
        }
        Endpoints::Test { id, event_type } => {
            let body = match event_type {
                Some(t) => json!({"event_type": t}),
                None => json!({}),
            };
            let answer = api.post(&format!("{}/test", one(&id)), &body).await?;
            show(global, &answer);
            // A test the receiver failed is the receiver's answer, not a refused request.
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum EventTypes {
    /// List the event types that can be published.
    #[command(after_help = "Example:\n  hookline event-types list --all")]
    List(Page),
    /// Show an event type with its sample payload.
    #[command(after_help = "Example:\n  hookline event-types get delivered")]
    Get { name: String },
    /// Add an event type to the catalog (operator key).
    #[command(
        after_help = "Example:\n  hookline event-types create invoice_paid --description \"An invoice was paid\" \\\n    --sample '{\"invoice\": \"in_1\"}'"
    )]
    Create {
        name: String,
        #[arg(long)]
        description: String,
        /// A sample payload, as JSON.
        #[arg(long)]
        sample: String,
        #[arg(long)]
        provider: Option<String>,
    },
}

pub async fn event_types(cmd: EventTypes, global: &Global) -> anyhow::Result<()> {
    let api = config::target(global)?;
    match cmd {
        EventTypes::List(page) => {
            let items = api.list("/v1/event-types", page.limit()).await?;
            show_list(
                global,
                items,
                &[
                    ("NAME", "name"),
                    ("PROVIDER", "provider"),
                    ("DESCRIPTION", "description"),
                ],
            );
        }
        EventTypes::Get { name } => show(
            global,
            &api.get(&format!("/v1/event-types/{}", encode(&name)))
                .await?,
        ),
        EventTypes::Create {
            name,
            description,
            sample,
            provider,
        } => {
            let mut body = json!({
                "name": name,
                "description": description,
                "sample": json_arg("--sample", &sample)?,
            });
            if let Some(p) = provider {
                body["provider"] = json!(p);
            }
            show(global, &api.post("/v1/event-types", &body).await?);
        }
    }
    Ok(())
}

/// For the subcommands that only read: an [`Api`] from the target flags.
pub fn api(global: &Global) -> anyhow::Result<Api> {
    config::target(global)
}
