//! The agent's nf_tables rule dump (netlink from the kernel): counters by
//! rule comment.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = outpost_agent::nft::decode_counters(data, 1);
});
