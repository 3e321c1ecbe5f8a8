//! Sending a request and deciding what its answer means.
//!
//! `client` sends one attempt (network policy, timeout, bounded body read); `retry` turns
//! the outcome into a typed decision; `worker` runs the queue's jobs through
//! authorize → send → classify → ack or reschedule; `verify` is the on-load test send.

pub mod attempt;
pub mod client;
pub mod destinations;
pub mod retry;
pub mod verify;
pub mod worker;
