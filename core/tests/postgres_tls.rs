//! TLS to PostgreSQL (issue 14, acceptance 2), against a PostgreSQL server this test
//! starts (`initdb` + `pg_ctl`, in a temporary folder, on a free port, as the `postgres`
//! user when run as root) with a certificate from a test CA. Skipped, saying so, when the
//! server's programs are not installed (`pg_config --bindir`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookgate_core::secret::Secret;
use hookgate_core::store::postgres::PgStore;
use hookgate_core::store::{Filter, Store};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A test CA and a server certificate it issued for 127.0.0.1.
struct Pki {
    ca_pem: String,
    server_pem: String,
    server_key_pem: String,
}

fn test_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

impl Pki {
    fn new() -> Self {
        let ca = test_ca("hookgate test CA");
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
        Self { ca_pem: ca.pem(), server_pem: cert.pem(), server_key_pem: key.serialize_pem() }
    }
}

/// A PostgreSQL server of this test's own, stopped when dropped.
struct Server {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

fn bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    dir.join("initdb").is_file().then_some(dir)
}

/// Runs a server program, as the `postgres` user when this test runs as root (the server
/// refuses root).
fn run(bin: &Path, program: &str, args: &[&str]) {
    let root = is_root();
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    };
    let out = cmd.args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Server {
    fn start(pki: &Pki) -> Option<Self> {
        let Some(bin) = bindir() else {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED postgres_tls: the PostgreSQL server's programs are not installed (pg_config --bindir)"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let out = Command::new("chown").args(["-R", "postgres:"]).arg(dir.path()).output().unwrap();
            assert!(out.status.success(), "chown the server's folder to postgres");
        }
        let data = dir.path().join("data");
        let data_s = data.to_str().unwrap();
        run(&bin, "initdb", &["-D", data_s, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
        std::fs::write(data.join("server.crt"), &pki.server_pem).unwrap();
        std::fs::write(data.join("server.key"), &pki.server_key_pem).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n\
             ssl = off\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            dir.path().display()
        );
        let mut existing = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        existing.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), existing).unwrap();
        if is_root() {
            let out = Command::new("chown").args(["-R", "postgres:"]).arg(dir.path()).output().unwrap();
            assert!(out.status.success());
        }
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let log = dir.path().join("server.log");
        run(&bin, "pg_ctl", &["-D", data_s, "-l", log.to_str().unwrap(), "-w", "-t", "60", "start"]);
        Some(Self { dir, bin, port })
    }

    fn url(&self, host: &str, query: &str) -> Secret {
        Secret::new(format!("postgres://postgres@{host}:{}/postgres?{query}", self.port))
    }

    /// A plain connection for the test's own queries.
    async fn admin(&self) -> tokio_postgres::Client {
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable", self.port);
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    /// Whether the connections named `application` use TLS: `[true]` when all do.
    async fn tls_of(&self, application: &str) -> Vec<bool> {
        let rows = self
            .admin()
            .await
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
                &[&application],
            )
            .await
            .unwrap();
        // Each of the application's connections, once per answer: the one that migrated may
        // still be closing when the pool's is listed.
        let tls: std::collections::BTreeSet<bool> = rows.iter().map(|r| r.get(0)).collect();
        tls.into_iter().collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let root = is_root();
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = cmd.arg("-D").arg(&data).args(["-m", "immediate", "stop"]).output();
    }
}

async fn connect(url: &Secret) -> Result<Arc<PgStore>, String> {
    PgStore::connect(url).await.map_err(|e| e.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_decides_and_the_ca_is_checked() {
    hookgate_core::delivery::client::install_crypto_provider();
    let pki = Pki::new();
    let Some(server) = Server::start(&pki) else { return };
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let wrong = dir.path().join("wrong-ca.pem");
    std::fs::write(&wrong, test_ca("another CA").pem()).unwrap();
    let root = |path: &Path| format!("sslrootcert={}", path.display());

    // A server without TLS: `require` fails at start and says why; `prefer` connects.
    let err = connect(&server.url("127.0.0.1", "sslmode=require")).await.err().expect("require refuses plain text");
    assert!(err.contains("server does not support TLS") && err.contains("sslmode=require"), "{err}");
    let plain = connect(&server.url("127.0.0.1", "sslmode=prefer&application_name=plain")).await.unwrap();
    plain.select(Filter::All, false).await.unwrap();
    assert_eq!(server.tls_of("plain").await, vec![false]);
    drop(plain);

    // TLS on.
    let admin = server.admin().await;
    admin.batch_execute("ALTER SYSTEM SET ssl = on").await.unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let started = Instant::now();
    let full = loop {
        match connect(&server.url("127.0.0.1", &format!("sslmode=verify-full&{}&application_name=full", root(&ca))))
            .await
        {
            Ok(store) => break store,
            Err(e) if started.elapsed() < Duration::from_secs(10) && e.contains("does not support TLS") => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("verify-full with the test CA: {e}"),
        }
    };
    full.select(Filter::All, false).await.unwrap();
    assert_eq!(server.tls_of("full").await, vec![true], "verify-full speaks TLS");

    // `prefer` takes TLS when the server offers it.
    let preferred = connect(&server.url("127.0.0.1", "application_name=preferred")).await.unwrap();
    preferred.select(Filter::All, false).await.unwrap();
    assert_eq!(server.tls_of("preferred").await, vec![true], "prefer (the default) uses TLS when offered");

    // A CA that did not issue the server's certificate is refused, with what to fix.
    let err = connect(&server.url("127.0.0.1", &format!("sslmode=verify-full&{}", root(&wrong))))
        .await
        .err()
        .expect("the wrong CA is refused");
    assert!(err.contains("invalid peer certificate") && err.contains("UnknownIssuer"), "{err}");
    assert!(err.contains("sslrootcert"), "says what to fix: {err}");
    let err = connect(&server.url("127.0.0.1", &format!("sslmode=require&{}", root(&wrong))))
        .await
        .err()
        .expect("require with a CA checks it");
    assert!(err.contains("UnknownIssuer"), "{err}");

    // The certificate is for 127.0.0.1, not localhost: verify-full checks the host, verify-ca does not.
    let err = connect(&server.url("localhost", &format!("sslmode=verify-full&{}", root(&ca))))
        .await
        .err()
        .expect("a certificate for another host is refused");
    assert!(err.contains("not valid for name \"localhost\"") && err.contains("verify-ca"), "{err}");
    connect(&server.url("localhost", &format!("sslmode=verify-ca&{}", root(&ca)))).await.unwrap();
}
