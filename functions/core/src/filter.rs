//! Payload filters: an endpoint's condition on the fields of a message's payload, checked
//! once when it is saved and compiled into a tree that fan-out evaluates without parsing
//! anything (paths split, numbers read, strings owned).
//!
//! The JSON shape, one node per object:
//!
//! - `{"and": [node, …]}`, `{"or": [node, …]}` (one to [`MAX_CHILDREN`] nodes), `{"not": node}`;
//! - a condition: `{"path": "data.items.sku", <operator>: <operand>}` with exactly one
//!   operator: `equals` (a string, number, boolean or null), `in` (an array of those, one to
//!   [`MAX_IN_VALUES`]), `exists` (true or false), `prefix` (a string), or `gt`, `gte`, `lt`,
//!   `lte` (a number).
//!
//! A path is a dotted list of object keys from the payload's root. On an array, a segment
//! of digits takes that element (`items.0.sku`); any other segment is looked up in every
//! element, and the condition holds when it holds for any of them (`items.sku`). A value
//! reached that is an array is tested as a whole by nothing but `exists`: every other
//! operator holds when it holds for one of its elements (`tags` `equals` `"vip"` matches
//! `{"tags": ["new", "vip"]}`). `exists` holds when the path reaches any value, `null`
//! included. Numbers compare by value (`1` equals `1.0`); `prefix` and the comparisons hold
//! only for strings and numbers respectively, never by conversion. A filter is at most
//! [`MAX_DEPTH`] nodes deep, [`MAX_NODES`] nodes and [`MAX_BYTES`] bytes of JSON.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::Endpoint;

/// The deepest nesting of nodes (the root is depth 1).
pub const MAX_DEPTH: usize = 8;
/// The most nodes (combinators and conditions) in one filter.
pub const MAX_NODES: usize = 64;
/// The most nodes under one `and` or `or`.
pub const MAX_CHILDREN: usize = 32;
/// The most values of one `in`.
pub const MAX_IN_VALUES: usize = 100;
/// The most segments of one path.
pub const MAX_PATH_SEGMENTS: usize = 16;
/// The longest path or string operand, in bytes.
pub const MAX_STRING: usize = 256;
/// The largest filter, as compact JSON.
pub const MAX_BYTES: usize = 8 * 1024;

/// A valid filter: the JSON it was given (what is stored and shown) and its compiled form,
/// shared: endpoints are copied per message (from the store or its cache), filters need not be.
#[derive(Clone)]
pub struct Filter(Arc<Compiled>);

struct Compiled {
    source: Value,
    root: Node,
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Filter({})", self.0.source)
    }
}

/// Two filters are the same when their JSON is: the compiled form follows from it.
impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.0.source == other.0.source
    }
}

impl Eq for Filter {}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.source.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Filter::parse(value).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug)]
enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Test { path: Vec<Segment>, test: Test },
}

#[derive(Clone, Debug)]
struct Segment {
    key: Box<str>,
    /// The segment read as an array index, when it is all digits.
    index: Option<usize>,
}

#[derive(Clone, Debug)]
enum Test {
    Exists(bool),
    In(Vec<Scalar>),
    Prefix(Box<str>),
    Compare(Cmp, f64),
}

#[derive(Clone, Copy, Debug)]
enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Clone, Debug)]
enum Scalar {
    Null,
    Bool(bool),
    Number(f64),
    String(Box<str>),
}

const OPERATORS: &str = "equals, in, exists, prefix, gt, gte, lt, lte";

/// The refusal of a filter, naming the node at fault by its JSON pointer.
fn fault(pointer: &str, what: impl fmt::Display) -> Error {
    let at = if pointer.is_empty() { "/" } else { pointer };
    Error::unprocessable("invalid_filter", format!("filter at {at}: {what}"))
}

/// `pointer` extended by one reference token, escaped as RFC 6901 asks.
fn child(pointer: &str, token: impl fmt::Display) -> String {
    let token = token.to_string().replace('~', "~0").replace('/', "~1");
    format!("{pointer}/{token}")
}

