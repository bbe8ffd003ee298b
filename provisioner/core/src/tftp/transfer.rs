//! The server side of one TFTP read transfer as a pure state machine: option
//! negotiation (blksize, timeout, tsize, windowsize), windowed sending, ACK
//! handling with block-number rollover, retransmission with a bounded retry
//! count, and client aborts.
//!
//! Invariants:
//! - No I/O and no clock: the edge feeds packets and timer expiries in and
//!   performs the returned [`Step`]s (reading file bytes for the blocks).
//! - A duplicate or stale ACK never triggers a retransmission (no Sorcerer's
//!   Apprentice); only a timer expiry does.
//! - After `max_retries` expiries without progress the transfer fails; after a
//!   client ERROR it ends at once (the PXE tsize-probe pattern).

use std::time::Duration;

use super::codec::{AckedOptions, DEFAULT_BLKSIZE, ErrorCode, RequestOptions};

/// Server-side limits and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest block size granted (the path MTU matters: 1468 fits 1500).
    pub max_blksize: u16,
    /// Largest window granted (RFC 7440).
    pub max_windowsize: u16,
    /// Retransmission timeout when the client does not ask for one.
    pub default_timeout: Duration,
    /// Timer expiries without progress before giving up.
    pub max_retries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_blksize: 65464,
            max_windowsize: 64,
            default_timeout: Duration::from_secs(1),
            max_retries: 5,
        }
    }
}

/// What the edge must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send an OACK with these options.
    SendOack(AckedOptions),
    /// Send DATA for the absolute blocks `first..=last` (1-based; the wire
    /// number is `block as u16`, rolling over to 0 after 65535).
    SendBlocks { first: u64, last: u64 },
    /// Send this ERROR to the client, then forget the transfer.
    SendError(ErrorCode, String),
    /// The client acknowledged the last block.
    Done,
    /// The client ended the transfer with an ERROR (e.g. after a tsize probe).
    Aborted { code: ErrorCode, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// OACK sent; waiting for ACK 0.
    AwaitOptionAck,
    Sending,
    Finished,
}

/// One read transfer.
#[derive(Debug, Clone)]
pub struct ReadTransfer {
    size: u64,
    blksize: u16,
    windowsize: u16,
    timeout: Duration,
    total_blocks: u64,
    /// Blocks `1..=acked` are acknowledged.
    acked: u64,
    oack: Option<AckedOptions>,
    phase: Phase,
    retries: u32,
    max_retries: u32,
}

impl ReadTransfer {
    /// Negotiates the options of a read request for a file of `size` bytes and
    /// returns the transfer with its first step (an OACK, or the first window).
    pub fn start(request: &RequestOptions, size: u64, limits: Limits) -> (ReadTransfer, Step) {
        let mut oack = AckedOptions::default();
        let blksize = match request.blksize {
            Some(asked) => {
                let granted = asked.min(limits.max_blksize);
                oack.blksize = Some(granted);
                granted
            }
            None => DEFAULT_BLKSIZE,
        };
        let windowsize = match request.windowsize {
            Some(asked) => {
                let granted = asked.min(limits.max_windowsize).max(1);
                oack.windowsize = Some(granted);
                granted
            }
            None => 1,
        };
        let timeout = match request.timeout {
            Some(secs) => {
                oack.timeout = Some(secs);
                Duration::from_secs(u64::from(secs))
            }
            None => limits.default_timeout,
        };
        if request.tsize.is_some() {
            oack.tsize = Some(size);
        }
        let total_blocks = size / u64::from(blksize) + 1;
        let mut transfer = ReadTransfer {
            size,
            blksize,
            windowsize,
            timeout,
            total_blocks,
            acked: 0,
            oack: None,
            phase: Phase::Sending,
            retries: 0,
            max_retries: limits.max_retries,
        };
        if oack.is_empty() {
            let step = transfer.window();
            (transfer, step)
        } else {
            transfer.phase = Phase::AwaitOptionAck;
            transfer.oack = Some(oack.clone());
            (transfer, Step::SendOack(oack))
        }
    }

    /// The negotiated block size.
    pub fn blksize(&self) -> u16 {
        self.blksize
    }

