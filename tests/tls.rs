//! TLS to destinations and token endpoints: a template's own CA and client certificate
//! (mTLS), and `network.https_only`. The PKI is made in the test; the HTTPS server runs on
//! 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all made now.
struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server: (CertificateDer<'static>, PrivateKeyDer<'static>),
    client_pem: String,
    client_key_pem: String,
}

impl Pki {
    fn new() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(DnType::CommonName, "hookgate test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let mut server_params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().unwrap();
        let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

        let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params.distinguished_name.push(DnType::CommonName, "hookgate");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().unwrap();
        let client_cert = client_params.signed_by(&client_key, &ca).unwrap();

        Self {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            server: (
                server_cert.der().clone(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            ),
            client_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }
}

/// What the HTTPS server saw: each handshake (the client's certificate count, or the
/// error) and each request path.
#[derive(Default)]
struct Seen {
    handshakes: Mutex<Vec<Result<usize, String>>>,
    paths: Mutex<Vec<String>>,
}

impl Seen {
    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
    fn handshakes(&self) -> Vec<Result<usize, String>> {
        self.handshakes.lock().unwrap().clone()
    }
}

/// TLS on a TCP listener, as an axum listener: connections whose handshake fails are
/// recorded and dropped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    seen: Arc<Seen>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else { continue };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => {
                    let certs = tls.get_ref().1.peer_certificates().map_or(0, <[_]>::len);
                    self.seen.handshakes.lock().unwrap().push(Ok(certs));
                    return (tls, addr);
                }
                Err(e) => self.seen.handshakes.lock().unwrap().push(Err(e.to_string())),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// An HTTPS server on 127.0.0.1 that requires a client certificate issued by the test CA.
/// `/token` answers like an OAuth token endpoint; every other path with 200.
async fn mtls_server(pki: &Pki) -> (SocketAddr, Arc<Seen>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server.0.clone()], pki.server.1.clone_key())
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];

    let seen = Arc::new(Seen::default());
    let recorder = seen.clone();
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let seen = recorder.clone();
        async move {
            seen.paths.lock().unwrap().push(uri.path().to_string());
            if uri.path() == "/token" {
                axum::Json(json!({"access_token": "tls-token-1234567890", "token_type": "Bearer", "expires_in": 3600}))
                    .into_response()
            } else {
                StatusCode::OK.into_response()
            }
        }
    });
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener { tcp, acceptor: TlsAcceptor::from(Arc::new(config)), seen: seen.clone() };
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

/// Waits until the template's verification has an outcome other than "in progress".
async fn wait_verdict(gw: &Gateway, template: &str) -> Value {
    wait_for(&format!("a verdict on {template}"), Duration::from_secs(20), async || {
        let (status, body) = gw.get(&format!("/v1/templates/{template}")).await;
        let settled = body["state"] == "active"
            || body["state"] == "invalid"
            || (body["state"] == "unverified" && body["reason"] != "verification in progress");
        (status == 200 && settled).then_some(body)
    })
    .await
}

