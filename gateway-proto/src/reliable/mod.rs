//! The control-channel reliability layer for one key_id (protocol doc §4.1–4.2): cuts the
//! TLS output into msg-id numbered packets, retransmits them until ACKed, and joins received
//! payloads back into an in-order byte stream while queueing the ACKs to send.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::packet::{Acks, ControlRepr, KeyId, MAX_ACKS, MAX_PIGGYBACK_ACKS, Opcode, SessionId};

mod receive;
mod send;

/// Most packets in flight without an ACK: new ids stay below the lowest unACKed id + 6.
pub const SEND_WINDOW: u32 = 6;
/// Receive window: msg-ids in `[next_expected, next_expected + 12)` are accepted.
pub const RECV_WINDOW: u32 = 12;
/// ACKs for this many later msg-ids make an unACKed packet due for retransmission at once.
pub const EARLY_RETRANSMIT_ACKS: u8 = 3;
/// OpenVPN's default `tls-mtu`: the whole control datagram, IP and UDP headers included.
pub const DEFAULT_TLS_MTU: usize = 1250;
/// IPv4 (20) + UDP (8) header bytes.
pub const IPV4_UDP_OVERHEAD: usize = 28;
/// IPv6 (40) + UDP (8) header bytes.
pub const IPV6_UDP_OVERHEAD: usize = 48;
/// Largest wrap overhead of a stock setup: tls-auth with HMAC-SHA512 (replay stamp 8 + tag 64).
pub const MAX_WRAP_OVERHEAD: usize = 72;
/// Unwrapped control header with [`MAX_PIGGYBACK_ACKS`] ACKs: op|kid 1, sid 8, n 1, 4 × 4 ids,
/// peer sid 8, msg-id 4.
pub const MAX_CONTROL_HEADER_LEN: usize = 1 + 8 + 1 + 4 * MAX_PIGGYBACK_ACKS + 8 + 4;
/// Payload budget of [`ReliableConfig::default`]: `tls-mtu` 1250 over IPv6 with the largest
/// wrap overhead, so it fits every stock path.
pub const DEFAULT_PAYLOAD_BUDGET: usize =
    DEFAULT_TLS_MTU - IPV6_UDP_OVERHEAD - MAX_WRAP_OVERHEAD - MAX_CONTROL_HEADER_LEN;
/// First retransmission timeout (`tls-timeout`).
pub const DEFAULT_INITIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Cap on the doubling retransmission timeout.
pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(32);
/// Largest accepted timeout cap (keeps `now + timeout` far from `Instant` overflow).
pub const MAX_TIMEOUT_LIMIT: Duration = Duration::from_secs(3600);
/// Default cap on queued, not yet packetised outgoing bytes.
pub const DEFAULT_MAX_SEND_BUFFER: usize = 64 * 1024;
/// Default cap on received bytes held (readable plus out-of-order).
pub const DEFAULT_MAX_RECV_BUFFER: usize = 64 * 1024;
/// Most ACKs waiting to be sent; a new packet that would need one more is dropped unACKed.
pub const MAX_PENDING_ACKS: usize = 2 * RECV_WINDOW as usize;
/// Recently sent ACK ids re-sent in later packets (2.6 `copy_acks_to_mru`).
pub const RECENT_ACKS: usize = MAX_ACKS;
/// Largest payload a reset may carry (early-negotiation TLVs).
pub const MAX_RESET_PAYLOAD: usize = 256;

/// Invalid reliability-layer settings (our configuration, not the peer's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReliableConfigError {
    /// `tls-mtu` leaves no room for payload after all headers.
    #[error("tls-mtu {tls_mtu} leaves no control payload: headers and wrapping take {overhead}")]
    MtuTooSmall {
        /// The `tls-mtu` given.
        tls_mtu: usize,
        /// Transport, wrap and control header bytes.
        overhead: usize,
    },
    /// A payload budget of zero.
    #[error("control payload budget is 0: expected at least 1 byte")]
    ZeroPayloadBudget,
    /// A zero initial retransmission timeout.
    #[error("initial retransmit timeout is 0: expected a positive duration")]
    ZeroTimeout,
    /// The timeout cap is below the initial timeout.
    #[error("retransmit timeout cap {max:?} is below the initial timeout {initial:?}")]
    MaxTimeoutBelowInitial {
        /// The initial timeout.
        initial: Duration,
        /// The cap.
        max: Duration,
    },
    /// The timeout cap exceeds [`MAX_TIMEOUT_LIMIT`].
    #[error("retransmit timeout cap {found:?} too large: expected at most {MAX_TIMEOUT_LIMIT:?}")]
    TimeoutTooLarge {
        /// The cap given.
        found: Duration,
    },
    /// A buffer cap smaller than one packet's payload.
    #[error("{which} buffer cap {found} is below the payload budget {min}")]
    BufferTooSmall {
        /// `send` or `receive`.
        which: &'static str,
        /// The cap given.
        found: usize,
        /// The payload budget.
        min: usize,
    },
}

