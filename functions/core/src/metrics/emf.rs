//! CloudWatch Embedded Metric Format for the Lambda functions: a `metrics` recorder that
//! adds up what an invocation records, and at the end of the invocation writes it as EMF
//! JSON lines on stdout, from which CloudWatch Logs extracts the metrics. One line per set
//! of label values, whose dimension set is exactly those labels (`[[]]` for none), so an
//! alarm addresses e.g. `delivery_attempts` with `outcome=5xx` alone.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use serde_json::{json, Map, Value};

use super::DURATIONS;

/// The variable naming the CloudWatch namespace (the template's `MetricsNamespace`).
pub const NAMESPACE_VAR: &str = "HOOKLINE_METRICS_NAMESPACE";
pub const DEFAULT_NAMESPACE: &str = "Hookline";
/// The most values EMF takes for one metric in one document; a histogram with more is
/// written over several lines.
pub const MAX_VALUES: usize = 100;

struct Inner {
    namespace: String,
    registry: Registry<Key, AtomicStorage>,
}

/// The recorder; [`EmfRecorder::handle`] keeps a way to flush it once it is installed.
pub struct EmfRecorder {
    inner: Arc<Inner>,
}

/// Flushes what an [`EmfRecorder`] holds.
#[derive(Clone)]
pub struct EmfHandle {
    inner: Arc<Inner>,
}

impl EmfRecorder {
    pub fn new(namespace: impl Into<String>) -> Self {
        EmfRecorder {
            inner: Arc::new(Inner {
                namespace: namespace.into(),
                registry: Registry::atomic(),
            }),
        }
    }

