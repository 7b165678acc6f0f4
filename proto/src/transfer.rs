//! The image push stream, as its receiver decodes it.
//!
//! After an [`ImageLoad`](crate::ImageLoad) offer of `size` bytes, the
//! sender writes [`Message::Data`] frames whose payloads add up to exactly
//! `size` bytes, then finishes its stream. Both receivers (the controller
//! relaying from `outpostctl`, the agent loading into its engine) feed each
//! frame they read to one [`ImageStream`], which says what the frame means:
//! a chunk to pass on, the end of a complete image, or why the stream is
//! broken. A broken stream must be aborted so that no partial image is kept.

use crate::Message;

/// Why an image stream is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageStreamError {
    /// A frame other than `Data` arrived in the middle of the tarball.
    Unexpected(&'static str),
    /// The chunks add up to more than the announced size.
    TooLong { size: u64 },
    /// The sender finished its stream before the announced size.
    TooShort { received: u64, size: u64 },
}

impl std::fmt::Display for ImageStreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageStreamError::Unexpected(kind) => write!(f, "expected image data, got {kind}"),
            ImageStreamError::TooLong { size } => {
                write!(
                    f,
                    "the image stream sent more than the announced {size} bytes"
                )
            }
            ImageStreamError::TooShort { received, size } => {
                write!(f, "the image stream ended after {received} of {size} bytes")
            }
        }
    }
}

impl std::error::Error for ImageStreamError {}

/// Receiver side of one image push: counts the bytes against the announced
/// size and checks every frame is image data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageStream {
    size: u64,
    received: u64,
}

impl ImageStream {
    /// A stream announced as `size` bytes.
    pub fn new(size: u64) -> Self {
        ImageStream { size, received: 0 }
    }

    /// The next frame read from the stream, `None` when the sender finished
    /// it. Returns the chunk to pass on, `Ok(None)` at the end of a complete
    /// image, or why the stream is broken (after which it must not be fed
    /// again).
    pub fn next(&mut self, frame: Option<Message>) -> Result<Option<Vec<u8>>, ImageStreamError> {
        match frame {
            Some(Message::Data(chunk)) => {
                let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
                match self.received.checked_add(len) {
                    Some(total) if total <= self.size => {
                        self.received = total;
                        Ok(Some(chunk))
                    }
                    _ => Err(ImageStreamError::TooLong { size: self.size }),
                }
            }
            Some(other) => Err(ImageStreamError::Unexpected(other.kind())),
            None if self.received == self.size => Ok(None),
            None => Err(ImageStreamError::TooShort {
                received: self.received,
                size: self.size,
            }),
        }
    }

    /// Bytes accepted so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The announced size.
    pub fn size(&self) -> u64 {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Heartbeat;

    fn data(n: usize) -> Option<Message> {
        Some(Message::Data(vec![7; n]))
    }

    #[test]
    fn exact_size_ends_cleanly() {
        let mut s = ImageStream::new(10);
        assert_eq!(s.next(data(4)), Ok(Some(vec![7; 4])));
        assert_eq!(s.next(data(0)), Ok(Some(vec![])));
        assert_eq!(s.next(data(6)), Ok(Some(vec![7; 6])));
        assert_eq!(s.received(), 10);
        assert_eq!(s.next(None), Ok(None));
    }

    #[test]
    fn empty_image_is_complete_at_once() {
        assert_eq!(ImageStream::new(0).next(None), Ok(None));
        assert_eq!(
            ImageStream::new(0).next(data(1)),
            Err(ImageStreamError::TooLong { size: 0 })
        );
    }

    #[test]
    fn short_long_and_foreign_frames_are_errors() {
        let mut s = ImageStream::new(10);
        s.next(data(9)).unwrap();
        assert_eq!(
            s.clone().next(None),
            Err(ImageStreamError::TooShort {
                received: 9,
                size: 10
            })
        );
        let e = s.clone().next(data(2)).unwrap_err();
        assert_eq!(e, ImageStreamError::TooLong { size: 10 });
        assert_eq!(
            e.to_string(),
            "the image stream sent more than the announced 10 bytes"
        );
        let e = s.next(Some(Message::Heartbeat(Heartbeat { seq: 1 })));
        assert_eq!(e, Err(ImageStreamError::Unexpected("Heartbeat")));
    }

    #[test]
    fn a_huge_announced_size_does_not_overflow() {
        let mut s = ImageStream::new(u64::MAX);
        s.received = u64::MAX - 1;
        assert_eq!(
            s.next(data(2)),
            Err(ImageStreamError::TooLong { size: u64::MAX })
        );
    }

    /// Invariant over random chunk sequences: the bytes passed on never
    /// exceed the announced size, and the stream ends cleanly exactly when
    /// they equal it.
    #[test]
    fn passed_on_bytes_never_exceed_the_size() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2_000 {
            let size = next() % 64;
            let mut s = ImageStream::new(size);
            let mut passed = 0u64;
            let mut broken = false;
            for _ in 0..(next() % 12) {
                let n = usize::try_from(next() % 20).unwrap();
                match s.next(data(n)) {
                    Ok(Some(c)) => passed += u64::try_from(c.len()).unwrap(),
                    Ok(None) => unreachable!("a data frame never ends the stream"),
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
                assert!(passed <= size);
            }
            if !broken {
                assert_eq!(s.next(None).is_ok(), passed == size);
            }
        }
    }
}
