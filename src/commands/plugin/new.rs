//! `hookgate plugin new NAME --lang rust|python|js`: a ready plugin project — the plugin's
//! source (an auth plugin that signs every webhook), the SDK of its language and the WIT
//! contract copied in, a README with the three commands (build, `hookgate plugin check`, copy
//! into `config/plugins/`) and a template that uses it.
//!
//! The project carries everything it builds with but its language's tools, so it builds
//! wherever it is put, offline, with no checkout of hookgate: the Rust one depends on the SDK
//! by a path inside the project (and is a workspace of its own), the Python and JavaScript
//! ones import the SDK module beside their source.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::PluginLang;

/// The contract every project is built against, at the same path in each.
const WIT_PATH: &str = "wit/v0.1.0/plugin.wit";
const WIT: &str = include_str!("../../../plugins/wit/v0.1.0/plugin.wit");

const RUST_SDK: &str = include_str!("../../../plugins/sdk/src/lib.rs");
const RUST_SDK_CARGO: &str = include_str!("new/rust-sdk-Cargo.toml");
const RUST_CARGO: &str = include_str!("new/rust-Cargo.toml");
const RUST_LIB: &str = include_str!("new/rust-lib.rs");
const RUST_README: &str = include_str!("new/rust-README.md");

const PYTHON_SDK: &str = include_str!("../../../plugins/sdk-python/hookgate_plugin.py");
const PYTHON_REQUIREMENTS: &str = include_str!("../../../plugins/sdk-python/requirements.txt");
const PYTHON_APP: &str = include_str!("new/python-app.py");
const PYTHON_README: &str = include_str!("new/python-README.md");

const JS_SDK: &str = include_str!("../../../plugins/sdk-js/hookgate-plugin.js");
/// The build tools' pinned versions: the project's `devDependencies` are these.
const JS_TOOLS: &str = include_str!("../../../plugins/sdk-js/package.json");
const JS_PACKAGE: &str = include_str!("new/js-package.json");
const JS_PLUGIN: &str = include_str!("new/js-plugin.js");
const JS_README: &str = include_str!("new/js-README.md");

const TEMPLATE: &str = include_str!("new/template.yaml");

/// The files of a new project: (path inside it, content).
pub fn project(name: &str, lang: PluginLang) -> anyhow::Result<Vec<(String, String)>> {
    check_name(name)?;
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{env}}", &format!("{}_SECRET", name.to_ascii_uppercase().replace('-', "_")))
    };
    let template = fill(TEMPLATE);
    let readme = |text: &str| fill(text).replace("{{template}}", template.trim_end());
    let mut files = vec![(WIT_PATH.to_string(), WIT.to_string()), ("template.yaml".to_string(), template.clone())];
    match lang {
        PluginLang::Rust => files.extend([
            ("Cargo.toml".into(), fill(RUST_CARGO)),
            ("src/lib.rs".into(), fill(RUST_LIB)),
            ("README.md".into(), readme(RUST_README)),
            ("hookgate-plugin-sdk/Cargo.toml".into(), RUST_SDK_CARGO.to_string()),
            // The SDK finds the contract at `../wit/v0.1.0`, as in hookgate's repository.
            ("hookgate-plugin-sdk/src/lib.rs".into(), RUST_SDK.to_string()),
            (".gitignore".into(), "/target\n".into()),
        ]),
        PluginLang::Python => files.extend([
            ("app.py".into(), fill(PYTHON_APP)),
            ("hookgate_plugin.py".into(), PYTHON_SDK.to_string()),
            ("requirements.txt".into(), PYTHON_REQUIREMENTS.to_string()),
            ("README.md".into(), readme(PYTHON_README)),
            (".gitignore".into(), format!("/{name}.wasm\n__pycache__/\n")),
        ]),
        PluginLang::Js => files.extend([
            ("plugin.js".into(), fill(JS_PLUGIN)),
            ("hookgate-plugin.js".into(), JS_SDK.to_string()),
            ("package.json".into(), js_package(name)?),
            ("README.md".into(), readme(JS_README)),
            (".gitignore".into(), format!("/{name}.wasm\nnode_modules/\n")),
        ]),
    }
    Ok(files)
}

