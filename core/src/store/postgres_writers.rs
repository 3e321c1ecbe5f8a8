//! The PostgreSQL store's writers: one task each for new dispatches, for settlements and
//! for jobs given back, each writing whatever waits at a moment in one statement
//! ([`super::group_commit`]): under load many writes share a transaction. A big group of
//! dispatches streams its requests with `COPY` on the insert writer's own connection.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::group_commit::Groups;
use super::postgres_pool::{MAX_AGE, Pool, QUERY_TIMEOUT, QueryError};
use super::rows::attempt_json;
use super::sql::{self, Dialect};
use super::{Settlement, millis, next_columns, status_code, target_json};
use crate::body::RequestBody;
use crate::model::{DispatchId, StoreError, StoredDispatch};
use crate::queue::Job;

/// Settlements, or jobs given back, written in one statement at most.
const MAX_GROUP: usize = 1024;

/// A group's filter for writes of requests: each request at most once a statement (a second
/// write of it waits for the next), and at most [`MAX_GROUP`] of them.
fn each_request_once<T>(key: impl Fn(&T) -> (DispatchId, u32)) -> impl FnMut(&T) -> bool {
    let mut seen = HashSet::new();
    move |item| seen.len() < MAX_GROUP && seen.insert(key(item))
}

/// Requests of the dispatches inserted in one statement at most (a bigger dispatch goes alone).
const MAX_INSERT_REQUESTS: usize = 4096;

/// A group of this many requests or more is streamed with `COPY` rather than inserted.
const COPY_FROM: usize = 1024;

/// Writes the settlements waiting in one statement (one transaction), deletes the chunks of
/// bodies they leave unused ([`sql::FREE_BODIES`]), answers them all, and starts again:
/// outcomes are group-committed, as SQLite's writer does. A request appears once a
/// statement; a second settlement of it waits for the next.
pub(super) async fn settle_loop(pool: Arc<Pool>, mut groups: Groups<Settlement, Result<(), StoreError>>) {
    loop {
        let group = groups.next(each_request_once(|s: &Settlement| (s.dispatch, s.request)));
        let Some(group) = group.await else { return };
        let result = settle_many(&pool, group.iter().map(|w| &w.item)).await;
        if let Ok(chunks) = &result
            && !chunks.is_empty()
            && let Err(e) = pool.query(&sql::FREE_BODIES, &[chunks]).await
        {
            tracing::warn!(error = %e, "could not delete the chunks of bodies delivered; the prune will");
        }
        let result = result.map(drop);
        for waiting in group {
            waiting.answer(result.clone());
        }
    }
}

/// A dispatch's row and its requests' columns, as the group insert takes them.
pub(super) struct NewDispatch {
    id: Uuid,
    template: String,
    version: i64,
    campaign: String,
    created: i64,
    key: Option<String>,
    skipped: i64,
    requests: RequestColumns,
    /// Whether its requests' bodies may go in chunks ([`super::schema::SHARED_BODIES`]).
    share: bool,
}

/// Requests as columns, each naming its dispatch.
struct RequestColumns {
    dispatches: Vec<Uuid>,
    indexes: Vec<i32>,
    profiles: Vec<i64>,
    targets: Vec<Option<String>>,
    bodies: Vec<Option<RequestBody>>,
    statuses: Vec<i16>,
    attempts: Vec<i32>,
    dues: Vec<i64>,
}

impl NewDispatch {
    /// The dispatch's columns; its requests' bodies may share chunks with others when
    /// `share` (the database has [`super::schema::SHARED_BODIES`]).
    pub(super) fn of(d: &StoredDispatch, share: bool) -> Self {
        let id = d.id.as_uuid();
        let n = d.requests.len();
        let requests = RequestColumns {
            dispatches: vec![id; n],
            indexes: (0..n as i32).collect(),
            profiles: d.requests.iter().map(|r| r.profiles as i64).collect(),
            targets: d.requests.iter().map(|r| target_json(&r.target)).collect(),
            bodies: d.requests.iter().map(|r| r.body.clone()).collect(),
            statuses: d.requests.iter().map(|r| status_code(&r.status)).collect(),
            attempts: d.requests.iter().map(|r| r.attempt as i32).collect(),
            dues: d.requests.iter().map(|r| millis(r.due)).collect(),
        };
        Self {
            id,
            template: d.template.clone(),
            version: d.template_version as i64,
            campaign: d.campaign.clone(),
            created: millis(d.created_at),
            key: d.idempotency_key.clone(),
            skipped: d.skipped as i64,
            requests,
            share,
        }
    }
}

