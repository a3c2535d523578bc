//! A counting HTTP proxy in front of an AWS emulator: forwards every request unchanged and
//! counts it by service and operation (`X-Amz-Target`, else the `Action` parameter), with
//! the billing units each call would cost on AWS: SQS requests per 64 KiB chunk, and
//! DynamoDB read and write request units from the item sizes, written ones looked up
//! before and after the write as AWS bills them (the larger of the two), in total and per
//! partition key (the load DynamoDB caps per key).

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

/// What one partition key received: calls and DynamoDB request units. A key of an index
/// is named `<index>:<key>`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct KeyCount {
    pub calls: u64,
    pub wru: f64,
    pub rru: f64,
}

pub type KeyCounts = BTreeMap<String, KeyCount>;

#[derive(Clone)]
struct Inner {
    upstream: String,
    client: reqwest::Client,
    counts: Arc<Mutex<Counts>>,
    keys: Arc<Mutex<KeyCounts>>,
}

/// A running proxy on a loopback port.
pub struct Proxy {
    pub url: String,
    counts: Arc<Mutex<Counts>>,
    keys: Arc<Mutex<KeyCounts>>,
}

impl Proxy {
    /// Forwards to `upstream` (e.g. `http://127.0.0.1:5000`).
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let counts = Arc::new(Mutex::new(Counts::new()));
        let keys = Arc::new(Mutex::new(KeyCounts::new()));
        let inner = Inner {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder().no_proxy().build()?,
            counts: counts.clone(),
            keys: keys.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(inner);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Proxy { url, counts, keys })
    }

    /// The counts so far, and starts counting afresh.
    pub fn take(&self) -> Counts {
        std::mem::take(&mut *self.counts.lock().expect("counts lock"))
    }

    /// The DynamoDB load per partition key so far, and starts counting afresh.
    pub fn take_keys(&self) -> KeyCounts {
        std::mem::take(&mut *self.keys.lock().expect("keys lock"))
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
    if let Some(dynamo_op) = op.strip_prefix("DynamoDB.") {
        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let ans: Value = serde_json::from_slice(&answer_body).unwrap_or(Value::Null);
        let mut keys = inner.keys.lock().expect("keys lock");
        for (key, wru, rru) in key_units(dynamo_op, &req, &ans) {
            let entry = keys.entry(key).or_default();
            entry.calls += 1;
            entry.wru += wru;
            entry.rru += rru;
        }
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
    let write = item_write_units;
    let read = read_units;
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

/// Units of writing one item, with its index's copy when it carries the index key.
fn item_write_units(item: &Value) -> f64 {
    let units = (item_size(item) as f64 / 1024.0).ceil().max(1.0);
    let indexed = item
        .as_object()
        .is_some_and(|o| o.keys().any(|k| k.starts_with("gsi") && k.ends_with("pk")));
    if indexed {
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

/// Units of reading these items in one call.
fn read_units(items: &[&Value], consistent: bool) -> f64 {
    let bytes: u64 = items.iter().map(|i| item_size(i)).sum();
    let units = (bytes as f64 / 4096.0).ceil().max(1.0);
    if consistent {
        units
    } else {
        units / 2.0
    }
}

/// The units of one DynamoDB call per partition key it touches (WRU, RRU), counted as
/// [`dynamo_units`] counts them: a transaction's steps each on their own key.
fn key_units(op: &str, req: &Value, ans: &Value) -> Vec<(String, f64, f64)> {
    let pk = |item: &Value| item["pk"]["S"].as_str().unwrap_or("?").to_string();
    match op {
        "PutItem" => vec![(pk(&req["Item"]), item_write_units(&req["Item"]), 0.0)],
        "UpdateItem" | "DeleteItem" => vec![(pk(&req["Key"]), 1.0, 0.0)],
        "GetItem" => {
            let (_, rru) = dynamo_units(op, req, ans);
            vec![(pk(&req["Key"]), 0.0, rru)]
        }
        "Query" => {
            let (_, rru) = dynamo_units(op, req, ans);
            let values = &req["ExpressionAttributeValues"];
            let value = [":pk", ":gpk"]
                .iter()
                .find_map(|name| values[*name]["S"].as_str())
                .unwrap_or("?");
            let key = match req["IndexName"].as_str() {
                Some(index) => format!("{index}:{value}"),
                None => value.to_string(),
            };
            vec![(key, 0.0, rru)]
        }
        "TransactWriteItems" => req["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|step| match step.get("Put") {
                Some(put) => (pk(&put["Item"]), item_write_units(&put["Item"]) * 2.0, 0.0),
                None => {
                    let inner = step.as_object().and_then(|o| o.values().next());
                    (inner.map_or("?".into(), |s| pk(&s["Key"])), 2.0, 0.0)
                }
            })
            .collect(),
        "BatchWriteItem" => req["RequestItems"]
            .as_object()
            .into_iter()
            .flat_map(|tables| tables.values())
            .filter_map(Value::as_array)
            .flatten()
            .map(|w| match w.get("PutRequest") {
                Some(p) => (pk(&p["Item"]), item_write_units(&p["Item"]), 0.0),
                None => (pk(&w["DeleteRequest"]["Key"]), 1.0, 0.0),
            })
            .collect(),
        other => {
            let (wru, rru) = dynamo_units(other, req, ans);
            vec![(format!("({other})"), wru, rru)]
        }
    }
}

/// A partition key with its ids and shard numbers replaced by what they stand for, so
/// the keys of one kind add up: `T#tn_01H…#S07` is `T#<tenant>#S<nn>`.
pub fn key_family(key: &str) -> String {
    let mut out = String::new();
    for (i, part) in key.split('#').enumerate() {
        if i > 0 {
            out.push('#');
        }
        let (prefix, rest) = part.split_once(':').unwrap_or(("", part));
        if !prefix.is_empty() {
            out.push_str(prefix);
            out.push(':');
        }
        let named = [
            ("tn_", "<tenant>"),
            ("msg_", "<message>"),
            ("ep_", "<endpoint>"),
        ]
        .iter()
        .find(|(p, _)| rest.starts_with(p))
        .map(|(_, name)| name.to_string());
        let shard = ["S", "I"].iter().find_map(|letter| {
            rest.strip_prefix(letter)
                .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                .map(|_| format!("{letter}<nn>"))
        });
        let hash = (rest.len() >= 32 && rest.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| "<hash>".to_string());
        out.push_str(&named.or(shard).or(hash).unwrap_or_else(|| rest.to_string()));
    }
    out
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
    fn units_go_to_the_partition_key_of_each_item() {
        let put = json!({"Item": {"pk": {"S": "T#tn_1#S03"}, "sk": {"S": "MSG#m"}}});
        assert_eq!(
            key_units("PutItem", &put, &Value::Null),
            vec![("T#tn_1#S03".to_string(), 1.0, 0.0)]
        );
        let tx = json!({"TransactItems": [
            {"Put": {"Item": {"pk": {"S": "a"}}}},
            {"Update": {"Key": {"pk": {"S": "b"}, "sk": {"S": "x"}}}}
        ]});
        assert_eq!(
            key_units("TransactWriteItems", &tx, &Value::Null),
            vec![("a".to_string(), 2.0, 0.0), ("b".to_string(), 2.0, 0.0)]
        );
        let query =
            json!({"IndexName": "gsi2", "ExpressionAttributeValues": {":pk": {"S": "T#x"}}});
        let ans = json!({"Items": [{"p": {"S": "y"}}]});
        assert_eq!(
            key_units("Query", &query, &ans),
            vec![("gsi2:T#x".to_string(), 0.0, 0.5)]
        );
    }

    #[test]
    fn key_families_hide_ids_and_shard_numbers() {
        let tenant = "tn_01HZX3Q5P8N2M4K6J8H0G2F4D6";
        assert_eq!(key_family(&format!("T#{tenant}#S07")), "T#<tenant>#S<nn>");
        assert_eq!(key_family(&format!("T#{tenant}#I31")), "T#<tenant>#I<nn>");
        assert_eq!(key_family(&format!("T#{tenant}")), "T#<tenant>");
        assert_eq!(
            key_family("M#msg_01HZX3Q5P8N2M4K6J8H0G2F4D6"),
            "M#<message>"
        );
        assert_eq!(
            key_family(&format!("KEYHASH#{}", "ab".repeat(32))),
            "KEYHASH#<hash>"
        );
        assert_eq!(
            key_family("gsi2:T#tn_1#EP#ep_2#FAILED"),
            "gsi2:T#<tenant>#EP#<endpoint>#FAILED"
        );
        assert_eq!(key_family("OPERATOR"), "OPERATOR");
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
