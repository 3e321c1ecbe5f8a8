//! Every SQL statement of the stores and of the PostgreSQL queue, written once.
//!
//! A statement is PostgreSQL text with `$1`-style placeholders and a few `{token}`s where
//! the dialects differ (types, the JSON append); [`Sql::get`] renders it for a
//! [`Dialect`] once and keeps the text. Where the dialects agree (most statements) it is
//! one statement for both; the few that only one backend has are named for it.
//! Parameters that PostgreSQL cannot type from their context are written
//! `CAST($n AS type)`, which SQLite reads too.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// What `{token}` stands for in this dialect.
    fn token(self, name: &str) -> &'static str {
        match (self, name) {
            (Self::Postgres, "uuid") => "UUID",
            (Self::Sqlite, "uuid") => "BLOB",
            (Self::Postgres, "bytes") => "BYTEA",
            (Self::Sqlite, "bytes") => "BLOB",
            // Arrays (SQLite has none; its store never writes these columns).
            (Self::Postgres, "uuids") => "UUID[]",
            (Self::Sqlite, "uuids") => "BLOB",
            (Self::Postgres, "ints") => "INT[]",
            (Self::Sqlite, "ints") => "BLOB",
            (Self::Postgres, "json") => "JSONB",
            (Self::Sqlite, "json") => "TEXT",
            // The requests table's options: room on each page for the updates of its rows
            // (see `schema`); clustered on its primary key (PostgreSQL has no such option).
            (Self::Postgres, "requests_options") => " WITH (fillfactor = 50)",
            (Self::Sqlite, "requests_options") => " WITHOUT ROWID",
            // The request's attempts with the attempt in parameter 7 (JSON text) appended.
            (Self::Postgres, "append_attempt") => "attempts || CAST(CAST($7 AS TEXT) AS JSONB)",
            (Self::Sqlite, "append_attempt") => "json_insert(attempts, '$[#]', json($7))",
            _ => panic!("unknown SQL token `{{{name}}}`"),
        }
    }

    /// `sql` in this dialect: tokens replaced; for SQLite, `$n` placeholders become `?n`.
    pub(crate) fn render(self, sql: &str) -> String {
        let mut out = String::with_capacity(sql.len());
        let mut rest = sql;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = rest[open..].find('}').expect("a SQL token is closed") + open;
            out.push_str(self.token(&rest[open + 1..close]));
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        if self == Self::Sqlite {
            let bytes = out.as_bytes();
            let placeholders: Vec<usize> = (0..bytes.len())
                .filter(|&i| bytes[i] == b'$' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
                .collect();
            let mut chars = out.into_bytes();
            for i in placeholders {
                chars[i] = b'?';
            }
            out = String::from_utf8(chars).expect("only an ASCII byte was replaced");
        }
        out
    }
}

/// One statement, rendered for each dialect on first use.
pub(crate) struct Sql {
    text: &'static str,
    postgres: OnceLock<String>,
    sqlite: OnceLock<String>,
}

impl Sql {
    pub(crate) const fn new(text: &'static str) -> Self {
        Self { text, postgres: OnceLock::new(), sqlite: OnceLock::new() }
    }

    pub(crate) fn get(&self, dialect: Dialect) -> &str {
        let cell = match dialect {
            Dialect::Postgres => &self.postgres,
            Dialect::Sqlite => &self.sqlite,
        };
        cell.get_or_init(|| dialect.render(self.text))
    }
}

// ---------------------------------------------------------------- the store

/// The body of request `r`: its own column, or its slice of the chunk that holds it with
/// others (`body_len` is set then; see `schema::BODIES`).
macro_rules! body_of_r {
    () => {
        "CASE WHEN r.body_len IS NULL THEN r.body ELSE
            (SELECT substr(b.data, r.body_at + 1, r.body_len) FROM bodies b WHERE b.id = r.body_chunk) END"
    };
}

/// Whether request `r` keeps a body (a delivered one drops it).
macro_rules! has_body {
    () => {
        "(body IS NOT NULL OR body_len IS NOT NULL)"
    };
}

