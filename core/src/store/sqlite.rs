//! The default store: SQLite in WAL mode, one file in `data_dir`, no server to run.
//!
//! One writer thread owns the connection. Callers hand it closures and wait; it runs every
//! closure waiting at that moment in one transaction (group commit: one WAL append for many
//! deliveries) and answers them all once the transaction has committed. If one closure
//! fails, the transaction is rolled back and each closure runs again in a transaction of
//! its own, so only the failing one fails. `synchronous = NORMAL`: a
//! commit survives the process being killed; after a power loss the last commits can be
//! lost (`synchronous = FULL` would cost an fsync per commit).
//!
//! The file is locked exclusively: a second gateway on the same `data_dir` refuses to start
//! instead of delivering the same jobs twice.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{
    Filter, Inserted, Requeued, Settlement, Store, StoredWork, from_millis, millis, next_columns, result_code,
    result_from, status_code, status_from, target_from_json, target_json,
};
use crate::model::{AttemptRecord, DispatchId, StoreError, StoredDispatch, StoredRequest};

/// What the writer runs: a closure, run again alone if its batch fails, and the caller
/// waiting for its result.
type Queued = Box<dyn Op>;

trait Op: Send {
    /// Runs the closure (again, after a failed batch), keeping its result.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: the kept result, or the error that undid the transaction.
    fn answer(self: Box<Self>, failed: Option<&StoreError>);
}

struct Call<T, F> {
    f: F,
    result: Option<rusqlite::Result<T>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send, F: Fn(&Connection) -> rusqlite::Result<T> + Send> Op for Call<T, F> {
    fn run(&mut self, conn: &Connection) -> bool {
        let result = (self.f)(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, failed: Option<&StoreError>) {
        let answer = match (failed, self.result) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(result)) => result.map_err(|e| StoreError(e.to_string())),
            (None, None) => Err(StoreError("the write was not run".into())),
        };
        let _ = self.reply.send(answer);
    }
}

/// Closures taken into one transaction at most.
const MAX_BATCH: usize = 1024;

const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE dispatches (
        id BLOB PRIMARY KEY,
        template TEXT NOT NULL,
        template_version INTEGER NOT NULL,
        campaign TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        idempotency_key TEXT,
        skipped INTEGER NOT NULL,
        UNIQUE (template, idempotency_key)
    );
    CREATE INDEX dispatches_campaign ON dispatches (campaign);
    CREATE INDEX dispatches_created ON dispatches (created_at);
    CREATE TABLE requests (
        dispatch BLOB NOT NULL,
        idx INTEGER NOT NULL,
        profiles INTEGER NOT NULL,
        target TEXT,
        body BLOB,
        status INTEGER NOT NULL,
        reason TEXT,
        attempt INTEGER NOT NULL,
        due INTEGER NOT NULL,
        -- A JSON array of the request's attempts: one row write per attempt.
        attempts TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (dispatch, idx)
    ) WITHOUT ROWID;",
];

pub struct SqliteStore {
    path: PathBuf,
    tx: mpsc::UnboundedSender<Queued>,
}

