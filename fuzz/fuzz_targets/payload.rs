//! A dispatch's body: the payload parser and its split into batches.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hookgate_core::fuzzing::payload(data));