/// A dispatch's columns, then its requests' (a `LEFT JOIN`: a dispatch may have none),
/// one row per request, as [`super::rows::Dispatches`] reads them; the body column is
/// [`body_of_r`] or a typed `NULL`.
macro_rules! dispatches_with_requests {
    ($body:expr, $where:literal) => {
        concat!(
            "SELECT d.id, d.template, d.template_version, d.campaign, d.created_at, d.idempotency_key, d.skipped,
                    r.idx, r.profiles, r.target, ",
            $body,
            ", r.status, r.reason, r.attempt, r.due, CAST(r.attempts AS TEXT)
             FROM dispatches d LEFT JOIN requests r ON r.dispatch = d.id ",
            $where,
            " ORDER BY d.created_at, d.id, r.idx"
        )
    };
}

/// The dispatches of each [`super::Filter`], with and without the requests' bodies.
pub(crate) static SELECT_ALL: [Sql; 2] = [
    Sql::new(dispatches_with_requests!("CAST(NULL AS {bytes})", "")),
    Sql::new(dispatches_with_requests!(body_of_r!(), "")),
];
pub(crate) static SELECT_ID: [Sql; 2] = [
    Sql::new(dispatches_with_requests!("CAST(NULL AS {bytes})", "WHERE d.id = $1")),
    Sql::new(dispatches_with_requests!(body_of_r!(), "WHERE d.id = $1")),
];
pub(crate) static SELECT_CAMPAIGN: [Sql; 2] = [
    Sql::new(dispatches_with_requests!("CAST(NULL AS {bytes})", "WHERE d.campaign = $1")),
    Sql::new(dispatches_with_requests!(body_of_r!(), "WHERE d.campaign = $1")),
];
pub(crate) static SELECT_TEMPLATE: [Sql; 2] = [
    Sql::new(dispatches_with_requests!("CAST(NULL AS {bytes})", "WHERE d.template = $1")),
    Sql::new(dispatches_with_requests!(body_of_r!(), "WHERE d.template = $1")),
];

/// The select of a filter (its parameter, if any, is `$1`), without bodies and with.
pub(crate) fn select(filter: &super::Filter<'_>) -> &'static [Sql; 2] {
    match filter {
        super::Filter::All => &SELECT_ALL,
        super::Filter::Id(_) => &SELECT_ID,
        super::Filter::Campaign(_) => &SELECT_CAMPAIGN,
        super::Filter::Template(_) => &SELECT_TEMPLATE,
    }
}

/// Finished dispatches created before `$1`, without bodies: what a prune deletes.
pub(crate) static SELECT_FINISHED_BEFORE: Sql = Sql::new(dispatches_with_requests!(
    "CAST(NULL AS {bytes})",
    "WHERE d.created_at < $1 AND NOT EXISTS (SELECT 1 FROM requests p WHERE p.dispatch = d.id AND p.status = 0)"
));

/// Deletes them (their requests go by the cascade); returns the ids it deleted.
pub(crate) static DELETE_FINISHED_BEFORE: Sql = Sql::new(
    "DELETE FROM dispatches WHERE created_at < $1
     AND NOT EXISTS (SELECT 1 FROM requests p WHERE p.dispatch = dispatches.id AND p.status = 0)
     RETURNING id",
);

/// A new dispatch, unless its idempotency key is taken (then no row comes back).
pub(crate) static INSERT_DISPATCH: Sql = Sql::new(
    "INSERT INTO dispatches (id, template, template_version, campaign, created_at, idempotency_key, skipped)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (template, idempotency_key) DO NOTHING
     RETURNING id",
);

/// One request of a new dispatch (SQLite, in the dispatch's transaction), with its body.
pub(crate) static INSERT_REQUEST: Sql = Sql::new(
    "INSERT INTO requests (dispatch, idx, profiles, target, body, status, attempt, due)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
);

/// PostgreSQL: new dispatches from arrays of their columns (`$1` to `$7`), as the common
/// table expressions `keyed`, `unkeyed` and `d` (the ids stored): multi-row inserts; a
/// dispatch whose idempotency key is taken is not stored. Those without a key cannot
/// conflict, so they are inserted plainly: an `ON CONFLICT` insert is speculative, and
/// confirming it costs a WAL record a row.
macro_rules! insert_dispatch_rows {
    () => {
        "keyed AS (
            INSERT INTO dispatches (id, template, template_version, campaign, created_at, idempotency_key, skipped)
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
                                 $7::bigint[]) AS n (id, template, version, campaign, created, key, skipped)
            WHERE n.key IS NOT NULL
            ON CONFLICT (template, idempotency_key) DO NOTHING
            RETURNING id
         ), unkeyed AS (
            INSERT INTO dispatches (id, template, template_version, campaign, created_at, idempotency_key, skipped)
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
                                 $7::bigint[]) AS n (id, template, version, campaign, created, key, skipped)
            WHERE n.key IS NULL
            RETURNING id
         ), d AS (
            SELECT id FROM keyed UNION ALL SELECT id FROM unkeyed
         )"
    };
}