impl SqliteStore {
    /// Opens (creating and migrating) the database at `path` and starts its writer thread.
    ///
    /// The database holds campaign payloads (emails, push tokens): its folder is created
    /// 0700, and the database file is created 0600 before SQLite opens it, so that its `-wal`
    /// and `-shm` files, which SQLite gives the database file's mode, are 0600 too. Files
    /// left looser by an older version are tightened.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_dir(dir).map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let restrict = || {
            database_files(path)
                .iter()
                .enumerate()
                .try_for_each(|(i, file)| private_file(file, i == 0))
                .map_err(|e| StoreError(format!("cannot make {} private (mode 0600): {e}", path.display())))
        };
        restrict()?;
        let where_ = path.display().to_string();
        let opened = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => StoreError(format!(
                "{where_} is in use by another hookgate (one gateway per data_dir; several instances share a `postgres://` queue)"
            )),
            _ => StoreError(format!("{where_}: {e}")),
        };
        let mut conn = Connection::open(path).map_err(opened)?;
        // One connection holds the file: waiting for a lock would only wait for another gateway.
        conn.busy_timeout(Duration::ZERO).map_err(opened)?;
        conn.execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;",
        )
        .map_err(opened)?;
        restrict()?;
        migrate(&mut conn).map_err(opened)?;
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("hookgate-sqlite".into())
            .spawn(move || writer(conn, rx))
            .map_err(|e| StoreError(format!("cannot start the store's writer: {e}")))?;
        Ok(Self { path: path.to_path_buf(), tx })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in the writer's next transaction and returns its result once committed.
    async fn call<T: Send + 'static>(
        &self,
        f: impl Fn(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError("the SQLite writer has stopped".into());
        self.tx.send(Box::new(Call { f, result: None, reply })).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The database file and the `-wal` and `-shm` files SQLite keeps beside it.
fn database_files(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [path.to_path_buf(), with("-wal"), with("-shm")]
}

/// Creates `dir` (and missing parents) with mode 0700; an existing one is left as it is.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes `file` readable and writable by its owner only: created so when missing (with
/// `create`); an existing file that others may read is changed to 0600.
fn private_file(file: &Path, create: bool) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        match std::fs::metadata(file) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if create {
                    std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(file)?;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, create);
        Ok(())
    }
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let txn = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: usize = txn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        txn.execute_batch(sql)?;
        txn.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
    }
    txn.commit()
}

/// The writer thread: group commit of whatever is waiting. If a closure fails, the batch
/// is rolled back and each closure runs again in a transaction of its own, so only the
/// failing one fails.
fn writer(mut conn: Connection, mut rx: mpsc::UnboundedReceiver<Queued>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(call) => batch.push(call),
                Err(_) => break,
            }
        }
        match run_batch(&mut conn, &mut batch) {
            Ok(true) => batch.into_iter().for_each(|w| w.answer(None)),
            Ok(false) => {
                for mut call in batch {
                    let outcome = run_batch(&mut conn, std::slice::from_mut(&mut call));
                    call.answer(outcome.as_ref().err());
                }
            }
            Err(e) => {
                tracing::error!("{e}");
                batch.into_iter().for_each(|w| w.answer(Some(&e)));
            }
        }
    }
}

/// Runs `batch` in one transaction: `Ok(true)` committed, `Ok(false)` rolled back because
/// a closure failed.
fn run_batch(conn: &mut Connection, batch: &mut [Queued]) -> Result<bool, StoreError> {
    let txn = conn.transaction().map_err(|e| StoreError(format!("begin: {e}")))?;
    for call in batch.iter_mut() {
        if !call.run(&txn) {
            return Ok(false); // dropping `txn` rolls it back
        }
    }
    txn.commit().map_err(|e| StoreError(format!("commit: {e}")))?;
    Ok(true)
}

/// An attempt in a request's `attempts` JSON array.
#[derive(Serialize, Deserialize)]
struct StoredAttempt {
    attempt: u32,
    /// Unix milliseconds.
    at: i64,
    latency_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    result: i16,
}

impl From<&AttemptRecord> for StoredAttempt {
    fn from(a: &AttemptRecord) -> Self {
        Self {
            attempt: a.attempt,
            at: millis(a.at),
            latency_us: a.latency.as_micros() as u64,
            status: a.status,
            error: a.error.clone(),
            result: result_code(a.result),
        }
    }
}

impl From<StoredAttempt> for AttemptRecord {
    fn from(a: StoredAttempt) -> Self {
        Self {
            attempt: a.attempt,
            at: from_millis(a.at),
            latency: Duration::from_micros(a.latency_us),
            status: a.status,
            error: a.error,
            result: result_from(a.result),
        }
    }
}

fn id_bytes(id: DispatchId) -> [u8; 16] {
    *id.as_uuid().as_bytes()
}

fn id_from(bytes: Vec<u8>) -> rusqlite::Result<DispatchId> {
    Uuid::from_slice(&bytes)
        .map(DispatchId::from_uuid)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e)))
}

fn invalid(column: usize, e: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, e.into())
}

