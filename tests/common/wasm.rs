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

/// The languages besides Rust that plugins are written in, each built by its own tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Python,
    Js,
}

impl Lang {
    pub fn name(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::Js => "js",
        }
    }

    /// Whether the language's build tool is installed: componentize-py (`pip install -r
    /// plugins/sdk-python/requirements.txt`), or componentize-qjs in `plugins/sdk-js`
    /// (`npm ci --prefix plugins/sdk-js`). When it is not, a line says the test is skipped,
    /// except in CI (`CI` set), which installs both: there a missing tool fails the test.
    pub fn available(self, test: &str) -> bool {
        let found = match self {
            Self::Python => Command::new("componentize-py").arg("--version").output().is_ok_and(|o| o.status.success()),
            Self::Js => {
                componentize_qjs().is_file()
                    && Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success())
            }
        };
        if !found {
            let install = match self {
                Self::Python => {
                    "componentize-py is not installed: `pip install -r plugins/sdk-python/requirements.txt`"
                }
                Self::Js => "componentize-qjs is not installed: `npm ci --prefix plugins/sdk-js` (needs Node.js)",
            };
            assert!(std::env::var_os("CI").is_none(), "{test}: {install} (CI installs it: see .ci/run)");
            // Straight to stderr: the test harness hides what `eprintln!` prints from a passing test.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED {test} ({}): {install}", self.name());
        }
        found
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn componentize_qjs() -> PathBuf {
    root().join("plugins/sdk-js/node_modules/.bin/componentize-qjs")
}

/// A plugin in Python or JavaScript built from source: `source` is the app's folder (Python:
/// its module `app`, with the SDK `plugins/sdk-python` on the path) or its `.js` file, relative
/// to the repository. Built once for what it is built from — its sources, the SDK, the WIT
/// contract and the tools' versions — and kept in `target/guests/<lang>/`, since each test
/// runs in a process of its own and a build takes a while (one at a time per language).
pub fn polyglot_guest(lang: Lang, source: &str) -> PathBuf {
    use sha2::Digest;
    let root = root();
    let mut inputs: Vec<PathBuf> = vec![root.join("plugins/wit/v0.1.0/plugin.wit")];
    let tool_version = match lang {
        Lang::Python => {
            let app = root.join(source);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&app)
                .unwrap_or_else(|e| panic!("{}: {e}", app.display()))
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "py"))
                .collect();
            files.sort();
            inputs.extend(files);
            inputs.push(root.join("plugins/sdk-python/hookgate_plugin.py"));
            let out = Command::new("componentize-py").arg("--version").output().expect("run componentize-py");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
        Lang::Js => {
            inputs.push(root.join(source));
            inputs.push(root.join("plugins/sdk-js/hookgate-plugin.js"));
            std::fs::read_to_string(root.join("plugins/sdk-js/package-lock.json")).unwrap()
        }
    };
    let mut hash = sha2::Sha256::new();
    hash.update(tool_version.as_bytes());
    for input in &inputs {
        hash.update(input.strip_prefix(&root).unwrap().to_string_lossy().as_bytes());
        hash.update(std::fs::read(input).unwrap_or_else(|e| panic!("{}: {e}", input.display())));
    }
    let hash: String = hash.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect();
    let dir = root.join("target").join("guests").join(lang.name());
    std::fs::create_dir_all(&dir).unwrap();
    let stem = source.trim_end_matches('/').replace(['/', '.'], "_");
    let out = dir.join(format!("{stem}-{hash}.wasm"));
    if out.is_file() {
        return out;
    }
    // One build at a time: a test process that waited finds the file another one built.
    let lock = std::fs::File::create(dir.join(".lock")).unwrap();
    lock.lock().unwrap();
    if out.is_file() {
        return out;
    }
    let tmp = dir.join(format!(".{stem}-{}.tmp.wasm", std::process::id()));
    let mut command = match lang {
        Lang::Python => {
            let mut c = Command::new("componentize-py");
            c.args(["-d", "plugins/wit/v0.1.0", "-w", "plugin", "componentize", "--stub-wasi", "-p", source])
                .args(["-p", "plugins/sdk-python", "app", "-o"])
                .arg(&tmp);
            c
        }
        Lang::Js => {
            // `--module-root .`: the examples import the SDK from `plugins/sdk-js`.
            let mut c = Command::new(componentize_qjs());
            c.args(["--wit", "plugins/wit/v0.1.0", "-n", "plugin", "--js", source, "--module-root", "."])
                .args(["--stub-wasi", "--sync", "-o"])
                .arg(&tmp);
            c
        }
    };
    let built = command.current_dir(&root).output().expect("run the build tool");
    assert!(
        built.status.success() && tmp.is_file(),
        "building {source} failed:\n{}\n{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap();
    out
}