    /// How long the edge waits for an ACK before calling [`Self::on_timeout`].
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Byte range `(offset, len)` of absolute block `block` (1-based).
    pub fn block_range(&self, block: u64) -> (u64, usize) {
        let offset = (block - 1) * u64::from(self.blksize);
        let len = self
            .size
            .saturating_sub(offset)
            .min(u64::from(self.blksize));
        (offset, len as usize)
    }

    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    fn window(&self) -> Step {
        let first = self.acked + 1;
        let last = (self.acked + u64::from(self.windowsize)).min(self.total_blocks);
        Step::SendBlocks { first, last }
    }

    /// An ACK arrived. Returns the next step, or `None` when the ACK is
    /// stale or a duplicate (the retransmission timer handles loss).
    pub fn on_ack(&mut self, wire_block: u16) -> Option<Step> {
        match self.phase {
            Phase::Finished => None,
            Phase::AwaitOptionAck => {
                if wire_block != 0 {
                    return None;
                }
                self.phase = Phase::Sending;
                self.retries = 0;
                Some(self.window())
            }
            Phase::Sending => {
                // The absolute block this ACK names: the one in the current
                // window whose wire number matches.
                let highest_sent = (self.acked + u64::from(self.windowsize)).min(self.total_blocks);
                let block = (self.acked + 1..=highest_sent).find(|n| *n as u16 == wire_block)?;
                self.acked = block;
                self.retries = 0;
                if self.acked == self.total_blocks {
                    self.phase = Phase::Finished;
                    return Some(Step::Done);
                }
                Some(self.window())
            }
        }
    }

    /// The client sent an ERROR: the transfer ends at once.
    pub fn on_error(&mut self, code: ErrorCode, message: String) -> Step {
        self.phase = Phase::Finished;
        Step::Aborted { code, message }
    }

