//! Length-prefixed framing.
//!
//! A frame is a 4-byte big-endian payload length followed by the postcard
//! encoding of one [`Message`]. The length is checked against a hard maximum
//! before a single payload byte is buffered, so a peer cannot make us allocate
//! more than [`MAX_FRAME`] per stream.

use crate::Message;

/// Largest payload accepted in one frame (1 MiB). Control messages are a few
/// hundred bytes; the largest legitimate one is a node listing for an operator,
/// which is paginated well below this.
pub const MAX_FRAME: usize = 1 << 20;

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = 4;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announces more than the limit.
    TooLarge { len: usize, max: usize },
    /// The payload is not a valid message.
    Malformed(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max} bytes")
            }
            FrameError::Malformed(why) => write!(f, "malformed frame: {why}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Encodes `msg` as one frame (header and payload).
pub fn encode(msg: &Message) -> Result<Vec<u8>, FrameError> {
    let mut out = postcard::to_extend(msg, vec![0u8; HEADER_LEN])
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = out.len() - HEADER_LEN;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        len,
        max: MAX_FRAME,
    })?;
    out[..HEADER_LEN].copy_from_slice(&prefix.to_be_bytes());
    Ok(out)
}

/// Reads the payload length from a frame header, refusing lengths above `max`.
pub fn payload_len(header: [u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decodes one payload (without its header). Trailing bytes are an error:
/// a frame carries exactly one message.
pub fn decode(payload: &[u8]) -> Result<Message, FrameError> {
    let (msg, rest) = postcard::take_from_bytes::<Message>(payload)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(msg)
}

/// Splits the first complete frame off `buf`. Returns `Ok(None)` when more
/// bytes are needed, and the number of bytes consumed otherwise.
pub fn split(buf: &[u8], max: usize) -> Result<Option<(Message, usize)>, FrameError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(header);
    let len = payload_len(h, max)?;
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    Ok(Some((decode(payload)?, HEADER_LEN + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, ErrorMsg, Heartbeat};

    #[test]
    fn round_trip() {
        let msgs = [
            Message::Heartbeat(Heartbeat { seq: 7 }),
            Message::Error(ErrorMsg {
                code: ErrorCode::Unauthenticated,
                message: "no client certificate".into(),
            }),
        ];
        for m in msgs {
            let bytes = encode(&m).unwrap();
            let (back, used) = split(&bytes, MAX_FRAME).unwrap().unwrap();
            assert_eq!(back, m);
            assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn incomplete_needs_more() {
        let bytes = encode(&Message::Heartbeat(Heartbeat { seq: 1 })).unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(split(&bytes[..cut], MAX_FRAME).unwrap(), None, "cut {cut}");
        }
    }

    #[test]
    fn oversized_refused_before_payload() {
        let header = (u32::try_from(MAX_FRAME).unwrap() + 1).to_be_bytes();
        assert_eq!(
            split(&header, MAX_FRAME),
            Err(FrameError::TooLarge {
                len: MAX_FRAME + 1,
                max: MAX_FRAME
            })
        );
    }

    #[test]
    fn garbage_is_malformed_not_panic() {
        for payload in [&[0xffu8, 0xff, 0xff][..], &[200], &[]] {
            let mut frame = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
            frame.extend_from_slice(payload);
            assert!(matches!(
                split(&frame, MAX_FRAME),
                Err(FrameError::Malformed(_))
            ));
        }
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut bytes = encode(&Message::Heartbeat(Heartbeat { seq: 1 })).unwrap();
        bytes.push(0);
        let len = u32::try_from(bytes.len() - HEADER_LEN).unwrap();
        bytes[..4].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            split(&bytes, MAX_FRAME),
            Err(FrameError::Malformed(_))
        ));
    }

    /// In-process fuzzing of the decoder with a fixed seed: random payloads
    /// and mutations of valid frames must decode or fail, never panic, and
    /// never claim more bytes than they were given.
    #[test]
    fn random_and_mutated_input_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid = encode(&Message::Error(ErrorMsg {
            code: ErrorCode::InvalidRequest,
            message: "x".repeat(40),
        }))
        .unwrap();
        for round in 0..20_000 {
            let mut buf = if round % 2 == 0 {
                let len = usize::try_from(next() % 64).unwrap();
                (0..len)
                    .map(|_| next().to_le_bytes()[0])
                    .collect::<Vec<u8>>()
            } else {
                let mut v = valid.clone();
                let i = usize::try_from(next()).unwrap() % v.len();
                v[i] = next().to_le_bytes()[0];
                v
            };
            if round % 3 == 0 {
                // Keep the header honest so the payload decoder is reached.
                let len = u32::try_from(buf.len().saturating_sub(HEADER_LEN)).unwrap();
                if buf.len() >= HEADER_LEN {
                    buf[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
                }
            }
            if let Ok(Some((_, used))) = split(&buf, MAX_FRAME) {
                assert!(used <= buf.len());
            }
        }
    }
}
