//! The JSON schemas of the pipeline file and `config.json`, generated from `raw`.

use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Value, json};

use super::raw::{CONFIG_ALIASES, LEGACY_KEYS, RawPipelineFile, RawPolicy, RawRunPolicy};

/// File name under `schema/` of the pipeline file's schema.
pub const PIPELINE_SCHEMA_FILE: &str = "spec-runner.schema.json";
/// File name under `schema/` of `config.json`'s schema.
pub const CONFIG_SCHEMA_FILE: &str = "config.schema.json";

fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12().into_generator()
}

/// The schema of `spec-runner.toml`.
pub fn pipeline_schema() -> Value {
    let mut schema = generator()
        .into_root_schema_for::<RawPipelineFile>()
        .to_value();
    as_strict_as_the_loader(&mut schema);
    schema
}

/// The schema of `config.json`: the policy keys it may set, plus the original tool's
/// keys (accepted, ignored).
pub fn config_schema() -> Value {
    #[derive(JsonSchema)]
    #[schemars(
        title = "spec-runner policy defaults (config.json)",
        description = "Policy defaults in the original spec-workflow-runner's format, read from config.json next to the pipeline file (or --config PATH). Its retry_*, timeout and run-wide keys take effect; the original tool's other keys are accepted and ignored. Specs and commands (on_exhausted) come only from the pipeline file."
    )]
    #[allow(dead_code)]
    struct RawConfigJson {
        #[serde(flatten)]
        run: RawRunPolicy,
        #[serde(flatten)]
        policy: RawPolicy,
    }
    let mut schema = generator()
        .into_root_schema_for::<RawConfigJson>()
        .to_value();
    if let Some(Value::Object(props)) = schema.get_mut("properties") {
        // Refused by the loader in config.json: a command runs with the user's rights,
        // so it comes only from the committed pipeline file.
        for key in CONFIG_JSON_REFUSED {
            props.remove(*key);
        }
        for (old, new) in CONFIG_ALIASES {
            let mut alias = props.get(*new).cloned().unwrap_or_else(|| json!({}));
            if let Value::Object(a) = &mut alias {
                a.insert(
                    "description".into(),
                    json!(format!("The original spec-workflow-runner's name for `{new}`: it takes effect as that key.")),
                );
            }
            props.insert((*old).to_string(), alias);
        }
        for key in LEGACY_KEYS {
            props.insert(
                (*key).to_string(),
                json!({"description": "A key of the original spec-workflow-runner: accepted and ignored (named in a warning)."}),
            );
        }
    }
    as_strict_as_the_loader(&mut schema);
    // The loader reads a top-level `null` in config.json as "not set" (the original
    // tool wrote them), so the schema admits it there, and nowhere else.
    if let Some(Value::Object(props)) = schema.get_mut("properties") {
        for (key, prop) in props.iter_mut() {
            if !LEGACY_KEYS.contains(&key.as_str()) {
                admit_null(prop);
            }
        }
    }
    schema
}

/// Policy keys the loader refuses in `config.json`.
pub const CONFIG_JSON_REFUSED: &[&str] = &["on_exhausted"];

