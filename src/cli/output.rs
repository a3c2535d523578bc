//! How answers are shown: aligned tables and colours for people (colours only on a
//! terminal and never under `NO_COLOR`, as anstream decides), pretty JSON for `--json`.

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use owo_colors::OwoColorize;
use serde_json::Value;

/// A column of a list: its heading and the field it shows.
pub type Column = (&'static str, &'static str);

pub fn json(value: &Value) {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    anstream::println!("{text}");
}

/// One record: its fields, one a line.
pub fn record(value: &Value) {
    let Some(fields) = value.as_object() else {
        json(value);
        return;
    };
    let mut table = table();
    for (name, v) in fields {
        if name == "deliveries" || name == "payload" || name == "sample" {
            continue;
        }
        table.add_row(vec![name.bold().to_string(), cell(name, v)]);
    }
    anstream::println!("{table}");
    for name in ["payload", "sample"] {
        if let Some(v) = fields.get(name) {
            anstream::println!("{}", format!("{name}:").bold());
            json(v);
        }
    }
}

/// Items as rows of `columns`.
pub fn list(items: &[Value], columns: &[Column]) {
    if items.is_empty() {
        anstream::println!("{}", "(none)".dimmed());
        return;
    }
    let mut table = table();
    table.set_header(
        columns
            .iter()
            .map(|(h, _)| h.bold().to_string())
            .collect::<Vec<_>>(),
    );
    for item in items {
        table.add_row(
            columns
                .iter()
                .map(|(_, field)| cell(field, &item[*field]))
                .collect::<Vec<_>>(),
        );
    }
    anstream::println!("{table}");
}

fn table() -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Disabled);
    table
}

/// A field as text, states coloured: green for what went well, red for what failed,
/// yellow for what is still under way.
pub fn cell(field: &str, v: &Value) -> String {
    let text = match v {
        Value::Null => return "-".dimmed().to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    if matches!(field, "status" | "outcome" | "ok") {
        return state(&text);
    }
    text
}

pub fn state(text: &str) -> String {
    match text {
        "active" | "succeeded" | "success" | "true" | "valid" | "2xx" => text.green().to_string(),
        "disabled" | "failed" | "false" | "invalid" | "4xx" | "5xx" | "timeout" | "connect"
        | "tls" | "url_policy" => text.red().to_string(),
        "pending" | "retrying" | "rate_limited" => text.yellow().to_string(),
        _ => text.to_string(),
    }
}

pub fn success(msg: &str) {
    anstream::println!("{} {msg}", "✓".green());
}

pub fn note(msg: &str) {
    anstream::eprint!("{msg}");
}

pub fn error(msg: &str) {
    anstream::eprintln!("{} {msg}", "error:".red().bold());
}
