//! A template file: YAML, `${env:}`/`${file:}` references, the built-in auth plugins' configs.
#![no_main]

use std::sync::LazyLock;

use hookgate_core::fuzzing::Templates;
use hookgate_core::plugin::PluginRegistry;
use libfuzzer_sys::fuzz_target;

static TEMPLATES: LazyLock<Templates> = LazyLock::new(|| {
    let mut plugins = PluginRegistry::new();
    hookgate_auth::register_builtins(&mut plugins);
    // Kept for the whole run (a static is never dropped); removed with the system's temp files.
    let dir = tempfile::tempdir().expect("a temporary folder").keep();
    Templates::new(&dir, plugins)
});

fuzz_target!(|data: &[u8]| TEMPLATES.load(data));
