//! The default store: SQLite in WAL mode, one file in `data_dir`, no server to run.
//!
//! One writer thread owns the connection. Callers hand it closures and wait; it runs every
//! closure waiting at that moment in one transaction (group commit: one WAL append for many
//! deliveries), each inside its own savepoint so one failing closure undoes only itself,
//! and answers them all once the transaction has committed. `synchronous = NORMAL`: a
//! commit survives the process being killed; after a power loss the last commits can be
//! lost (`synchronous = FULL` would cost an fsync per commit).
//!
//! The file is locked exclusively: a second gateway on the same `data_dir` refuses to start
//! instead of delivering the same jobs twice.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{
    Filter, Inserted, Requeued, Settlement, Store, StoreError, StoredDispatch, StoredRequest, from_millis, millis,
    next_columns, result_code, result_from, status_code, status_from, target_from_json, target_json,
};
use crate::records::{AttemptRecord, DispatchId};

/// Closures the writer runs; each returns what to do once the transaction is over.
type Work = Box<dyn FnOnce(&mut Transaction<'_>) -> Reply + Send>;
type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;

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
        PRIMARY KEY (dispatch, idx)
    ) WITHOUT ROWID;
    CREATE TABLE attempts (
        dispatch BLOB NOT NULL,
        idx INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        at INTEGER NOT NULL,
        latency_us INTEGER NOT NULL,
        status INTEGER,
        error TEXT,
        result INTEGER NOT NULL
    );
    CREATE INDEX attempts_request ON attempts (dispatch, idx);",
];

pub struct SqliteStore {
    path: PathBuf,
    tx: mpsc::UnboundedSender<Work>,
}