/// A request (without its attempts) from the columns profiles, target, body, status,
/// reason, attempt, due of a row, starting at column `at`.
fn request_from(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<StoredRequest> {
    Ok(StoredRequest {
        target: target_from_json(r.get(at + 1)?).map_err(|e| invalid(at + 1, e.0))?,
        profiles: r.get::<_, i64>(at)? as usize,
        body: r.get::<_, Option<Vec<u8>>>(at + 2)?.map(Bytes::from),
        status: status_from(r.get(at + 3)?, r.get(at + 4)?),
        attempt: r.get::<_, i64>(at + 5)? as u32,
        due: from_millis(r.get(at + 6)?),
        attempts: Vec::new(),
    })
}

const COLUMNS: &str =
    "SELECT id, template, template_version, campaign, created_at, idempotency_key, skipped FROM dispatches";

fn select(txn: &Connection, filter: Filter<'_>, bodies: bool) -> rusqlite::Result<Vec<StoredDispatch>> {
    let (sql, arg): (String, Option<rusqlite::types::Value>) = match filter {
        Filter::All => (format!("{COLUMNS} ORDER BY created_at, id"), None),
        Filter::Id(id) => (format!("{COLUMNS} WHERE id = ?1"), Some(id_bytes(id).to_vec().into())),
        Filter::Campaign(c) => {
            (format!("{COLUMNS} WHERE campaign = ?1 ORDER BY created_at, id"), Some(c.to_string().into()))
        }
        Filter::Template(t) => {
            (format!("{COLUMNS} WHERE template = ?1 ORDER BY created_at, id"), Some(t.to_string().into()))
        }
    };
    select_sql(txn, &sql, arg.into_iter().collect(), bodies)
}

/// The dispatches `sql` (a `SELECT` of [`COLUMNS`]) finds, with their requests and attempts.
fn select_sql(
    txn: &Connection,
    sql: &str,
    params: Vec<rusqlite::types::Value>,
    bodies: bool,
) -> rusqlite::Result<Vec<StoredDispatch>> {
    let mut stmt = txn.prepare_cached(sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| {
        Ok(StoredDispatch {
            id: id_from(r.get(0)?)?,
            template: r.get(1)?,
            template_version: r.get::<_, i64>(2)? as u64,
            campaign: r.get(3)?,
            created_at: from_millis(r.get(4)?),
            idempotency_key: r.get(5)?,
            skipped: r.get::<_, i64>(6)? as usize,
            requests: Vec::new(),
        })
    })?;
    let mut dispatches = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    let requests_sql = if bodies {
        "SELECT idx, profiles, target, body, status, reason, attempt, due, attempts FROM requests WHERE dispatch = ?1 ORDER BY idx"
    } else {
        "SELECT idx, profiles, target, NULL, status, reason, attempt, due, attempts FROM requests WHERE dispatch = ?1 ORDER BY idx"
    };
    let mut requests = txn.prepare_cached(requests_sql)?;
    for d in &mut dispatches {
        let id = id_bytes(d.id);
        let rows = requests.query_map([&id[..]], |r| {
            let attempts: String = r.get(8)?;
            let attempts: Vec<StoredAttempt> =
                serde_json::from_str(&attempts).map_err(|e| invalid(8, e.to_string()))?;
            let mut request = request_from(r, 1)?;
            request.attempts = attempts.into_iter().map(AttemptRecord::from).collect();
            Ok(request)
        })?;
        d.requests = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    }
    Ok(dispatches)
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert(&self, dispatch: &StoredDispatch) -> Result<Inserted, StoreError> {
        let d = dispatch.clone();
        self.call(move |txn| {
            if let Some(key) = &d.idempotency_key {
                let existing: Option<Vec<u8>> = txn
                    .prepare_cached("SELECT id FROM dispatches WHERE template = ?1 AND idempotency_key = ?2")?
                    .query_row(params![d.template, key], |r| r.get(0))
                    .optional()?;
                if let Some(id) = existing {
                    return Ok(Inserted::Existing(id_from(id)?));
                }
            }
            let id = id_bytes(d.id);
            txn.prepare_cached(
                "INSERT INTO dispatches (id, template, template_version, campaign, created_at, idempotency_key, skipped)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                &id[..],
                d.template,
                d.template_version as i64,
                d.campaign,
                millis(d.created_at),
                d.idempotency_key,
                d.skipped as i64
            ])?;
            let mut insert = txn.prepare_cached(
                "INSERT INTO requests (dispatch, idx, profiles, target, body, status, reason, attempt, due)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7, ?8)",
            )?;
            for (idx, r) in d.requests.iter().enumerate() {
                insert.execute(params![
                    &id[..],
                    idx as i64,
                    r.profiles as i64,
                    target_json(&r.target),
                    r.body.as_deref(),
                    status_code(&r.status),
                    i64::from(r.attempt),
                    millis(r.due)
                ])?;
            }
            Ok(Inserted::Created)
        })
        .await
    }

    async fn settle(&self, s: &Settlement) -> Result<(), StoreError> {
        let s = s.clone();
        self.call(move |txn| {
            let id = id_bytes(s.dispatch);
            let (status, reason, attempt, due) = next_columns(&s.next);
            let tried = s.attempt.as_ref().map(|a| serde_json::to_string(&StoredAttempt::from(a)).expect("serializes"));
            txn.prepare_cached(
                "UPDATE requests SET status = ?1, reason = ?2, attempt = COALESCE(?3, attempt), due = COALESCE(?4, due),
                     body = CASE WHEN ?1 = 1 THEN NULL ELSE body END,
                     attempts = CASE WHEN ?7 IS NULL THEN attempts ELSE json_insert(attempts, '$[#]', json(?7)) END
                 WHERE dispatch = ?5 AND idx = ?6",
            )?
            .execute(params![status, reason, attempt, due, &id[..], i64::from(s.request), tried])?;
            Ok(())
        })
        .await
    }

    async fn requeue_failed(&self, id: DispatchId) -> Result<Option<Vec<Requeued>>, StoreError> {
        let now = millis(SystemTime::now());
        self.call(move |txn| {
            let id = id_bytes(id);
            let known: Option<i64> = txn
                .prepare_cached("SELECT 1 FROM dispatches WHERE id = ?1")?
                .query_row([&id[..]], |r| r.get(0))
                .optional()?;
            if known.is_none() {
                return Ok(None);
            }
            let mut stmt = txn.prepare_cached(
                "UPDATE requests SET status = 0, attempt = 1, due = ?2
                 WHERE dispatch = ?1 AND status = 2 AND body IS NOT NULL
                 RETURNING idx, profiles, reason, length(body)",
            )?;
            let rows = stmt.query_map(params![&id[..], now], |r| {
                Ok(Requeued {
                    request: r.get::<_, i64>(0)? as u32,
                    profiles: r.get::<_, i64>(1)? as usize,
                    reason: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    body_bytes: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })?;
            let mut requeued = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            requeued.sort_by_key(|r| r.request);
            Ok(Some(requeued))
        })
        .await
    }

    async fn by_idempotency_key(&self, template: &str, key: &str) -> Result<Option<DispatchId>, StoreError> {
        let (template, key) = (template.to_string(), key.to_string());
        self.call(move |txn| {
            let id: Option<Vec<u8>> = txn
                .prepare_cached("SELECT id FROM dispatches WHERE template = ?1 AND idempotency_key = ?2")?
                .query_row(params![template, key], |r| r.get(0))
                .optional()?;
            id.map(id_from).transpose()
        })
        .await
    }

    async fn work(&self, id: DispatchId, request: u32) -> Result<Option<StoredWork>, StoreError> {
        self.call(move |txn| {
            let id = id_bytes(id);
            txn.prepare_cached(
                "SELECT d.template, d.campaign, r.profiles, r.target, r.body, r.status, r.reason, r.attempt, r.due
                 FROM requests r JOIN dispatches d ON d.id = r.dispatch WHERE r.dispatch = ?1 AND r.idx = ?2",
            )?
            .query_row(params![&id[..], i64::from(request)], |r| {
                Ok(StoredWork { template: r.get(0)?, campaign: r.get(1)?, request: request_from(r, 2)? })
            })
            .optional()
        })
        .await
    }

    async fn select(&self, filter: Filter<'_>, bodies: bool) -> Result<Vec<StoredDispatch>, StoreError> {
        let owned: OwnedFilter = filter.into();
        self.call(move |txn| select(txn, owned.borrow(), bodies)).await
    }

    async fn prune(&self, before: SystemTime) -> Result<u64, StoreError> {
        Ok(self.prune_dispatches(before).await?.len() as u64)
    }

    async fn prune_dispatches(&self, before: SystemTime) -> Result<Vec<StoredDispatch>, StoreError> {
        let before = millis(before);
        self.call(move |txn| {
            txn.execute_batch("CREATE TEMP TABLE IF NOT EXISTS pruned (id BLOB PRIMARY KEY); DELETE FROM pruned;")?;
            let n = txn.execute(
                "INSERT INTO pruned SELECT id FROM dispatches d WHERE created_at < ?1
                 AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.dispatch = d.id AND r.status = 0)",
                [before],
            )?;
            let pruned = if n == 0 {
                Vec::new()
            } else {
                let sql = format!("{COLUMNS} WHERE id IN (SELECT id FROM pruned) ORDER BY created_at, id");
                select_sql(txn, &sql, Vec::new(), false)?
            };
            txn.execute_batch(
                "DELETE FROM requests WHERE dispatch IN (SELECT id FROM pruned);
                 DELETE FROM dispatches WHERE id IN (SELECT id FROM pruned);
                 DELETE FROM pruned;",
            )?;
            Ok(pruned)
        })
        .await
    }
}

/// A [`Filter`] that can cross to the writer thread.
enum OwnedFilter {
    All,
    Id(DispatchId),
    Campaign(String),
    Template(String),
}

impl From<Filter<'_>> for OwnedFilter {
    fn from(f: Filter<'_>) -> Self {
        match f {
            Filter::All => Self::All,
            Filter::Id(id) => Self::Id(id),
            Filter::Campaign(c) => Self::Campaign(c.to_string()),
            Filter::Template(t) => Self::Template(t.to_string()),
        }
    }
}