/// PostgreSQL: new dispatches and all their requests in one statement (arrays of the
/// dispatches' columns, then of the requests', each naming its dispatch; multi-row
/// inserts). A dispatch whose idempotency key is taken is not stored, nor are its
/// requests; the ids of those stored come back. A request's body is its own (`$12`) or
/// its slice (`$16` to `$18`) of a chunk: `$19` to `$22` are the chunks' runs of requests
/// (chunk, dispatch, first and last request), `$23` and `$24` the chunks (id, data). A
/// chunk none of whose dispatches is stored is not either.
/// Idle instances hear of them at commit ([`JOBS_CHANNEL`]).
pub(crate) static INSERT_DISPATCHES: Sql = Sql::new(concat!(
    "WITH ",
    insert_dispatch_rows!(),
    ", r AS (
        INSERT INTO requests (dispatch, idx, profiles, target, body, status, attempt, due, body_chunk, body_at,
                              body_len)
        SELECT r.dispatch, r.idx, r.profiles, r.target, r.body, r.status, r.attempt, r.due, r.body_chunk,
               r.body_at, r.body_len
        FROM unnest($8::uuid[], $9::int[], $10::bigint[], $11::text[], $12::bytea[], $13::smallint[], $14::int[],
                    $15::bigint[], $16::uuid[], $17::int[], $18::int[])
             AS r (dispatch, idx, profiles, target, body, status, attempt, due, body_chunk, body_at, body_len)
        WHERE r.dispatch IN (SELECT id FROM d)
     ), b AS (
        INSERT INTO bodies (id, dispatches, firsts, lasts, data)
        SELECT c.id, s.dispatches, s.firsts, s.lasts, c.data
        FROM unnest($23::uuid[], $24::bytea[]) AS c (id, data)
        JOIN (SELECT s.chunk, array_agg(s.dispatch ORDER BY s.n) AS dispatches,
                     array_agg(s.first ORDER BY s.n) AS firsts, array_agg(s.last ORDER BY s.n) AS lasts
              FROM unnest($19::uuid[], $20::uuid[], $21::int[], $22::int[]) WITH ORDINALITY
                   AS s (chunk, dispatch, first, last, n)
              WHERE s.dispatch IN (SELECT id FROM d)
              GROUP BY s.chunk) s ON s.chunk = c.id
     ), n AS (
        SELECT pg_notify('hookgate_jobs', '') WHERE EXISTS (SELECT 1 FROM d)
     )
     SELECT id, (SELECT count(*) FROM n) FROM d"
));

/// PostgreSQL: new dispatches without their requests, as [`INSERT_DISPATCHES`] takes them;
/// a big group's requests follow by [`COPY_REQUESTS`] in the same transaction.
pub(crate) static INSERT_DISPATCH_ROWS: Sql = Sql::new(concat!("WITH ", insert_dispatch_rows!(), " SELECT id FROM d"));

