//! The image push stream as the agent reads it from the controller: an
//! `ImageLoad` offer, then `Data` frames up to the announced size, then the
//! end of the stream. Frames are split off the input as the receiver reads
//! them (length checked before the payload); the decoder must never pass on
//! more bytes than announced, and must end cleanly exactly when the bytes
//! add up to the size.
#![no_main]
use libfuzzer_sys::fuzz_target;
use outpost_proto::frame::{self, MAX_FRAME};
use outpost_proto::transfer::ImageStream;
use outpost_proto::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((Message::ImageLoad(load), used))) = frame::split(data, MAX_FRAME) else {
        return;
    };
    let mut rest = &data[used..];
    let mut stream = ImageStream::new(load.size);
    let mut passed: u64 = 0;
    loop {
        let next = if rest.is_empty() {
            // The sender finished its stream.
            None
        } else {
            match frame::split(rest, MAX_FRAME) {
                Ok(Some((msg, used))) => {
                    rest = &rest[used..];
                    Some(msg)
                }
                // A frame cut short or malformed: the receiver's read fails
                // and the load is aborted; nothing more to decode.
                Ok(None) | Err(_) => return,
            }
        };
        let finished = next.is_none();
        match stream.next(next) {
            Ok(Some(chunk)) => {
                passed += chunk.len() as u64;
                assert!(passed <= load.size, "passed on more than announced");
                assert_eq!(passed, stream.received());
            }
            Ok(None) => {
                assert!(finished, "only the end of the stream ends it");
                assert_eq!(passed, load.size, "ended cleanly before the size");
                return;
            }
            Err(_) => return,
        }
    }
});
