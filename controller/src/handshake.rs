//! Handshake admission: how many new connections the controller sets up at
//! once, so a reconnect storm (every agent of a fleet coming back after a
//! controller restart) is served at the rate the controller can sustain
//! instead of all at once, more slowly than the agents' timeouts, each
//! timeout a retry that adds to the storm.
//!
//! A connection is "setting up" from its first packet until its session is
//! established (TLS handshake, Hello, Welcome and the session's first store
//! write) or it turns out to be something else (enrolment, operator; those
//! have their own limits). At most [`HandshakeLimits::concurrent`] set up at
//! once; the next [`HandshakeLimits::queued`] wait for a slot, each at most
//! [`HandshakeLimits::max_wait`]; past that, or with the queue full, the
//! connection is refused at once (QUIC `CONNECTION_REFUSED`, one packet and
//! no state kept), which the agent treats as any failed attempt: it backs
//! off with jitter (`agent/src/backoff.rs`) and comes back later, spread
//! over its back-off window.
//!
//! Before a connection is queued, its source address must have been
//! validated by a QUIC Retry (a stateless round trip), so spoofed packets
//! cannot fill the queue.
//!
//! The decisions here take counts and `now`; `server.rs` drives them.

use std::time::Duration;

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// A slot is free: set it up now.
    Start,
    /// Wait for a slot (at most `max_wait`).
    Queue,
    /// Send a QUIC Retry first (the address is not validated yet and the
    /// connection would have to wait).
    Validate,
    /// Refuse it; the peer backs off and retries.
    Refuse,
}

/// Bounds on connections being set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Set up at once.
    pub concurrent: usize,
    /// Waiting for a slot at most.
    pub queued: usize,
    /// How long a connection may wait for a slot.
    pub max_wait: Duration,
}

/// Setups in flight per core. Once the endpoint reads its socket on a
/// thread of its own (`outpost_proto::endpoint_thread`), what bounds a
/// storm is CPU: a setup (handshake, Hello, Welcome, first write) costs the
/// controller about 1.6 ms of CPU, so 1,024 in flight per core queue about
/// 1.6 s of work, far inside the agent's 10 s answer timeout. Tighter is
/// worse: a connection past the limit goes through a QUIC Retry first, and
/// about one Retry in a hundred to a thousand was followed by 15 s of
/// silence and the agent's back-off. With 10,000 agents reconnecting to
/// 2 cores, 512 per core made 6,768 Retries and 14 such timeouts, 1,024
/// per core 3,178 and 2 (docs/BENCHMARKS.md, reconnect storm). At 128 per
/// core, before the endpoint had its thread, the same storm met 10,564
/// refusals.
const PER_CORE: usize = 1024;

/// Connections waiting for a slot, per slot: enough to hold a whole
/// fleet's storm (20,480 on 2 cores) rather than refuse most of it. With
/// four per slot and a 2 s wait, 10,000 agents met 7,563 refusals and were
/// back 7 s later than with ten and 5 s, which refused none. A waiting
/// connection holds its first packet and a small task, about 1.5 KiB.
const QUEUED_PER_SLOT: usize = 10;

/// How long a connection may wait for a slot. The wait comes before the
/// handshake, inside the agent's 15 s idle timeout, and its 10 s answer
/// timeout starts only once the handshake is done, so a connection that
/// waited still has 10 s for its handshake; past the wait it is refused
/// (and the agent backs off) rather than left to time out.
const MAX_WAIT: Duration = Duration::from_secs(5);

impl HandshakeLimits {
    /// Limits for a machine with `cores` cores.
    pub fn for_cores(cores: usize) -> HandshakeLimits {
        HandshakeLimits::with_concurrent(PER_CORE.saturating_mul(cores.max(1)))
    }

    /// `concurrent` setups at once (at least 1), ten times
    /// as many waiting.
    pub fn with_concurrent(concurrent: usize) -> HandshakeLimits {
        let concurrent = concurrent.max(1);
        HandshakeLimits {
            concurrent,
            queued: concurrent.saturating_mul(QUEUED_PER_SLOT),
            max_wait: MAX_WAIT,
        }
    }

    /// What to do with a new connection, with `in_progress` setups running
    /// and `queued` waiting; `validated` says whether its source address
    /// was proven (by a Retry).
    pub fn decide(&self, in_progress: usize, queued: usize, validated: bool) -> Admit {
        if in_progress < self.concurrent && queued == 0 {
            Admit::Start
        } else if queued >= self.queued {
            Admit::Refuse
        } else if !validated {
            Admit::Validate
        } else {
            Admit::Queue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Admit::*;

    const L: HandshakeLimits = HandshakeLimits {
        concurrent: 2,
        queued: 3,
        max_wait: Duration::from_secs(2),
    };

    #[test]
    fn decisions() {
        // (in progress, queued, validated) -> decision
        let table = [
            ((0, 0, false), Start),
            ((1, 0, false), Start),
            ((2, 0, false), Validate),
            ((2, 0, true), Queue),
            // Nobody jumps the queue while others wait for a slot.
            ((1, 1, true), Queue),
            ((1, 1, false), Validate),
            ((2, 2, true), Queue),
            ((2, 3, true), Refuse),
            ((2, 3, false), Refuse),
            ((9, 9, true), Refuse),
        ];
        for ((running, queued, validated), want) in table {
            assert_eq!(
                L.decide(running, queued, validated),
                want,
                "{running} running, {queued} queued, validated {validated}"
            );
        }
    }

    #[test]
    fn sized_from_cores() {
        let l = HandshakeLimits::for_cores(2);
        assert_eq!((l.concurrent, l.queued), (2048, 20_480));
        assert_eq!(HandshakeLimits::for_cores(0).concurrent, PER_CORE);
    }

    /// A storm of `n` arrivals against a controller that finishes one
    /// setup per arrival: everyone is either started, queued or refused,
    /// and the bounds hold at every step.
    #[test]
    fn a_storm_stays_within_bounds() {
        let (mut running, mut queued, mut refused, mut retried) = (0usize, 0usize, 0, 0);
        for i in 0..10_000 {
            let validated = i % 2 == 1; // every other arrival is a Retry's echo
            match L.decide(running, queued, validated) {
                Start => running += 1,
                Queue => queued += 1,
                Validate => retried += 1,
                Refuse => refused += 1,
            }
            assert!(running <= L.concurrent && queued <= L.queued);
            if i % 3 == 0 && running > 0 {
                // A setup finished: the oldest waiting one takes its slot.
                running -= 1;
                if queued > 0 {
                    queued -= 1;
                    running += 1;
                }
            }
        }
        assert!(refused > 0 && retried > 0);
    }
}