/// PostgreSQL: requests streamed in binary, in the columns' order of [`COPY_REQUEST_TYPES`].
pub(crate) static COPY_REQUESTS: Sql = Sql::new(
    "COPY requests (dispatch, idx, profiles, target, body, status, attempt, due, body_chunk, body_at, body_len)
     FROM STDIN (FORMAT binary)",
);

/// The types of [`COPY_REQUESTS`]'s columns.
pub(crate) const COPY_REQUEST_TYPES: [tokio_postgres::types::Type; 11] = {
    use tokio_postgres::types::Type;
    [
        Type::UUID,
        Type::INT4,
        Type::INT8,
        Type::TEXT,
        Type::BYTEA,
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::UUID,
        Type::INT4,
        Type::INT4,
    ]
};

/// PostgreSQL: chunks of bodies streamed in binary, in the columns' order of
/// [`COPY_BODY_TYPES`].
pub(crate) static COPY_BODIES: Sql =
    Sql::new("COPY bodies (id, dispatches, firsts, lasts, data) FROM STDIN (FORMAT binary)");

/// The types of [`COPY_BODIES`]'s columns.
pub(crate) const COPY_BODY_TYPES: [tokio_postgres::types::Type; 5] = {
    use tokio_postgres::types::Type;
    [Type::UUID, Type::UUID_ARRAY, Type::INT4_ARRAY, Type::INT4_ARRAY, Type::BYTEA]
};

/// PostgreSQL: the chunks of bodies written before `$1` (a UUIDv7 of the prune's cut-off
/// time) none of whose dispatches is left: those whose requests were not all delivered,
/// or whose [`FREE_BODIES`] did not commit.
pub(crate) static DELETE_UNUSED_BODIES: Sql = Sql::new(
    "DELETE FROM bodies b WHERE b.id < $1 AND NOT EXISTS (SELECT 1 FROM dispatches d WHERE d.id = ANY (b.dispatches))",
);

/// PostgreSQL: whether feature `$1` is enabled (see `schema::SHARED_BODIES`).
pub(crate) static FEATURE_ENABLED: Sql = Sql::new("SELECT EXISTS (SELECT 1 FROM hookgate_features WHERE name = $1)");

/// The channel on which instances hear of new work (`LISTEN/NOTIFY`).
pub(crate) const JOBS_CHANNEL: &str = "hookgate_jobs";

/// Tells the instances listening that work is due now.
pub(crate) static NOTIFY_JOBS: Sql = Sql::new("SELECT 1 FROM (SELECT pg_notify('hookgate_jobs', '')) n");

pub(crate) static BY_IDEMPOTENCY_KEY: Sql =
    Sql::new("SELECT id FROM dispatches WHERE template = $1 AND idempotency_key = $2");

/// An attempt and the request's next state: `$1` dispatch, `$2` request, `$3` status,
/// `$4` reason, `$5` next attempt and `$6` its due time (both kept when null), `$7` the
/// attempt as JSON (none appended when null). A delivered request drops its body (its
/// slice of a chunk is no longer its; SQLite keeps none); one due again leaves its lease
/// for whichever instance claims it.
pub(crate) static SETTLE: Sql = Sql::new(
    "UPDATE requests SET
        status = CAST($3 AS SMALLINT),
        reason = CAST($4 AS TEXT),
        attempt = COALESCE(CAST($5 AS INT), attempt),
        due = COALESCE(CAST($6 AS BIGINT), due),
        body = CASE WHEN CAST($3 AS SMALLINT) = 1 THEN NULL ELSE body END,
        body_len = CASE WHEN CAST($3 AS SMALLINT) = 1 THEN NULL ELSE body_len END,
        lease_owner = CASE WHEN CAST($3 AS SMALLINT) = 0 THEN NULL ELSE lease_owner END,
        attempts = CASE WHEN CAST($7 AS TEXT) IS NULL THEN attempts ELSE {append_attempt} END
     WHERE dispatch = $1 AND idx = CAST($2 AS INT)",
);

