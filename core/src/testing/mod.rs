//! Fixtures the test suites of the workspace share. Not part of the gateway's API.

pub mod postgres;
