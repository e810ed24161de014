//! `catalytic::http::parse_request` fed as the reactor feeds it (see `../checks.rs`).
#![no_main]

#[allow(dead_code)] // each target uses one of the checks
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::http_request(data));