/// Every rewrite that makes a generated schema say what the loader says, applied to
/// the whole tree so that new keys get it without asking:
///
/// - objects with properties are closed (`additionalProperties: false`): the loader
///   rejects unknown keys;
/// - no `null`: an optional key is one left out (a TOML file cannot hold a null;
///   taplo turns `nan` and `inf` into one, which the loader refuses);
/// - enums are `enum` lists, not `oneOf` of `const`s, so editors name the values in
///   hover text and errors, the value descriptions going into the description;
/// - integer formats (`uint32`, …) become the bounds they imply, and `format`s that
///   are not JSON Schema's own go (ajv's default strict mode refuses unknown formats).
fn as_strict_as_the_loader(v: &mut Value) {
    let Value::Object(map) = v else {
        if let Value::Array(items) = v {
            items.iter_mut().for_each(as_strict_as_the_loader);
        }
        return;
    };
    // `type: [T, "null"]` → `type: T`.
    if let Some(Value::Array(types)) = map.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            map.insert("type".into(), only);
        }
    }
    // `anyOf: [X, {type: null}]` → X, keeping this node's own description.
    if let Some(Value::Array(branches)) = map.get("anyOf") {
        let rest: Vec<Value> = branches
            .iter()
            .filter(|b| b.get("type") != Some(&json!("null")))
            .cloned()
            .collect();
        if rest.len() < branches.len() {
            map.remove("anyOf");
            if let [Value::Object(only)] = rest.as_slice() {
                for (k, val) in only {
                    map.entry(k.clone()).or_insert_with(|| val.clone());
                }
            } else {
                map.insert("anyOf".into(), Value::Array(rest));
            }
        }
    }
    // `oneOf` of `const`s → `enum`.
    if let Some(Value::Array(branches)) = map.get("oneOf")
        && !branches.is_empty()
        && branches.iter().all(|b| b.get("const").is_some())
    {
        let values: Vec<Value> = branches.iter().map(|b| b["const"].clone()).collect();
        let notes: Vec<String> = branches
            .iter()
            .filter_map(|b| {
                let d = b.get("description")?.as_str()?;
                Some(format!(
                    "- `{}`: {d}",
                    b["const"].as_str().unwrap_or_default()
                ))
            })
            .collect();
        let all_strings = values.iter().all(Value::is_string);
        map.remove("oneOf");
        if all_strings {
            map.insert("type".into(), json!("string"));
        }
        map.insert("enum".into(), Value::Array(values));
        if !notes.is_empty() {
            let head = map
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let text = if head.is_empty() {
                notes.join("\n")
            } else {
                format!("{head}\n\n{}", notes.join("\n"))
            };
            map.insert("description".into(), Value::String(text));
        }
    }
    if let Some(Value::String(format)) = map.get("format") {
        let bounds: Option<(i128, i128)> = match format.as_str() {
            "uint8" => Some((0, u8::MAX.into())),
            "uint16" => Some((0, u16::MAX.into())),
            "uint32" | "uint" => Some((0, u32::MAX.into())),
            "uint64" => Some((0, u64::MAX.into())),
            "int8" => Some((i8::MIN.into(), i8::MAX.into())),
            "int16" => Some((i16::MIN.into(), i16::MAX.into())),
            "int32" | "int" => Some((i32::MIN.into(), i32::MAX.into())),
            "int64" => Some((i64::MIN.into(), i64::MAX.into())),
            _ => None,
        };
        let standard = matches!(
            format.as_str(),
            "date-time"
                | "date"
                | "time"
                | "duration"
                | "email"
                | "idn-email"
                | "hostname"
                | "idn-hostname"
                | "ipv4"
                | "ipv6"
                | "uri"
                | "uri-reference"
                | "iri"
                | "iri-reference"
                | "uuid"
                | "uri-template"
                | "json-pointer"
                | "relative-json-pointer"
                | "regex"
        );
        if !standard {
            map.remove("format");
        }
        if let Some((min, max)) = bounds {
            let number =
                |n: i128| serde_json::Number::from_i128(n).map_or(Value::Null, Value::Number);
            map.entry("minimum").or_insert_with(|| number(min));
            map.entry("maximum").or_insert_with(|| number(max));
        }
    }
    if map.contains_key("properties") && !map.contains_key("additionalProperties") {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (_, child) in map.iter_mut() {
        as_strict_as_the_loader(child);
    }
}

/// Lets `prop` also be `null`.
fn admit_null(prop: &mut Value) {
    let Value::Object(map) = prop else { return };
    let plain_type = match (map.get("type"), map.get("enum")) {
        (Some(Value::String(t)), None) => Some(t.clone()),
        _ => None,
    };
    match plain_type {
        Some(t) => {
            map.insert("type".into(), json!([t, "null"]));
        }
        _ => {
            let description = map.remove("description");
            let inner = Value::Object(std::mem::take(map));
            map.insert("anyOf".into(), json!([inner, {"type": "null"}]));
            if let Some(d) = description {
                map.insert("description".into(), d);
            }
        }
    }
}

/// Both schemas as pretty JSON with a trailing newline, by file name.
pub fn rendered() -> Vec<(&'static str, String)> {
    [
        (PIPELINE_SCHEMA_FILE, pipeline_schema()),
        (CONFIG_SCHEMA_FILE, config_schema()),
    ]
    .into_iter()
    .map(|(name, v)| {
        (
            name,
            format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default()),
        )
    })
    .collect()
}
