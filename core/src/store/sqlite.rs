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
use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use super::rows::{Columns as _, Dispatches, attempt_json, requeued_from, work_from};
use super::schema;
use super::sql::{self, Dialect, Sql};
use super::{
    Filter, Inserted, Requeued, Settlement, Store, StoredWork, millis, next_columns, status_code, target_json,
};
use crate::model::{DispatchId, StoreError, StoredDispatch};

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
        // After the migration, which copies rows between tables: a dispatch's requests go with it.
        conn.execute_batch("PRAGMA foreign_keys = ON;").map_err(opened)?;
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

/// Brings the file to the current [schema]: created whole when new, upgraded from an
/// earlier version otherwise (`PRAGMA user_version` holds the version).
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let txn = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: u32 = txn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if let Some(upgrade) = schema::upgrade(Dialect::Sqlite, version) {
        txn.execute_batch(&upgrade)?;
        txn.execute_batch(&format!("PRAGMA user_version = {}", schema::VERSION))?;
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

fn id_bytes(id: DispatchId) -> [u8; 16] {
    *id.as_uuid().as_bytes()
}

/// A store error as the writer's closures return it.
fn failed(e: StoreError) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(e.0.into())
}

/// Runs `sql` with `params` and decodes every row with `decode`.
fn query<T>(
    txn: &Connection,
    sql: &Sql,
    params: impl rusqlite::Params,
    mut decode: impl FnMut(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> rusqlite::Result<Vec<T>> {
    let mut stmt = txn.prepare_cached(sql.get(Dialect::Sqlite))?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row).map_err(failed)?);
    }
    Ok(out)
}

