//! The JSON Schemas for editors: the committed copies in schemas/ are what `hookgate schema`
//! prints, every shipped config and template validates against them, and a misspelt key is
//! refused by the schema as it is by the loader.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ConfigDir, bin, validators};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn schema_output(of: &str) -> String {
    let out = Command::new(bin()).args(["schema", of]).output().unwrap();
    assert!(out.status.success(), "hookgate schema {of}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn schema(of: &str) -> Value {
    serde_json::from_str(&schema_output(of)).unwrap()
}

#[test]
fn the_committed_copies_are_what_hookgate_schema_prints() {
    for (of, file) in
        [("template", "template.schema.json"), ("config", "config.schema.json"), ("openapi", "openapi.json")]
    {
        let path = Path::new(ROOT).join("schemas").join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == schema_output(of),
            "schemas/{file} is stale (or missing): regenerate it with\n  cargo run -- schema {of} > schemas/{file}"
        );
    }
}

/// Every `*.yaml` under `dir`, recursively.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            found.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            found.push(path);
        }
    }
    found.sort();
    found
}

fn skip() {
    println!("SKIPPED: the JSON Schema validator is not installed ({})", validators::INSTALL);
}

#[test]
fn every_shipped_config_and_template_validates() {
    let (config_schema, template_schema) = (schema("config"), schema("template"));
    let mut files: Vec<PathBuf> = yaml_files(&Path::new(ROOT).join("config"));
    files.extend(yaml_files(&Path::new(ROOT).join("examples")));
    let (configs, templates): (Vec<PathBuf>, Vec<PathBuf>) =
        files.into_iter().partition(|f| f.file_name().is_some_and(|n| n == "hookgate.yaml"));
    assert!(!configs.is_empty() && templates.len() >= 3, "shipped files: {configs:?} {templates:?}");
    for (schema, files) in [(&config_schema, &configs), (&template_schema, &templates)] {
        let texts: Vec<String> = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
        let Some(errors) = validators::yaml_errors(schema, &texts) else { return skip() };
        for (file, errors) in files.iter().zip(errors) {
            assert!(errors.is_empty(), "{} does not validate against its schema: {errors:#?}", file.display());
        }
    }
}

/// What the loader refuses the schema refuses too, and the other way round, for a few
/// files either would meet.
#[test]
fn misspelt_keys_are_refused_by_the_schema_as_by_the_loader() {
    let (config_schema, template_schema) = (schema("config"), schema("template"));
    let configs = [
        ("listen: 127.0.0.1:0\nretention: 2d\nlog_format: json\n", true),
        ("listen: 127.0.0.1:0\nretension: 2d\n", false),
        ("listen: 127.0.0.1:0\ndefaults:\n  timout: 5s\n", false),
        ("listen: 127.0.0.1:0\nlog_format: xml\n", false),
        ("listen: 127.0.0.1:0\nretention: 5\n", false),
    ];
    let templates = [
        ("url: http://127.0.0.1:9/hook\nmethod: put\ntimeout: 1m30s\nheaders: {X-Version: 2}\nverify: false\n", true),
        ("url: http://127.0.0.1:9/hook\ntimout: 5s\nverify: false\n", false),
        ("url: http://127.0.0.1:9/hook\nmethod: PATCH\nverify: false\n", false),
        ("url: http://127.0.0.1:9/hook\ntls: {ca_cert: x}\nverify: false\n", false),
        ("method: POST\nverify: false\n", false),
        ("url: http://127.0.0.1:9/hook\nverify: false\nauth:\n  type: basic\n  username: svc\n  password: pw\n", true),
        ("url: http://127.0.0.1:9/hook\nverify: false\nauth:\n  type: basic\n  username: svc\n  pasword: pw\n", false),
        ("url: http://127.0.0.1:9/hook\nverify: false\nauth:\n  type: none\n  token: x\n", false),
        (
            "url: http://127.0.0.1:9/hook\nverify: false\nauth:\n  type: oauth2\n  grant: client_credentials\n  token_url: http://127.0.0.1:9/token\n  client_id: hg\n  client_secret: s\n  scopes: [a, b]\n  client_auth: body\n  expiry: 30m\n",
            true,
        ),
        (
            "url: http://127.0.0.1:9/hook\nverify: false\nauth:\n  type: oauth2\n  grant: client_credentials\n  token_url: http://127.0.0.1:9/token\n  client_id: hg\n  client_secret: s\n  scope: [a]\n",
            false,
        ),
        ("url: http://127.0.0.1:9/hook\nverify: false\nauth:\n  username: svc\n", false),
    ];
    let texts = |cases: &[(&str, bool)]| cases.iter().map(|(t, _)| t.to_string()).collect::<Vec<_>>();
    let Some(config_errors) = validators::yaml_errors(&config_schema, &texts(&configs)) else { return skip() };
    let Some(template_errors) = validators::yaml_errors(&template_schema, &texts(&templates)) else { return skip() };
    for ((text, valid), errors) in configs.iter().zip(config_errors) {
        assert_eq!(errors.is_empty(), *valid, "config schema on:\n{text}\n{errors:?}");
        let dir = ConfigDir::new(text);
        assert_eq!(dir.validate().status.success(), *valid, "hookgate validate on:\n{text}");
    }
    for ((text, valid), errors) in templates.iter().zip(template_errors) {
        assert_eq!(errors.is_empty(), *valid, "template schema on:\n{text}\n{errors:?}");
        let dir = ConfigDir::new(common::TEST_CONFIG);
        dir.write_template("t.yaml", text);
        let out = dir.validate();
        assert_eq!(
            out.status.success(),
            *valid,
            "hookgate validate on:\n{text}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Editors show the descriptions of the doc comments.
    assert!(template_schema["properties"]["timeout"].to_string().contains("Per-attempt timeout"));
    assert!(config_schema["properties"]["log_format"].to_string().contains("log stores"));
}
