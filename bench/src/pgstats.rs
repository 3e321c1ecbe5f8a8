//! What a PostgreSQL row costs the database, read from its statistics: transactions
//! committed (`pg_stat_database.xact_commit`), WAL written (`pg_current_wal_lsn()`) and rows
//! written (inserted, updated and deleted tuples), before and after the row. The bench's own
//! queries are not counted. WAL is the server's: other databases' writes meanwhile count too.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio_postgres::{Client, NoTls};

pub struct PgStats {
    client: Client,
    /// Transactions this bench made on the database (each query is one).
    own: u64,
}

#[derive(Clone, Copy)]
pub struct Reading {
    xacts: i64,
    rows: i64,
    wal: i64,
    own: u64,
}

/// Per delivery, over a row.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PgCost {
    pub transactions: f64,
    pub wal_bytes: f64,
    pub rows_written: f64,
}

impl PgStats {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.context("connect to --postgres")?;
        tokio::spawn(connection);
        Ok(Self { client, own: 0 })
    }

    /// The counters now. Backends report their statistics about a second after they go
    /// idle: read once the gateway has been quiet that long.
    pub async fn read(&mut self) -> anyhow::Result<Reading> {
        let row = self
            .client
            .query_one(
                "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted,
                        pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint
                 FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await?;
        self.own += 1;
        Ok(Reading { xacts: row.get(0), rows: row.get(1), wal: row.get(2), own: self.own })
    }

    /// Waits until no request of `campaign` is pending in the database (every outcome committed).
    pub async fn wait_settled(&mut self, campaign: &str, deadline: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + deadline;
        loop {
            let row = self
                .client
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
        }
    }
}