/// PostgreSQL: many settlements in one statement (one transaction), each as [`SETTLE`]:
/// arrays of dispatch, request, status, reason, next attempt, due, attempt JSON. A
/// request appears at most once. The chunks of bodies of the requests delivered come
/// back, for [`FREE_BODIES`].
pub(crate) static SETTLE_MANY: Sql = Sql::new(
    "WITH u AS (
        UPDATE requests r SET
            status = s.status,
            reason = s.reason,
            attempt = COALESCE(s.attempt, r.attempt),
            due = COALESCE(s.due, r.due),
            body = CASE WHEN s.status = 1 THEN NULL ELSE r.body END,
            body_len = CASE WHEN s.status = 1 THEN NULL ELSE r.body_len END,
            lease_owner = CASE WHEN s.status = 0 THEN NULL ELSE r.lease_owner END,
            attempts = CASE WHEN s.tried IS NULL THEN r.attempts ELSE r.attempts || s.tried::jsonb END
        FROM unnest($1::uuid[], $2::int[], $3::smallint[], $4::text[], $5::int[], $6::bigint[], $7::text[])
             AS s (dispatch, idx, status, reason, attempt, due, tried)
        WHERE r.dispatch = s.dispatch AND r.idx = s.idx
        RETURNING r.body_chunk, s.status
     )
     SELECT DISTINCT body_chunk FROM u WHERE status = 1 AND body_chunk IS NOT NULL",
);

/// PostgreSQL: deletes the chunks of bodies `$1` none of whose requests keeps its body. Run
/// after the settlements that delivered their requests have committed, it sees those of
/// every instance that committed before: of two instances delivering a chunk's last
/// requests at the same moment, the one that checks last sees both. Its commit is not
/// waited for (a chunk it did not delete goes with its dispatches).
pub(crate) static FREE_BODIES: Sql = Sql::new(
    "WITH no_wait AS (
        SELECT set_config('synchronous_commit', 'off', true)
     ), freed AS (
        DELETE FROM bodies b
        WHERE b.id = ANY ($1::uuid[]) AND NOT EXISTS (
            SELECT 1 FROM unnest(b.dispatches, b.firsts, b.lasts) AS run (dispatch, first, last)
            JOIN requests o ON o.dispatch = run.dispatch AND o.idx BETWEEN run.first AND run.last
            WHERE o.body_chunk = b.id AND o.body_len IS NOT NULL)
        RETURNING 1
     )
     SELECT (SELECT count(*) FROM no_wait), (SELECT count(*) FROM freed)",
);

pub(crate) static DISPATCH_EXISTS: Sql = Sql::new("SELECT 1 FROM dispatches WHERE id = $1");

/// The failed requests of dispatch `$1` that keep their body, pending again at attempt 1,
/// due at `$2`.
pub(crate) static REQUEUE_FAILED: Sql = Sql::new(concat!(
    "UPDATE requests SET status = 0, attempt = 1, due = CAST($2 AS BIGINT), lease_owner = NULL, lease_until = NULL
     WHERE dispatch = $1 AND status = 2 AND ",
    has_body!(),
    " RETURNING idx, profiles, reason, COALESCE(octet_length(body), body_len)"
));

/// What a worker needs to send request `$2` of dispatch `$1`.
pub(crate) static WORK: Sql = Sql::new(concat!(
    "SELECT d.template, d.campaign, r.profiles, r.target, ",
    body_of_r!(),
    ", r.status, r.reason, r.attempt, r.due
     FROM requests r JOIN dispatches d ON d.id = r.dispatch WHERE r.dispatch = $1 AND r.idx = CAST($2 AS INT)"
));

pub(crate) static PENDING_BODY_BYTES: Sql = Sql::new(
    "SELECT CAST(COALESCE(SUM(COALESCE(octet_length(body), body_len)), 0) AS BIGINT) FROM requests WHERE status = 0",
);