/// Bodies written together that add up to this many bytes or more, two or more of them,
/// go in chunks ([`super::schema::SHARED_BODIES`]): PostgreSQL compresses a row of 2 KB or
/// more, and consecutive bodies of one dispatch, or of dispatches accepted at the same
/// moment, have much in common (the same keys and framing). Measured with the benchmark's
/// profiles (~1 KB of JSON each), LZ4 makes 16 of them 38% of their size, and one alone 85%.
const SHARE_FROM: usize = 4096;

/// A chunk holds bodies until it reaches this many bytes: small enough that PostgreSQL
/// keeps it compressed in its row (not in the TOAST table), and that reading one body
/// decompresses little, large enough to compress well. A body this big keeps its own row,
/// where PostgreSQL compresses it as well.
const CHUNK_BYTES: usize = 16 * 1024;

/// The bodies of consecutive requests, from one dispatch or several: for each dispatch
/// (`runs`), the first and last of its requests here. Its data is one `bytea`, one body
/// after the other.
struct Chunk {
    id: Uuid,
    runs: Vec<(Uuid, i32, i32)>,
    bodies: Vec<RequestBody>,
}

impl tokio_postgres::types::ToSql for Chunk {
    fn to_sql(
        &self,
        _: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        for body in &self.bodies {
            for part in body.parts() {
                out.extend_from_slice(part);
            }
        }
        Ok(tokio_postgres::types::IsNull::No)
    }

    tokio_postgres::types::accepts!(BYTEA);
    tokio_postgres::types::to_sql_checked!();
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chunk({}, {} bodies of {} dispatches)", self.id, self.bodies.len(), self.runs.len())
    }
}

/// Where a request's body is in a chunk.
#[derive(Clone, Copy)]
struct Slice {
    chunk: Uuid,
    at: i32,
    len: i32,
}

/// The bodies of dispatches written together, in chunks ([`CHUNK_BYTES`]), when they are
/// worth it ([`SHARE_FROM`]): `slices[d][i]` is where request `i` of dispatch `d` finds its
/// body, `None` when it keeps its own.
struct Shared {
    chunks: Vec<Chunk>,
    slices: Vec<Vec<Option<Slice>>>,
}

impl Shared {
    fn of(dispatches: &[&NewDispatch]) -> Self {
        let slices = dispatches.iter().map(|d| vec![None; d.requests.indexes.len()]).collect();
        let mut shared = Self { chunks: Vec::new(), slices };
        let bodies = dispatches.iter().filter(|d| d.share).flat_map(|d| d.requests.bodies.iter().flatten());
        let (count, bytes) =
            bodies.filter(|b| b.len() < CHUNK_BYTES).fold((0, 0), |(n, sum), b| (n + 1, sum + b.len()));
        if count < 2 || bytes < SHARE_FROM {
            return shared;
        }
        let mut filled = CHUNK_BYTES;
        for (d, slices) in dispatches.iter().zip(&mut shared.slices).filter(|(d, _)| d.share) {
            for (i, body) in d.requests.bodies.iter().enumerate() {
                let Some(body) = body.as_ref().filter(|b| b.len() < CHUNK_BYTES) else { continue };
                if filled + body.len() > CHUNK_BYTES && filled > 0 {
                    shared.chunks.push(Chunk { id: Uuid::now_v7(), runs: Vec::new(), bodies: Vec::new() });
                    filled = 0;
                }
                let chunk = shared.chunks.last_mut().expect("pushed above");
                let index = d.requests.indexes[i];
                match chunk.runs.last_mut() {
                    Some((dispatch, _, last)) if *dispatch == d.id => *last = index,
                    _ => chunk.runs.push((d.id, index, index)),
                }
                // Both below CHUNK_BYTES, so within an i32.
                slices[i] = Some(Slice { chunk: chunk.id, at: filled as i32, len: body.len() as i32 });
                filled += body.len();
                chunk.bodies.push(body.clone());
            }
        }
        shared
    }

    /// The chunks' runs as columns: chunk, dispatch, first and last request.
    fn runs(&self) -> (Vec<Uuid>, Vec<Uuid>, Vec<i32>, Vec<i32>) {
        let runs = self.chunks.iter().flat_map(|c| c.runs.iter().map(|run| (c.id, *run)));
        let (mut chunks, mut dispatches, mut firsts, mut lasts) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (chunk, (dispatch, first, last)) in runs {
            chunks.push(chunk);
            dispatches.push(dispatch);
            firsts.push(first);
            lasts.push(last);
        }
        (chunks, dispatches, firsts, lasts)
    }
}

