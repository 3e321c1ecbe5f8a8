//! Plugins in Python and JavaScript, built from source in the test run: the Standard
//! Webhooks example signs as the Rust one does, hostile code in each language fails only its
//! own delivery, `hookgate plugin new` projects build as their README says and sign a
//! delivery, and a restart loads a Python plugin from the compiled cache.
//!
//! They need componentize-py and componentize-qjs (`.ci/run` installs both); without them
//! they print `SKIPPED ...`.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::standard_webhooks::{self, SECRET};
use common::wasm::{Lang, guest, polyglot_guest};
use common::*;
use hmac::{KeyInit, Mac};

/// How long a gateway may take to start: it compiles its plugins first, and a Python one
/// (an 18 MB component) takes a minute or more on a busy machine.
const COMPILE: Duration = Duration::from_secs(600);

fn install_file(config: &ConfigDir, wasm: &Path, name: &str) {
    let dir = config.path().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(wasm, &tmp).unwrap();
    std::fs::rename(tmp, dir.join(format!("{name}.wasm"))).unwrap();
}

/// The Standard Webhooks example of `lang`.
fn standard_webhooks(lang: Lang) -> PathBuf {
    match lang {
        Lang::Python => polyglot_guest(lang, "examples/standard-webhooks-py"),
        Lang::Js => polyglot_guest(lang, "examples/standard-webhooks-js/plugin.js"),
    }
}

/// The hostile test plugin of `lang`.
fn hostile(lang: Lang) -> PathBuf {
    match lang {
        Lang::Python => polyglot_guest(lang, "plugins/testing/hostile-py"),
        Lang::Js => polyglot_guest(lang, "plugins/testing/hostile-js/plugin.js"),
    }
}

fn available(test: &str) -> Vec<Lang> {
    [Lang::Python, Lang::Js].into_iter().filter(|lang| lang.available(test)).collect()
}

/// Acceptance 1: the Python and the JavaScript Standard Webhooks plugins sign deliveries that
/// the spec's verifier accepts, exactly as the Rust one does: the same headers, the delivery
/// id as the message id (kept by a retry), and for the test payload sent on load, which has
/// no delivery id, the same id derived from the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_in_python_and_javascript_sign_as_the_rust_one_does() {
    let langs = available("standard_webhooks_in_python_and_javascript_sign_as_the_rust_one_does");
    // The first delivery to each path is answered 503, so each is retried once.
    let failed_once = Mutex::new(HashSet::new());
    let mock = Mock::start(move |_, r| {
        let first = !r.is_test() && failed_once.lock().unwrap().insert(r.path.clone());
        Reply::Status(if first { 503 } else { 200 })
    })
    .await;
    let config = ConfigDir::new(TEST_CONFIG);
    let mut names = vec!["rust"];
    install_file(&config, &guest("standard_webhooks"), "sw-rust");
    for lang in &langs {
        install_file(&config, &standard_webhooks(*lang), &format!("sw-{}", lang.name()));
        names.push(lang.name());
    }
    for name in &names {
        config.write_template(
            &format!("signed-{name}.yaml"),
            &format!(
                "url: {}\nauth:\n  type: sw-{name}\n  secret: ${{env:WEBHOOK_SECRET}}\n",
                mock.url(&format!("/{name}"))
            ),
        );
    }
    let gw = Gateway::start_within(&config, &[("WEBHOOK_SECRET", SECRET)], COMPILE).await;
    let mut ids = Vec::new();
    for name in &names {
        gw.wait_state(&format!("signed-{name}"), "active", Duration::from_secs(30)).await;
        ids.push(gw.dispatch(&format!("signed-{name}"), &payload(970, 3)).await);
    }
    for (name, id) in names.iter().zip(&ids) {
        let view = gw.wait_dispatch(id, Duration::from_secs(20)).await;
        assert_eq!(view["state"], "delivered", "{name}: {view}");
    }

    let requests = mock.requests();
    let of =
        |name: &str| -> Vec<Recorded> { requests.iter().filter(|r| r.path == format!("/{name}")).cloned().collect() };
    let rust = of("rust");
    for name in &names {
        let sent = of(name);
        assert_eq!(sent.len(), 3, "{name}: the test payload, a 503, the retry");
        for r in &sent {
            standard_webhooks::verify_request(r).unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut signing: Vec<&str> =
                r.headers.keys().map(|h| h.as_str()).filter(|h| h.starts_with("webhook-")).collect();
            signing.sort();
            assert_eq!(signing, ["webhook-id", "webhook-signature", "webhook-timestamp"], "{name}");
        }
        assert_eq!(sent[0].header("webhook-id"), rust[0].header("webhook-id"), "{name}: the test payload's id");
        let delivery = sent[1].header("x-hookgate-delivery-id").unwrap();
        assert_eq!(sent[1].header("webhook-id").unwrap(), format!("msg_{delivery}"), "{name}: the delivery's id");
        assert_eq!(sent[1].header("webhook-id"), sent[2].header("webhook-id"), "{name}: a retry keeps its id");
    }
    let logs = gw.output();
    assert!(!logs.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "the secret is not logged");

    // A bad secret is the plugin's error, in the delivery's reason, naming the plugin.
    for name in &names {
        config.write_template(
            &format!("bad-{name}.yaml"),
            &format!("url: {}\nverify: false\nretries: 0\nauth: {{type: sw-{name}, secret: nope}}\n", mock.url("/bad")),
        );
    }
    for name in &names {
        gw.wait_state(&format!("bad-{name}"), "active", Duration::from_secs(20)).await;
        let id = gw.dispatch(&format!("bad-{name}"), &payload(971, 1)).await;
        let view = gw.wait_dispatch(&id, Duration::from_secs(20)).await;
        let reason = view["requests"][0]["reason"].as_str().unwrap();
        assert_eq!(reason, format!("auth plugin `sw-{name}`: `secret` must start with `whsec_`"), "{name}");
    }
}

