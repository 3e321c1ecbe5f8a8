//! A `Retry-After` header value: delay-seconds or an HTTP date.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hookgate_core::fuzzing::retry_after(data));