/// Acceptance 8: with its `tls` section a template trusts the test CA and presents its
/// client certificate, to the destination and to the token URL; without the client
/// certificate the server refuses the handshake, and without `tls.ca` the server's
/// certificate is not trusted. Neither gets a request through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_with_a_custom_ca_for_destination_and_token_url() {
    let pki = Pki::new();
    let (addr, seen) = mtls_server(&pki).await;
    let config = ConfigDir::new(TEST_CONFIG);
    std::fs::write(config.path().join("partner-ca.pem"), &pki.ca_pem).unwrap();
    std::fs::write(config.path().join("client.pem"), &pki.client_pem).unwrap();
    std::fs::write(config.path().join("client.key"), &pki.client_key_pem).unwrap();
    let tls_all =
        "tls:\n  ca: ${file:partner-ca.pem}\n  client_cert: ${file:client.pem}\n  client_key: ${file:client.key}\n";
    config.write_template(
        "mtls.yaml",
        &format!(
            "url: https://{addr}/in\nauth:\n  type: oauth2\n  grant: client_credentials\n  token_url: https://{addr}/token\n  client_id: hookgate\n  client_secret: s3cret-client\n{tls_all}"
        ),
    );
    // The same CA and certificate, inline for the CA: one client serves both templates.
    config.write_template(
        "inline.yaml",
        &format!(
            "url: https://{addr}/inline\ntls:\n  ca: |\n{}  client_cert: ${{file:client.pem}}\n  client_key: ${{file:client.key}}\n",
            pki.ca_pem.lines().map(|l| format!("    {l}\n")).collect::<String>()
        ),
    );
    config.write_template(
        "no-cert.yaml",
        &format!("url: https://{addr}/no-cert\ntls:\n  ca: ${{file:partner-ca.pem}}\n"),
    );
    config.write_template("no-ca.yaml", &format!("url: https://{addr}/no-ca\n"));
    let gw = Gateway::start(&config, &[]).await;

    for template in ["mtls", "inline"] {
        let state = wait_verdict(&gw, template).await;
        assert_eq!(state["state"], "active", "{template}: {state}\n{}", gw.output());
    }
    let no_cert = wait_verdict(&gw, "no-cert").await;
    assert_eq!(no_cert["state"], "unverified", "{no_cert}");
    let no_ca = wait_verdict(&gw, "no-ca").await;
    assert_eq!(no_ca["state"], "unverified", "{no_ca}");
    let reason = no_ca["reason"].as_str().unwrap_or_default().to_ascii_lowercase();
    assert!(reason.contains("certificate") || reason.contains("issuer"), "untrusted server: {no_ca}");

    let id = gw.dispatch("mtls", &payload(81, 2)).await;
    let done = gw.wait_dispatch(&id, Duration::from_secs(20)).await;
    assert_eq!(done["state"], "delivered", "{done}");

    let paths = seen.paths();
    assert!(paths.iter().any(|p| p == "/token"), "the token request went over mTLS: {paths:?}");
    assert!(paths.iter().filter(|p| *p == "/in").count() >= 2, "verification and delivery: {paths:?}");
    assert!(paths.iter().any(|p| p == "/inline"), "{paths:?}");
    assert!(!paths.iter().any(|p| p == "/no-cert" || p == "/no-ca"), "refused handshakes send nothing: {paths:?}");
    let handshakes = seen.handshakes();
    assert!(
        handshakes.iter().all(|h| matches!(h, Ok(1) | Err(_))),
        "every accepted client had a certificate: {handshakes:?}"
    );
    assert!(
        handshakes.iter().any(|h| matches!(h, Err(e) if e.to_ascii_lowercase().contains("certificate"))),
        "the server refused a client without a certificate: {handshakes:?}"
    );

    let logs = gw.output();
    assert!(!logs.contains("PRIVATE KEY"), "the key is never logged");
    let key_body: String = pki.client_key_pem.lines().nth(1).unwrap().to_string();
    assert!(!logs.contains(&key_body));
}

/// A broken `tls` section is refused at load with the key's line; the key is never quoted.
#[test]
fn tls_errors_name_the_key_and_its_line() {
    let pki = Pki::new();
    let config = ConfigDir::new(TEST_CONFIG);
    std::fs::write(config.path().join("client.pem"), &pki.client_pem).unwrap();
    std::fs::write(config.path().join("client.key"), &pki.client_key_pem).unwrap();
    std::fs::write(config.path().join("other.key"), KeyPair::generate().unwrap().serialize_pem()).unwrap();
    config.write_template("ca.yaml", "url: https://127.0.0.1:9/\ntls:\n  ca: not a certificate\n");
    config.write_template("half.yaml", "url: https://127.0.0.1:9/\ntls:\n  client_cert: ${file:client.pem}\n");
    config.write_template(
        "mismatch.yaml",
        "url: https://127.0.0.1:9/\ntls:\n  client_cert: ${file:client.pem}\n  client_key: ${file:other.key}\n",
    );
    config.write_template("typo.yaml", "url: https://127.0.0.1:9/\ntls:\n  client_crt: x\n");
    let out = config.validate();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for (start, also) in [
        ("ca.yaml:3:3: ", "`tls.ca` holds no PEM certificate"),
        ("half.yaml:3:3: ", "`tls.client_cert` needs `tls.client_key`"),
        ("mismatch.yaml:4:3: ", "the key does not belong to the certificate"),
        ("typo.yaml:3:3: ", "unknown field `client_crt`"),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(start))
            .unwrap_or_else(|| panic!("no line with {start:?} in:\n{stdout}"));
        assert!(line.contains(also), "{line}");
    }
    assert!(!stdout.contains("PRIVATE KEY"), "{stdout}");
}