/// Inserts the dispatches waiting in one statement (group commit: under load, many
/// single-profile dispatches share a transaction), and answers each whether it was stored.
/// A group of [`COPY_FROM`] requests or more streams them instead ([`copy_many`]), on a
/// connection of this writer's own. Should the server refuse the statement, each dispatch
/// is tried alone, so that only the one it refuses fails.
pub(super) async fn insert_loop(pool: Arc<Pool>, mut groups: Groups<NewDispatch, Result<bool, StoreError>>) {
    let mut copier: Option<(Client, Instant)> = None;
    loop {
        let (mut keys, mut requests) = (HashSet::new(), 0);
        let group = groups.next(|d| {
            let n = d.requests.indexes.len();
            let fits = requests + n <= MAX_INSERT_REQUESTS
                && d.key.as_ref().is_none_or(|key| keys.insert((d.template.clone(), key.clone())));
            requests += if fits { n } else { 0 };
            fits
        });
        let Some(group) = group.await else { return };
        let items: Vec<&NewDispatch> = group.iter().map(|w| &w.item).collect();
        match insert_group(&pool, &mut copier, &items).await {
            Ok(stored) => {
                for waiting in group {
                    let created = stored.contains(&waiting.item.id);
                    waiting.answer(Ok(created));
                }
            }
            Err(QueryError::Refused(_)) if group.len() > 1 => {
                for waiting in group {
                    let alone = insert_group(&pool, &mut copier, &[&waiting.item]).await;
                    waiting.answer(alone.map(|stored| !stored.is_empty()).map_err(QueryError::into_store));
                }
            }
            Err(e) => {
                let e = e.into_store();
                for waiting in group {
                    waiting.answer(Err(e.clone()));
                }
            }
        }
    }
}

/// Stores a group of dispatches: by [`copy_many`] when it is big, else by [`insert_many`].
async fn insert_group(
    pool: &Pool,
    copier: &mut Option<(Client, Instant)>,
    dispatches: &[&NewDispatch],
) -> Result<HashSet<Uuid>, QueryError> {
    if dispatches.iter().map(|d| d.requests.indexes.len()).sum::<usize>() < COPY_FROM {
        return insert_many(pool, dispatches).await;
    }
    // Replaced when it broke, and recycled as the pool's are.
    let client = match copier {
        Some((client, born)) if !client.is_closed() && born.elapsed() < MAX_AGE => client,
        _ => &mut copier.insert((pool.connect().await.map_err(QueryError::Unanswered)?, Instant::now())).0,
    };
    match tokio::time::timeout(QUERY_TIMEOUT, copy_many(client, dispatches)).await {
        Ok(Ok(stored)) => Ok(stored),
        Ok(Err(e)) => {
            if matches!(e, QueryError::Unanswered(_)) {
                *copier = None;
            }
            Err(e)
        }
        Err(_) => {
            *copier = None;
            Err(QueryError::timed_out())
        }
    }
}

