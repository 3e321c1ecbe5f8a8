//! The RSA key store for JWT client assertions (the reference document's "Generate Public
//! Key"): keys are made here, private keys never leave the process, and partners verify with
//! the public keys served as a JWKS.
//!
//! On disk, in `data_dir/keys/` (mode 0700):
//! - `KID.pem`: the private key, PKCS#8 PEM, mode 0600;
//! - `KID.pub.pem`: the public key, SPKI PEM, to paste into a partner's auth server;
//! - `keys.json`: which keys exist, which one is active, and when each was retired.
//!
//! `rotate` makes a new active key; the previous one stays in the JWKS, and may still sign,
//! for a grace period so partners can switch. A running gateway sees changes made by
//! `hookgate keys` in another process (it re-reads `keys.json` when its mtime changes).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hookgate_core::plugin::{KeyError, KeyInfo, KeyStore, SigningAlg};
use jsonwebtoken::{Algorithm, EncodingKey};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use serde_json::json;

const ALLOWED_BITS: [usize; 3] = [2048, 3072, 4096];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meta {
    active: Option<String>,
    keys: Vec<KeyMeta>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyMeta {
    kid: String,
    alg: SigningAlg,
    bits: usize,
    /// Unix seconds.
    created_at: u64,
    /// Unix seconds; set when another key became active.
    retired_at: Option<u64>,
    /// The public key's modulus and exponent, base64url, for the JWKS.
    n: String,
    e: String,
}

/// A key as `hookgate keys list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyListing {
    pub kid: String,
    pub alg: SigningAlg,
    pub bits: usize,
    pub created_at: u64,
    /// `active`, `standby` (never active yet), `retired` (in the JWKS until `jwks_until`), `expired`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_until: Option<u64>,
}

#[derive(Default)]
struct Loaded {
    stamp: Option<SystemTime>,
    meta: Meta,
    signers: HashMap<String, Arc<EncodingKey>>,
}

pub struct FileKeyStore {
    dir: PathBuf,
    grace: Duration,
    state: RwLock<Loaded>,
}

impl std::fmt::Debug for FileKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKeyStore").field("dir", &self.dir).finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn err(message: impl Into<String>) -> KeyError {
    KeyError(message.into())
}