/// A received control packet the layer dropped; all are the peer's doing. Unless stated,
/// the packet's ACKs were applied before the drop and nothing was ACKed for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    /// Not a reliable control opcode (data, or a key-method 1 reset). ACKs not applied.
    #[error("unexpected opcode {found} on the control channel")]
    UnexpectedOpcode {
        /// The opcode found.
        found: Opcode,
    },
    /// A packet other than P_ACK_V1 without a msg-id. ACKs not applied.
    #[error("{opcode} without a message id")]
    MissingMessageId {
        /// The opcode found.
        opcode: Opcode,
    },
    /// A reset whose msg-id is not 0. ACKs not applied.
    #[error("{opcode} with message id {message_id}: expected 0")]
    ResetWithNonZeroId {
        /// The reset opcode.
        opcode: Opcode,
        /// The msg-id found.
        message_id: u32,
    },
    /// Msg-id 0 on a packet that is not a reset. ACKs not applied.
    #[error("message id 0 on {opcode}: expected a reset opcode")]
    ExpectedReset {
        /// The opcode found.
        opcode: Opcode,
    },
    /// The msg-id lies beyond the receive window.
    #[error("message id {message_id} beyond the receive window starting at {next_expected}")]
    BeyondWindow {
        /// The msg-id found.
        message_id: u32,
        /// The next msg-id we expect.
        next_expected: u64,
    },
    /// Holding the payload would exceed the receive buffer cap (the reader is not draining).
    #[error("receive buffer full: {needed} bytes needed, {available} available")]
    ReceiveBufferFull {
        /// The payload length.
        needed: usize,
        /// Bytes left under the cap.
        available: usize,
    },
    /// [`MAX_PENDING_ACKS`] ACKs wait to be sent (the caller is not polling).
    #[error("ACK queue full: {MAX_PENDING_ACKS} ACKs wait to be sent")]
    AckQueueFull,
}

/// A local misuse of the send side (our fault, not the peer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The bytes do not fit under the send buffer cap; nothing was queued.
    #[error("send buffer full: {len} bytes offered, {available} available")]
    SendBufferFull {
        /// Bytes offered.
        len: usize,
        /// Bytes left under the cap.
        available: usize,
    },
    /// The opcode is not a reset we may send.
    #[error("{found} is not a reset opcode")]
    NotAReset {
        /// The opcode given.
        found: Opcode,
    },
    /// Msg-id 0 is already taken (a reset was queued or sent, or ids started later).
    #[error("a reset needs message id 0, which is already used")]
    ResetNotFirst,
    /// The reset payload exceeds [`MAX_RESET_PAYLOAD`] or the payload budget.
    #[error("reset payload of {len} bytes: expected at most {max}")]
    ResetPayloadTooLarge {
        /// Bytes given.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Payload bytes per control packet for a `tls-mtu` (the whole datagram) after the transport
/// headers ([`IPV4_UDP_OVERHEAD`], [`IPV6_UDP_OVERHEAD`]; over TCP add the TCP header and the
/// 2-byte length), the wrap overhead (`Wrap::overhead`, plus the WKc for packets carrying it)
/// and [`MAX_CONTROL_HEADER_LEN`] (the header with the most ACKs we piggy-back).
/// Example: 1250 − 28 (IPv4+UDP) − 40 (tls-crypt) − 38 = 1144.
pub fn payload_budget(
    tls_mtu: usize,
    transport_overhead: usize,
    wrap_overhead: usize,
) -> Result<usize, ReliableConfigError> {
    let overhead = transport_overhead
        .saturating_add(wrap_overhead)
        .saturating_add(MAX_CONTROL_HEADER_LEN);
    match tls_mtu.checked_sub(overhead) {
        Some(budget) if budget > 0 => Ok(budget),
        _ => Err(ReliableConfigError::MtuTooSmall { tls_mtu, overhead }),
    }
}

/// Settings of a [`Reliable`]; checked by [`Reliable::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReliableConfig {
    /// Most payload bytes per packet; compute it with [`payload_budget`].
    pub payload_budget: usize,
    /// Timeout before the first retransmission; doubled after each one.
    pub initial_timeout: Duration,
    /// Cap on the doubled timeout.
    pub max_timeout: Duration,
    /// Cap on queued outgoing bytes not yet cut into packets.
    pub max_send_buffer: usize,
    /// Cap on received bytes held: readable stream plus out-of-order payloads.
    pub max_recv_buffer: usize,
}

