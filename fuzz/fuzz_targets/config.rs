//! `hookgate.yaml`.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

// Kept for the whole run (a static is never dropped); removed with the system's temp files.
static DIR: LazyLock<PathBuf> = LazyLock::new(|| tempfile::tempdir().expect("a temporary folder").keep());

fuzz_target!(|data: &[u8]| hookgate_core::fuzzing::config(&DIR, data));
