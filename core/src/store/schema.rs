//! The one schema of both stores, and how a database made by an earlier version reaches it.
//!
//! Tables of the same shape in SQLite and PostgreSQL (types rendered per [`Dialect`]):
//! `dispatches`, their `requests` (removed with their dispatch by the cascade), the
//! `bodies` these may share, and each request's attempts as a JSON array in
//! `requests.attempts`. The lease columns are the shared queue's; SQLite's single gateway
//! leaves them empty, and keeps each body in its request's row. Times are Unix
//! milliseconds, as the gateway sets them.
//!
//! Attempts are a JSON column rather than rows of their own: measured, an outcome written
//! that way costs PostgreSQL 295 bytes of WAL instead of 491 (1,515 instead of 1,792 just
//! after a checkpoint) and SQLite writes it about 20% faster (9,100 instead of 7,300 a
//! second); attempts are only ever read with their request.
//!
//! Every write of the shared queue's path touches as little as it can, since each instance
//! of a cluster pays for it: PostgreSQL keeps half of each new page of `requests` free
//! (`fillfactor = 50`), so the update that claims a request stays on its page and is a
//! heap-only tuple update (no index entry, and only the changed bytes in the WAL); no index
//! covers the lease columns, which the claim changes (an instance renews its leases by the
//! requests' keys, and gives them back at shutdown through the pending requests' index);
//! and the dispatches of a template are found through
//! the idempotency key's index, whose first column is the template, rather than an index of
//! their own. Measured with `hookgate-bench --postgres` (10,000 deliveries of 1 KB in one
//! dispatch, with the same gateway): 1,856 bytes of WAL a delivery instead of 3,265 with
//! version 2.
//!
//! Requests in PostgreSQL share chunks of bodies ([`BODIES`]) rather than each keeping its
//! own: consecutive bodies of a dispatch, or of dispatches accepted together, have much in
//! common, and PostgreSQL compresses a row of 2 KB or more but never a smaller one, so a
//! 1 KB body in its request's row is written whole. Measured with `hookgate-bench --postgres` (20,000
//! deliveries of 960 B of JSON profiles in one dispatch): 1,203 bytes of WAL a delivery
//! instead of 1,765, the chunks stored at 37% of their size; one single-profile dispatch
//! at a time from 64 connections, 1,931 to 1,950 bytes instead of 2,400 to 2,407.
//!
//! Version 4 is this schema. Version 3 had no `bodies` table nor the `body_chunk`,
//! `body_at` and `body_len` columns, nor PostgreSQL's `hookgate_features`. Version 2 also
//! had the indexes `requests_lease` and `dispatches_template`, and PostgreSQL's default
//! fill factor. Version 1 (the first release) had no template index, no cascade and no
//! lease columns in SQLite, and attempts as a table of rows in PostgreSQL.

use super::sql::Dialect;

/// The current schema version.
pub(crate) const VERSION: u32 = 4;

const DISPATCHES: &str = "CREATE TABLE dispatches (
        id {uuid} PRIMARY KEY,
        template TEXT NOT NULL,
        template_version BIGINT NOT NULL,
        campaign TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        idempotency_key TEXT,
        skipped BIGINT NOT NULL,
        UNIQUE (template, idempotency_key)
    );
    CREATE INDEX dispatches_campaign ON dispatches (campaign);
    CREATE INDEX dispatches_created ON dispatches (created_at);";

/// `NAME` is the table's name (a rebuild creates it under another name first).
const REQUESTS: &str = "CREATE TABLE NAME (
        dispatch {uuid} NOT NULL REFERENCES dispatches (id) ON DELETE CASCADE,
        idx INT NOT NULL,
        profiles BIGINT NOT NULL,
        target TEXT,
        body {bytes},
        status SMALLINT NOT NULL,
        reason TEXT,
        attempt INT NOT NULL,
        due BIGINT NOT NULL,
        attempts {json} NOT NULL DEFAULT '[]',
        lease_owner {uuid},
        lease_until BIGINT,
        body_chunk {uuid},
        body_at INT,
        body_len INT,
        PRIMARY KEY (dispatch, idx)
    ){requests_options};";

