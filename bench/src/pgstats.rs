//! What a PostgreSQL row costs the database, read from its statistics: transactions
//! committed (`pg_stat_database.xact_commit`), WAL written (`pg_current_wal_lsn()`) and rows
//! written (inserted, updated and deleted tuples), before and after the row. The bench's own
//! queries are not counted. WAL is the server's: other databases' writes meanwhile count too.
//! When the server runs on this machine, also the CPU time of all its processes (the
//! postmaster, the backends it reaped, and those alive: autovacuum, the WAL writer, ...).
//!
//! A backend reports its counts when it goes idle, but at most once a second, and it puts
//! off a report due sooner by ten: a busy connection's last transactions reach the
//! statistics up to ten seconds late, or when it closes. So the reading after a row is
//! taken once the gateways have stopped (their connections closed) and the counts have
//! stopped moving, and every query of the bench is made on a connection of its own that
//! it closes.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio_postgres::{Client, NoTls};

use crate::procfs;

pub struct PgStats {
    url: String,
    /// The server's postmaster, when it runs on this machine.
    postmaster: Option<u32>,
    /// Transactions this bench made on the database (each query is one).
    own: u64,
}

#[derive(Clone, Copy)]
pub struct Reading {
    xacts: i64,
    rows: i64,
    wal: i64,
    own: u64,
    /// CPU time of the server's processes, in microseconds, when it runs here.
    cpu_us: Option<f64>,
}

/// Per delivery, over a row.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PgCost {
    pub transactions: f64,
    pub wal_bytes: f64,
    pub rows_written: f64,
    /// CPU time of the server's processes, when it runs on this machine.
    pub cpu_us: Option<f64>,
}

impl PgStats {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let mut stats = Self { url: url.to_string(), postmaster: None, own: 0 };
        let client = stats.client().await?;
        let backend: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
        stats.own += 1;
        // The backend's parent is the postmaster, if this machine runs the server.
        stats.postmaster = procfs::parent(backend as u32).ok().filter(|&p| p > 1);
        Ok(stats)
    }

    /// A connection of the bench's, closed (and its counts reported) when dropped. Starting
    /// it is a transaction of its own, reported at once.
    async fn client(&mut self) -> anyhow::Result<Client> {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await.context("connect to --postgres")?;
        tokio::spawn(connection);
        self.own += 1;
        Ok(client)
    }

    /// The counters now, as reported so far.
    pub async fn read(&mut self) -> anyhow::Result<Reading> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted,
                        pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint
                 FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await?;
        // Counted before this query's own report, so the reading does not include it.
        let own = self.own;
        self.own += 1;
        let cpu_us = self.postmaster.map(procfs::tree_cpu_us).transpose()?;
        Ok(Reading { xacts: row.get(0), rows: row.get(1), wal: row.get(2), own, cpu_us })
    }

    /// The counters once every connection that wrote has reported: read until two readings
    /// a quarter of a second apart agree (the bench's own queries aside), within `deadline`.
    pub async fn read_settled(&mut self, deadline: Duration) -> anyhow::Result<Reading> {
        let end = Instant::now() + deadline;
        let mut last = self.read().await?;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.read().await?;
            let moved = |r: &Reading| (r.xacts - r.own as i64, r.rows);
            if moved(&now) == moved(&last) || Instant::now() > end {
                return Ok(now);
            }
            last = now;
        }
    }

    /// Waits until no request of `campaign` is pending in the database (every outcome committed).
    pub async fn wait_settled(&mut self, campaign: &str, deadline: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + deadline;
        let client = self.client().await?;
        loop {
            let row = client
                .query_one(
                    "SELECT count(*) FROM requests r JOIN dispatches d ON d.id = r.dispatch
                     WHERE d.campaign = $1 AND r.status = 0",
                    &[&campaign],
                )
                .await?;
            self.own += 1;
            if row.get::<_, i64>(0) == 0 {
                return Ok(());
            }
            if Instant::now() > end {
                bail!("campaign {campaign}: requests still pending in the database after {deadline:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl PgCost {
    /// From `before` to `after`, over `n` deliveries; the transactions exclude the bench's own.
    pub fn between(before: Reading, after: Reading, n: u64) -> Self {
        let own = (after.own - before.own) as i64;
        let n = n as f64;
        Self {
            transactions: (after.xacts - before.xacts - own).max(0) as f64 / n,
            wal_bytes: (after.wal - before.wal) as f64 / n,
            rows_written: (after.rows - before.rows) as f64 / n,
            cpu_us: after.cpu_us.zip(before.cpu_us).map(|(a, b)| (a - b) / n),
        }
    }
}
