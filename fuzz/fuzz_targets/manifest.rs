//! Manifest text (`outpostctl apply -f`, the controller's apply).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = outpost_controller::manifest::documents(text);
        let _ = outpost_controller::manifest::parse(text);
    }
});
