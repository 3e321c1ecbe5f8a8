//! Templates: verify on load, hot reload (edit, invalid, delete, ConfigMap swap), the API's
//! "Create", and `hookgate validate`.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn template(url: &str, extra: &str) -> String {
    format!("url: {url}\n{extra}")
}

/// Acceptance 4: a template whose endpoint answers 500 to the test payload never becomes
/// active and says why; pointed at a working endpoint it becomes active without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_gates_activation() {
    let broken = Mock::answering(500).await;
    let working = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("partner.yaml", &template(&broken.url("/hook"), ""));
    let gw = Gateway::start(&config, &[]).await;

    let _state = gw.wait_state("partner", "unverified", Duration::from_secs(10)).await;
    let state = wait_for("the verification verdict", Duration::from_secs(10), async || {
        let (_, body) = gw.get("/v1/templates/partner").await;
        body["reason"].as_str().unwrap_or_default().contains("HTTP 500").then_some(body)
    })
    .await;
    assert_eq!(state["state"], "unverified");
    assert!(state["active"].is_null());
    assert!(state["reason"].as_str().unwrap().contains("HTTP 500 Internal Server Error"), "{state}");
    assert!(broken.requests()[0].is_test());

    let (status, body) = gw.post_json("/v1/templates/partner/dispatch", &payload(5, 1), &[]).await;
    assert_eq!(status, 409, "an unverified template does not dispatch: {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("HTTP 500"), "{body}");
    assert!(broken.deliveries().is_empty());

    config.write_template("partner.yaml", &template(&working.url("/hook"), ""));
    gw.wait_state("partner", "active", Duration::from_secs(10)).await;
    assert!(working.requests()[0].is_test());
    let id = gw.dispatch("partner", &payload(5, 1)).await;
    assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(10)).await["state"], "delivered");
}

/// Acceptance 5: edit → the next dispatch goes to the new URL within a second; invalid YAML
/// keeps the old version delivering while the API and `validate` report file and line;
/// deleting the file removes the template.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_edit_invalid_delete() {
    let first = Mock::answering(200).await;
    let second = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("live.yaml", &template(&first.url("/one"), "verify: false\n"));
    let gw = Gateway::start(&config, &[]).await;
    let v1 = gw.wait_state("live", "active", Duration::from_secs(10)).await["version"].as_u64().unwrap();

    let id = gw.dispatch("live", &payload(10, 1)).await;
    gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    assert_eq!(first.deliveries().len(), 1);

    // Edit: the new URL is live within one second.
    let edited = Instant::now();
    config.write_template("live.yaml", &template(&second.url("/two"), "verify: false\n"));
    wait_for("the edited template to load", Duration::from_secs(1), async || {
        let (_, body) = gw.get("/v1/templates/live").await;
        (body["version"].as_u64() > Some(v1)).then_some(())
    })
    .await;
    let id = gw.dispatch("live", &payload(11, 1)).await;
    gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    assert_eq!(second.deliveries().len(), 1, "the dispatch after the edit goes to the new URL");
    assert_eq!(second.deliveries()[0].path, "/two");
    assert_eq!(first.deliveries().len(), 1);
    eprintln!("edit to delivery at the new URL: {:?}", edited.elapsed());

    // Invalid YAML: the old version keeps delivering; the error names file, line, column.
    config.write_template("live.yaml", "url: [unclosed\nmethod: PUT\n");
    let body = gw.wait_state("live", "invalid", Duration::from_secs(5)).await;
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("live.yaml:"), "{error}");
    assert!(body["location"]["line"].as_u64().unwrap() >= 1);
    assert!(body["active"]["url"].as_str().unwrap().ends_with("/two"), "the last good version stays live: {body}");
    let id = gw.dispatch("live", &payload(12, 1)).await;
    assert_eq!(gw.wait_dispatch(&id, Duration::from_secs(10)).await["state"], "delivered");
    assert_eq!(second.deliveries().len(), 2);

    let out = config.validate();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout.lines().find(|l| l.contains("live.yaml:")).expect("a line for live.yaml");
    let after = line.split("live.yaml:").nth(1).unwrap();
    let mut parts = after.splitn(3, ':');
    let (l, c) = (parts.next().unwrap(), parts.next().unwrap());
    assert!(l.parse::<u32>().is_ok() && c.parse::<u32>().is_ok(), "file:line:col: {line}");

    let (_, metrics) = gw.get("/metrics").await;
    assert!(metrics.as_str().unwrap().contains("hookgate_template_reload_errors_total 1"), "{metrics}");

    // Delete: the template is gone.
    std::fs::remove_file(config.template_path("live.yaml")).unwrap();
    wait_for("the deleted template to go", Duration::from_secs(5), async || {
        (gw.get("/v1/templates/live").await.0 == 404).then_some(())
    })
    .await;
    let (status, _) = gw.post_json("/v1/templates/live/dispatch", &payload(13, 1), &[]).await;
    assert_eq!(status, 404);
}

