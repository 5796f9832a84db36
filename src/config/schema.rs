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
    close_objects(&mut schema);
    schema
}

/// The schema of `config.json`: the policy keys, plus the original tool's keys
/// (accepted, ignored).
pub fn config_schema() -> Value {
    #[derive(JsonSchema)]
    #[schemars(title = "spec-runner policy defaults (config.json)")]
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
    close_objects(&mut schema);
    schema
}

/// `additionalProperties: false` on every object schema with declared properties that
/// does not say otherwise: the loader rejects unknown keys, so the schema must too.
fn close_objects(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (_, child) in map.iter_mut() {
                close_objects(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
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