/// Acceptance 3: an endless loop, a memory bomb and an uncaught exception in Python and in
/// JavaScript each fail only their own delivery, with the plugin's name in the reason; the
/// same plugins' calm templates, and a built-in one, keep delivering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_python_and_javascript_fail_only_their_own_delivery() {
    let langs = available("hostile_python_and_javascript_fail_only_their_own_delivery");
    if langs.is_empty() {
        return;
    }
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    let cases = |lang: Lang| {
        let exception = match lang {
            Lang::Python => "KeyError: 'no such key'",
            Lang::Js => "TypeError: ",
        };
        [("loop", "stopped: "), ("memory", "stopped: asked for more than 16777216 bytes"), ("exception", exception)]
    };
    for lang in &langs {
        let plugin = format!("hostile-{}", lang.name());
        install_file(&config, &hostile(*lang), &plugin);
        for (mode, _) in cases(*lang) {
            let name = format!("{}-{mode}", lang.name());
            config.write_template(
                &format!("{name}.yaml"),
                &format!(
                    "url: {}\nverify: false\nretries: 0\nauth: {{type: {plugin}, mode: {mode}}}\n",
                    mock.url(&format!("/{name}"))
                ),
            );
        }
        config.write_template(
            &format!("{}-calm.yaml", lang.name()),
            &format!("url: {}\nauth: {{type: {plugin}}}\n", mock.url(&format!("/{}-calm", lang.name()))),
        );
    }
    config.write_template(
        "basic.yaml",
        &format!("url: {}\nverify: false\nauth: {{type: basic, username: u, password: p}}\n", mock.url("/basic")),
    );
    let gw = Gateway::start_within(&config, &[], COMPILE).await;
    let mut hostile = Vec::new();
    for lang in &langs {
        gw.wait_state(&format!("{}-calm", lang.name()), "active", Duration::from_secs(30)).await;
        for (mode, expected) in cases(*lang) {
            let name = format!("{}-{mode}", lang.name());
            gw.wait_state(&name, "active", Duration::from_secs(20)).await;
            hostile.push((gw.dispatch(&name, &payload(980, 1)).await, *lang, name, expected));
        }
    }
    let mut calm = vec![gw.dispatch("basic", &payload(981, 1)).await];
    for lang in &langs {
        calm.push(gw.dispatch(&format!("{}-calm", lang.name()), &payload(981, 1)).await);
    }
    for (id, lang, name, expected) in hostile {
        let view = gw.wait_dispatch(&id, Duration::from_secs(20)).await;
        assert_eq!(view["state"], "failed", "{name}: {view}");
        let reason = view["requests"][0]["reason"].as_str().unwrap();
        assert!(reason.starts_with(&format!("auth plugin `hostile-{}`: ", lang.name())), "{name}: {reason}");
        assert!(reason.contains(expected), "{name}: {reason}");
        let latency = view["requests"][0]["attempts"][0]["latency_ms"].as_f64().unwrap();
        assert!(latency < 3000.0, "{name} was stopped within the limits ({latency} ms)");
    }
    for id in calm {
        assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(20)).await["state"], "delivered");
    }
    let reached: HashSet<String> = mock.deliveries().into_iter().map(|r| r.path).collect();
    let mut expected: HashSet<String> = langs.iter().map(|l| format!("/{}-calm", l.name())).collect();
    expected.insert("/basic".into());
    assert_eq!(reached, expected, "only the calm templates reached the endpoint");
    for lang in &langs {
        let calm = mock.deliveries().into_iter().find(|r| r.path == format!("/{}-calm", lang.name())).unwrap();
        assert_eq!(calm.header("x-test-plugin"), Some(format!("calm-{}", lang.name())));
    }
    assert_eq!(gw.get("/healthz").await.0, 200);
}

