//! The compiled-plugin cache (`data_dir/plugin-cache/`): machine code that wasmtime loads
//! and runs as it is, so whoever can put a file there can run native code in the gateway.
//!
//! What protects it:
//! - the folder is created 0700 and used only if it is owned by the gateway's user and
//!   writable by no one else (so is `data_dir`, which holds it and the cache key); otherwise
//!   the gateway warns and compiles every plugin without a cache;
//! - every artefact carries an HMAC-SHA256 tag keyed by a per-install secret,
//!   `data_dir/plugin-cache.key` (32 random bytes, 0600), over the `.wasm` file's SHA-256,
//!   the engine's compatibility hash and the code. An artefact whose tag does not verify is
//!   not loaded: the plugin is compiled again and the artefact rewritten.
//!
//! Why a keyed tag and not a digest kept beside the artefact: someone who can write the
//! cache folder can write a digest file there too, so a plain digest only catches accidents.
//! The tag's key lives outside the cache folder, in `data_dir`, which only the gateway's user
//! may write (checked above): without it no one can make a tag that verifies, and because the
//! tag covers the `.wasm` hash, a genuine artefact of one plugin copied under another's name
//! does not verify either. The tag is checked on the bytes in memory, and those same bytes are
//! what wasmtime loads, so the file cannot change between the check and the load.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The per-install key's file, in the cache folder's parent (`data_dir`).
pub const KEY_FILE: &str = "plugin-cache.key";
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 32;
/// Artefacts larger than this are not read (a plugin's code is a few MiB).
const MAX_ARTEFACT: u64 = 512 << 20;
/// Bound into every tag, so a tag of another format never verifies.
const DOMAIN: &[u8] = b"hookgate plugin cache v1\0";

pub struct CodeCache {
    dir: PathBuf,
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for CodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeCache").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl CodeCache {
    /// Opens the cache folder `dir`, creating it (0700) and the key when missing; the error
    /// says why the cache cannot be trusted.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // The parent is `data_dir`: made private as `serve` makes it, whoever comes first.
        create_private_dir(parent)?;
        check_dir(parent)?;
        create_private_dir(dir)?;
        check_dir(dir)?;
        restrict(dir)?;
        let key = load_key(&parent.join(KEY_FILE))?;
        Ok(Self { dir: dir.to_path_buf(), key })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The artefact's file for a `.wasm` hash and an engine compatibility hash.
    pub fn path(&self, sha256: &str, engine: u64) -> PathBuf {
        self.dir.join(format!("{sha256}-{engine:016x}.cwasm"))
    }

    /// The code cached for these hashes: `Ok(None)` when there is none, an error when there
    /// is a file but it does not verify (or cannot be read).
    pub fn read(&self, sha256: &str, engine: u64) -> Result<Option<Vec<u8>>, String> {
        let path = self.path(sha256, engine);
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read it: {e}")),
        };
        let mut bytes = Vec::new();
        Read::by_ref(&mut file)
            .take(MAX_ARTEFACT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read it: {e}"))?;
        if bytes.len() as u64 > MAX_ARTEFACT {
            return Err(format!("it is larger than {MAX_ARTEFACT} bytes"));
        }
        if bytes.len() < TAG_LEN {
            return Err("it has no tag".into());
        }
        let code = bytes.split_off(TAG_LEN);
        self.mac(sha256, engine, &code)
            .verify_slice(&bytes)
            .map_err(|_| "its tag does not match its content (it was changed, or was not written by this install)")?;
        Ok(Some(code))
    }

    /// Caches `code` for these hashes: written to a fresh private file, then renamed in place.
    pub fn write(&self, sha256: &str, engine: u64, code: &[u8]) -> Result<(), String> {
        let path = self.path(sha256, engine);
        let tag = self.mac(sha256, engine, code).finalize().into_bytes();
        let tmp = self.dir.join(format!(".{sha256}.tmp-{}-{}", std::process::id(), random_hex()));
        let written = (|| {
            let mut file = private_file(&tmp)?;
            file.write_all(&tag)?;
            file.write_all(code)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(|e| e.to_string())
    }

    fn mac(&self, sha256: &str, engine: u64, code: &[u8]) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(DOMAIN);
        mac.update(sha256.as_bytes());
        mac.update(b"\0");
        mac.update(&engine.to_le_bytes());
        mac.update(code);
        mac
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 6];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The per-install key: read, or made once (written to a private file, then linked into
/// place, so a concurrent start never reads half a key). It must be the gateway user's and
/// readable by no one else.
fn load_key(path: &Path) -> Result<[u8; KEY_LEN], String> {
    if !path.exists() {
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key).map_err(|e| format!("no random source for the cache key: {e}"))?;
        let tmp = path.with_extension(format!("tmp-{}-{}", std::process::id(), random_hex()));
        let made = (|| {
            let mut file = private_file(&tmp)?;
            file.write_all(&key)?;
            file.sync_all()?;
            match std::fs::hard_link(&tmp, path) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
                _ => Ok(()),
            }
        })();
        let _ = std::fs::remove_file(&tmp);
        made.map_err(|e| format!("cannot create the cache key {}: {e}", path.display()))?;
    }
    check_private_file(path)?;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the cache key {}: {e}", path.display()))?;
    bytes.try_into().map_err(|_| format!("the cache key {} is not {KEY_LEN} bytes", path.display()))
}

fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Creates `dir` and its missing parents with mode 0700; an existing one is left as it is.
fn create_private_dir(dir: &Path) -> Result<(), String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(format!("cannot create {}: {e}", dir.display())),
        _ => Ok(()),
    }
}