/// Acceptance 5: a Kubernetes ConfigMap mount — files are symlinks into `..data`, which is
/// itself a symlink swapped atomically to a new timestamped directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_symlink_swap_is_seen() {
    use std::os::unix::fs::symlink;
    let first = Mock::answering(200).await;
    let second = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    let dir = config.path().join("templates");
    let v1 = dir.join("..2026_11_29_10_00_00.000000001");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("cm.yaml"), template(&first.url("/a"), "verify: false\n")).unwrap();
    symlink(v1.file_name().unwrap(), dir.join("..data")).unwrap();
    symlink("..data/cm.yaml", dir.join("cm.yaml")).unwrap();

    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("cm", "active", Duration::from_secs(10)).await;
    assert_eq!(
        gw.get("/v1/templates").await.1["templates"].as_array().unwrap().len(),
        1,
        "`..data` entries are not templates"
    );

    // What the kubelet does: write a new directory, point a temp symlink at it, rename it over ..data.
    let v2 = dir.join("..2026_11_29_10_05_00.000000002");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("cm.yaml"), template(&second.url("/b"), "verify: false\n")).unwrap();
    symlink(v2.file_name().unwrap(), dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();

    wait_for("the swapped ConfigMap to load", Duration::from_secs(5), async || {
        let (_, body) = gw.get("/v1/templates/cm").await;
        body["active"]["url"].as_str().is_some_and(|u| u.ends_with("/b")).then_some(())
    })
    .await;
    let id = gw.dispatch("cm", &payload(20, 1)).await;
    gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    assert_eq!(second.deliveries().len(), 1);
    assert!(first.deliveries().is_empty());
}

/// The reference document's "Create": PUT verifies, then writes the file; a failing
/// verification writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_verifies_then_writes_the_file() {
    let working = Mock::answering(200).await;
    let broken = Mock::answering(503).await;
    let config = ConfigDir::new(TEST_CONFIG);
    let gw = Gateway::start(&config, &[]).await;

    let (status, body) = gw.put_text("/v1/templates/created", &template(&broken.url("/x"), "")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "verification_failed");
    assert!(body["error"]["message"].as_str().unwrap().contains("HTTP 503"), "{body}");
    assert!(!config.template_path("created.yaml").exists(), "nothing is written when verification fails");

    let (status, body) = gw.put_text("/v1/templates/created", "url: http://127.0.0.1:1/\nmethd: PUT\n").await;
    assert_eq!(status, 422);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(":2:1: unknown field `methd`"), "{message}");
    assert!(message.contains("did you mean `method`?"), "{message}");

    let (status, body) = gw.put_text("/v1/templates/created", &template(&working.url("/ok"), "method: PUT\n")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["state"], "active");
    assert!(config.template_path("created.yaml").exists());
    assert_eq!(working.requests().len(), 1, "verified once, not again by the reload");
    // The reload that follows the write does not verify again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(working.requests().len(), 1);
    let id = gw.dispatch("created", &payload(30, 2)).await;
    gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    assert_eq!(working.deliveries()[0].method, "PUT");
}

/// `hookgate validate` on problems of several kinds, each `file:line:col: message`.
#[test]
fn validate_reports_each_problem_with_its_location() {
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("typo.yaml", "url: http://127.0.0.1:9/\nmethod: POST\nretires: 3\n");
    config.write_template("method.yaml", "url: http://127.0.0.1:9/\nmethod: PATCH\n");
    config.write_template(
        "env.yaml",
        "url: http://127.0.0.1:9/\nheaders:\n  X-Api-Key: ${env:HOOKGATE_TEST_SURELY_UNSET}\n",
    );
    config.write_template("auth.yaml", "url: http://127.0.0.1:9/\nauth:\n  type: basic\n  username: svc\n");
    config.write_template("plugin.yaml", "url: http://127.0.0.1:9/\nauth: {type: basci}\n");
    config.write_template("timeout.yaml", "url: http://127.0.0.1:9/\ntimeout: 5 seconds\n");
    config.write_template("good.yaml", "url: http://127.0.0.1:9/\n");
    let out = config.validate();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let expect = [
        ("typo.yaml:3:1: unknown field `retires`", "did you mean `retries`?"),
        ("method.yaml:2:9: unknown method `PATCH`", "use POST, PUT, GET or DELETE"),
        ("timeout.yaml:2:10: `5 seconds` is not a duration", "like `5s`"),
        ("env.yaml:3:14: template `env`: environment variable `HOOKGATE_TEST_SURELY_UNSET`", "is not set"),
        ("auth.yaml:2:1: auth plugin `basic`: `password` is required", ""),
        ("plugin.yaml:2:8: unknown auth plugin `basci`", "did you mean `basic`?"),
    ];
    for (start, also) in expect {
        let line = stdout
            .lines()
            .find(|l| l.contains(start))
            .unwrap_or_else(|| panic!("no line with {start:?} in:\n{stdout}"));
        assert!(line.contains(also), "{line}");
    }
    assert!(!stdout.contains("good.yaml"), "{stdout}");
    assert!(stdout.contains("6 problem(s) found"), "{stdout}");
}

