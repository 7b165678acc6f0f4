//! DNS queries from pods and upstream responses (agent DNS server).
#![no_main]
use libfuzzer_sys::fuzz_target;
use outpost_agent::dns::wire;

fuzz_target!(|data: &[u8]| {
    let _ = wire::parse_query(data, 512);
    let _ = wire::response_question(data);
});