pub(crate) static PENDING_REQUESTS: Sql = Sql::new("SELECT count(*) FROM requests WHERE status = 0");

// ---------------------------------------------------------------- the PostgreSQL queue

/// Claims up to `$4` due requests whose lease is free or ran out, for owner `$1` until
/// `$2` (now is `$3`), with what it takes to send them (as [`WORK`] from column 4); other
/// instances skip the rows this one is locking.
pub(crate) static CLAIM: Sql = Sql::new(concat!(
    "WITH c AS (
        SELECT dispatch, idx FROM requests
        WHERE status = 0 AND due <= $3 AND (lease_until IS NULL OR lease_until < $3)
        ORDER BY due LIMIT $4
        FOR UPDATE SKIP LOCKED
     )
     UPDATE requests r SET lease_owner = $1, lease_until = $2
     FROM c JOIN dispatches d ON d.id = c.dispatch
     WHERE r.dispatch = c.dispatch AND r.idx = c.idx
     RETURNING r.dispatch, r.idx, r.attempt, r.due, d.template, d.campaign, r.profiles, r.target, ",
    body_of_r!(),
    ", r.status, r.reason, r.attempt, r.due"
));

/// When the next job may be claimed: the earliest due time of the pending requests,
/// or the end of their lease for those held; `NULL` when none is pending.
pub(crate) static NEXT_DUE: Sql = Sql::new(
    "SELECT min(CASE WHEN lease_until IS NULL THEN due ELSE GREATEST(due, lease_until) END)
     FROM requests WHERE status = 0",
);

/// Gives held jobs back, each as its next attempt: arrays of dispatch, request, attempt, due
/// (a request appears at most once); the instances listening hear of it when one is due by
/// `$5` (now).
pub(crate) static RELEASE_MANY: Sql = Sql::new(
    "WITH u AS (
        UPDATE requests r SET attempt = j.attempt, due = j.due, lease_owner = NULL, lease_until = NULL
        FROM unnest($1::uuid[], $2::int[], $3::int[], $4::bigint[]) AS j (dispatch, idx, attempt, due)
        WHERE r.dispatch = j.dispatch AND r.idx = j.idx AND r.status = 0
        RETURNING r.due
     ), n AS (
        SELECT pg_notify('hookgate_jobs', '') WHERE EXISTS (SELECT 1 FROM u WHERE due <= $5)
     )
     SELECT count(*), (SELECT count(*) FROM n) FROM u",
);

/// Extends the leases of owner `$1` on the requests `$3` (dispatches) and `$4` (indexes) to
/// `$2`; found by their keys, so its cost is that of the leases, not of the pending requests.
pub(crate) static RENEW: Sql = Sql::new(
    "UPDATE requests r SET lease_until = $2
     FROM unnest($3::uuid[], $4::int[]) AS h (dispatch, idx)
     WHERE r.dispatch = h.dispatch AND r.idx = h.idx AND r.lease_owner = $1 AND r.status = 0",
);

/// Gives back every job owner `$1` holds.
pub(crate) static GIVE_BACK: Sql =
    Sql::new("UPDATE requests SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1 AND status = 0");

pub(crate) static PING: Sql = Sql::new("SELECT 1");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_tokens_are_rendered_per_dialect() {
        let sql = "SELECT CAST($1 AS TEXT), $12, '$x' FROM t WHERE a = {append_attempt}";
        assert_eq!(
            Dialect::Sqlite.render(sql),
            "SELECT CAST(?1 AS TEXT), ?12, '$x' FROM t WHERE a = json_insert(attempts, '$[#]', json(?7))"
        );
        assert_eq!(
            Dialect::Postgres.render(sql),
            "SELECT CAST($1 AS TEXT), $12, '$x' FROM t WHERE a = attempts || CAST(CAST($7 AS TEXT) AS JSONB)"
        );
        assert_eq!(Dialect::Sqlite.render("id {uuid}){requests_options}"), "id BLOB) WITHOUT ROWID");
    }
}