impl OwnedFilter {
    fn borrow(&self) -> Filter<'_> {
        match self {
            Self::All => Filter::All,
            Self::Id(id) => Filter::Id(*id),
            Self::Campaign(c) => Filter::Campaign(c),
            Self::Template(t) => Filter::Template(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttemptResult, NextState, RequestStatus, StoredTarget};

    fn dispatch(key: Option<&str>, requests: usize) -> StoredDispatch {
        let now = SystemTime::now();
        StoredDispatch {
            id: DispatchId::new(),
            template: "orders".into(),
            template_version: 3,
            campaign: "42".into(),
            created_at: now,
            idempotency_key: key.map(str::to_string),
            skipped: 1,
            requests: (0..requests)
                .map(|i| StoredRequest {
                    target: (i == 0).then(|| StoredTarget {
                        method: "POST".into(),
                        url: "https://example.test/t".into(),
                        headers: vec![("x-a".into(), "1".into())],
                    }),
                    profiles: 10 + i,
                    body: Some(Bytes::from(format!("body {i}"))),
                    status: RequestStatus::Pending,
                    attempt: 1,
                    due: now,
                    attempts: Vec::new(),
                })
                .collect(),
        }
    }

    fn tried(attempt: u32, result: AttemptResult, status: u16) -> AttemptRecord {
        AttemptRecord {
            attempt,
            at: SystemTime::now(),
            latency: Duration::from_micros(1234),
            status: Some(status),
            error: (status >= 400).then(|| format!("HTTP {status}")),
            result,
        }
    }

    #[tokio::test]
    async fn dispatches_outcomes_and_replays_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("h.db")).unwrap();
        let d = dispatch(Some("k"), 3);
        assert_eq!(store.insert(&d).await.unwrap(), Inserted::Created);
        assert_eq!(store.insert(&dispatch(Some("k"), 1)).await.unwrap(), Inserted::Existing(d.id));
        assert_eq!(store.by_idempotency_key("orders", "k").await.unwrap(), Some(d.id));