/// Chunks of bodies ([`SHARED_BODIES`]): the bodies of consecutive requests of dispatches
/// stored together, one after the other; for each of those dispatches (`dispatches[i]`),
/// its requests `firsts[i]` to `lasts[i]`. A request finds its body by `body_chunk`,
/// `body_at` and `body_len`. A chunk goes with the delivery of the last of its requests,
/// or else once its dispatches are all pruned. Its id is a UUIDv7, whose time is when it
/// was written (after all of its dispatches were accepted): a prune reads only chunks
/// written before its cut-off time.
const BODIES: &str = "CREATE TABLE bodies (
        id {uuid} PRIMARY KEY,
        dispatches {uuids} NOT NULL,
        firsts {ints} NOT NULL,
        lasts {ints} NOT NULL,
        data {bytes} NOT NULL
    );";

/// PostgreSQL compresses the chunks where they are (`MAIN`), with LZ4 where the server has
/// it; a row of at least 2 KB is compressed, a smaller one is stored as it is.
const POSTGRES_BODIES_STORAGE: &str = "ALTER TABLE bodies ALTER COLUMN data SET STORAGE MAIN;
    DO $$ BEGIN
        ALTER TABLE bodies ALTER COLUMN data SET COMPRESSION lz4;
    EXCEPTION WHEN feature_not_supported THEN NULL;
    END $$;";

/// PostgreSQL: the formats a cluster's instances may write, by name, enabled once every
/// instance reads them; those a release makes are listed here from the first one.
const POSTGRES_FEATURES: &str = "CREATE TABLE hookgate_features (
        name TEXT PRIMARY KEY,
        enabled_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );";

/// The feature under which a dispatch's requests keep their bodies in [`BODIES`] rather
/// than each its own: version 3 reads a request's body from its row only, so a database
/// it ran on enables it once no instance of version 3 runs.
pub(crate) const SHARED_BODIES: &str = "shared_bodies";

const REQUESTS_INDEXES: &str = "CREATE INDEX requests_due ON requests (due) WHERE status = 0;";

fn requests_table(name: &str) -> String {
    REQUESTS.replacen("NAME", name, 1)
}

/// What brings a database at schema `version` to the current one, in one transaction;
/// `None` when it is current (or newer: an instance of a later version migrated it).
pub(crate) fn upgrade(dialect: Dialect, version: u32) -> Option<String> {
    let steps = match (dialect, version) {
        (_, 0) => return Some(create(dialect)),
        (Dialect::Sqlite, 1) => vec![sqlite_from_v1(), dialect.render(BODIES)],
        (Dialect::Postgres, 1) => vec![POSTGRES_FROM_V1.to_string(), from_v2(dialect), from_v3(dialect)],
        (_, 2) => vec![from_v2(dialect), from_v3(dialect)],
        (_, 3) => vec![from_v3(dialect)],
        _ => return None,
    };
    Some(steps.join("\n"))
}

/// The whole schema, for a new database: no instance of an earlier version has run on it,
/// so every feature is enabled.
fn create(dialect: Dialect) -> String {
    let tables = dialect.render(&[DISPATCHES, &requests_table("requests"), REQUESTS_INDEXES, BODIES].join("\n"));
    match dialect {
        Dialect::Postgres => format!(
            "{tables}\n{POSTGRES_BODIES_STORAGE}\n{POSTGRES_FEATURES}\n\
             INSERT INTO hookgate_features (name) VALUES ('{SHARED_BODIES}');"
        ),
        Dialect::Sqlite => tables,
    }
}

