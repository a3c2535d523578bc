//! A counting HTTP proxy in front of an AWS emulator: forwards every request unchanged and
//! counts it by service and operation (`X-Amz-Target`, else the `Action` parameter), with
//! the billing units each call would cost on AWS: SQS requests per 64 KiB chunk, and
//! DynamoDB read and write request units from the item sizes, written ones looked up
//! before and after the write as AWS bills them (the larger of the two).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// Calls of one operation and what they would be billed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct OpCount {
    pub calls: u64,
    /// SQS: requests as billed (one per started 64 KiB of payload).
    pub billed_requests: u64,
    /// DynamoDB on-demand write and read request units (estimated).
    pub wru: f64,
    pub rru: f64,
}

pub type Counts = BTreeMap<String, OpCount>;

#[derive(Clone)]
struct Inner {
    upstream: String,
    client: reqwest::Client,
    counts: Arc<Mutex<Counts>>,
}

/// A running proxy on a loopback port.
pub struct Proxy {
    pub url: String,
    counts: Arc<Mutex<Counts>>,
}

impl Proxy {
    /// Forwards to `upstream` (e.g. `http://127.0.0.1:5000`).
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let counts = Arc::new(Mutex::new(Counts::new()));
        let inner = Inner {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder().no_proxy().build()?,
            counts: counts.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(inner);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Proxy { url, counts })
    }

    /// The counts so far, and starts counting afresh.
    pub fn take(&self) -> Counts {
        std::mem::take(&mut *self.counts.lock().expect("counts lock"))
    }
}