/// Stores `dispatches` in one transaction: their rows by one statement, then the requests
/// of those stored streamed with binary `COPY`. Measured in psql for 50,000 requests of
/// 1 KB (`COPY … FROM` a binary file against `INSERT … SELECT FROM unnest(…)`, WAL by
/// `pg_current_wal_lsn()`), the server spends 0.76 s on it instead of 1.34 s, and writes a
/// WAL record a page rather than a row (1,249 bytes a request instead of 1,281);
/// `hookgate-bench --postgres` sees the batch row go from about 9,400 to 12,800 a second.
async fn copy_many(client: &mut Client, dispatches: &[&NewDispatch]) -> Result<HashSet<Uuid>, QueryError> {
    let txn = client.transaction().await.map_err(QueryError::from_pg("begin"))?;
    let rows = {
        let c = DispatchColumns::of(dispatches);
        let params: [&(dyn ToSql + Sync); 7] =
            [&c.ids, &c.templates, &c.versions, &c.campaigns, &c.created, &c.keys, &c.skipped];
        txn.query(sql::INSERT_DISPATCH_ROWS.get(Dialect::Postgres), &params)
            .await
            .map_err(QueryError::from_pg("query"))?
    };
    let stored: HashSet<Uuid> = rows.iter().map(|row| row.get::<_, Uuid>(0)).collect();
    if !stored.is_empty() {
        let dispatches: Vec<&NewDispatch> = dispatches.iter().copied().filter(|d| stored.contains(&d.id)).collect();
        let shared = Shared::of(&dispatches);
        if !shared.chunks.is_empty() {
            let sink =
                txn.copy_in(sql::COPY_BODIES.get(Dialect::Postgres)).await.map_err(QueryError::from_pg("copy"))?;
            let writer = BinaryCopyInWriter::new(sink, &sql::COPY_BODY_TYPES);
            tokio::pin!(writer);
            for chunk in &shared.chunks {
                let runs: Vec<Uuid> = chunk.runs.iter().map(|run| run.0).collect();
                let firsts: Vec<i32> = chunk.runs.iter().map(|run| run.1).collect();
                let lasts: Vec<i32> = chunk.runs.iter().map(|run| run.2).collect();
                let row: [&(dyn ToSql + Sync); 5] = [&chunk.id, &runs, &firsts, &lasts, chunk];
                writer.as_mut().write(&row).await.map_err(QueryError::from_pg("copy"))?;
            }
            writer.as_mut().finish().await.map_err(QueryError::from_pg("copy"))?;
        }
        let sink = txn.copy_in(sql::COPY_REQUESTS.get(Dialect::Postgres)).await.map_err(QueryError::from_pg("copy"))?;
        let writer = BinaryCopyInWriter::new(sink, &sql::COPY_REQUEST_TYPES);
        tokio::pin!(writer);
        for (d, slices) in dispatches.iter().zip(&shared.slices) {
            let r = &d.requests;
            for (i, slice) in slices.iter().enumerate() {
                let body = if slice.is_some() { None } else { r.bodies[i].as_ref() };
                let (chunk, at, len) = (slice.map(|s| s.chunk), slice.map(|s| s.at), slice.map(|s| s.len));
                let row: [&(dyn ToSql + Sync); 11] = [
                    &r.dispatches[i],
                    &r.indexes[i],
                    &r.profiles[i],
                    &r.targets[i],
                    &body,
                    &r.statuses[i],
                    &r.attempts[i],
                    &r.dues[i],
                    &chunk,
                    &at,
                    &len,
                ];
                writer.as_mut().write(&row).await.map_err(QueryError::from_pg("copy"))?;
            }
        }
        writer.as_mut().finish().await.map_err(QueryError::from_pg("copy"))?;
        txn.query(sql::NOTIFY_JOBS.get(Dialect::Postgres), &[]).await.map_err(QueryError::from_pg("notify"))?;
    }
    txn.commit().await.map_err(QueryError::from_pg("commit"))?;
    Ok(stored)
}

/// The dispatches' own columns, as the inserts take them.
struct DispatchColumns<'a> {
    ids: Vec<Uuid>,
    templates: Vec<&'a str>,
    versions: Vec<i64>,
    campaigns: Vec<&'a str>,
    created: Vec<i64>,
    keys: Vec<Option<&'a str>>,
    skipped: Vec<i64>,
}

impl<'a> DispatchColumns<'a> {
    fn of(dispatches: &[&'a NewDispatch]) -> Self {
        Self {
            ids: dispatches.iter().map(|d| d.id).collect(),
            templates: dispatches.iter().map(|d| d.template.as_str()).collect(),
            versions: dispatches.iter().map(|d| d.version).collect(),
            campaigns: dispatches.iter().map(|d| d.campaign.as_str()).collect(),
            created: dispatches.iter().map(|d| d.created).collect(),
            keys: dispatches.iter().map(|d| d.key.as_deref()).collect(),
            skipped: dispatches.iter().map(|d| d.skipped).collect(),
        }
    }
}

/// The requests of dispatches written together, as columns, each naming its dispatch; a
/// request whose body is in a chunk has none of its own here.
#[derive(Default)]
struct GroupRequests<'a> {
    dispatches: Vec<Uuid>,
    indexes: Vec<i32>,
    profiles: Vec<i64>,
    targets: Vec<Option<&'a str>>,
    bodies: Vec<Option<&'a RequestBody>>,
    statuses: Vec<i16>,
    attempts: Vec<i32>,
    dues: Vec<i64>,
    chunks: Vec<Option<Uuid>>,
    ats: Vec<Option<i32>>,
    lens: Vec<Option<i32>>,
}