/// From version 3 to 4: the chunks of bodies, and the columns by which a request finds its
/// body in one; in PostgreSQL, the features table, with none enabled. Safe while instances
/// of version 3 keep running: the columns are added without rewriting the table (no
/// default), and nothing is written to them until [`SHARED_BODIES`] is enabled.
fn from_v3(dialect: Dialect) -> String {
    let columns = "ALTER TABLE requests ADD COLUMN body_chunk {uuid};
        ALTER TABLE requests ADD COLUMN body_at INT;
        ALTER TABLE requests ADD COLUMN body_len INT;";
    let tables = dialect.render(&[columns, BODIES].join("\n"));
    match dialect {
        Dialect::Postgres => format!("{tables}\n{POSTGRES_BODIES_STORAGE}\n{POSTGRES_FEATURES}"),
        Dialect::Sqlite => tables,
    }
}

/// From version 2 to 3: two indexes dropped and, in PostgreSQL, the fill factor set, which
/// applies to the pages written from then on. Safe while instances of version 2 keep
/// running: they find their rows by the indexes that remain (a lease renewal reads the
/// pending requests' index instead), and nothing they write changes. The drops hold the
/// tables' lock for a moment, once the statements running on them have finished.
fn from_v2(dialect: Dialect) -> String {
    let drops = "DROP INDEX IF EXISTS requests_lease; DROP INDEX IF EXISTS dispatches_template;";
    match dialect {
        Dialect::Postgres => format!("{drops} ALTER TABLE requests SET (fillfactor = 50);"),
        Dialect::Sqlite => drops.to_string(),
    }
}

/// From version 1 to 4 in SQLite (but the bodies' table): the requests table is rebuilt
/// (SQLite cannot add a foreign key to a table), keeping every row. A gateway holds its
/// file alone, so this runs while nothing else uses it, in the transaction that sets the
/// new version.
fn sqlite_from_v1() -> String {
    let dialect = Dialect::Sqlite;
    [
        dialect.render(&requests_table("requests_v2")),
        "INSERT INTO requests_v2 (dispatch, idx, profiles, target, body, status, reason, attempt, due, attempts)
         SELECT dispatch, idx, profiles, target, body, status, reason, attempt, due, attempts FROM requests;
         DROP TABLE requests;
         ALTER TABLE requests_v2 RENAME TO requests;"
            .to_string(),
        dialect.render(REQUESTS_INDEXES),
    ]
    .join("\n")
}

/// From version 1 to 2 in PostgreSQL, safe while instances of version 1 keep running (a
/// rolling upgrade): the column is added without rewriting the table (a constant default),
/// the attempts rows are moved into it, and the old table stays, with a trigger that moves
/// every attempt an old instance still writes there into its request's column. Old
/// instances keep delivering; what they show of attempts is what is left in their table.
/// A later version drops the table once no version 1 instance runs.
const POSTGRES_FROM_V1: &str = "
    ALTER TABLE requests ADD COLUMN attempts JSONB NOT NULL DEFAULT '[]';
    CREATE FUNCTION hookgate_attempt_to_json() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE requests SET attempts = attempts || jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
            'attempt', NEW.attempt, 'at', NEW.at, 'latency_us', NEW.latency_us,
            'status', NEW.status, 'error', NEW.error, 'result', NEW.result)))
        WHERE dispatch = NEW.dispatch AND idx = NEW.idx;
        DELETE FROM attempts WHERE id = NEW.id;
        RETURN NULL;
    END $$;
    CREATE TRIGGER attempts_to_json AFTER INSERT ON attempts
        FOR EACH ROW EXECUTE FUNCTION hookgate_attempt_to_json();
    UPDATE requests r SET attempts = a.list
    FROM (SELECT dispatch, idx, jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
              'attempt', attempt, 'at', at, 'latency_us', latency_us,
              'status', status, 'error', error, 'result', result)) ORDER BY id) AS list
          FROM attempts GROUP BY dispatch, idx) a
    WHERE r.dispatch = a.dispatch AND r.idx = a.idx;
    DELETE FROM attempts;";