impl Default for ReliableConfig {
    fn default() -> Self {
        Self {
            payload_budget: DEFAULT_PAYLOAD_BUDGET,
            initial_timeout: DEFAULT_INITIAL_TIMEOUT,
            max_timeout: DEFAULT_MAX_TIMEOUT,
            max_send_buffer: DEFAULT_MAX_SEND_BUFFER,
            max_recv_buffer: DEFAULT_MAX_RECV_BUFFER,
        }
    }
}

impl ReliableConfig {
    fn validate(&self) -> Result<(), ReliableConfigError> {
        if self.payload_budget == 0 {
            return Err(ReliableConfigError::ZeroPayloadBudget);
        }
        if self.initial_timeout.is_zero() {
            return Err(ReliableConfigError::ZeroTimeout);
        }
        if self.max_timeout < self.initial_timeout {
            return Err(ReliableConfigError::MaxTimeoutBelowInitial {
                initial: self.initial_timeout,
                max: self.max_timeout,
            });
        }
        if self.max_timeout > MAX_TIMEOUT_LIMIT {
            return Err(ReliableConfigError::TimeoutTooLarge {
                found: self.max_timeout,
            });
        }
        for (which, found) in [
            ("send", self.max_send_buffer),
            ("receive", self.max_recv_buffer),
        ] {
            if found < self.payload_budget {
                return Err(ReliableConfigError::BufferTooSmall {
                    which,
                    found,
                    min: self.payload_budget,
                });
            }
        }
        Ok(())
    }
}

/// Why a packet is being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransmitKind {
    /// First transmission of a msg-id.
    New,
    /// Retransmission of a msg-id (timeout or early rule).
    Retransmit,
    /// Standalone P_ACK_V1.
    Ack,
}

/// A packet to send now: the fields of a [`ControlRepr`] that the reliability layer owns.
/// Wrap each transmission afresh (new replay-id, §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Why it is sent.
    pub kind: TransmitKind,
    /// P_ACK_V1, P_CONTROL_V1 or the reset opcode given to [`Reliable::queue_reset`].
    pub opcode: Opcode,
    /// The msg-id; `None` for P_ACK_V1.
    pub message_id: Option<u32>,
    /// ACKs to carry: ≤ 4 on resets and P_CONTROL_V1, 1..=8 on P_ACK_V1.
    pub acks: Acks,
    /// The payload (TLS bytes, reset TLVs, or empty).
    pub payload: &'a [u8],
}

impl<'a> Transmit<'a> {
    /// The packet with the session's ids; `remote_session_id` goes on the wire only with ACKs.
    pub fn to_repr(
        &self,
        key_id: KeyId,
        session_id: SessionId,
        remote_session_id: SessionId,
    ) -> ControlRepr<'a> {
        ControlRepr {
            opcode: self.opcode,
            key_id,
            session_id,
            acks: self.acks,
            remote_session_id: (!self.acks.is_empty()).then_some(remote_session_id),
            message_id: self.message_id,
            payload: self.payload,
        }
    }
}

/// What a received packet's msg-id part did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageOutcome {
    /// P_ACK_V1: no msg-id.
    AckOnly,
    /// A new msg-id, now buffered and ACK-queued; its payload is readable once every earlier
    /// id arrived (a reset's payload never enters the stream).
    Accepted {
        /// The msg-id.
        message_id: u32,
    },
    /// An id already received: ACK queued again, payload discarded.
    Duplicate {
        /// The msg-id.
        message_id: u32,
    },
}

/// Result of [`Reliable::on_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// How many of our unACKed packets its ACKs released.
    pub newly_acked: usize,
    /// What happened to its msg-id.
    pub message: MessageOutcome,
}