        let settle = |request, attempt, next| Settlement { dispatch: d.id, request, attempt: Some(attempt), next };
        store.settle(&settle(0, tried(1, AttemptResult::Success, 200), NextState::Delivered)).await.unwrap();
        let due = SystemTime::now() + Duration::from_secs(60);
        store
            .settle(&settle(1, tried(1, AttemptResult::Retry, 503), NextState::Retry { attempt: 2, due }))
            .await
            .unwrap();
        let failed = NextState::Failed { reason: "HTTP 400".into() };
        store.settle(&settle(2, tried(1, AttemptResult::Failure, 400), failed)).await.unwrap();

        let got = store.select(Filter::Id(d.id), true).await.unwrap().pop().unwrap();
        assert_eq!((got.template.as_str(), got.template_version, got.skipped), ("orders", 3, 1));
        assert_eq!(got.idempotency_key.as_deref(), Some("k"));
        let [delivered, retrying, dead] = &got.requests[..] else { panic!("three requests") };
        assert_eq!(delivered.status, RequestStatus::Delivered);
        assert_eq!(delivered.body, None, "a delivered body is dropped");
        assert_eq!(delivered.target, d.requests[0].target);
        assert_eq!(delivered.attempts[0].latency, Duration::from_micros(1234));
        assert_eq!((retrying.status.clone(), retrying.attempt), (RequestStatus::Pending, 2));
        assert_eq!(millis(retrying.due), millis(due));
        assert_eq!(retrying.attempts[0].result, AttemptResult::Retry);
        assert_eq!(dead.status, RequestStatus::Failed { reason: "HTTP 400".into() });
        assert_eq!(dead.body.as_deref(), Some(&b"body 2"[..]), "a dead letter keeps its body");
        assert_eq!(dead.attempts[0].error.as_deref(), Some("HTTP 400"));