/// The dispatches a dispatch select finds.
fn dispatches(txn: &Connection, sql: &Sql, params: impl rusqlite::Params) -> rusqlite::Result<Vec<StoredDispatch>> {
    let mut found = Dispatches::default();
    query(txn, sql, params, |row| found.push(row))?;
    Ok(found.done())
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert(&self, d: StoredDispatch) -> Result<Inserted, StoreError> {
        self.call(move |txn| {
            let id = id_bytes(d.id);
            let created = query(
                txn,
                &sql::INSERT_DISPATCH,
                params![
                    &id[..],
                    d.template,
                    d.template_version as i64,
                    d.campaign,
                    millis(d.created_at),
                    d.idempotency_key,
                    d.skipped as i64
                ],
                |_| Ok(()),
            )?;
            if created.is_empty() {
                let key = d.idempotency_key.as_deref().unwrap_or_default();
                let existing = query(txn, &sql::BY_IDEMPOTENCY_KEY, params![d.template, key], |r| r.id_at(0))?;
                return match existing.first() {
                    Some(id) => Ok(Inserted::Existing(*id)),
                    None => Err(failed(StoreError("the dispatch was neither stored nor found by its key".into()))),
                };
            }
            let mut insert = txn.prepare_cached(sql::INSERT_REQUEST.get(Dialect::Sqlite))?;
            for (idx, r) in d.requests.iter().enumerate() {
                insert.execute(params![
                    &id[..],
                    idx as i64,
                    r.profiles as i64,
                    target_json(&r.target),
                    r.body.as_ref(),
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
            let tried = s.attempt.as_ref().map(attempt_json);
            txn.prepare_cached(sql::SETTLE.get(Dialect::Sqlite))?.execute(params![
                &id[..],
                i64::from(s.request),
                status,
                reason,
                attempt,
                due,
                tried
            ])?;
            Ok(())
        })
        .await
    }

    async fn requeue_failed(&self, id: DispatchId) -> Result<Option<Vec<Requeued>>, StoreError> {
        let now = millis(SystemTime::now());
        self.call(move |txn| {
            let id = id_bytes(id);
            if query(txn, &sql::DISPATCH_EXISTS, [&id[..]], |_| Ok(()))?.is_empty() {
                return Ok(None);
            }
            let mut requeued = query(txn, &sql::REQUEUE_FAILED, params![&id[..], now], |r| requeued_from(r))?;
            requeued.sort_by_key(|r| r.request);
            Ok(Some(requeued))
        })
        .await
    }

    async fn by_idempotency_key(&self, template: &str, key: &str) -> Result<Option<DispatchId>, StoreError> {
        let (template, key) = (template.to_string(), key.to_string());
        self.call(move |txn| Ok(query(txn, &sql::BY_IDEMPOTENCY_KEY, params![template, key], |r| r.id_at(0))?.pop()))
            .await
    }

    async fn work(&self, id: DispatchId, request: u32) -> Result<Option<StoredWork>, StoreError> {
        self.call(move |txn| {
            let id = id_bytes(id);
            Ok(query(txn, &sql::WORK, params![&id[..], i64::from(request)], |r| work_from(r, 0))?.pop())
        })
        .await
    }

    async fn select(&self, filter: Filter<'_>, bodies: bool) -> Result<Vec<StoredDispatch>, StoreError> {
        let owned: OwnedFilter = filter.into();
        self.call(move |txn| {
            let filter = owned.borrow();
            let statement = &sql::select(&filter)[usize::from(bodies)];
            match filter {
                Filter::All => dispatches(txn, statement, []),
                Filter::Id(id) => dispatches(txn, statement, [&id_bytes(id)[..]]),
                Filter::Campaign(c) => dispatches(txn, statement, [c]),
                Filter::Template(t) => dispatches(txn, statement, [t]),
            }
        })
        .await
    }

    async fn prune(&self, before: SystemTime) -> Result<u64, StoreError> {
        Ok(self.prune_dispatches(before).await?.len() as u64)
    }

    /// One transaction of the one writer: what the select finds is what the delete removes.
    async fn prune_dispatches(&self, before: SystemTime) -> Result<Vec<StoredDispatch>, StoreError> {
        let before = millis(before);
        self.call(move |txn| {
            let found = dispatches(txn, &sql::SELECT_FINISHED_BEFORE, [before])?;
            if !found.is_empty() {
                query(txn, &sql::DELETE_FINISHED_BEFORE, [before], |_| Ok(()))?;
            }
            Ok(found)
        })
        .await
    }

    async fn pending_body_bytes(&self) -> Result<Option<u64>, StoreError> {
        self.call(|txn| Ok(query(txn, &sql::PENDING_BODY_BYTES, [], |r| r.int_at(0))?.pop()))
            .await
            .map(|bytes| Some(bytes.unwrap_or(0).max(0) as u64))
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
    //! What only SQLite has: the writer, the file lock, file modes, the migration of a
    //! version 1 file. What every store does is in `tests/conformance.rs`.

    use super::*;
    use crate::model::{AttemptResult, NextState, RequestStatus, StoredRequest};

    fn dispatch(requests: usize) -> StoredDispatch {
        let now = SystemTime::now();
        StoredDispatch {
            id: DispatchId::new(),
            template: "orders".into(),
            template_version: 3,
            campaign: "42".into(),
            created_at: now,
            idempotency_key: None,
            skipped: 0,
            requests: (0..requests)
                .map(|i| StoredRequest {
                    target: None,
                    profiles: 10 + i,
                    body: Some(format!("body {i}").into()),
                    status: RequestStatus::Pending,
                    attempt: 1,
                    due: now,
                    attempts: Vec::new(),
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn a_failing_write_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("h.db")).unwrap());
        // Written at the same moment: likely one batch. The bad one must not undo the good.
        let bad = store.call(|c| c.execute("INSERT INTO no_such_table VALUES (1)", []).map(|_| ()));
        let (one, two) = (dispatch(1), dispatch(1));
        let (bad, a, b) = tokio::join!(bad, store.insert(one.clone()), store.insert(two.clone()));
        assert!(bad.unwrap_err().0.contains("no_such_table"));
        assert_eq!((a.unwrap(), b.unwrap()), (Inserted::Created, Inserted::Created));
        assert_eq!(store.select(Filter::All, false).await.unwrap().len(), 2);
    }

    /// A file made by the first release (attempts as JSON, no cascade, no lease columns, no
    /// template index) is migrated at open, keeping every dispatch, request and attempt.
    #[tokio::test]
    async fn a_version_1_file_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let id = DispatchId::new();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE dispatches (
                    id BLOB PRIMARY KEY, template TEXT NOT NULL, template_version INTEGER NOT NULL,
                    campaign TEXT NOT NULL, created_at INTEGER NOT NULL, idempotency_key TEXT,
                    skipped INTEGER NOT NULL, UNIQUE (template, idempotency_key));
                 CREATE INDEX dispatches_campaign ON dispatches (campaign);
                 CREATE INDEX dispatches_created ON dispatches (created_at);
                 CREATE TABLE requests (
                    dispatch BLOB NOT NULL, idx INTEGER NOT NULL, profiles INTEGER NOT NULL, target TEXT,
                    body BLOB, status INTEGER NOT NULL, reason TEXT, attempt INTEGER NOT NULL,
                    due INTEGER NOT NULL, attempts TEXT NOT NULL DEFAULT '[]',
                    PRIMARY KEY (dispatch, idx)) WITHOUT ROWID;
                 PRAGMA user_version = 1;",
            )
            .unwrap();
            let at = millis(SystemTime::now());
            conn.execute(
                "INSERT INTO dispatches VALUES (?1, 'orders', 1, '42', ?2, 'k', 0)",
                params![&id_bytes(id)[..], at],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO requests VALUES (?1, 0, 5, NULL, x'7b7d', 0, NULL, 2, ?2,
                 '[{\"attempt\":1,\"at\":1,\"latency_us\":7,\"status\":503,\"error\":\"HTTP 503\",\"result\":1}]')",
                params![&id_bytes(id)[..], at],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let got = store.select(Filter::Template("orders"), true).await.unwrap();
        let [d] = &got[..] else { panic!("one dispatch: {got:?}") };
        assert_eq!((d.id, d.idempotency_key.as_deref()), (id, Some("k")));
        let r = &d.requests[0];
        assert_eq!((r.profiles, r.attempt, r.body.as_ref().map(|b| b.to_vec())), (5, 2, Some(b"{}".to_vec())));
        assert_eq!(r.attempts.len(), 1);
        assert_eq!((r.attempts[0].status, r.attempts[0].result), (Some(503), AttemptResult::Retry));
        // The new schema works on it: an outcome, then the cascade when it is pruned.
        let done = Settlement { dispatch: id, request: 0, attempt: None, next: NextState::Delivered };
        store.settle(&done).await.unwrap();
        let pruned = store.prune_dispatches(SystemTime::now() + Duration::from_secs(1)).await.unwrap();
        assert_eq!(pruned.len(), 1);
        let left: i64 = store.call(|c| c.query_row("SELECT count(*) FROM requests", [], |r| r.get(0))).await.unwrap();
        assert_eq!(left, 0, "the requests went with their dispatch");
        let version: u32 = store.call(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0))).await.unwrap();
        assert_eq!(version, schema::VERSION);
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
        store.insert(dispatch(1)).await.unwrap();
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
