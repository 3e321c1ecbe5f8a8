//! A fresh PostgreSQL database per test, on the server `HOOKGATE_TEST_POSTGRES_URL` names
//! (`.ci/run` sets it), dropped when the test ends.

use std::time::SystemTime;

use tokio_postgres::NoTls;

/// The variable that names the test server, e.g. `postgres://postgres@127.0.0.1:5432/test`.
pub const URL_VAR: &str = "HOOKGATE_TEST_POSTGRES_URL";

/// A database of its own for one test.
pub struct TestDb {
    /// The new database's URL.
    pub url: String,
    /// The server's URL as `HOOKGATE_TEST_POSTGRES_URL` gives it (the administrative database).
    pub admin: String,
    name: String,
}

impl TestDb {
    /// Creates the database; `None`, with a line saying `test` is skipped, when no server is
    /// configured.
    pub async fn create(test: &str) -> Option<Self> {
        let Ok(admin) = std::env::var(URL_VAR) else {
            // Straight to stderr: the test harness hides what `eprintln!` prints from a passing test.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: set {URL_VAR} (e.g. postgres://postgres@127.0.0.1:5432/test) to run it"
            );
            return None;
        };
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
        let name = format!("hookgate_test_{nanos:x}_{}", std::process::id());
        let (client, conn) = tokio_postgres::connect(&admin, NoTls).await.expect("connect to the test PostgreSQL");
        tokio::spawn(conn);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create the test database");
        let mut url = url::Url::parse(&admin).expect("HOOKGATE_TEST_POSTGRES_URL is a URL");
        url.set_path(&name);
        Some(Self { url: url.to_string(), admin, name })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime: use a runtime of its own on another thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
            });
        })
        .join();
    }
}