    /// The ACK timer expired: retransmit what is unacknowledged, or give up.
    pub fn on_timeout(&mut self) -> Step {
        if self.phase == Phase::Finished {
            return Step::Done;
        }
        self.retries += 1;
        if self.retries > self.max_retries {
            self.phase = Phase::Finished;
            return Step::SendError(
                ErrorCode::NotDefined,
                format!(
                    "no acknowledgement after {} retries; giving up",
                    self.max_retries
                ),
            );
        }
        match self.phase {
            Phase::AwaitOptionAck => {
                Step::SendOack(self.oack.clone().expect("an OACK was sent in this phase"))
            }
            _ => self.window(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits {
            max_blksize: 1468,
            max_windowsize: 16,
            default_timeout: Duration::from_secs(1),
            max_retries: 3,
        }
    }

    #[test]
    fn plain_rfc1350_transfer_sends_one_block_at_a_time() {
        let (mut t, step) = ReadTransfer::start(&RequestOptions::default(), 1024, limits());
        assert_eq!(step, Step::SendBlocks { first: 1, last: 1 });
        assert_eq!(t.on_ack(1), Some(Step::SendBlocks { first: 2, last: 2 }));
        // 1024 is a multiple of 512: a final empty block ends the transfer.
        assert_eq!(t.on_ack(2), Some(Step::SendBlocks { first: 3, last: 3 }));
        assert_eq!(t.block_range(3), (1024, 0));
        assert_eq!(t.on_ack(3), Some(Step::Done));
        assert!(t.is_finished());
    }

    #[test]
    fn options_are_acknowledged_and_clamped() {
        let request = RequestOptions {
            blksize: Some(9000),
            timeout: Some(3),
            tsize: Some(0),
            windowsize: Some(64),
        };
        let (mut t, step) = ReadTransfer::start(&request, 10_000, limits());
        assert_eq!(
            step,
            Step::SendOack(AckedOptions {
                blksize: Some(1468),
                timeout: Some(3),
                tsize: Some(10_000),
                windowsize: Some(16)
            })
        );
        assert_eq!(t.timeout(), Duration::from_secs(3));
        // Only ACK 0 starts the data.
        assert_eq!(t.on_ack(5), None);
        assert_eq!(t.on_ack(0), Some(Step::SendBlocks { first: 1, last: 7 }));
    }

    #[test]
    fn tsize_probe_then_error_aborts_at_once() {
        let request = RequestOptions {
            tsize: Some(0),
            ..RequestOptions::default()
        };
        let (mut t, step) = ReadTransfer::start(&request, 123_456, limits());
        assert!(matches!(
            step,
            Step::SendOack(AckedOptions {
                tsize: Some(123_456),
                ..
            })
        ));
        let end = t.on_error(ErrorCode::OptionsRefused, "tsize only".into());
        assert_eq!(
            end,
            Step::Aborted {
                code: ErrorCode::OptionsRefused,
                message: "tsize only".into()
            }
        );
        assert!(t.is_finished());
        assert_eq!(t.on_ack(0), None);
    }

    #[test]
    fn a_partial_window_ack_resends_from_the_gap_and_duplicates_are_ignored() {
        let request = RequestOptions {
            windowsize: Some(4),
            ..RequestOptions::default()
        };
        let (mut t, _) = ReadTransfer::start(&request, 512 * 10, limits());
        assert_eq!(t.on_ack(0), Some(Step::SendBlocks { first: 1, last: 4 }));
        // Block 3 was lost: the client acknowledges 2.
        assert_eq!(t.on_ack(2), Some(Step::SendBlocks { first: 3, last: 6 }));
        // The same ACK again changes nothing.
        assert_eq!(t.on_ack(2), None);
        assert_eq!(t.on_ack(6), Some(Step::SendBlocks { first: 7, last: 10 }));
    }

    #[test]
    fn retries_are_bounded() {
        let (mut t, _) = ReadTransfer::start(&RequestOptions::default(), 100, limits());
        for _ in 0..3 {
            assert_eq!(t.on_timeout(), Step::SendBlocks { first: 1, last: 1 });
        }
        assert!(matches!(
            t.on_timeout(),
            Step::SendError(ErrorCode::NotDefined, _)
        ));
        assert!(t.is_finished());
    }

    #[test]
    fn block_numbers_roll_over_to_zero() {
        let request = RequestOptions {
            blksize: Some(8),
            windowsize: Some(16),
            ..RequestOptions::default()
        };
        let size = 8 * 70_000;
        let (mut t, _) = ReadTransfer::start(&request, size, limits());
        t.on_ack(0);
        let mut acked = 0u64;
        while acked < 65_530 {
            acked += 16;
            t.on_ack(acked as u16);
        }
        // Absolute block 65536 travels as 0, 65537 as 1.
        let mut step = None;
        while acked < 65_537 {
            acked += 1;
            step = t.on_ack(acked as u16);
        }
        assert_eq!(
            step,
            Some(Step::SendBlocks {
                first: 65_538,
                last: 65_553
            })
        );
    }

    proptest! {
        /// A whole transfer over a lossy link: the client reassembles exactly
        /// the file, and the server finishes, whatever is lost (as long as the
        /// retry budget is not exhausted).
        #[test]
        fn lossy_transfers_deliver_the_file(
            size in 0u64..20_000,
            blksize in prop::option::of(8u16..2000),
            windowsize in prop::option::of(1u16..10),
            seed in any::<u64>(),
        ) {
            let file: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let request = RequestOptions { blksize, windowsize, tsize: Some(0), timeout: None };
            let limits = Limits { max_retries: 1000, ..limits() };
            let (mut t, mut step) = ReadTransfer::start(&request, size, limits);
            let mut received: Vec<u8> = vec![];
            let mut expected_block: u64 = 1;
            // A small deterministic generator: ~30 % of packets lost.
            let mut state = seed | 1;
            let mut lose = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % 100 < 30
            };
            for _ in 0..100_000 {
                let reply = match step.clone() {
                    Step::SendOack(_) => if lose() { None } else { Some(0u16) },
                    Step::SendBlocks { first, last } => {
                        let mut ack = None;
                        for block in first..=last {
                            if lose() { break; } // a gap: the client keeps the rest out
                            if block == expected_block {
                                let (offset, len) = t.block_range(block);
                                received.extend_from_slice(&file[offset as usize..offset as usize + len]);
                                expected_block += 1;
                            }
                            if block < expected_block {
                                ack = Some((expected_block - 1) as u16);
                            }
                        }
                        // The client's ACK may be lost too.
                        ack.filter(|_| !lose())
                    }
                    Step::Done => break,
                    other => { prop_assert!(false, "unexpected step {:?}", other); unreachable!() }
                };
                step = match reply.and_then(|block| t.on_ack(block)) {
                    Some(next) => next,
                    None => t.on_timeout(),
                };
            }
            prop_assert!(t.is_finished());
            prop_assert_eq!(received, file);
        }
    }
}