impl Filter {
    /// Checks a filter as given on the API and compiles it; a fault is a 422
    /// `invalid_filter` whose message names the node by JSON pointer and says what is wrong.
    pub fn parse(source: Value) -> Result<Self> {
        let size = serde_json::to_vec(&source).map(|v| v.len()).unwrap_or(0);
        if size > MAX_BYTES {
            return Err(fault(
                "",
                format!("a filter is at most {MAX_BYTES} bytes of JSON; this one is {size}"),
            ));
        }
        let mut nodes = 0;
        let root = compile(&source, "", 1, &mut nodes)?;
        Ok(Filter(Arc::new(Compiled { source, root })))
    }

    /// The filter as given.
    pub fn source(&self) -> &Value {
        &self.0.source
    }

    /// Whether a payload passes the filter.
    pub fn matches(&self, payload: &Value) -> bool {
        self.0.root.eval(payload)
    }
}

/// The endpoints a message goes to, of its tenant's `endpoints`: those that receive its
/// type and domain (see [`crate::operational::receives`]) and whose filter its payload
/// passes. The payload is read once, and only
/// when one of them has a filter; a payload that does not read (it was checked to be JSON
/// when accepted) passes no filter.
pub fn fan_out(
    endpoints: Vec<Endpoint>,
    event_type: &str,
    domain: Option<&str>,
    payload: &serde_json::value::RawValue,
) -> Vec<Endpoint> {
    let mut endpoints: Vec<Endpoint> = endpoints
        .into_iter()
        .filter(|e| crate::operational::receives(e, event_type, domain))
        .collect();
    if endpoints.iter().any(|e| e.filter.is_some()) {
        let payload: Option<Value> = serde_json::from_str(payload.get()).ok();
        endpoints.retain(|e| match &payload {
            Some(p) => e.accepts(p),
            None => e.filter.is_none(),
        });
    }
    endpoints
}

fn compile(value: &Value, pointer: &str, depth: usize, nodes: &mut usize) -> Result<Node> {
    if depth > MAX_DEPTH {
        return Err(fault(
            pointer,
            format!("filters nest at most {MAX_DEPTH} deep"),
        ));
    }
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(fault(
            pointer,
            format!("a filter has at most {MAX_NODES} nodes"),
        ));
    }
    let Value::Object(object) = value else {
        return Err(fault(
            pointer,
            "expected an object: {\"and\": […]}, {\"or\": […]}, {\"not\": …} or {\"path\": …, <operator>: …}",
        ));
    };
    for combinator in ["and", "or", "not"] {
        if let Some(operand) = object.get(combinator) {
            if let Some(extra) = object.keys().find(|k| *k != combinator) {
                return Err(fault(
                    &child(pointer, extra),
                    format!("{combinator:?} stands alone in its object"),
                ));
            }
            let at = child(pointer, combinator);
            if combinator == "not" {
                return Ok(Node::Not(Box::new(compile(
                    operand,
                    &at,
                    depth + 1,
                    nodes,
                )?)));
            }
            let Value::Array(items) = operand else {
                return Err(fault(&at, "expected an array of filters"));
            };
            if items.is_empty() || items.len() > MAX_CHILDREN {
                return Err(fault(
                    &at,
                    format!("expected 1 to {MAX_CHILDREN} filters, got {}", items.len()),
                ));
            }
            let children = items
                .iter()
                .enumerate()
                .map(|(i, item)| compile(item, &child(&at, i), depth + 1, nodes))
                .collect::<Result<Vec<_>>>()?;
            return Ok(if combinator == "and" {
                Node::And(children)
            } else {
                Node::Or(children)
            });
        }
    }
    condition(object, pointer)
}