impl SqliteStore {
    /// Opens (creating and migrating) the database at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        }
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
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let work: Work = Box::new(move |txn| {
            let result = match txn.savepoint() {
                Ok(sp) => {
                    let r = f(&sp);
                    if r.is_ok() { sp.commit().map(|_| r).unwrap_or_else(Err) } else { r }
                }
                Err(e) => Err(e),
            };
            Box::new(move |commit: Option<&StoreError>| {
                let _ = reply.send(match commit {
                    Some(e) => Err(e.clone()),
                    None => result.map_err(|e| StoreError(e.to_string())),
                });
            })
        });
        let stopped = || StoreError("the SQLite writer has stopped".into());
        self.tx.send(work).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
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

/// The writer thread: group commit of whatever is waiting.
fn writer(mut conn: Connection, mut rx: mpsc::UnboundedReceiver<Work>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(work) => batch.push(work),
                Err(_) => break,
            }
        }
        let mut replies = Vec::with_capacity(batch.len());
        let outcome = match conn.transaction() {
            Ok(mut txn) => {
                for work in batch {
                    replies.push(work(&mut txn));
                }
                txn.commit().map_err(|e| StoreError(format!("commit: {e}")))
            }
            Err(e) => Err(StoreError(format!("begin: {e}"))),
        };
        if let Err(e) = &outcome {
            tracing::error!("{e}");
        }
        for reply in replies {
            reply(outcome.as_ref().err());
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

fn select(txn: &Connection, filter: Filter<'_>, bodies: bool) -> rusqlite::Result<Vec<StoredDispatch>> {
    const COLUMNS: &str =
        "SELECT id, template, template_version, campaign, created_at, idempotency_key, skipped FROM dispatches";
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
    let mut stmt = txn.prepare_cached(&sql)?;
    let params: Vec<rusqlite::types::Value> = arg.into_iter().collect();
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
        "SELECT idx, profiles, target, body, status, reason, attempt, due FROM requests WHERE dispatch = ?1 ORDER BY idx"
    } else {
        "SELECT idx, profiles, target, NULL, status, reason, attempt, due FROM requests WHERE dispatch = ?1 ORDER BY idx"
    };
    let mut requests = txn.prepare_cached(requests_sql)?;
    let mut attempts = txn.prepare_cached(
        "SELECT idx, attempt, at, latency_us, status, error, result FROM attempts WHERE dispatch = ?1 ORDER BY rowid",
    )?;
    for d in &mut dispatches {
        let id = id_bytes(d.id);
        let rows = requests.query_map([&id[..]], |r| {
            let target: Option<String> = r.get(2)?;
            Ok(StoredRequest {
                target: target_from_json(target).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.0.into())
                })?,
                profiles: r.get::<_, i64>(1)? as usize,
                body: r.get::<_, Option<Vec<u8>>>(3)?.map(Bytes::from),
                status: status_from(r.get(4)?, r.get(5)?),
                attempt: r.get::<_, i64>(6)? as u32,
                due: from_millis(r.get(7)?),
                attempts: Vec::new(),
            })
        })?;
        d.requests = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        let rows = attempts.query_map([&id[..]], |r| {
            Ok((
                r.get::<_, i64>(0)? as usize,
                AttemptRecord {
                    attempt: r.get::<_, i64>(1)? as u32,
                    at: from_millis(r.get(2)?),
                    latency: Duration::from_micros(r.get::<_, i64>(3)?.max(0) as u64),
                    status: r.get::<_, Option<i64>>(4)?.map(|s| s as u16),
                    error: r.get(5)?,
                    result: result_from(r.get(6)?),
                },
            ))
        })?;
        for row in rows {
            let (idx, attempt) = row?;
            if let Some(req) = d.requests.get_mut(idx) {
                req.attempts.push(attempt);
            }
        }
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
            txn.prepare_cached(
                "UPDATE requests SET status = ?1, reason = ?2, attempt = COALESCE(?3, attempt), due = COALESCE(?4, due),
                     body = CASE WHEN ?1 = 1 THEN NULL ELSE body END
                 WHERE dispatch = ?5 AND idx = ?6",
            )?
            .execute(params![status, reason, attempt, due, &id[..], i64::from(s.request)])?;
            let Some(a) = &s.attempt else { return Ok(()) };
            txn.prepare_cached(
                "INSERT INTO attempts (dispatch, idx, attempt, at, latency_us, status, error, result)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                &id[..],
                i64::from(s.request),
                i64::from(a.attempt),
                millis(a.at),
                a.latency.as_micros() as i64,
                a.status.map(i64::from),
                a.error,
                result_code(a.result)
            ])?;
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
                 RETURNING idx, profiles, reason",
            )?;
            let rows = stmt.query_map(params![&id[..], now], |r| {
                Ok(Requeued {
                    request: r.get::<_, i64>(0)? as u32,
                    profiles: r.get::<_, i64>(1)? as usize,
                    reason: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
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

    async fn select(&self, filter: Filter<'_>, bodies: bool) -> Result<Vec<StoredDispatch>, StoreError> {
        let owned: OwnedFilter = filter.into();
        self.call(move |txn| select(txn, owned.borrow(), bodies)).await
    }

    async fn prune(&self, before: SystemTime) -> Result<u64, StoreError> {
        let before = millis(before);
        self.call(move |txn| {
            txn.execute_batch("CREATE TEMP TABLE IF NOT EXISTS pruned (id BLOB PRIMARY KEY); DELETE FROM pruned;")?;
            let n = txn.execute(
                "INSERT INTO pruned SELECT id FROM dispatches d WHERE created_at < ?1
                 AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.dispatch = d.id AND r.status = 0)",
                [before],
            )?;
            txn.execute_batch(
                "DELETE FROM attempts WHERE dispatch IN (SELECT id FROM pruned);
                 DELETE FROM requests WHERE dispatch IN (SELECT id FROM pruned);
                 DELETE FROM dispatches WHERE id IN (SELECT id FROM pruned);
                 DELETE FROM pruned;",
            )?;
            Ok(n as u64)
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