/// The project's `package.json`: the build script, and the build tools at the versions
/// hookgate's own JavaScript plugins are built and tested with.
fn js_package(name: &str) -> anyhow::Result<String> {
    let tools: serde_json::Value = serde_json::from_str(JS_TOOLS).context("plugins/sdk-js/package.json")?;
    let tools = serde_json::to_string_pretty(&tools["devDependencies"])?.replace('\n', "\n  ");
    Ok(JS_PACKAGE.replace("{{name}}", name).replace("{{tools}}", &tools))
}

/// A plugin name that is also a Rust crate's, a Python module's neighbour and an npm
/// package's: lowercase letters, digits, `-` and `_`, starting with a letter.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    anyhow::ensure!(
        ok,
        "`{name}` cannot name a plugin project: use lowercase letters, digits, `-` and `_`, starting with a letter \
         (at most 64 characters); it becomes the `.wasm` file's stem, which templates use as `auth: {{type: NAME}}`"
    );
    Ok(())
}

/// Writes the project into `dir` (default `./NAME`), which must not exist or be empty.
pub fn run(name: &str, lang: PluginLang, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let files = project(name, lang)?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        let empty = std::fs::read_dir(&dir)
            .with_context(|| format!("{} exists and is not a folder", dir.display()))?
            .next()
            .is_none();
        anyhow::ensure!(empty, "{} exists and is not empty: choose another folder with --dir", dir.display());
    }
    for (path, content) in &files {
        write(&dir.join(path), content)?;
    }
    println!("{}: a new {} plugin project, `{name}`:", dir.display(), lang.label());
    for (path, _) in &files {
        println!("  {path}");
    }
    println!("Build it, check it and install it as {}/README.md says.", dir.display());
    Ok(ExitCode::SUCCESS)
}

fn write(path: &Path, content: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, content).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_suit_every_language() {
        for good in ["acme", "acme-signer", "acme_2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Acme", "2fa", "-x", "a.b", "a b", "../x", &"x".repeat(65)] {
            let why = check_name(bad).unwrap_err().to_string();
            assert!(why.contains("lowercase letters, digits"), "{bad}: {why}");
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        for lang in [PluginLang::Rust, PluginLang::Python, PluginLang::Js] {
            for (path, content) in project("acme-signer", lang).unwrap() {
                assert!(!content.contains("{{"), "{lang:?} {path}: {content}");
            }
        }
        let rust = project("acme-signer", PluginLang::Rust).unwrap();
        let readme = &rust.iter().find(|(p, _)| p == "README.md").unwrap().1;
        assert!(readme.contains("release/acme_signer.wasm ../config/plugins/acme-signer.wasm"), "{readme}");
        assert!(readme.contains("secret: ${env:ACME_SIGNER_SECRET}"), "{readme}");
    }

    /// The copied SDK builds with the versions hookgate's own SDK is built and tested with.
    #[test]
    fn the_rust_sdk_copy_uses_the_workspace_versions() {
        let workspace = include_str!("../../../Cargo.toml");
        for line in RUST_SDK_CARGO.lines().skip_while(|l| *l != "[dependencies]").skip(1) {
            assert!(workspace.lines().any(|l| l == line), "the workspace's Cargo.toml has no `{line}`");
        }
        let sdk = include_str!("../../../plugins/sdk/Cargo.toml");
        let dependencies: Vec<&str> =
            sdk.lines().skip_while(|l| *l != "[dependencies]").skip(1).filter(|l| !l.is_empty()).collect();
        let copied = RUST_SDK_CARGO.lines().skip_while(|l| *l != "[dependencies]").skip(1).count();
        assert_eq!(dependencies.len(), copied, "the SDK's dependencies: {dependencies:?}");
    }

    #[test]
    fn the_js_project_pins_the_build_tools_of_hookgate() {
        let package: serde_json::Value = serde_json::from_str(&js_package("acme").unwrap()).unwrap();
        let tools = &package["devDependencies"];
        assert!(tools["componentize-qjs"].as_str().unwrap().starts_with(char::is_numeric), "pinned: {tools}");
        assert!(package["scripts"]["build"].as_str().unwrap().ends_with("-o acme.wasm"));
    }
}