fn condition(object: &Map<String, Value>, pointer: &str) -> Result<Node> {
    let path = match object.get("path") {
        Some(Value::String(path)) => parse_path(path, &child(pointer, "path"))?,
        Some(_) => return Err(fault(&child(pointer, "path"), "expected a string")),
        None => {
            return Err(fault(
                pointer,
                "expected \"and\", \"or\", \"not\" or a condition with \"path\"",
            ))
        }
    };
    let mut operators = object.iter().filter(|(k, _)| *k != "path");
    let Some((name, operand)) = operators.next() else {
        return Err(fault(
            pointer,
            format!("a condition needs one operator of: {OPERATORS}"),
        ));
    };
    if let Some((second, _)) = operators.next() {
        return Err(fault(
            &child(pointer, second),
            format!("a condition has one operator; combine more with \"and\" (also has {name:?})"),
        ));
    }
    let at = child(pointer, name);
    let test = match name.as_str() {
        "equals" => Test::In(vec![scalar(operand, &at)?]),
        "in" => {
            let Value::Array(values) = operand else {
                return Err(fault(
                    &at,
                    "expected an array of strings, numbers, booleans or nulls",
                ));
            };
            if values.is_empty() || values.len() > MAX_IN_VALUES {
                return Err(fault(
                    &at,
                    format!("expected 1 to {MAX_IN_VALUES} values, got {}", values.len()),
                ));
            }
            Test::In(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| scalar(v, &child(&at, i)))
                    .collect::<Result<_>>()?,
            )
        }
        "exists" => match operand {
            Value::Bool(b) => Test::Exists(*b),
            _ => return Err(fault(&at, "expected true or false")),
        },
        "prefix" => match operand {
            Value::String(s) => Test::Prefix(bounded(s, &at)?.into()),
            _ => return Err(fault(&at, "expected a string")),
        },
        "gt" | "gte" | "lt" | "lte" => {
            let cmp = match name.as_str() {
                "gt" => Cmp::Gt,
                "gte" => Cmp::Gte,
                "lt" => Cmp::Lt,
                _ => Cmp::Lte,
            };
            match operand.as_f64().filter(|n| n.is_finite()) {
                Some(n) => Test::Compare(cmp, n),
                None => return Err(fault(&at, "expected a number")),
            }
        }
        other => {
            return Err(fault(
                &at,
                format!("unknown operator {other:?}; one of: {OPERATORS}"),
            ))
        }
    };
    Ok(Node::Test { path, test })
}

fn bounded<'a>(s: &'a str, pointer: &str) -> Result<&'a str> {
    if s.len() > MAX_STRING {
        return Err(fault(pointer, format!("at most {MAX_STRING} bytes")));
    }
    Ok(s)
}

fn scalar(value: &Value, pointer: &str) -> Result<Scalar> {
    Ok(match value {
        Value::Null => Scalar::Null,
        Value::Bool(b) => Scalar::Bool(*b),
        Value::Number(n) => match n.as_f64().filter(|n| n.is_finite()) {
            Some(n) => Scalar::Number(n),
            None => return Err(fault(pointer, "a number out of range")),
        },
        Value::String(s) => Scalar::String(bounded(s, pointer)?.into()),
        Value::Array(_) | Value::Object(_) => {
            return Err(fault(
                pointer,
                "expected a string, number, boolean or null (arrays match by element)",
            ))
        }
    })
}

fn parse_path(path: &str, pointer: &str) -> Result<Vec<Segment>> {
    bounded(path, pointer)?;
    let segments: Vec<&str> = path.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(fault(
            pointer,
            format!("{path:?} is not a dotted path of keys (an empty segment)"),
        ));
    }
    if segments.len() > MAX_PATH_SEGMENTS {
        return Err(fault(
            pointer,
            format!("a path has at most {MAX_PATH_SEGMENTS} segments"),
        ));
    }
    Ok(segments
        .into_iter()
        .map(|key| Segment {
            index: key
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| key.parse().ok())
                .flatten(),
            key: key.into(),
        })
        .collect())
}

impl Node {
    fn eval(&self, payload: &Value) -> bool {
        match self {
            Node::And(nodes) => nodes.iter().all(|n| n.eval(payload)),
            Node::Or(nodes) => nodes.iter().any(|n| n.eval(payload)),
            Node::Not(node) => !node.eval(payload),
            Node::Test { path, test } => match test {
                Test::Exists(wanted) => reaches(payload, path, &mut |_| true) == *wanted,
                test => reaches(payload, path, &mut |v| test.holds(v)),
            },
        }
    }
}

/// Whether `found` holds for some value `path` reaches from `value`.
fn reaches(value: &Value, path: &[Segment], found: &mut dyn FnMut(&Value) -> bool) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return found(value);
    };
    match value {
        Value::Object(map) => map
            .get(&*first.key)
            .is_some_and(|v| reaches(v, rest, found)),
        Value::Array(items) => match first.index {
            Some(i) => items.get(i).is_some_and(|v| reaches(v, rest, found)),
            None => items.iter().any(|v| reaches(v, path, found)),
        },
        _ => false,
    }
}

