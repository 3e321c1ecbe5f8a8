//! The PostgreSQL store's connections: a few, used round-robin, each pipelining many
//! queries, with their prepared statements. A connection that broke (the server restarted,
//! the network cut it) or that did not answer in time is replaced on next use, and one is
//! recycled after a while; while the server is away every query fails fast enough for the
//! API to answer 503, and the store works again as soon as it is back. A separate
//! connection listens for [`sql::JOBS_CHANNEL`] notifications, reconnecting likewise.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, Row, Statement};
use tracing::{info, warn};

use super::postgres_tls::{ConnectOptions, SslMode};
use super::sql::{self, Dialect, Sql};
use crate::model::StoreError;

/// Connections the pool keeps (each pipelines many queries).
const CONNECTIONS: usize = 4;

/// A query not answered within this is abandoned, and its connection with it.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection older than this is replaced (the server frees what it held).
pub(crate) const MAX_AGE: Duration = Duration::from_secs(30 * 60);

pub(crate) fn pg(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| match e.as_db_error() {
        // The server's own message says what is wrong ("db error" alone does not).
        Some(db) => StoreError(format!("postgres: {context}: {} ({})", db.message(), db.code().code())),
        None => {
            // tokio-postgres says what failed; why is in its sources ("error performing TLS
            // handshake": "server does not support TLS").
            let mut message = format!("postgres: {context}: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            StoreError(message)
        }
    }
}

/// Why a query failed.
#[derive(Debug, Clone)]
pub(crate) enum QueryError {
    /// The server answered with an error: the statement itself is wrong for it (a value it
    /// does not take, a constraint), and would fail again.
    Refused(StoreError),
    /// No answer: the server is unreachable, the connection broke, or time ran out.
    Unanswered(StoreError),
}

impl QueryError {
    pub(crate) fn from_pg(context: &'static str) -> impl Fn(tokio_postgres::Error) -> Self {
        move |e| {
            let refused = e.as_db_error().is_some();
            let error = pg(context)(e);
            if refused { Self::Refused(error) } else { Self::Unanswered(error) }
        }
    }

    /// No answer within [`QUERY_TIMEOUT`].
    pub(crate) fn timed_out() -> Self {
        Self::Unanswered(StoreError(format!("postgres: no answer within {QUERY_TIMEOUT:?}")))
    }

    pub(crate) fn into_store(self) -> StoreError {
        match self {
            Self::Refused(e) | Self::Unanswered(e) => e,
        }
    }
}

/// One connection and its prepared statements.
struct Conn {
    client: Client,
    born: Instant,
    /// By the address of their [`Sql`].
    statements: std::sync::Mutex<HashMap<usize, Statement>>,
}

pub(crate) struct Pool {
    options: ConnectOptions,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
}

impl Pool {
    pub(crate) fn new(options: ConnectOptions) -> Self {
        Self {
            options,
            slots: (0..CONNECTIONS).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A new connection, its driver running in a task of its own.
    pub(crate) async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = self.options.config.connect(self.options.tls.clone()).await.map_err(|e| {
            let mut message = pg("connect")(e).0;
            match self.options.mode {
                SslMode::Require if message.contains("server does not support TLS") => {
                    message.push_str(" (sslmode=require: the server must accept TLS connections)")
                }
                SslMode::VerifyFull if message.contains("not valid for name") => message.push_str(
                    " (sslmode=verify-full: the server's certificate must name the URL's host; verify-ca does not check it)",
                ),
                _ if message.contains("UnknownIssuer") => message.push_str(
                    " (the server's certificate must be issued by a CA in sslrootcert, or the system's roots without it)",
                ),
                _ => {}
            }
            StoreError(message)
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                warn!("postgres connection closed: {e}");
            }
        });
        Ok(client)
    }

    async fn conn(&self) -> Result<(usize, Arc<Conn>), StoreError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[index].lock().await;
        if let Some(conn) = &*slot
            && !conn.client.is_closed()
            && conn.born.elapsed() < MAX_AGE
        {
            return Ok((index, conn.clone()));
        }
        // Queries still running on a replaced connection finish on it.
        let conn =
            Arc::new(Conn { client: self.connect().await?, born: Instant::now(), statements: Default::default() });
        *slot = Some(conn.clone());
        Ok((index, conn))
    }

    /// Forgets connection `conn` of slot `index` (it did not answer), unless it was replaced already.
    async fn discard(&self, index: usize, conn: &Arc<Conn>) {
        let mut slot = self.slots[index].lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }

    /// Runs `sql` (prepared once per connection) and returns its rows.
    pub(crate) async fn query(
        &self,
        sql: &'static Sql,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.try_query(sql, params).await.map_err(QueryError::into_store)
    }

    /// As [`Pool::query`], telling a statement the server refused from one it never answered.
    pub(crate) async fn try_query(
        &self,
        sql: &'static Sql,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, QueryError> {
        let (index, conn) = self.conn().await.map_err(QueryError::Unanswered)?;
        let run = async {
            let key = sql as *const Sql as usize;
            let cached = conn.statements.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
            let statement = match cached {
                Some(s) => s,
                None => {
                    let s = conn
                        .client
                        .prepare(sql.get(Dialect::Postgres))
                        .await
                        .map_err(QueryError::from_pg("prepare"))?;
                    conn.statements.lock().unwrap_or_else(|e| e.into_inner()).insert(key, s.clone());
                    s
                }
            };
            conn.client.query(&statement, params).await.map_err(QueryError::from_pg("query"))
        };
        match tokio::time::timeout(QUERY_TIMEOUT, run).await {
            Ok(result) => result,
            Err(_) => {
                self.discard(index, &conn).await;
                Err(QueryError::timed_out())
            }
        }
    }

    /// Listens for [`sql::JOBS_CHANNEL`] on a connection of its own, waking `wake` for every
    /// notification, and once after each (re)connection (what was sent meanwhile was missed).
    /// Runs until aborted.
    pub(crate) async fn listen(self: Arc<Self>, wake: Arc<Notify>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.listen_once(&wake).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => warn!("{e}; listening for new jobs again in {backoff:?}"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn listen_once(&self, wake: &Notify) -> Result<(), StoreError> {
        let (client, mut connection) =
            self.options.config.connect(self.options.tls.clone()).await.map_err(pg("connect"))?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!("postgres listening connection closed: {e}");
                        return;
                    }
                }
            }
        });
        let listening = client.batch_execute(&format!("LISTEN {}", sql::JOBS_CHANNEL)).await.map_err(pg("listen"));
        if let Err(e) = listening {
            driver.abort();
            return Err(e);
        }
        info!("listening for new jobs");
        wake.notify_one();
        while rx.recv().await.is_some() {
            wake.notify_one();
        }
        Ok(())
    }
}
