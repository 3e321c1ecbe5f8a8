//! How the PostgreSQL store connects: the `queue` URL, and TLS with rustls as its `sslmode`
//! asks, libpq's way.
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it; if it does, a failed handshake is an error, never a fall back to plain text | not checked (as libpq) |
//! | `require` | always: a server without TLS is refused | checked against `sslrootcert` when given (libpq's rule), otherwise not |
//! | `verify-ca` | always | signed by `sslrootcert` (or the system's roots) |
//! | `verify-full` | always | signed by `sslrootcert` (or the system's roots), and for the URL's host |
//!
//! `sslrootcert` is a PEM file of CA certificates to trust instead of the system's roots.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::model::StoreError;
use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, StoreError> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(StoreError(format!(
                    "`queue`: sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
                )));
            }
        })
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub(crate) struct ConnectOptions {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) mode: SslMode,
    pub(crate) tls: Rustls,
}

impl ConnectOptions {
    /// Reads a `postgres://` URL. Errors name the setting, never the URL (it may hold a password).
    pub(crate) fn parse(url: &Secret) -> Result<Self, StoreError> {
        let invalid = |e: &dyn std::fmt::Display| StoreError(format!("`queue` is not a valid PostgreSQL URL: {e}"));
        let mut parsed = url::Url::parse(url.expose()).map_err(|e| invalid(&e))?;
        let (mut mode, mut root) = (SslMode::Prefer, None);
        let rest: Vec<(String, String)> = parsed
            .query_pairs()
            .filter_map(|(k, v)| match &*k {
                "sslmode" => {
                    mode = match SslMode::parse(&v) {
                        Ok(m) => m,
                        Err(e) => return Some(Err(e)),
                    };
                    None
                }
                "sslrootcert" => {
                    root = Some(v.into_owned());
                    None
                }
                _ => Some(Ok((k.into_owned(), v.into_owned()))),
            })
            .collect::<Result<_, _>>()?;
        parsed.set_query(None);
        if !rest.is_empty() {
            parsed.query_pairs_mut().extend_pairs(rest);
        }
        let mut config: tokio_postgres::Config = parsed.as_str().parse().map_err(|e| invalid(&e))?;
        config.ssl_mode(match mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        let roots = match &root {
            Some(path) => Some(read_roots(path)?),
            None => None,
        };
        let check = match (mode, roots.is_some()) {
            (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, false) => Check::Encryption,
            (SslMode::Require | SslMode::VerifyCa, _) => Check::Issuer,
            (SslMode::VerifyFull, _) => Check::IssuerAndHost,
        };
        let tls = Rustls::new(check, roots)?;
        Ok(Self { config, mode, tls })
    }
}

/// What a handshake checks of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Only that the server holds the key of the certificate it shows.
    Encryption,
    Issuer,
    IssuerAndHost,
}

fn read_roots(path: &str) -> Result<rustls::RootCertStore, StoreError> {
    let problem = |m: String| StoreError(format!("`queue`: sslrootcert `{path}`: {m}"));
    let pem = std::fs::read(path).map_err(|e| problem(e.to_string()))?;
    use rustls::pki_types::pem::PemObject as _;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(problem("holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| problem(format!("a certificate cannot be used as a CA: {e}")))?;
    }
    Ok(roots)
}

/// The rustls connector tokio-postgres negotiates TLS with.
#[derive(Clone)]
pub(crate) struct Rustls {
    config: Arc<rustls::ClientConfig>,
}

impl Rustls {
    fn new(check: Check, roots: Option<rustls::RootCertStore>) -> Result<Self, StoreError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = |e: rustls::Error| StoreError(format!("`queue`: TLS: {e}"));
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls)?;
        let verifier: Arc<dyn ServerCertVerifier> = match (&roots, check) {
            (_, Check::Encryption) => Arc::new(AnyCertificate(provider)),
            (Some(roots), _) => {
                rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots.clone()), provider)
                    .build()
                    .map_err(|e| StoreError(format!("`queue`: sslrootcert: {e}")))?
            }
            (None, _) => Arc::new(
                rustls_platform_verifier::Verifier::new(provider)
                    .map_err(|e| StoreError(format!("`queue`: TLS: the system's roots: {e}")))?,
            ),
        };
        let verifier = if check == Check::Issuer { Arc::new(AnyHost(verifier)) } else { verifier };
        let config = builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
        Ok(Self { config: Arc::new(config) })
    }
}

/// `prefer` and `require` without a CA: encrypted, the certificate not checked (libpq's
/// meaning of these modes). The handshake's signature is still verified.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the certificate's issuer is checked, its host names are not.
#[derive(Debug)]
struct AnyHost(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for AnyHost {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl<S> MakeTlsConnect<S> for Rustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = Handshake;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Handshake, Self::Error> {
        let name = ServerName::try_from(domain.to_string())?;
        Ok(Handshake { config: self.config.clone(), name })
    }
}

pub(crate) struct Handshake {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for Handshake
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let stream = tokio_rustls::TlsConnector::from(self.config).connect(self.name, stream).await?;
            Ok(RustlsStream(Box::new(stream)))
        })
    }
}

pub(crate) struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    /// No channel binding: SCRAM authenticates as it does without TLS.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_read_from_the_url_and_the_rest_is_kept() {
        let options = ConnectOptions::parse(&Secret::new(
            "postgres://u:pw@db.example:5433/hooks?sslmode=disable&application_name=hg",
        ))
        .unwrap();
        assert_eq!(options.mode, SslMode::Disable);
        assert_eq!(options.config.get_ssl_mode(), PgSslMode::Disable);
        assert_eq!(options.config.get_application_name(), Some("hg"));
        assert_eq!(options.config.get_dbname(), Some("hooks"));
        let default = ConnectOptions::parse(&Secret::new("postgres://u@db.example/hooks")).unwrap();
        assert_eq!((default.mode, default.config.get_ssl_mode()), (SslMode::Prefer, PgSslMode::Prefer));
        let full = ConnectOptions::parse(&Secret::new("postgres://u@db.example/h?sslmode=verify-full")).unwrap();
        assert_eq!((full.mode, full.config.get_ssl_mode()), (SslMode::VerifyFull, PgSslMode::Require));
    }

    #[test]
    fn bad_settings_are_named_without_the_url() {
        let err = |url: &str| ConnectOptions::parse(&Secret::new(url)).err().unwrap().0;
        let mode = err("postgres://u:hunter2@db/h?sslmode=allow");
        assert!(mode.contains("sslmode `allow` is not one of"), "{mode}");
        assert!(!mode.contains("hunter2"));
        let root = err("postgres://u:hunter2@db/h?sslmode=verify-full&sslrootcert=/no/such/ca.pem");
        assert!(root.contains("sslrootcert `/no/such/ca.pem`"), "{root}");
        assert!(!root.contains("hunter2"));
    }
}
