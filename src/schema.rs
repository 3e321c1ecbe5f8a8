//! The JSON Schema of a template file as `hookgate schema template` prints it: core's
//! (every key of a template), with the keys of the built-in auth plugins, which only this
//! binary knows: `auth: {type: basic, ...}` is checked against `basic`'s keys, and so on. A
//! WASM plugin's keys are its own (only `type` is required).

use serde_json::{Map, Value, json};

pub fn template() -> Value {
    let mut schema = hookgate_core::schema::template();
    let mut checks = vec![json!({"$ref": "#/$defs/PluginSpec"})];
    let mut defs = schema["$defs"].as_object().cloned().unwrap_or_default();
    for (name, mut plugin) in hookgate_auth::config_schemas() {
        hookgate_core::schema::durations_as_text(&mut plugin);
        let plugin = plugin.as_object_mut().expect("a plugin's schema is an object");
        if let Some(Value::Object(inner)) = plugin.remove("$defs") {
            hoist(&mut defs, inner);
        }
        plugin.remove("$schema");
        plugin.remove("title");
        let properties = plugin.entry("properties").or_insert_with(|| json!({}));
        properties["type"] = json!({"const": name});
        let key = format!("auth_{name}");
        defs.insert(key.clone(), Value::Object(plugin.clone()));
        checks.push(json!({
            "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
            "then": {"$ref": format!("#/$defs/{key}")},
        }));
    }
    defs.insert(
        "AuthSpec".into(),
        json!({
            "description": "The auth plugin and its config: `type` names it; the built-ins' keys are checked here, a WASM plugin's are its own.",
            "allOf": checks,
        }),
    );
    schema["$defs"] = Value::Object(defs);
    schema["properties"]["auth"]["anyOf"][0] = json!({"$ref": "#/$defs/AuthSpec"});
    schema
}

/// Moves a plugin schema's definitions into the template's; a name both define means the
/// same type (`Duration`, `Secret`), so it must be the same schema.
fn hoist(defs: &mut Map<String, Value>, inner: Map<String, Value>) {
    for (name, def) in inner {
        match defs.get(&name) {
            Some(existing) => assert_eq!(existing, &def, "two different schemas are named `{name}`"),
            None => {
                defs.insert(name, def);
            }
        }
    }
}