    pub fn handle(&self) -> EmfHandle {
        EmfHandle {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// Installs the recorder process-wide, in the namespace of [`NAMESPACE_VAR`].
pub fn install() -> Result<EmfHandle, String> {
    let namespace = std::env::var(NAMESPACE_VAR)
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    let recorder = EmfRecorder::new(namespace.trim());
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    Ok(handle)
}

impl Recorder for EmfRecorder {
    // Units are known by name (see `DURATIONS`); descriptions have no place in EMF.
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.inner
            .registry
            .get_or_create_counter(key, |c| Counter::from_arc(Arc::clone(c)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.inner
            .registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(Arc::clone(g)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.inner
            .registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(Arc::clone(h)))
    }
}

/// One metric's values of a flush, in EMF's terms.
struct Series {
    name: String,
    unit: Option<&'static str>,
    /// A counter's or gauge's one value; a histogram's samples.
    values: Vec<f64>,
    histogram: bool,
}

type Labels = Vec<(String, String)>;

impl EmfHandle {
    /// Writes what was recorded since the last flush as EMF lines, and starts again from
    /// nothing (gauges keep their value). Writes nothing when nothing was recorded.
    pub fn flush(&self, out: &mut impl Write) -> io::Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        for doc in self.documents(now) {
            serde_json::to_writer(&mut *out, &doc)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }

    /// [`EmfHandle::flush`] to stdout, where the Lambda runtime's log capture reads it.
    pub fn flush_stdout(&self) {
        let stdout = io::stdout();
        if let Err(e) = self.flush(&mut stdout.lock()) {
            tracing::warn!(error = %e, "metrics not written");
        }
    }

    /// The EMF documents of what was recorded since the last flush, stamped `timestamp`
    /// (milliseconds since the epoch); taking them resets counters and histograms.
    pub fn documents(&self, timestamp: i64) -> Vec<Value> {
        let mut groups: BTreeMap<Labels, Vec<Series>> = BTreeMap::new();
        let mut add = |key: &Key, series: Series| {
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            groups.entry(labels).or_default().push(series);
        };
        let registry = &self.inner.registry;
        registry.visit_counters(|key, counter| {
            let n = counter.swap(0, Ordering::AcqRel);
            if n > 0 {
                add(
                    key,
                    Series {
                        name: key.name().to_owned(),
                        unit: Some("Count"),
                        values: vec![n as f64],
                        histogram: false,
                    },
                );
            }
        });
        registry.visit_gauges(|key, gauge| {
            add(
                key,
                Series {
                    name: key.name().to_owned(),
                    unit: None,
                    values: vec![f64::from_bits(gauge.load(Ordering::Acquire))],
                    histogram: false,
                },
            );
        });
        registry.visit_histograms(|key, bucket| {
            let mut values = Vec::new();
            bucket.clear_with(|chunk| values.extend_from_slice(chunk));
            if values.is_empty() {
                return;
            }
            let (unit, values) = if DURATIONS.contains(&key.name()) {
                let ms = values.into_iter().map(|s| s * 1000.0).collect();
                (Some("Milliseconds"), ms)
            } else {
                (None, values)
            };
            add(
                key,
                Series {
                    name: key.name().to_owned(),
                    unit,
                    values,
                    histogram: true,
                },
            );
        });

        let mut docs = Vec::new();
        for (labels, series) in groups {
            let lines = series
                .iter()
                .map(|s| s.values.len().div_ceil(MAX_VALUES))
                .max()
                .unwrap_or(0);
            for line in 0..lines {
                let mut root = Map::new();
                let mut directives = Vec::new();
                for s in &series {
                    let chunk = s.values.chunks(MAX_VALUES).nth(line);
                    let Some(chunk) = chunk else { continue };
                    let value = if s.histogram {
                        json!(chunk)
                    } else {
                        json!(chunk[0])
                    };
                    root.insert(s.name.clone(), value);
                    directives.push(match s.unit {
                        Some(unit) => json!({"Name": s.name, "Unit": unit}),
                        None => json!({"Name": s.name}),
                    });
                }
                let dimensions: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
                for (k, v) in &labels {
                    root.insert(k.clone(), json!(v));
                }
                root.insert(
                    "_aws".to_owned(),
                    json!({
                        "Timestamp": timestamp,
                        "CloudWatchMetrics": [{
                            "Namespace": self.inner.namespace,
                            "Dimensions": [dimensions],
                            "Metrics": directives,
                        }],
                    }),
                );
                docs.push(Value::Object(root));
            }
        }
        docs
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics as m;

    /// Checks one document against the EMF specification: `_aws` with a numeric
    /// `Timestamp` and directives naming a namespace, dimension sets of strings (at most
    /// 30) and metrics (at most 100, each named, with a known unit if any); every
    /// dimension a string member of the root and every metric a number or an array of at
    /// most 100 numbers there.
    fn check_spec(doc: &Value) {
        let aws = &doc["_aws"];
        assert!(aws["Timestamp"].is_i64(), "{doc}");
        let directives = aws["CloudWatchMetrics"].as_array().expect("directives");
        assert!(!directives.is_empty(), "{doc}");
        for d in directives {
            assert!(d["Namespace"].as_str().is_some_and(|n| !n.is_empty()));
            for set in d["Dimensions"].as_array().expect("dimension sets") {
                let set = set.as_array().expect("a dimension set");
                assert!(set.len() <= 30);
                for dim in set {
                    let dim = dim.as_str().expect("a dimension name");
                    assert!(doc[dim].is_string(), "{dim} is a root string: {doc}");
                }
            }
            let metrics = d["Metrics"].as_array().expect("metrics");
            assert!(!metrics.is_empty() && metrics.len() <= 100);
            for metric in metrics {
                let name = metric["Name"].as_str().expect("a metric name");
                match &doc[name] {
                    Value::Number(_) => {}
                    Value::Array(values) => {
                        assert!(!values.is_empty() && values.len() <= MAX_VALUES);
                        assert!(values.iter().all(Value::is_number), "{doc}");
                    }
                    other => panic!("{name} is {other}: {doc}"),
                }
                if let Some(unit) = metric.get("Unit") {
                    assert!(["Count", "Milliseconds", "Seconds"].contains(&unit.as_str().unwrap()));
                }
            }
        }
    }

    fn find<'a>(docs: &'a [Value], metric: &str, labels: &[(&str, &str)]) -> Vec<&'a Value> {
        docs.iter()
            .filter(|d| d.get(metric).is_some())
            .filter(|d| labels.iter().all(|(k, v)| d[*k] == *v))
            .collect()
    }

    #[test]
    fn an_invocation_flushes_as_spec_valid_lines_with_one_dimension_set_per_label_set() {
        let recorder = EmfRecorder::new("HooklineTest");
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            m::delivery_attempt("2xx", Duration::from_millis(12));
            m::delivery_attempt("2xx", Duration::from_millis(30));
            m::delivery_attempt("5xx", Duration::from_millis(7));
            m::delivered(Duration::from_millis(250));
            m::retry_scheduled();
            m::events_accepted(m::Source::Sqs, 3);
            m::api_request("/v1/endpoints/{id}", 200, Duration::from_millis(4));
        });
        let docs = handle.documents(1_700_000_000_000);
        for doc in &docs {
            check_spec(doc);
        }

        let ok = find(&docs, m::DELIVERY_ATTEMPTS, &[("outcome", "2xx")]);
        assert_eq!(ok.len(), 1);
        let ok = ok[0];
        assert_eq!(ok[m::DELIVERY_ATTEMPTS], 2.0);
        assert_eq!(
            ok[m::ATTEMPT_DURATION],
            json!([12.0, 30.0]),
            "in milliseconds"
        );
        assert_eq!(
            ok["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["outcome"]])
        );
        assert_eq!(
            ok["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "HooklineTest"
        );
        assert_eq!(ok["_aws"]["Timestamp"], 1_700_000_000_000i64);
        let failed = find(&docs, m::DELIVERY_ATTEMPTS, &[("outcome", "5xx")]);
        assert_eq!(failed[0][m::DELIVERY_ATTEMPTS], 1.0);

        // Unlabelled metrics share the document with the empty dimension set.
        let bare = find(&docs, m::RETRIES_SCHEDULED, &[]);
        assert_eq!(bare.len(), 1);
        assert_eq!(
            bare[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([[]])
        );
        assert_eq!(bare[0][m::DELIVERY_LATENCY], json!([250.0]));

        let accepted = find(&docs, m::EVENTS_ACCEPTED, &[("source", "sqs")]);
        assert_eq!(accepted[0][m::EVENTS_ACCEPTED], 3.0);
        // A counter and a histogram of different labels are in documents of their own.
        let requests = find(&docs, m::API_REQUESTS, &[("route", "/v1/endpoints/{id}")]);
        assert_eq!(requests[0]["status"], "200");
        assert_eq!(
            requests[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["route", "status"]])
        );
        let durations = find(&docs, m::API_REQUEST_DURATION, &[]);
        assert_eq!(
            durations[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["route"]])
        );

        // What was flushed is not flushed again.
        assert!(handle.documents(1_700_000_000_001).is_empty());
    }

    #[test]
    fn more_samples_than_a_document_takes_go_on_further_lines() {
        let recorder = EmfRecorder::new("HooklineTest");
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for i in 0..250 {
                m::delivery_attempt("2xx", Duration::from_millis(i));
            }
        });
        let docs = handle.documents(1);
        assert_eq!(docs.len(), 3);
        let mut samples = 0;
        for doc in &docs {
            check_spec(doc);
            samples += doc[m::ATTEMPT_DURATION].as_array().unwrap().len();
        }
        assert_eq!(samples, 250);
        let counted: f64 = docs
            .iter()
            .filter_map(|d| d[m::DELIVERY_ATTEMPTS].as_f64())
            .sum();
        assert_eq!(counted, 250.0, "the count is written once");
    }
}
