//! The JSON Schemas (draft 2020-12) of `hookgate.yaml` and of a template file, generated
//! from the types the loader reads them into, with their doc comments as descriptions.
//! Unknown keys are refused where the loader refuses them (`deny_unknown_fields`).

use std::time::Duration;

use schemars::generate::SchemaSettings;
use serde_json::Value;

use crate::config::Config;
use crate::duration::format_duration;
use crate::template::spec::TemplateSpec;

/// The schema of `hookgate.yaml`.
pub fn config() -> Value {
    let schema = SchemaSettings::draft2020_12().into_generator().into_root_schema_for::<Config>();
    finish(schema.to_value(), "hookgate.yaml", "The gateway's settings (hookgate.yaml). Every key is optional.")
}

/// The schema of a template file, with `auth` and `transform` as generic plugin references
/// (`type` and the plugin's own keys); see [`TemplateSpec`].
pub fn template() -> Value {
    let schema = SchemaSettings::draft2020_12().into_generator().into_root_schema_for::<TemplateSpec>();
    finish(schema.to_value(), "hookgate template", "")
}

/// Sets the title (and a description when given) and writes the defaults of durations as a
/// file would (`5s`, not `{"secs": 5, "nanos": 0}`).
fn finish(mut schema: Value, title: &str, description: &str) -> Value {
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("title".into(), title.into());
        if !description.is_empty() {
            obj.insert("description".into(), description.into());
        }
    }
    durations_as_text(&mut schema);
    schema
}

/// Writes the defaults of durations in `value` as a file would (`5s`).
pub fn durations_as_text(value: &mut Value) {
    match value {
        Value::Object(obj) => {
            if let Some(default) = obj.get_mut("default")
                && let Some(d) = as_duration(default)
            {
                *default = Value::String(format_duration(d));
            }
            obj.values_mut().for_each(durations_as_text);
        }
        Value::Array(items) => items.iter_mut().for_each(durations_as_text),
        _ => {}
    }
}

/// `{"secs": n, "nanos": n}`, a `Duration` as serde writes it.
fn as_duration(v: &Value) -> Option<Duration> {
    let obj = v.as_object()?;
    if obj.len() != 2 {
        return None;
    }
    Some(Duration::new(obj.get("secs")?.as_u64()?, u32::try_from(obj.get("nanos")?.as_u64()?).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_and_durations_read_as_files_write_them() {
        let config = config();
        assert_eq!(config["additionalProperties"], false, "{config:#}");
        assert_eq!(config["properties"]["retention"]["default"], "7d");
        assert!(config["properties"]["log_format"].to_string().contains("json"));
        let defaults = &config["$defs"]["TemplateDefaults"];
        assert_eq!(defaults["additionalProperties"], false);
        assert_eq!(defaults["properties"]["timeout"]["default"], "5s");
        let template = template();
        assert_eq!(template["additionalProperties"], false);
        assert_eq!(template["required"], serde_json::json!(["url"]));
    }
}
