//! hookgate's engine: templates and their hot reload, the dispatch pipeline, the queue,
//! the outgoing HTTP client, delivery stats, and the auth plugin contract.
//!
//! The way a delivery travels:
//! `template` (registry snapshot) → `dispatch` (split into requests, record, enqueue) →
//! `queue` → `delivery::worker` (authorize → send → classify) → `records` + `stats`.
//! Below them all, `model` holds the types they share (ids, request status, attempt
//! records, the stored shape of a dispatch) and imports none of them.

pub mod body;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod dispatch;
pub mod duration;
pub mod engine;
pub mod fuzzing;
pub mod model;
pub mod network;
pub mod payload;
pub mod plugin;
pub mod queue;
pub mod records;
pub mod redact;
pub mod schema;
pub mod secret;
pub mod stats;
pub mod store;
pub mod template;
#[doc(hidden)]
pub mod testing;
pub mod watch;
pub mod yaml;

pub use engine::{Engine, EngineOptions};
pub use secret::Secret;