/// A sent packet waiting for its ACK.
#[derive(Debug)]
struct InFlight {
    message_id: u32,
    opcode: Opcode,
    payload: Vec<u8>,
    next_try: Instant,
    timeout: Duration,
    later_acks: u8,
}

/// Reliability state of one key_id's control stream. Sans-IO: feed received packets with
/// [`on_packet`](Self::on_packet) and outgoing TLS bytes with [`queue`](Self::queue); after
/// either, call [`poll_transmit`](Self::poll_transmit) until it returns `None`, then sleep
/// until [`poll_timeout`](Self::poll_timeout).
///
/// ACKs go out at the next `poll_transmit`: piggy-backed on a packet if one is due, else as a
/// standalone P_ACK_V1. Feed received TLS bytes to TLS and queue its output before polling so
/// that the ACKs ride on the reply. Session ids are the caller's: check the peer sid of an ACK
/// block and the sender sid before calling `on_packet`.
#[derive(Debug)]
pub struct Reliable {
    config: ReliableConfig,
    pending: VecDeque<u8>,
    pending_reset: Option<(Opcode, Vec<u8>)>,
    in_flight: Vec<InFlight>,
    next_tx: u64,
    next_rx: u64,
    out_of_order: BTreeMap<u32, Vec<u8>>,
    out_of_order_bytes: usize,
    readable: VecDeque<u8>,
    fresh_acks: VecDeque<u32>,
    recent_acks: VecDeque<u32>,
}

impl Reliable {
    /// Frees the buffers that are empty now (the handshake's flights are over): an idle
    /// session keeps only what it holds. They grow again when needed.
    pub fn release_spare_capacity(&mut self) {
        fn release<T>(queue: &mut VecDeque<T>) {
            if queue.is_empty() && queue.capacity() > 0 {
                *queue = VecDeque::new();
            }
        }
        release(&mut self.pending);
        release(&mut self.readable);
        release(&mut self.fresh_acks);
        release(&mut self.recent_acks);
        if self.in_flight.is_empty() && self.in_flight.capacity() > 0 {
            self.in_flight = Vec::new();
        }
    }
}

fn is_reset(opcode: Opcode) -> bool {
    matches!(
        opcode,
        Opcode::ControlSoftResetV1
            | Opcode::ControlHardResetClientV2
            | Opcode::ControlHardResetServerV2
            | Opcode::ControlHardResetClientV3
    )
}

impl Reliable {
    /// A fresh stream: we send msg-id 0 (a reset, see [`queue_reset`](Self::queue_reset))
    /// first and expect msg-id 0 (the peer's reset) first.
    pub fn new(config: ReliableConfig) -> Result<Self, ReliableConfigError> {
        Self::with_next_ids(config, 0, 0)
    }

    /// A stream whose first ids are already settled, e.g. `(1, 1)` after the stateless
    /// cookie handshake (both resets exchanged and ACKed).
    pub fn with_next_ids(
        config: ReliableConfig,
        next_tx: u32,
        next_rx: u32,
    ) -> Result<Self, ReliableConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            pending: VecDeque::new(),
            pending_reset: None,
            in_flight: Vec::new(),
            next_tx: u64::from(next_tx),
            next_rx: u64::from(next_rx),
            out_of_order: BTreeMap::new(),
            out_of_order_bytes: 0,
            readable: VecDeque::new(),
            fresh_acks: VecDeque::new(),
            recent_acks: VecDeque::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &ReliableConfig {
        &self.config
    }

    /// Received stream bytes waiting for [`read`](Self::read).
    pub fn readable_len(&self) -> usize {
        self.readable.len()
    }

    /// The next msg-id we expect from the peer.
    pub fn next_rx_message_id(&self) -> u64 {
        self.next_rx
    }

    /// The msg-id our next new packet gets.
    pub fn next_tx_message_id(&self) -> u64 {
        self.next_tx
    }

    /// Packets sent and not yet ACKed.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// True when msg-id `id` was sent and is still unACKed.
    pub fn is_in_flight(&self, id: u32) -> bool {
        self.in_flight.iter().any(|p| p.message_id == id)
    }

    /// ACKs waiting to be sent.
    pub fn pending_acks(&self) -> usize {
        self.fresh_acks.len()
    }

    /// True when nothing is queued, in flight or waiting to be ACKed: the stream is quiet.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
            && self.pending.is_empty()
            && self.pending_reset.is_none()
            && self.fresh_acks.is_empty()
    }
}

#[cfg(test)]
mod tests;