        let requeued = store.requeue_failed(d.id).await.unwrap().unwrap();
        assert_eq!(requeued, vec![Requeued { request: 2, profiles: 12, reason: "HTTP 400".into(), body_bytes: 6 }]);
        assert_eq!(store.requeue_failed(DispatchId::new()).await.unwrap(), None);
        let without = store.select(Filter::Campaign("42"), false).await.unwrap();
        assert!(without[0].requests.iter().all(|r| r.body.is_none()), "no bodies unless asked");
    }

    #[tokio::test]
    async fn a_failing_write_fails_alone_and_pruning_keeps_pending_work() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("h.db")).unwrap());
        // Written at the same moment: likely one batch. The bad one must not undo the good.
        let bad = store.call(|c| c.execute("INSERT INTO no_such_table VALUES (1)", []).map(|_| ()));
        let (finished, pending) = (dispatch(None, 1), dispatch(None, 1));
        let (bad, a, b) = tokio::join!(bad, store.insert(&finished), store.insert(&pending));
        assert!(bad.unwrap_err().0.contains("no_such_table"));
        assert_eq!((a.unwrap(), b.unwrap()), (Inserted::Created, Inserted::Created));

        let done = Settlement {
            dispatch: finished.id,
            request: 0,
            attempt: Some(tried(1, AttemptResult::Success, 200)),
            next: NextState::Delivered,
        };
        store.settle(&done).await.unwrap();
        let pruned = store.prune_dispatches(SystemTime::now() + Duration::from_secs(1)).await.unwrap();
        assert_eq!(pruned.len(), 1, "the finished dispatch is past the retention period");
        assert!(pruned[0].requests.iter().all(|r| r.status != RequestStatus::Pending && r.body.is_none()));
        assert!(!pruned[0].requests.is_empty(), "returned with its requests, for the stats");
        let left: Vec<DispatchId> = store.select(Filter::All, false).await.unwrap().iter().map(|d| d.id).collect();
        assert_eq!(left, vec![pending.id], "pending work is never pruned");
    }

    #[test]
    fn one_gateway_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let _first = SqliteStore::open(&path).unwrap();
        let second = SqliteStore::open(&path).err().expect("the file is taken");
        assert!(second.0.contains("in use by another hookgate"), "{second}");
    }

    /// The database and its WAL hold campaign payloads: 0600 in a 0700 folder, whatever the
    /// umask; a file left world-readable is tightened.
    #[cfg(unix)]
    #[tokio::test]
    async fn database_files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/h.db");
        let store = SqliteStore::open(&path).unwrap();
        store.insert(&dispatch(None, 1)).await.unwrap();
        assert_eq!(mode(&dir.path().join("data")), 0o700);
        let files: Vec<PathBuf> = database_files(&path).into_iter().filter(|f| f.exists()).collect();
        assert!(files.len() >= 2, "the database and its WAL: {files:?}");
        for file in &files {
            assert_eq!(mode(file), 0o600, "{}", file.display());
        }
        drop(store);

        let loose = dir.path().join("loose.db");
        std::fs::write(&loose, "").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _store = SqliteStore::open(&loose).unwrap();
        assert_eq!(mode(&loose), 0o600);
    }
}