async fn forward(
    State(inner): State<Inner>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let before = match written_items(&headers, &body) {
        Some(writes) => Some(looked_up(&inner, &headers, writes).await),
        None => None,
    };
    let mut request = inner
        .client
        .request(method, format!("{}{path}", inner.upstream))
        .body(body.clone());
    for (name, value) in &headers {
        if !matches!(name.as_str(), "host" | "content-length" | "connection") {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let answer_body = answer.bytes().await.unwrap_or_default();
    let (op, mut count) = cost(&uri, &headers, &body, &answer_body);
    if let Some(writes) = before {
        count.wru = billed_writes(&inner, &headers, writes).await;
    }
    {
        let mut counts = inner.counts.lock().expect("counts lock");
        let entry = counts.entry(op).or_default();
        entry.calls += 1;
        entry.billed_requests += count.billed_requests;
        entry.wru += count.wru;
        entry.rru += count.rru;
    }
    let mut response = Response::builder().status(status.as_u16());
    for (name, value) in &answer_headers {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            response = response.header(name.as_str(), value.as_bytes());
        }
    }
    response
        .body(Body::from(answer_body))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// The operation's name (`DynamoDB.PutItem`, `SQS.SendMessageBatch`) and its billing.
fn cost(uri: &Uri, headers: &HeaderMap, request: &[u8], answer: &[u8]) -> (String, OpCount) {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (service, op) = match target {
        Some(t) => {
            let (prefix, op) = t.split_once('.').unwrap_or(("", t.as_str()));
            let service = if prefix.starts_with("DynamoDB") {
                "DynamoDB"
            } else if prefix.contains("SQS") {
                "SQS"
            } else {
                prefix
            };
            (service.to_string(), op.to_string())
        }
        None => {
            let query = uri.query().unwrap_or_default().as_bytes();
            let action = [request, query].iter().find_map(|text| {
                String::from_utf8_lossy(text)
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("Action=").map(str::to_string))
            });
            (
                "Query".to_string(),
                action.unwrap_or_else(|| "unknown".into()),
            )
        }
    };
    let mut count = OpCount::default();
    match service.as_str() {
        "DynamoDB" => {
            let req: Value = serde_json::from_slice(request).unwrap_or(Value::Null);
            let ans: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
            (count.wru, count.rru) = dynamo_units(&op, &req, &ans);
        }
        _ => {
            let payload = request.len().max(answer.len()) as u64;
            count.billed_requests = payload.div_ceil(65_536).max(1);
        }
    }
    (format!("{service}.{op}"), count)
}

/// Write and read request units of one DynamoDB call on an on-demand table whose one
/// index projects every attribute: a write of an item carrying the index key is written to
/// the index too. Update and delete sizes are not on the wire: this counts them as one
/// unit, and [`forward`] replaces every write's units with [`billed_writes`]'s.
fn dynamo_units(op: &str, req: &Value, ans: &Value) -> (f64, f64) {
    let write = |item: &Value| -> f64 {
        let units = (item_size(item) as f64 / 1024.0).ceil().max(1.0);
        let indexed = item.get("gsi1pk").is_some();
        if indexed {
            units * 2.0
        } else {
            units
        }
    };
    let read = |items: &[&Value], consistent: bool| -> f64 {
        let bytes: u64 = items.iter().map(|i| item_size(i)).sum();
        let units = (bytes as f64 / 4096.0).ceil().max(1.0);
        if consistent {
            units
        } else {
            units / 2.0
        }
    };
    let consistent = req["ConsistentRead"].as_bool().unwrap_or(false);
    match op {
        "PutItem" => (write(&req["Item"]), 0.0),
        "UpdateItem" | "DeleteItem" => (1.0, 0.0),
        "GetItem" => {
            let item = &ans["Item"];
            let items: Vec<&Value> = if item.is_null() { vec![] } else { vec![item] };
            (0.0, read(&items, consistent))
        }
        "Query" | "Scan" => {
            let items: Vec<&Value> = ans["Items"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            (0.0, read(&items, consistent))
        }
        "TransactWriteItems" => {
            let steps = req["TransactItems"].as_array().cloned().unwrap_or_default();
            let units = steps
                .iter()
                .map(|step| match step.get("Put") {
                    Some(put) => write(&put["Item"]),
                    None => 1.0,
                })
                .sum::<f64>();
            // Transactions cost two units per unit of item size.
            (units * 2.0, 0.0)
        }
        "BatchWriteItem" => {
            let mut units = 0.0;
            if let Some(tables) = req["RequestItems"].as_object() {
                for writes in tables.values() {
                    for w in writes.as_array().into_iter().flatten() {
                        units += match w.get("PutRequest") {
                            Some(p) => write(&p["Item"]),
                            None => 1.0,
                        };
                    }
                }
            }
            (units, 0.0)
        }
        _ => (0.0, 0.0),
    }
}

/// One item a DynamoDB write touches: where it is, what a put writes, and (looked up)
/// what it held before.
#[derive(Debug, Clone)]
struct WrittenItem {
    table: String,
    key: Value,
    put: Option<Value>,
    before: Option<Value>,
}

/// The items a DynamoDB write request touches; `None` for anything else. The keys of a
/// put are the table's, `pk` and `sk`.
fn written_items(headers: &HeaderMap, request: &[u8]) -> Option<(bool, Vec<WrittenItem>)> {
    let target = headers.get("x-amz-target")?.to_str().ok()?;
    let op = target.strip_prefix("DynamoDB_20120810.")?;
    let req: Value = serde_json::from_slice(request).ok()?;
    let step = |table: &Value, key: Option<&Value>, put: Option<&Value>| {
        let key = match (key, put) {
            (Some(key), _) => key.clone(),
            (None, Some(item)) => {
                let mut key = serde_json::Map::new();
                for name in ["pk", "sk"] {
                    if let Some(v) = item.get(name) {
                        key.insert(name.into(), v.clone());
                    }
                }
                Value::Object(key)
            }
            (None, None) => Value::Null,
        };
        WrittenItem {
            table: table.as_str().unwrap_or_default().to_string(),
            key,
            put: put.cloned(),
            before: None,
        }
    };
    match op {
        "PutItem" => Some((
            false,
            vec![step(&req["TableName"], None, Some(&req["Item"]))],
        )),
        "UpdateItem" | "DeleteItem" => Some((
            false,
            vec![step(&req["TableName"], Some(&req["Key"]), None)],
        )),
        "TransactWriteItems" => {
            let steps = req["TransactItems"].as_array()?;
            let items = steps
                .iter()
                .filter_map(|s| {
                    if let Some(put) = s.get("Put") {
                        Some(step(&put["TableName"], None, Some(&put["Item"])))
                    } else {
                        let w = s.get("Update").or_else(|| s.get("Delete"))?;
                        Some(step(&w["TableName"], Some(&w["Key"]), None))
                    }
                })
                .collect();
            Some((true, items))
        }
        _ => None,
    }
}

/// The items as they stand now, read from the emulator directly (not counted).
async fn looked_up(
    inner: &Inner,
    headers: &HeaderMap,
    (transaction, mut items): (bool, Vec<WrittenItem>),
) -> (bool, Vec<WrittenItem>) {
    for item in &mut items {
        item.before = get_item(inner, headers, &item.table, &item.key).await;
    }
    (transaction, items)
}

async fn get_item(inner: &Inner, headers: &HeaderMap, table: &str, key: &Value) -> Option<Value> {
    let body = serde_json::json!({"TableName": table, "Key": key, "ConsistentRead": true});
    let mut request = inner
        .client
        .post(format!("{}/", inner.upstream))
        .header("x-amz-target", "DynamoDB_20120810.GetItem")
        .header("content-type", "application/x-amz-json-1.0")
        .body(body.to_string());
    if let Some(auth) = headers.get("authorization") {
        request = request.header("authorization", auth);
    }
    let answer: Value = request.send().await.ok()?.json().await.ok()?;
    answer.get("Item").cloned()
}

/// Write units of a write whose items were looked up before it: each item billed on the
/// larger of its size before and after (a put's after being what it puts), per started
/// KiB, at least one; an item carrying an index key (`gsi…pk`) after the write is written
/// to that index too (every index here projects all attributes), one that leaves the
/// index costs a delete there; a transaction costs double.
async fn billed_writes(
    inner: &Inner,
    headers: &HeaderMap,
    (transaction, items): (bool, Vec<WrittenItem>),
) -> f64 {
    let mut units = 0.0;
    for item in items {
        let after = match &item.put {
            Some(put) => Some(put.clone()),
            None => get_item(inner, headers, &item.table, &item.key).await,
        };
        units += write_units(item.before.as_ref(), after.as_ref());
    }
    if transaction {
        units * 2.0
    } else {
        units
    }
}

fn write_units(before: Option<&Value>, after: Option<&Value>) -> f64 {
    let size = |i: Option<&Value>| i.map_or(0, item_size);
    let units = |bytes: u64| (bytes as f64 / 1024.0).ceil().max(1.0);
    let indexed = |i: Option<&Value>| {
        i.and_then(Value::as_object)
            .is_some_and(|o| o.keys().any(|k| k.starts_with("gsi") && k.ends_with("pk")))
    };
    let mut total = units(size(before).max(size(after)));
    if indexed(after) {
        total += units(size(after));
    } else if indexed(before) {
        total += 1.0;
    }
    total
}

/// DynamoDB's size of an item in its JSON wire form: names plus values.
fn item_size(item: &Value) -> u64 {
    item.as_object()
        .map(|attrs| {
            attrs
                .iter()
                .map(|(name, v)| name.len() as u64 + value_size(v))
                .sum()
        })
        .unwrap_or(0)
}

fn value_size(v: &Value) -> u64 {
    let Some((kind, inner)) = v.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, |s| s.len() as u64),
        // Base64 on the wire; billed as the bytes it decodes to.
        "B" => inner.as_str().map_or(0, |s| {
            let s = s.trim_end_matches('=');
            (s.len() as u64 * 3) / 4
        }),
        "N" => inner
            .as_str()
            .map_or(1, |s| (s.len() as u64).div_ceil(2) + 1),
        "BOOL" | "NULL" => 1,
        "L" => {
            3 + inner
                .as_array()
                .map_or(0, |l| l.iter().map(|e| 1 + value_size(e)).sum())
        }
        "M" => {
            3 + inner.as_object().map_or(0, |m| {
                m.iter()
                    .map(|(k, e)| 1 + k.len() as u64 + value_size(e))
                    .sum()
            })
        }
        "BS" => inner.as_array().map_or(0, |l| {
            l.iter()
                .map(|e| {
                    e.as_str()
                        .map_or(0, |s| (s.trim_end_matches('=').len() as u64 * 3) / 4)
                })
                .sum()
        }),
        "SS" | "NS" => inner.as_array().map_or(0, |l| {
            l.iter()
                .map(|e| e.as_str().map_or(0, |s| s.len() as u64))
                .sum()
        }),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_indexed_put_costs_the_index_write_too() {
        let small = json!({"Item": {"pk": {"S": "M#1"}, "sk": {"S": "MSG"}}});
        let indexed = json!({"Item": {"pk": {"S": "M#1"}, "gsi1pk": {"S": "T#1#MSG"}}});
        assert_eq!(dynamo_units("PutItem", &small, &Value::Null), (1.0, 0.0));
        assert_eq!(dynamo_units("PutItem", &indexed, &Value::Null), (2.0, 0.0));
    }

    #[test]
    fn an_update_is_billed_on_the_larger_of_the_item_before_and_after() {
        let small = json!({"pk": {"S": "M#1"}, "sk": {"S": "D#1"}});
        let big = json!({"pk": {"S": "M#1"}, "log": {"S": "x".repeat(1500)}});
        assert_eq!(write_units(Some(&small), Some(&big)), 2.0);
        assert_eq!(write_units(Some(&big), Some(&small)), 2.0);
        assert_eq!(write_units(None, Some(&small)), 1.0);
        let failed = json!({"pk": {"S": "M#1"}, "gsi2pk": {"S": "T#1#EP#2#FAILED"}});
        assert_eq!(write_units(Some(&small), Some(&failed)), 2.0);
        assert_eq!(write_units(Some(&failed), Some(&small)), 2.0);
    }

    #[test]
    fn binary_values_count_their_decoded_bytes() {
        // 1,500 bytes as base64 is 2,000 characters on the wire.
        let item = json!({"p": {"B": "A".repeat(2000)}});
        assert_eq!(item_size(&item), 1 + 1500);
    }

    #[test]
    fn a_transaction_costs_double() {
        let req = json!({"TransactItems": [
            {"Put": {"Item": {"pk": {"S": "a"}}}},
            {"Put": {"Item": {"pk": {"S": "b"}}}}
        ]});
        assert_eq!(
            dynamo_units("TransactWriteItems", &req, &Value::Null),
            (4.0, 0.0)
        );
    }

    #[test]
    fn reads_round_up_per_4_kib_and_halve_when_eventually_consistent() {
        let big = "x".repeat(5000);
        let ans = json!({"Items": [{"p": {"S": big}}]});
        let consistent = json!({"ConsistentRead": true});
        assert_eq!(dynamo_units("Query", &consistent, &ans), (0.0, 2.0));
        assert_eq!(dynamo_units("Query", &json!({}), &ans), (0.0, 1.0));
    }
}