/// The transform example in Python: one event per profile, the profiles without an
/// `Identity` skipped and counted so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_transform_example_sends_an_event_per_profile() {
    if !Lang::Python.available("the_python_transform_example_sends_an_event_per_profile") {
        return;
    }
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    install_file(&config, &polyglot_guest(Lang::Python, "examples/profile-events-py"), "profile-events");
    let url = mock.url("/v1/track");
    config.write_template(
        "events.yaml",
        &format!("url: {url}\ntransform:\n  type: profile-events\n  url: {url}\n  event: Spring Sale\n"),
    );
    let gw = Gateway::start_within(&config, &[], COMPILE).await;
    gw.wait_state("events", "active", Duration::from_secs(30)).await;
    let tests = mock.requests();
    assert_eq!(tests.len(), 5, "one event per profile of the test payload");
    assert!(tests.iter().all(|r| r.json()["properties"]["test"] == true), "marked as a test");

    let mut campaign = payload(990, 3);
    campaign["profiles"].as_array_mut().unwrap().push(serde_json::json!({"Email": "no-identity@example.com"}));
    let id = gw.dispatch("events", &campaign).await;
    assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(20)).await["state"], "delivered");
    let mut events: Vec<serde_json::Value> =
        mock.requests().iter().map(Recorded::json).filter(|e| e["properties"]["test"] != true).collect();
    events.sort_by_key(|e| e["messageId"].as_str().unwrap().to_string());
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(
        events[0],
        serde_json::json!({"userId": "user-0", "event": "Spring Sale", "messageId": "990-user-0",
            "properties": {"campaign": "spring", "targetId": 990, "email": "user0@example.com"}})
    );
    let (_, stats) = gw.get("/v1/campaigns/990").await;
    assert_eq!(stats["profiles"]["delivered"], 3, "{stats}");
    assert_eq!(stats["skipped_profiles"], 1, "{stats}");
}

/// Acceptance 4: a restart with a Python plugin loads it from the compiled cache — the log
/// says so, with no compilation — in a fraction of the compile time, and the first delivery
/// after the restart is as quick as any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loads_a_python_plugin_from_the_compiled_cache() {
    if !Lang::Python.available("a_restart_loads_a_python_plugin_from_the_compiled_cache") {
        return;
    }
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    install_file(&config, &standard_webhooks(Lang::Python), "sw-python");
    config.write_template(
        "signed.yaml",
        &format!("url: {}\nauth: {{type: sw-python, secret: \"{SECRET}\"}}\n", mock.url("/")),
    );
    let load_ms = |logs: &str, how: &str| -> f64 {
        let line = logs.lines().find(|l| l.contains(&format!("plugin loaded ({how}) in "))).unwrap_or_else(|| {
            panic!("no `plugin loaded ({how}) in` line: {logs}");
        });
        let ms = line.split(&format!("plugin loaded ({how}) in ")).nth(1).unwrap();
        ms.split(" ms").next().unwrap().parse().unwrap()
    };
    let first_delivery = async |gw: &Gateway| -> f64 {
        gw.wait_state("signed", "active", Duration::from_secs(30)).await;
        let id = gw.dispatch("signed", &payload(995, 1)).await;
        let view = gw.wait_dispatch(&id, Duration::from_secs(20)).await;
        assert_eq!(view["state"], "delivered", "{view}");
        standard_webhooks::verify_request(mock.requests().last().unwrap()).unwrap();
        view["requests"][0]["attempts"][0]["latency_ms"].as_f64().unwrap()
    };
    let compiled = {
        let mut gw = Gateway::start_within(&config, &[], COMPILE).await;
        first_delivery(&gw).await;
        let compiled = load_ms(&gw.output(), "compiled");
        gw.terminate(Duration::from_secs(20)).await;
        compiled
    };
    let gw = Gateway::start_within(&config, &[], COMPILE).await;
    let latency = first_delivery(&gw).await;
    let logs = gw.output();
    assert!(!logs.contains("plugin loaded (compiled)"), "not compiled again: {logs}");
    let cached = load_ms(&logs, "from the compiled cache");
    eprintln!(
        "the Python plugin: compiled in {compiled} ms; from the cache in {cached} ms; first delivery {latency} ms"
    );
    assert!(
        cached * 4.0 < compiled,
        "loading from the cache ({cached} ms) is far quicker than compiling ({compiled} ms)"
    );
    assert!(latency < 1000.0 && latency * 4.0 < compiled, "the first delivery waited for no compilation: {latency} ms");
}

