//! The fuzz targets' corpus and crash inputs, run on the stable toolchain through the same
//! entry points as `cargo fuzz` (`hookgate_core::fuzzing`): every file of
//! `fuzz/corpus/<target>/` and `fuzz/artifacts/<target>/` must pass, so a crash once found
//! stays fixed.

use std::path::{Path, PathBuf};

use hookgate_core::fuzzing;
use hookgate_core::plugin::PluginRegistry;

/// Every input kept for `target`, with its file name.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut found = Vec::new();
    for kind in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else { continue };
        for entry in entries.map(Result::unwrap) {
            let path = entry.path();
            if path.is_file() {
                found.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    found.sort();
    found
}

/// Runs `entry` on every input of `target`; fails naming each input that panicked.
fn run(target: &str, mut entry: impl FnMut(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "fuzz/corpus/{target}/ has seeds");
    let failed: Vec<String> = inputs
        .iter()
        .filter(|(_, data)| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| entry(data))).is_err())
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{} of {} inputs fail: {failed:#?}", failed.len(), inputs.len());
}

#[test]
fn template_inputs_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut plugins = PluginRegistry::new();
    hookgate_auth::register_builtins(&mut plugins);
    let templates = fuzzing::Templates::new(dir.path(), plugins);
    run("template", |data| templates.load(data));
}

#[test]
fn payload_inputs_pass() {
    run("payload", fuzzing::payload);
}

#[test]
fn config_inputs_pass() {
    let dir = tempfile::tempdir().unwrap();
    run("config", |data| fuzzing::config(dir.path(), data));
}

#[test]
fn retry_after_inputs_pass() {
    run("retry_after", fuzzing::retry_after);
}