impl FileKeyStore {
    /// Opens the store in `dir` (it need not exist yet).
    pub fn open(dir: &Path, grace: Duration) -> Self {
        Self { dir: dir.to_path_buf(), grace, state: RwLock::new(Loaded::default()) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn meta_path(&self) -> PathBuf {
        self.dir.join("keys.json")
    }

    /// Re-reads `keys.json` if it changed since the last read.
    fn refresh(&self) -> Result<(), KeyError> {
        let stamp = std::fs::metadata(self.meta_path()).and_then(|m| m.modified()).ok();
        if self.state.read().unwrap_or_else(|e| e.into_inner()).stamp == stamp && stamp.is_some() {
            return Ok(());
        }
        let meta = match std::fs::read(self.meta_path()) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| err(format!("{} is not a valid key index: {e}", self.meta_path().display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Meta::default(),
            Err(e) => {
                return Err(err(format!("cannot read {}: {e}", self.meta_path().display())));
            }
        };
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.stamp = stamp;
        state.meta = meta;
        Ok(())
    }

    fn meta(&self) -> Result<Meta, KeyError> {
        self.refresh()?;
        Ok(self.state.read().unwrap_or_else(|e| e.into_inner()).meta.clone())
    }

    /// Whether a key may still sign and be published: active, standby, or retired within
    /// the grace period.
    fn usable(&self, key: &KeyMeta, now: u64) -> bool {
        key.retired_at.is_none_or(|r| r.saturating_add(self.grace.as_secs()) > now)
    }

    /// Makes a new key. It becomes active if `activate` or if there is no active key; with
    /// `activate`, the key that was active is retired (kept for the grace period).
    pub fn generate(
        &self,
        id: Option<&str>,
        bits: usize,
        alg: SigningAlg,
        activate: bool,
    ) -> Result<KeyListing, KeyError> {
        if !ALLOWED_BITS.contains(&bits) {
            return Err(err(format!("--bits must be 2048, 3072 or 4096, not {bits}")));
        }
        let mut meta = self.meta()?;
        let kid = match id {
            Some(id) => id.to_string(),
            None => format!("k{}-{}", now_secs(), random_hex(3)),
        };
        let valid_id = !kid.is_empty()
            && kid.len() <= 64
            && !kid.starts_with('.')
            && kid.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_id {
            return Err(err(format!("`{kid}` is not a valid key id: use letters, digits, `-`, `_`, `.`")));
        }
        if meta.keys.iter().any(|k| k.kid == kid) {
            return Err(err(format!("a key with id `{kid}` already exists")));
        }
        let private = rsa::PrivateKey::new(&mut getrandom::SysRng, bits)
            .map_err(|e| err(format!("cannot generate an RSA key: {e}")))?;
        let public = private.to_public_key();
        let private_pem =
            private.to_pkcs8_pem(LineEnding::LF).map_err(|e| err(format!("cannot encode the private key: {e}")))?;
        let public_pem =
            public.to_public_key_pem(LineEnding::LF).map_err(|e| err(format!("cannot encode the public key: {e}")))?;

        create_private_dir(&self.dir)?;
        write_atomic(&self.dir.join(format!("{kid}.pem")), private_pem.as_bytes(), 0o600)?;
        write_atomic(&self.dir.join(format!("{kid}.pub.pem")), public_pem.as_bytes(), 0o644)?;

        let now = now_secs();
        let make_active = activate || meta.active.is_none();
        if make_active {
            if let Some(previous) = meta.active.clone()
                && let Some(k) = meta.keys.iter_mut().find(|k| k.kid == previous)
            {
                k.retired_at = Some(now);
            }
            meta.active = Some(kid.clone());
        }
        meta.keys.push(KeyMeta {
            kid: kid.clone(),
            alg,
            bits,
            created_at: now,
            retired_at: None,
            n: URL_SAFE_NO_PAD.encode(public.n().to_be_bytes_trimmed_vartime()),
            e: URL_SAFE_NO_PAD.encode(public.e().to_be_bytes_trimmed_vartime()),
        });
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| err(e.to_string()))?;
        write_atomic(&self.meta_path(), &json, 0o600)?;
        self.refresh()?;
        self.list()?.into_iter().find(|k| k.kid == kid).ok_or_else(|| err("the new key is missing from the index"))
    }

    pub fn list(&self) -> Result<Vec<KeyListing>, KeyError> {
        let meta = self.meta()?;
        let now = now_secs();
        Ok(meta
            .keys
            .iter()
            .map(|k| {
                let (status, jwks_until) = if meta.active.as_deref() == Some(&k.kid) {
                    ("active", None)
                } else if let Some(retired) = k.retired_at {
                    let until = retired.saturating_add(self.grace.as_secs());
                    (if until > now { "retired" } else { "expired" }, Some(until))
                } else {
                    ("standby", None)
                };
                KeyListing {
                    kid: k.kid.clone(),
                    alg: k.alg,
                    bits: k.bits,
                    created_at: k.created_at,
                    status,
                    jwks_until,
                }
            })
            .collect())
    }

    /// The public key as PEM (SPKI), to paste into a partner's auth server.
    pub fn public_pem(&self, kid: &str) -> Result<String, KeyError> {
        self.key(kid)?;
        std::fs::read_to_string(self.dir.join(format!("{kid}.pub.pem")))
            .map_err(|e| err(format!("cannot read the public key of `{kid}`: {e}")))
    }

    fn signer(&self, kid: &str) -> Result<Arc<EncodingKey>, KeyError> {
        if let Some(s) = self.state.read().unwrap_or_else(|e| e.into_inner()).signers.get(kid) {
            return Ok(s.clone());
        }
        let pem = std::fs::read(self.dir.join(format!("{kid}.pem")))
            .map_err(|e| err(format!("cannot read the private key of `{kid}`: {e}")))?;
        let key = Arc::new(
            EncodingKey::from_rsa_pem(&pem)
                .map_err(|_| err(format!("the private key file of `{kid}` is not an RSA PEM key")))?,
        );
        self.state.write().unwrap_or_else(|e| e.into_inner()).signers.insert(kid.to_string(), key.clone());
        Ok(key)
    }
}

impl KeyStore for FileKeyStore {
    fn active(&self) -> Result<KeyInfo, KeyError> {
        let meta = self.meta()?;
        let kid = meta.active.ok_or_else(|| {
            err(format!("there is no signing key in {}; create one with `hookgate keys generate`", self.dir.display()))
        })?;
        self.key(&kid)
    }

    fn key(&self, kid: &str) -> Result<KeyInfo, KeyError> {
        let meta = self.meta()?;
        let key = meta
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| err(format!("no key `{kid}` in {} (see `hookgate keys list`)", self.dir.display())))?;
        if !self.usable(key, now_secs()) {
            return Err(err(format!("key `{kid}` was retired and its grace period is over")));
        }
        Ok(KeyInfo { kid: key.kid.clone(), alg: key.alg, bits: key.bits })
    }

    fn sign(&self, kid: &str, alg: SigningAlg, message: &[u8]) -> Result<String, KeyError> {
        self.key(kid)?;
        let signer = self.signer(kid)?;
        let algorithm = match alg {
            SigningAlg::RS256 => Algorithm::RS256,
            SigningAlg::RS384 => Algorithm::RS384,
            SigningAlg::RS512 => Algorithm::RS512,
        };
        jsonwebtoken::crypto::sign(message, &signer, algorithm)
            .map_err(|e| err(format!("cannot sign with `{kid}`: {e}")))
    }

    fn jwks(&self) -> serde_json::Value {
        let meta = self.meta().unwrap_or_default();
        let now = now_secs();
        let keys: Vec<serde_json::Value> = meta
            .keys
            .iter()
            .filter(|k| self.usable(k, now))
            .map(|k| json!({"kty": "RSA", "kid": k.kid, "alg": k.alg.as_str(), "use": "sig", "n": k.n, "e": k.e}))
            .collect();
        json!({ "keys": keys })
    }
}

/// Random lowercase hex, `bytes` bytes long.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system's random source");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(format!("cannot restrict {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// Writes a file whole or not at all, created with `mode` from the start.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let result = options
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(format!("cannot write {}: {e}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_rotate_and_publish() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileKeyStore::open(&dir.path().join("keys"), Duration::from_secs(3600));
        assert!(store.active().unwrap_err().to_string().contains("hookgate keys generate"));
        let first = store.generate(Some("first"), 2048, SigningAlg::RS256, false).unwrap();
        assert_eq!(first.status, "active");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("keys/first.pem")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let second = store.generate(None, 2048, SigningAlg::RS384, true).unwrap();
        assert_eq!(store.active().unwrap().kid, second.kid);
        let listed = store.list().unwrap();
        assert_eq!(listed[0].status, "retired");
        let jwks = store.jwks();
        let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
        assert_eq!(kids, vec!["first", second.kid.as_str()]);
        assert_eq!(jwks["keys"][1]["alg"], "RS384");
        assert!(store.public_pem("first").unwrap().starts_with("-----BEGIN PUBLIC KEY-----"));
        assert!(store.generate(Some("first"), 2048, SigningAlg::RS256, false).is_err());
        assert!(store.generate(None, 1024, SigningAlg::RS256, false).is_err());

        // With no grace, the retired key leaves the JWKS and can no longer sign.
        let strict = FileKeyStore::open(&dir.path().join("keys"), Duration::ZERO);
        assert_eq!(strict.jwks()["keys"].as_array().unwrap().len(), 1);
        assert!(strict.sign("first", SigningAlg::RS256, b"x").is_err());
        assert!(strict.sign(&second.kid, SigningAlg::RS384, b"x").is_ok());
    }
}