impl Test {
    fn holds(&self, value: &Value) -> bool {
        if let Value::Array(items) = value {
            return items.iter().any(|v| !v.is_array() && self.holds(v));
        }
        match self {
            Test::Exists(_) => true,
            Test::In(values) => values.iter().any(|s| s.equals(value)),
            Test::Prefix(prefix) => value.as_str().is_some_and(|s| s.starts_with(&**prefix)),
            Test::Compare(cmp, bound) => value.as_f64().is_some_and(|n| match cmp {
                Cmp::Gt => n > *bound,
                Cmp::Gte => n >= *bound,
                Cmp::Lt => n < *bound,
                Cmp::Lte => n <= *bound,
            }),
        }
    }
}

impl Scalar {
    fn equals(&self, value: &Value) -> bool {
        match (self, value) {
            (Scalar::Null, Value::Null) => true,
            (Scalar::Bool(a), Value::Bool(b)) => a == b,
            (Scalar::Number(a), Value::Number(b)) => b.as_f64() == Some(*a),
            (Scalar::String(a), Value::String(b)) => **a == *b,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn filter(f: Value) -> Filter {
        Filter::parse(f.clone()).unwrap_or_else(|e| panic!("{f}: {e}"))
    }

    fn matches(f: Value, payload: Value) -> bool {
        filter(f).matches(&payload)
    }

    /// The message of the refusal of `f`, after checking it is an `invalid_filter` 422.
    fn refusal(f: Value) -> String {
        match Filter::parse(f.clone()) {
            Err(Error::Unprocessable { code, message }) => {
                assert_eq!(code, "invalid_filter", "{f}");
                message
            }
            other => panic!("{f}: {other:?}"),
        }
    }

    #[test]
    fn equals_compares_scalars_and_numbers_by_value() {
        let p = json!({"status": "paid", "n": 1, "ok": true, "gone": null});
        assert!(matches(
            json!({"path": "status", "equals": "paid"}),
            p.clone()
        ));
        assert!(!matches(
            json!({"path": "status", "equals": "Paid"}),
            p.clone()
        ));
        assert!(matches(json!({"path": "n", "equals": 1.0}), p.clone()));
        assert!(
            !matches(json!({"path": "n", "equals": "1"}), p.clone()),
            "no conversion"
        );
        assert!(matches(json!({"path": "ok", "equals": true}), p.clone()));
        assert!(matches(json!({"path": "gone", "equals": null}), p.clone()));
        assert!(!matches(json!({"path": "missing", "equals": null}), p));
    }

    #[test]
    fn in_matches_any_listed_value() {
        let f = json!({"path": "event", "in": ["delivered", "opened", 3]});
        assert!(matches(f.clone(), json!({"event": "opened"})));
        assert!(matches(f.clone(), json!({"event": 3})));
        assert!(!matches(f.clone(), json!({"event": "bounced"})));
        assert!(!matches(f, json!({})));
    }

    #[test]
    fn exists_tells_presence_null_included() {
        let yes = json!({"path": "a.b", "exists": true});
        let no = json!({"path": "a.b", "exists": false});
        for (payload, present) in [
            (json!({"a": {"b": null}}), true),
            (json!({"a": {"b": 0}}), true),
            (json!({"a": {}}), false),
            (json!({"a": 5}), false),
            (json!([]), false),
        ] {
            assert_eq!(matches(yes.clone(), payload.clone()), present, "{payload}");
            assert_eq!(matches(no.clone(), payload.clone()), !present, "{payload}");
        }
    }

    #[test]
    fn prefix_holds_for_strings_only() {
        let f = json!({"path": "email", "prefix": "ops@"});
        assert!(matches(f.clone(), json!({"email": "ops@example.com"})));
        assert!(!matches(f.clone(), json!({"email": "dev@example.com"})));
        assert!(!matches(f, json!({"email": 5})));
        assert!(matches(
            json!({"path": "x", "prefix": ""}),
            json!({"x": ""})
        ));
    }

    #[test]
    fn comparisons_hold_for_numbers_only() {
        let p = json!({"amount": 100, "text": "200"});
        for (op, bound, expected) in [
            ("gt", 99.5, true),
            ("gt", 100.0, false),
            ("gte", 100.0, true),
            ("gte", 100.5, false),
            ("lt", 100.5, true),
            ("lt", 100.0, false),
            ("lte", 100.0, true),
            ("lte", 99.0, false),
        ] {
            assert_eq!(
                matches(json!({"path": "amount", op: bound}), p.clone()),
                expected,
                "{op} {bound}"
            );
        }
        assert!(!matches(json!({"path": "text", "gt": 1}), p));
    }

    #[test]
    fn and_or_not_combine() {
        let f = json!({"and": [
            {"path": "kind", "equals": "order"},
            {"or": [{"path": "total", "gte": 1000}, {"path": "vip", "equals": true}]},
            {"not": {"path": "test", "exists": true}}
        ]});
        assert!(matches(f.clone(), json!({"kind": "order", "total": 1500})));
        assert!(matches(
            f.clone(),
            json!({"kind": "order", "total": 5, "vip": true})
        ));
        assert!(!matches(f.clone(), json!({"kind": "order", "total": 5})));
        assert!(!matches(
            f.clone(),
            json!({"kind": "order", "total": 1500, "test": false})
        ));
        assert!(!matches(f, json!({"kind": "refund", "total": 1500})));
    }

    #[test]
    fn paths_index_arrays_or_match_any_element() {
        let p = json!({"items": [{"sku": "A-1", "qty": 1}, {"sku": "B-2", "qty": 5}],
                       "tags": ["new", "vip"], "grid": [[1, 2], [3]],
                       "map": {"0": "zero"}});
        assert!(matches(
            json!({"path": "items.1.sku", "equals": "B-2"}),
            p.clone()
        ));
        assert!(!matches(
            json!({"path": "items.0.sku", "equals": "B-2"}),
            p.clone()
        ));
        assert!(!matches(
            json!({"path": "items.7.sku", "exists": true}),
            p.clone()
        ));
        assert!(
            matches(json!({"path": "items.sku", "equals": "B-2"}), p.clone()),
            "any element"
        );
        assert!(matches(json!({"path": "items.qty", "gt": 4}), p.clone()));
        assert!(!matches(json!({"path": "items.qty", "gt": 5}), p.clone()));
        assert!(
            matches(json!({"path": "tags", "equals": "vip"}), p.clone()),
            "an array value offers its elements"
        );
        assert!(matches(json!({"path": "tags", "prefix": "ne"}), p.clone()));
        assert!(
            !matches(json!({"path": "grid", "equals": 3}), p.clone()),
            "one level of elements only"
        );
        assert!(matches(json!({"path": "grid.1", "equals": 3}), p.clone()));
        assert!(
            matches(json!({"path": "map.0", "equals": "zero"}), p.clone()),
            "digits are keys on objects"
        );
        assert!(matches(json!({"path": "tags", "exists": true}), p));
    }

    #[test]
    fn a_filter_round_trips_as_given() {
        let source =
            json!({"or": [{"path": "a", "in": [1, "x"]}, {"not": {"path": "b", "exists": true}}]});
        let f = filter(source.clone());
        assert_eq!(serde_json::to_value(&f).unwrap(), source);
        let back: Filter = serde_json::from_value(source.clone()).unwrap();
        assert_eq!(back, f);
        assert!(serde_json::from_value::<Filter>(json!({"path": "a"})).is_err());
    }

    #[test]
    fn refusals_name_the_node_and_the_fault() {
        for (f, expected) in [
            (json!("status"), "filter at /: expected an object"),
            (json!({}), "filter at /: expected \"and\""),
            (
                json!({"path": "a"}),
                "filter at /: a condition needs one operator",
            ),
            (
                json!({"path": "a", "equals": 1, "gt": 0}),
                "filter at /gt: a condition has one operator",
            ),
            (
                json!({"path": "a", "matches": "x"}),
                "filter at /matches: unknown operator \"matches\"",
            ),
            (
                json!({"path": 3, "equals": 1}),
                "filter at /path: expected a string",
            ),
            (
                json!({"path": "a..b", "equals": 1}),
                "filter at /path: \"a..b\" is not a dotted path",
            ),
            (
                json!({"path": "a", "equals": [1]}),
                "filter at /equals: expected a string, number",
            ),
            (
                json!({"path": "a", "equals": {"x": 1}}),
                "filter at /equals: expected a string",
            ),
            (
                json!({"path": "a", "in": []}),
                "filter at /in: expected 1 to 100 values, got 0",
            ),
            (
                json!({"path": "a", "in": [1, [2]]}),
                "filter at /in/1: expected a string",
            ),
            (
                json!({"path": "a", "exists": "yes"}),
                "filter at /exists: expected true or false",
            ),
            (
                json!({"path": "a", "prefix": 1}),
                "filter at /prefix: expected a string",
            ),
            (
                json!({"path": "a", "gte": "10"}),
                "filter at /gte: expected a number",
            ),
            (
                json!({"and": []}),
                "filter at /and: expected 1 to 32 filters, got 0",
            ),
            (
                json!({"or": {"path": "a", "exists": true}}),
                "filter at /or: expected an array",
            ),
            (
                json!({"and": [{"path": "a", "exists": true}, {"not": {"path": "b"}}]}),
                "filter at /and/1/not: a condition needs one operator",
            ),
            (
                json!({"not": {"path": "a", "exists": true}, "path": "b"}),
                "filter at /path: \"not\" stands alone",
            ),
            (
                json!({"and": [{"path": "a/b~c", "lt": "x"}]}),
                "filter at /and/0/lt: expected a number",
            ),
        ] {
            let message = refusal(f.clone());
            assert!(message.starts_with(expected), "{f}: {message}");
        }
    }

    #[test]
    fn size_and_depth_are_bounded() {
        let mut deep = json!({"path": "a", "exists": true});
        for _ in 0..MAX_DEPTH - 1 {
            deep = json!({"not": deep});
        }
        filter(deep.clone());
        let message = refusal(json!({"not": deep}));
        assert!(message.contains("at most 8 deep"), "{message}");
        assert!(
            message.starts_with("filter at /not/not/not/not/not/not/not/not:"),
            "{message}"
        );

        let leaf = json!({"path": "a", "exists": true});
        let wide = |n: usize| json!({"or": vec![json!({"and": vec![leaf.clone(); 31]}); n]});
        filter(wide(1));
        let message = refusal(wide(2));
        assert!(message.contains("at most 64 nodes"), "{message}");

        let long = "x".repeat(MAX_STRING);
        let message = refusal(json!({"path": "a", "in": vec![long.clone(); 40]}));
        assert!(
            message.starts_with("filter at /: a filter is at most 8192 bytes"),
            "{message}"
        );
        let message = refusal(json!({"path": "a", "prefix": format!("{long}x")}));
        assert!(
            message.starts_with("filter at /prefix: at most 256 bytes"),
            "{message}"
        );
        let path = vec!["k"; MAX_PATH_SEGMENTS + 1].join(".");
        let message = refusal(json!({"path": path, "exists": true}));
        assert!(
            message.starts_with("filter at /path: a path has at most 16"),
            "{message}"
        );
    }

    #[test]
    fn fan_out_keeps_the_subscribed_endpoints_whose_filter_passes() {
        use crate::contract::endpoint_to;
        use crate::ids::TenantId;
        use crate::model::EndpointStatus;

        let t = TenantId::new();
        let all = endpoint_to(t, "https://a.example.com/", None);
        let mut big = endpoint_to(t, "https://b.example.com/", None);
        big.filter = Some(filter(json!({"path": "amount", "gt": 10})));
        let mut small = endpoint_to(t, "https://c.example.com/", None);
        small.filter = Some(filter(json!({"path": "amount", "lte": 10})));
        let mut other_type = endpoint_to(t, "https://d.example.com/", Some(&["opened"]));
        other_type.filter = Some(filter(json!({"path": "amount", "gt": 10})));
        let mut disabled = big.clone();
        disabled.status = EndpointStatus::Disabled;
        let endpoints = vec![
            all.clone(),
            big.clone(),
            small.clone(),
            other_type,
            disabled,
        ];
        let urls = |payload: &str| -> Vec<String> {
            let raw = serde_json::value::RawValue::from_string(payload.into()).unwrap();
            fan_out(endpoints.clone(), "delivered", None, &raw)
                .into_iter()
                .map(|e| e.url)
                .collect()
        };
        assert_eq!(
            urls(r#"{"amount": 50}"#),
            [all.url.clone(), big.url.clone()]
        );
        assert_eq!(
            urls(r#"{"amount": 5}"#),
            [all.url.clone(), small.url.clone()]
        );
        assert_eq!(urls(r#"{}"#), vec![all.url]);
    }

    #[test]
    fn pointers_escape_keys() {
        assert_eq!(child("/and/0", "a/b~c"), "/and/0/a~1b~0c");
    }
}
