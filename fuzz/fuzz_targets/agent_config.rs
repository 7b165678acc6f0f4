//! The agent's TOML config file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = outpost_agent::config::parse_file(text);
        let _ = outpost_agent::config::parse_reserved(text);
    }
});
