//! Wire frames from a peer: header length check, then the postcard decode of
//! every `Message` variant; a decoded message must round-trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use outpost_proto::frame;

fuzz_target!(|data: &[u8]| {
    if let Some(h) = data.get(..4) {
        let _ = frame::payload_len([h[0], h[1], h[2], h[3]], 1 << 20);
        let _ = frame::split(data, 1 << 20);
    }
    if let Ok(msg) = frame::decode(data) {
        let bytes = frame::encode(&msg).expect("a decoded message re-encodes");
        let again = frame::decode(&bytes[4..]).expect("a re-encoded message decodes");
        assert_eq!(msg, again);
    }
});
