//! The JSON Schema and OpenAPI validators of the tests: Python's `jsonschema` and
//! `openapi-spec-validator` (pinned in tests/requirements.txt, installed by .ci/run),
//! through `validators.py`. `None` when they are not installed here.

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/validators.py");

/// How to install what is missing.
pub const INSTALL: &str = "python3 -m pip install -r tests/requirements.txt";

fn run(request: &Value) -> Option<Value> {
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.code() == Some(3) {
        return None;
    }
    assert!(out.status.success(), "validators.py failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// The errors of each instance against `schema` (empty: valid).
pub fn schema_errors(schema: &Value, instances: &[Value]) -> Option<Vec<Vec<String>>> {
    let answer = run(&json!({"schema": schema, "instances": instances}))?;
    Some(serde_json::from_value(answer["errors"].clone()).unwrap())
}

/// The errors of each YAML document against `schema` (empty: valid).
pub fn yaml_errors(schema: &Value, texts: &[String]) -> Option<Vec<Vec<String>>> {
    let answer = run(&json!({"schema": schema, "yaml": texts}))?;
    Some(serde_json::from_value(answer["errors"].clone()).unwrap())
}

/// `Ok` when `doc` is a valid OpenAPI document.
pub fn openapi(doc: &Value) -> Option<Result<(), String>> {
    let answer = run(&json!({"openapi": doc}))?;
    Some(match answer["error"].as_str() {
        None => Ok(()),
        Some(e) => Err(e.to_string()),
    })
}
