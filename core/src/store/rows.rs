//! Rows read back, decoded once for both drivers: each backend's row type implements
//! [`Columns`], and the stored types are built from that.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Requeued, StoredWork, from_millis, millis, result_code, result_from, status_from, target_from_json};
use crate::body::RequestBody;
use crate::model::{AttemptRecord, DispatchId, StoreError, StoredDispatch, StoredRequest};

/// A row's columns by position; `None` for SQL `NULL`. Integer columns of any width read
/// as `i64`.
pub(crate) trait Columns {
    fn int(&self, i: usize) -> Result<Option<i64>, StoreError>;
    fn text(&self, i: usize) -> Result<Option<String>, StoreError>;
    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError>;
    fn id(&self, i: usize) -> Result<Option<DispatchId>, StoreError>;

    fn int_at(&self, i: usize) -> Result<i64, StoreError> {
        required(i, self.int(i)?)
    }
    fn text_at(&self, i: usize) -> Result<String, StoreError> {
        required(i, self.text(i)?)
    }
    fn id_at(&self, i: usize) -> Result<DispatchId, StoreError> {
        required(i, self.id(i)?)
    }
}

fn required<T>(i: usize, value: Option<T>) -> Result<T, StoreError> {
    value.ok_or_else(|| StoreError(format!("column {i} is unexpectedly NULL")))
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

/// An attempt as the JSON text [`super::sql::SETTLE`] appends.
pub(crate) fn attempt_json(a: &AttemptRecord) -> String {
    let stored = StoredAttempt {
        attempt: a.attempt,
        at: millis(a.at),
        latency_us: a.latency.as_micros() as u64,
        status: a.status,
        error: a.error.clone(),
        result: result_code(a.result),
    };
    serde_json::to_string(&stored).expect("an attempt serializes")
}

fn attempts_from_json(json: &str) -> Result<Vec<AttemptRecord>, StoreError> {
    let stored: Vec<StoredAttempt> =
        serde_json::from_str(json).map_err(|e| StoreError(format!("stored attempts: {e}")))?;
    Ok(stored
        .into_iter()
        .map(|a| AttemptRecord {
            attempt: a.attempt,
            at: from_millis(a.at),
            latency: Duration::from_micros(a.latency_us),
            status: a.status,
            error: a.error,
            result: result_from(a.result),
        })
        .collect())
}

/// A request from the columns profiles, target, body, status, reason, attempt, due, and
/// with `attempts` the attempts' JSON, starting at column `at`.
fn request_from(row: &dyn Columns, at: usize, attempts: bool) -> Result<StoredRequest, StoreError> {
    Ok(StoredRequest {
        profiles: row.int_at(at)? as usize,
        target: target_from_json(row.text(at + 1)?)?,
        body: row.bytes(at + 2)?.map(RequestBody::from),
        status: status_from(row.int_at(at + 3)? as i16, row.text(at + 4)?),
        attempt: row.int_at(at + 5)? as u32,
        due: from_millis(row.int_at(at + 6)?),
        attempts: if attempts { attempts_from_json(&row.text_at(at + 7)?)? } else { Vec::new() },
    })
}

/// The columns of [`super::sql::WORK`], starting at column `at`.
pub(crate) fn work_from(row: &dyn Columns, at: usize) -> Result<StoredWork, StoreError> {
    Ok(StoredWork {
        template: row.text_at(at)?,
        campaign: row.text_at(at + 1)?,
        request: request_from(row, at + 2, false)?,
    })
}

/// A row of [`super::sql::REQUEUE_FAILED`].
pub(crate) fn requeued_from(row: &dyn Columns) -> Result<Requeued, StoreError> {
    Ok(Requeued {
        request: row.int_at(0)? as u32,
        profiles: row.int_at(1)? as usize,
        reason: row.text(2)?.unwrap_or_default(),
        body_bytes: row.int(3)?.unwrap_or(0).max(0) as u64,
    })
}

/// Dispatches built from the rows of the dispatch selects in [`super::sql`] (a dispatch's
/// columns, then one of its requests', ordered by dispatch and request).
#[derive(Default)]
pub(crate) struct Dispatches(Vec<StoredDispatch>);

impl Dispatches {
    pub(crate) fn push(&mut self, row: &dyn Columns) -> Result<(), StoreError> {
        let id = row.id_at(0)?;
        if self.0.last().is_none_or(|d| d.id != id) {
            self.0.push(StoredDispatch {
                id,
                template: row.text_at(1)?,
                template_version: row.int_at(2)? as u64,
                campaign: row.text_at(3)?,
                created_at: from_millis(row.int_at(4)?),
                idempotency_key: row.text(5)?,
                skipped: row.int_at(6)? as usize,
                requests: Vec::new(),
            });
        }
        // A dispatch without requests has one row, with NULL request columns.
        if let Some(index) = row.int(7)? {
            let d = self.0.last_mut().expect("pushed above");
            if index as usize != d.requests.len() {
                return Err(StoreError(format!("dispatch {id}: request {index} read out of order")));
            }
            d.requests.push(request_from(row, 8, true)?);
        }
        Ok(())
    }

    pub(crate) fn done(self) -> Vec<StoredDispatch> {
        self.0
    }
}

impl Columns for rusqlite::Row<'_> {
    fn int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        self.get(i).map_err(sqlite_column(i))
    }
    fn text(&self, i: usize) -> Result<Option<String>, StoreError> {
        self.get(i).map_err(sqlite_column(i))
    }
    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(i).map_err(sqlite_column(i))
    }
    fn id(&self, i: usize) -> Result<Option<DispatchId>, StoreError> {
        let Some(bytes) = self.bytes(i)? else { return Ok(None) };
        Uuid::from_slice(&bytes)
            .map(|u| Some(DispatchId::from_uuid(u)))
            .map_err(|e| StoreError(format!("column {i}: not a dispatch id: {e}")))
    }
}

fn sqlite_column(i: usize) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError(format!("column {i}: {e}"))
}

impl Columns for tokio_postgres::Row {
    fn int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        use tokio_postgres::types::Type;
        let column = |e: tokio_postgres::Error| StoreError(format!("column {i}: {e}"));
        match self.columns().get(i).map(|c| c.type_().clone()) {
            Some(Type::INT2) => Ok(self.try_get::<_, Option<i16>>(i).map_err(column)?.map(i64::from)),
            Some(Type::INT4) => Ok(self.try_get::<_, Option<i32>>(i).map_err(column)?.map(i64::from)),
            _ => self.try_get(i).map_err(column),
        }
    }
    fn text(&self, i: usize) -> Result<Option<String>, StoreError> {
        self.try_get(i).map_err(|e| StoreError(format!("column {i}: {e}")))
    }
    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        self.try_get(i).map_err(|e| StoreError(format!("column {i}: {e}")))
    }
    fn id(&self, i: usize) -> Result<Option<DispatchId>, StoreError> {
        let id: Option<Uuid> = self.try_get(i).map_err(|e| StoreError(format!("column {i}: {e}")))?;
        Ok(id.map(DispatchId::from_uuid))
    }
}