/// `network.https_only`: an `http://` destination or token URL is refused at load with its
/// line, unless `network.allow` names the address itself.
#[test]
fn https_only_refuses_http_at_load_with_its_line() {
    let strict = "listen: 127.0.0.1:0\nnetwork:\n  allow: [loopback]\n  https_only: true\n";
    let config = ConfigDir::new(strict);
    config.write_template("plain.yaml", "verify: false\nurl: http://127.0.0.1:9/hook\n");
    config.write_template(
        "token.yaml",
        "url: https://127.0.0.1:9/hook\nauth:\n  type: oauth2\n  grant: client_credentials\n  token_url: http://127.0.0.1:9/token\n  client_id: a\n  client_secret: b\n",
    );
    config.write_template("secure.yaml", "verify: false\nurl: https://127.0.0.1:9/hook\n");
    let out = config.validate();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for start in ["plain.yaml:2:1: `url`", "token.yaml:5:3: auth plugin `oauth2`: `token_url`"] {
        let line = stdout
            .lines()
            .find(|l| l.contains(start))
            .unwrap_or_else(|| panic!("no line with {start:?} in:\n{stdout}"));
        assert!(line.contains("https_only"), "{line}");
    }
    assert!(!stdout.contains("secure.yaml"), "{stdout}");

    // An address rule that names the host lets cleartext through; a class rule does not.
    let named = ConfigDir::new("listen: 127.0.0.1:0\nnetwork:\n  allow: [127.0.0.1]\n  https_only: true\n");
    named.write_template("plain.yaml", "verify: false\nurl: http://127.0.0.1:9/hook\n");
    let out = named.validate();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Acceptance 4 at load: destinations and token URLs whose IP literal carries an internal
/// IPv4 address (NAT64, 6to4, IPv4-mapped) or lies in a special-purpose range are refused
/// with their line. Nothing is sent: `validate` loads without verifying, and the policy
/// refuses these literals before any connection.
#[test]
fn special_purpose_literals_are_refused_for_destinations_and_token_urls() {
    let config = ConfigDir::new(TEST_CONFIG);
    let cases = [
        ("nat64", "[64:ff9b::a9fe:a9fe]", "link-local"),
        ("sixtofour", "[2002:a9fe:a9fe::1]", "link-local"),
        ("compat", "[::7f00:1]", "reserved"),
        ("sitelocal", "[fec0::1]", "private"),
        ("benchmark", "198.18.0.1", "reserved"),
        ("future", "240.0.0.1", "reserved"),
        ("docs", "203.0.113.5", "reserved"),
    ];
    for (name, host, _) in cases {
        config.write_template(&format!("{name}.yaml"), &format!("verify: false\nurl: https://{host}/hook\n"));
        config.write_template(
            &format!("{name}-token.yaml"),
            &format!(
                "verify: false\nurl: https://127.0.0.1:9/hook\nauth:\n  type: oauth2\n  grant: client_credentials\n  token_url: https://{host}/token\n  client_id: a\n  client_secret: b\n"
            ),
        );
    }
    let out = config.validate();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for (name, _, class) in cases {
        for (file, start) in
            [(format!("{name}.yaml"), ":2:1: `url`"), (format!("{name}-token.yaml"), ":6:3: auth plugin")]
        {
            let line = stdout
                .lines()
                .find(|l| l.contains(&format!("{file}{start}")))
                .unwrap_or_else(|| panic!("no line for {file} in:\n{stdout}"));
            assert!(line.contains(&format!("a {class} address")), "{line}");
        }
    }
}