impl<'a> GroupRequests<'a> {
    fn of(dispatches: &[&'a NewDispatch], shared: &Shared) -> Self {
        let mut c = Self::default();
        for (d, slices) in dispatches.iter().zip(&shared.slices) {
            let r = &d.requests;
            c.dispatches.extend_from_slice(&r.dispatches);
            c.indexes.extend_from_slice(&r.indexes);
            c.profiles.extend_from_slice(&r.profiles);
            c.targets.extend(r.targets.iter().map(Option::as_deref));
            c.bodies.extend(r.bodies.iter().zip(slices).map(|(b, s)| b.as_ref().filter(|_| s.is_none())));
            c.statuses.extend_from_slice(&r.statuses);
            c.attempts.extend_from_slice(&r.attempts);
            c.dues.extend_from_slice(&r.dues);
            c.chunks.extend(slices.iter().map(|s| s.map(|s| s.chunk)));
            c.ats.extend(slices.iter().map(|s| s.map(|s| s.at)));
            c.lens.extend(slices.iter().map(|s| s.map(|s| s.len)));
        }
        c
    }
}

/// Stores `dispatches` with their requests in one statement; returns the ids stored (a
/// dispatch whose idempotency key is taken is not).
async fn insert_many(pool: &Pool, dispatches: &[&NewDispatch]) -> Result<HashSet<Uuid>, QueryError> {
    let c = DispatchColumns::of(dispatches);
    let shared = Shared::of(dispatches);
    let r = GroupRequests::of(dispatches, &shared);
    let (run_chunks, run_dispatches, run_firsts, run_lasts) = shared.runs();
    let chunk_ids: Vec<Uuid> = shared.chunks.iter().map(|c| c.id).collect();
    let params: [&(dyn ToSql + Sync); 24] = [
        &c.ids,
        &c.templates,
        &c.versions,
        &c.campaigns,
        &c.created,
        &c.keys,
        &c.skipped,
        &r.dispatches,
        &r.indexes,
        &r.profiles,
        &r.targets,
        &r.bodies,
        &r.statuses,
        &r.attempts,
        &r.dues,
        &r.chunks,
        &r.ats,
        &r.lens,
        &run_chunks,
        &run_dispatches,
        &run_firsts,
        &run_lasts,
        &chunk_ids,
        &shared.chunks,
    ];
    let rows = pool.try_query(&sql::INSERT_DISPATCHES, &params).await?;
    Ok(rows.iter().map(|row| row.get::<_, Uuid>(0)).collect())
}

/// Gives back the held jobs waiting in one statement, as [`settle_loop`] writes outcomes.
pub(super) async fn release_loop(pool: Arc<Pool>, mut groups: Groups<Job, Result<(), StoreError>>) {
    loop {
        let group = groups.next(each_request_once(|j: &Job| (j.dispatch, j.request)));
        let Some(group) = group.await else { return };
        let jobs = group.iter().map(|w| &w.item);
        let dispatches: Vec<Uuid> = jobs.clone().map(|j| j.dispatch.as_uuid()).collect();
        let indexes: Vec<i32> = jobs.clone().map(|j| j.request as i32).collect();
        let attempts: Vec<i32> = jobs.clone().map(|j| j.attempt as i32).collect();
        let dues: Vec<i64> = jobs.map(|j| millis(j.due)).collect();
        let now = millis(SystemTime::now());
        let params: [&(dyn ToSql + Sync); 5] = [&dispatches, &indexes, &attempts, &dues, &now];
        let result = pool.query(&sql::RELEASE_MANY, &params).await.map(drop);
        for waiting in group {
            waiting.answer(result.clone());
        }
    }
}

/// Writes the settlements; returns the chunks of bodies of the requests delivered.
async fn settle_many<'a>(
    pool: &Pool,
    settlements: impl Iterator<Item = &'a Settlement>,
) -> Result<Vec<Uuid>, StoreError> {
    let (mut dispatches, mut indexes, mut statuses, mut reasons, mut attempts, mut dues, mut tried) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in settlements {
        let (status, reason, attempt, due) = next_columns(&s.next);
        dispatches.push(s.dispatch.as_uuid());
        indexes.push(s.request as i32);
        statuses.push(status);
        reasons.push(reason.map(str::to_string));
        attempts.push(attempt.map(|a| a as i32));
        dues.push(due);
        tried.push(s.attempt.as_ref().map(attempt_json));
    }
    let params: [&(dyn ToSql + Sync); 7] = [&dispatches, &indexes, &statuses, &reasons, &attempts, &dues, &tried];
    let rows = pool.query(&sql::SETTLE_MANY, &params).await?;
    Ok(rows.iter().map(|row| row.get::<_, Uuid>(0)).collect())
}
