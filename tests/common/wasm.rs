//! The guest plugins, built from source for `wasm32-wasip2` once per test process.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The built `.wasm` of a guest crate of the workspace (`standard_webhooks`,
/// `hookgate_test_plugin`, `zendesk`). Builds them all on first use, in their own target folder so the
/// build does not wait on the test run's.
pub fn guest(artifact: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let target = root.join("target").join("guests");
        let out = Command::new(env!("CARGO"))
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target)
            .args([
                "build",
                "--locked",
                "--release",
                "--target",
                "wasm32-wasip2",
                "-p",
                "standard-webhooks",
                "-p",
                "hookgate-test-plugin",
                "-p",
                "zendesk",
            ])
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "building the guest plugins failed (is the target installed? `rustup target add wasm32-wasip2`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("wasm32-wasip2").join("release")
    });
    let path = dir.join(format!("{artifact}.wasm"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}
