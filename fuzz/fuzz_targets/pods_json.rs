//! The agent's saved `pods.json`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = outpost_agent::podstate::decode(data);
});
