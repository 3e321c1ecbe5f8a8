//! Dispatch records: each dispatch's requests and their attempts (`GET /v1/dispatches/{id}`),
//! the idempotency keys that map a resend to its first dispatch, and the stats and pending
//! bodies' budget derived from them. Records hold the template version the dispatch started
//! with (the current version once read back from the store).
//!
//! Two kinds, one [`Records`] contract:
//! - [`LocalRecords`] (`queue: memory` or `sqlite`): this instance owns the truth. Memory is
//!   authoritative ([`memory`]: bounded, with idempotency keys and waiters) and is written
//!   through to the store first when there is one ([`write_through`]).
//! - [`SharedRecords`] (`queue: postgres`): the database is the truth, and other instances
//!   change it; memory holds no dispatch, and campaign stats are derived from the rows.
//!
//! Both count what changes through one [`tally::Tally`].

pub mod budget;
pub mod contract;
pub mod local;
pub mod memory;
pub mod record;
pub mod shared;
pub mod tally;
pub mod write_through;

pub use budget::{BudgetFull, PendingBudget, Reservation};
pub use contract::{ListPage, ListQuery, Records, TemplateSource};
pub use local::LocalRecords;
pub use record::{DispatchRecord, RequestRecord, Work};
pub use shared::SharedRecords;
pub use write_through::WriteThrough;
