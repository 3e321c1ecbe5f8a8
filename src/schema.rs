//! The JSON Schema of a template file as `hookgate schema template` prints it: core's
//! (every key of a template), with the keys of the built-in auth plugins, which only this
//! binary knows.

use serde_json::Value;

pub fn template() -> Value {
    hookgate_core::schema::template()
}