/// The default config folder of the repository is valid as shipped.
#[test]
fn shipped_config_folder_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let out = std::process::Command::new(bin()).arg("validate").arg("--config").arg(&dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("ok: 1 template(s) valid"), "{stdout}");
}

/// A delivery in flight finishes with the template version it started with: its retry
/// goes to the old URL even after the file was edited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_deliveries_keep_their_version() {
    let old = Mock::start(|n, _| {
        if n == 0 { Reply::StatusWith(503, vec![("retry-after", "1".into())]) } else { Reply::Status(200) }
    })
    .await;
    let new = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("moving.yaml", &template(&old.url("/old"), "verify: false\n"));
    let gw = Gateway::start(&config, &[]).await;
    let v1 = gw.wait_state("moving", "active", Duration::from_secs(10)).await["version"].as_u64().unwrap();

    let id = gw.dispatch("moving", &payload(40, 1)).await;
    old.wait_deliveries(1, Duration::from_secs(5)).await;
    config.write_template("moving.yaml", &template(&new.url("/new"), "verify: false\n"));
    wait_for("the edit to load", Duration::from_secs(5), async || {
        (gw.get("/v1/templates/moving").await.1["version"].as_u64() > Some(v1)).then_some(())
    })
    .await;
    let view = gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    assert_eq!(view["state"], "delivered");
    assert_eq!(view["template_version"], v1);
    assert_eq!(old.requests().len(), 2, "the retry went to the URL the dispatch started with");
    assert!(new.requests().is_empty());
}

/// Renaming a verified template's file keeps it active: same content, no new verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_a_file_keeps_the_template_active() {
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    config.write_template("a.yaml", &template(&mock.url("/"), "name: partner\n"));
    let gw = Gateway::start(&config, &[]).await;
    gw.wait_state("partner", "active", Duration::from_secs(10)).await;
    assert_eq!(mock.requests().len(), 1, "verified once");
    std::fs::rename(config.template_path("a.yaml"), config.template_path("b.yaml")).unwrap();
    wait_for("the rename to be seen", Duration::from_secs(5), async || {
        let (_, body) = gw.get("/v1/templates/partner").await;
        (body["state"] == "active" && body["file"].as_str().is_some_and(|f| f.ends_with("b.yaml"))).then_some(())
    })
    .await;
    assert_eq!(mock.requests().len(), 1, "not verified again");
}

/// A `${file:..}` secret that changes (a rotated Kubernetes Secret, say) is picked up by the
/// periodic rescan although the template's own text did not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_secret_file_makes_a_new_version() {
    let mock = Mock::answering(200).await;
    let config = ConfigDir::new(TEST_CONFIG);
    std::fs::write(config.path().join("api-key"), "first-key\n").unwrap();
    config.write_template(
        "keyed.yaml",
        &template(&mock.url("/"), "verify: false\nheaders:\n  X-Api-Key: ${file:api-key}\n"),
    );
    let gw = Gateway::start(&config, &[]).await;
    let v1 = gw.wait_state("keyed", "active", Duration::from_secs(10)).await["version"].as_u64().unwrap();
    let id = gw.dispatch("keyed", &payload(50, 1)).await;
    gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    assert_eq!(mock.requests()[0].header("x-api-key").as_deref(), Some("first-key"));

    // Two periodic rescans with nothing changed: no new version.
    let rescans = async || -> u64 {
        let (_, metrics) = gw.get("/metrics").await;
        let text = metrics.as_str().unwrap().to_string();
        text.lines().find_map(|l| l.strip_prefix("hookgate_template_rescans_total ")).unwrap().parse().unwrap()
    };
    let before = rescans().await;
    wait_for("two rescans", Duration::from_secs(10), async || (rescans().await >= before + 2).then_some(())).await;
    assert_eq!(
        gw.get("/v1/templates/keyed").await.1["version"].as_u64(),
        Some(v1),
        "an unchanged secret is no new version"
    );

    std::fs::write(config.path().join("api-key"), "second-key\n").unwrap();
    wait_for("the rotated secret to load", Duration::from_secs(10), async || {
        (gw.get("/v1/templates/keyed").await.1["version"].as_u64() > Some(v1)).then_some(())
    })
    .await;
    let id = gw.dispatch("keyed", &payload(51, 1)).await;
    gw.wait_dispatch(&id, Duration::from_secs(10)).await;
    assert_eq!(mock.requests()[1].header("x-api-key").as_deref(), Some("second-key"));
    assert!(!gw.output().contains("second-key") && !gw.output().contains("first-key"));
}
