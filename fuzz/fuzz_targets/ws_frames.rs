//! `catalytic::ws::parse_frame`, `MessageReader` and `check_close_payload` fed as the reactor
//! feeds them, the reader checked against a reference model (see `../checks.rs`).
#![no_main]

#[allow(dead_code)] // each target uses one of the checks
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::ws_frames(data));