// ---------------------------------------------------------------- plugin new

/// The shell commands of the README's "Build, check, install" block, as a new user types
/// them (comments dropped).
fn readme_commands(readme: &str) -> Vec<String> {
    let block = readme.split("## Build, check, install").nth(1).expect("a build section");
    let block = block.split("```sh\n").nth(1).unwrap().split("```").next().unwrap();
    block.lines().map(|l| l.split(" #").next().unwrap().trim().to_string()).filter(|l| !l.is_empty()).collect()
}

/// Acceptance 2: `hookgate plugin new NAME --lang LANG` writes a project that builds with the
/// commands of its README, passes `hookgate plugin check`, is installed by the README's copy
/// into `config/plugins/`, and then signs a delivery through its own template.
async fn plugin_new_builds_as_written_and_signs(lang: &str) {
    // The README's commands copy into ../config/plugins: a config folder beside the project.
    let config = ConfigDir::new_in("config", TEST_CONFIG);
    let root = config.dir.path();
    let name = format!("acme-{lang}");
    let project = root.join(&name);
    let out = Command::new(bin()).current_dir(root).args(["plugin", "new", &name, "--lang", lang]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(project.join("README.md").is_file());
    std::fs::create_dir_all(config.path().join("plugins")).unwrap();
    if lang == "rust" {
        // The project builds in its own target folder as written; linked to one the test
        // runs share, so the SDK's dependencies compile once.
        let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/plugin-new-rust");
        std::fs::create_dir_all(&shared).unwrap();
        std::os::unix::fs::symlink(&shared, project.join("target")).unwrap();
    }

    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    let bin_dir = Path::new(bin()).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut checked = String::new();
    for command in readme_commands(&readme) {
        let started = std::time::Instant::now();
        // As a new user runs them: the project's own `target/`, whatever target folder the
        // suite itself was built with.
        let run = Command::new("sh")
            .arg("-c")
            .arg(&command)
            .current_dir(&project)
            .env("PATH", &path)
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout).to_string();
        assert!(run.status.success(), "`{command}` failed:\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
        eprintln!("{lang}: `{command}` took {:.1} s", started.elapsed().as_secs_f64());
        if command.starts_with("hookgate plugin check") {
            checked = stdout;
        }
    }
    assert!(checked.contains("implementing hookgate:plugin@0.1.0"), "{checked}");
    assert!(checked.contains(&format!("name:     {name} 0.1.0")), "{checked}");
    assert!(checked.contains("x-signature-256: sha256="), "{checked}");
    assert!(checked.contains("per call: p50 "), "{checked}");
    let wasm = config.path().join("plugins").join(format!("{name}.wasm"));
    assert!(wasm.is_file(), "the README's copy installed {}", wasm.display());

    // Its template, pointed at a mock instead of `hookgate catch`.
    let mock = Mock::answering(200).await;
    let template = std::fs::read_to_string(project.join("template.yaml")).unwrap();
    let template = template.replace(&format!("http://127.0.0.1:9000/hooks/{name}"), &mock.url("/hook"));
    config.write_template(&format!("{name}.yaml"), &template);
    let env = format!("ACME_{}_SECRET", lang.to_ascii_uppercase());
    let gw = Gateway::start_within(&config, &[(&env, "partner-secret")], COMPILE).await;
    gw.wait_state(&name, "active", Duration::from_secs(30)).await;
    let id = gw.dispatch(&name, &payload(999, 2)).await;
    assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(20)).await["state"], "delivered");
    let delivery = mock.deliveries().pop().unwrap();
    let timestamp = delivery.header("x-signature-timestamp").unwrap();
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"partner-secret").unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&delivery.body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(delivery.header("x-signature-256"), Some(format!("sha256={expected}")), "signed by the new plugin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_new_rust_builds_as_written_and_signs() {
    plugin_new_builds_as_written_and_signs("rust").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_new_python_builds_as_written_and_signs() {
    if Lang::Python.available("plugin_new_python_builds_as_written_and_signs") {
        plugin_new_builds_as_written_and_signs("python").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_new_js_builds_as_written_and_signs() {
    if Lang::Js.available("plugin_new_js_builds_as_written_and_signs") {
        plugin_new_builds_as_written_and_signs("js").await;
    }
}