/// A folder the cache may trust: owned by the gateway's user, writable by no one else.
#[cfg(unix)]
fn check_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a folder", dir.display()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "{} is owned by user {}, not by the gateway's user {me} (`chown` it, or remove it)",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by its group or others (mode {:o}); `chmod 700` it",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_dir(_: &Path) -> Result<(), String> {
    Ok(())
}

/// The cache folder is 0700 (one made by an older version may be 0755).
#[cfg(unix)]
fn restrict(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot make {} private: {e}", dir.display()))
}

#[cfg(not(unix))]
fn restrict(_: &Path) -> Result<(), String> {
    Ok(())
}

/// The key file: the gateway user's, readable and writable by no one else.
#[cfg(unix)]
fn check_private_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_file() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "the cache key {} must be a file of the gateway's user, mode 0600 (it is mode {:o}, user {})",
            path.display(),
            meta.mode() & 0o7777,
            meta.uid()
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_file(_: &Path) -> Result<(), String> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_folder_is_private_and_artefacts_round_trip() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("plugin-cache");
        let cache = CodeCache::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&data.path().join(KEY_FILE)), 0o600);
        assert_eq!(cache.read("ab", 1).unwrap(), None);
        cache.write("ab", 1, b"machine code").unwrap();
        assert_eq!(cache.read("ab", 1).unwrap().as_deref(), Some(&b"machine code"[..]));
        assert_eq!(mode(&cache.path("ab", 1)), 0o600);
        // Reopened: the same key, so the artefact still verifies.
        let again = CodeCache::open(&dir).unwrap();
        assert_eq!(again.read("ab", 1).unwrap().as_deref(), Some(&b"machine code"[..]));
    }

    /// `hookgate validate` opens the cache before `serve` ever ran: the `data_dir` it
    /// creates on the way is private too (not the umask's 0755, which `serve` would then
    /// warn about and tighten).
    #[test]
    fn a_missing_data_dir_is_created_private() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        CodeCache::open(&data.join("plugin-cache")).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("plugin-cache")), 0o700);
    }

    #[test]
    fn a_changed_or_moved_artefact_does_not_verify() {
        let data = tempfile::tempdir().unwrap();
        let cache = CodeCache::open(&data.path().join("plugin-cache")).unwrap();
        cache.write("aa", 1, b"code of plugin a").unwrap();
        cache.write("bb", 1, b"code of plugin b").unwrap();

        // One byte of the code changed.
        let path = cache.path("aa", 1);
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(cache.read("aa", 1).unwrap_err().contains("tag does not match"));

        // A genuine artefact of another plugin, under this one's name.
        std::fs::copy(cache.path("bb", 1), &path).unwrap();
        assert!(cache.read("aa", 1).is_err());

        // Code with a tag made without the key (a plain digest, say).
        let mut forged = <sha2::Sha256 as sha2::Digest>::digest(b"evil").to_vec();
        forged.extend_from_slice(b"evil");
        std::fs::write(&path, &forged).unwrap();
        assert!(cache.read("aa", 1).is_err());
        // Another install (another key) cannot make tags for this one.
        let other = tempfile::tempdir().unwrap();
        let other = CodeCache::open(&other.path().join("plugin-cache")).unwrap();
        other.write("aa", 1, b"evil").unwrap();
        std::fs::copy(other.path("aa", 1), &path).unwrap();
        assert!(cache.read("aa", 1).is_err());
        assert_eq!(cache.read("bb", 1).unwrap().as_deref(), Some(&b"code of plugin b"[..]));
    }

    #[test]
    fn a_folder_others_can_write_is_not_used() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("plugin-cache");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let why = CodeCache::open(&dir).unwrap_err();
        assert!(why.contains("writable by its group or others (mode 777)"), "{why}");

        // The same for data_dir, which holds the key.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
        assert!(CodeCache::open(&dir).unwrap_err().contains("writable by its group or others"));
        std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o700)).unwrap();

        // A key others may read is not used either.
        let key = data.path().join(KEY_FILE);
        CodeCache::open(&dir).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(CodeCache::open(&dir).unwrap_err().contains("mode 0600"));
    }

    #[test]
    fn an_older_readable_folder_is_made_private() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("plugin-cache");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        CodeCache::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }
}
