//! The control-channel reliability layer for one key_id (protocol doc §4.1–4.2): cuts the
//! TLS output into msg-id numbered packets, retransmits them until ACKed, and joins received
//! payloads back into an in-order byte stream while queueing the ACKs to send.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::packet::{Acks, ControlRepr, KeyId, MAX_ACKS, MAX_PIGGYBACK_ACKS, Opcode, SessionId};

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

    /// Queues our reset as msg-id 0 with `payload` (empty, or early-negotiation TLVs).
    pub fn queue_reset(&mut self, opcode: Opcode, payload: &[u8]) -> Result<(), SendError> {
        if !is_reset(opcode) {
            return Err(SendError::NotAReset { found: opcode });
        }
        if self.next_tx != 0 || self.pending_reset.is_some() {
            return Err(SendError::ResetNotFirst);
        }
        let max = MAX_RESET_PAYLOAD.min(self.config.payload_budget);
        if payload.len() > max {
            return Err(SendError::ResetPayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        self.pending_reset = Some((opcode, payload.to_vec()));
        Ok(())
    }

    /// Queues outgoing stream bytes (TLS output), all or nothing. They are cut into
    /// P_CONTROL_V1 packets when the send window has room, after our reset.
    pub fn queue(&mut self, data: &[u8]) -> Result<(), SendError> {
        let available = self.send_capacity();
        if data.len() > available {
            return Err(SendError::SendBufferFull {
                len: data.len(),
                available,
            });
        }
        self.pending.extend(data);
        Ok(())
    }

    /// Bytes [`queue`](Self::queue) accepts now.
    pub fn send_capacity(&self) -> usize {
        self.config
            .max_send_buffer
            .saturating_sub(self.pending.len())
    }

    /// Processes an authenticated control packet of this key_id: applies its ACKs, then
    /// ACK-queues and buffers its msg-id (§4.2). On `Err` drop the packet.
    pub fn on_packet(
        &mut self,
        packet: &ControlRepr<'_>,
        now: Instant,
    ) -> Result<Received, ReceiveError> {
        let opcode = packet.opcode;
        let message_id = match opcode {
            Opcode::AckV1 => None,
            Opcode::ControlV1 | Opcode::ControlWkcV1 => match packet.message_id {
                None => return Err(ReceiveError::MissingMessageId { opcode }),
                Some(0) => return Err(ReceiveError::ExpectedReset { opcode }),
                Some(id) => Some(id),
            },
            _ if is_reset(opcode) => match packet.message_id {
                None => return Err(ReceiveError::MissingMessageId { opcode }),
                Some(0) => Some(0),
                Some(message_id) => {
                    return Err(ReceiveError::ResetWithNonZeroId { opcode, message_id });
                }
            },
            _ => return Err(ReceiveError::UnexpectedOpcode { found: opcode }),
        };
        let newly_acked = self.apply_acks(packet.acks.as_slice(), now);
        let message = match message_id {
            None => MessageOutcome::AckOnly,
            Some(id) => {
                let payload = if is_reset(opcode) {
                    &[][..]
                } else {
                    packet.payload
                };
                self.receive_message(id, payload)?
            }
        };
        Ok(Received {
            newly_acked,
            message,
        })
    }

    fn apply_acks(&mut self, ids: &[u32], now: Instant) -> usize {
        let mut released = 0;
        for &id in ids {
            let Some(pos) = self.in_flight.iter().position(|p| p.message_id == id) else {
                continue;
            };
            self.in_flight.remove(pos);
            released += 1;
            for earlier in self.in_flight.iter_mut().filter(|p| p.message_id < id) {
                earlier.later_acks = earlier.later_acks.saturating_add(1);
                if earlier.later_acks >= EARLY_RETRANSMIT_ACKS {
                    earlier.later_acks = 0;
                    earlier.next_try = earlier.next_try.min(now);
                }
            }
        }
        released
    }

    fn receive_message(&mut self, id: u32, payload: &[u8]) -> Result<MessageOutcome, ReceiveError> {
        let id64 = u64::from(id);
        if id64 < self.next_rx || self.out_of_order.contains_key(&id) {
            self.queue_ack(id);
            return Ok(MessageOutcome::Duplicate { message_id: id });
        }
        if id64 - self.next_rx >= u64::from(RECV_WINDOW) {
            return Err(ReceiveError::BeyondWindow {
                message_id: id,
                next_expected: self.next_rx,
            });
        }
        let held = self.readable.len() + self.out_of_order_bytes;
        let available = self.config.max_recv_buffer.saturating_sub(held);
        if payload.len() > available {
            return Err(ReceiveError::ReceiveBufferFull {
                needed: payload.len(),
                available,
            });
        }
        if !self.queue_ack(id) {
            return Err(ReceiveError::AckQueueFull);
        }
        self.out_of_order.insert(id, payload.to_vec());
        self.out_of_order_bytes += payload.len();
        while let Some(next) = u32::try_from(self.next_rx)
            .ok()
            .and_then(|next| self.out_of_order.remove(&next))
        {
            self.out_of_order_bytes -= next.len();
            self.readable.extend(next);
            self.next_rx += 1;
        }
        Ok(MessageOutcome::Accepted { message_id: id })
    }

    /// Adds `id` to the ACKs to send; false when the queue is full.
    fn queue_ack(&mut self, id: u32) -> bool {
        if self.fresh_acks.contains(&id) {
            return true;
        }
        if self.fresh_acks.len() >= MAX_PENDING_ACKS {
            return false;
        }
        self.fresh_acks.push_back(id);
        true
    }

    /// Takes up to `max` pending ACKs, moves them to the front of the recently-ACKed list and
    /// returns that list's first `max` ids (fresh ones first, then recent re-sends).
    fn take_acks(&mut self, max: usize) -> Acks {
        let count = max.min(self.fresh_acks.len());
        let fresh: Vec<u32> = self.fresh_acks.drain(..count).collect();
        for &id in fresh.iter().rev() {
            self.recent_acks.retain(|&r| r != id);
            self.recent_acks.push_front(id);
        }
        self.recent_acks.truncate(RECENT_ACKS);
        let mut acks = Acks::new();
        for &id in self.recent_acks.iter().take(max.min(MAX_ACKS)) {
            // At most MAX_ACKS ids are taken, so push cannot fail.
            let _ = acks.push(id);
        }
        acks
    }

    /// The next packet to send at `now`, in this order: a due retransmission (lowest msg-id
    /// first), a new packet if the send window has room, a standalone P_ACK_V1 if ACKs are
    /// pending. Call until `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit<'_>> {
        if let Some(index) = self.in_flight.iter().position(|p| p.next_try <= now) {
            let acks = self.take_acks(MAX_PIGGYBACK_ACKS);
            let max_timeout = self.config.max_timeout;
            let packet = self.in_flight.get_mut(index)?;
            packet.timeout = packet.timeout.saturating_mul(2).min(max_timeout);
            packet.next_try = now + packet.timeout;
            packet.later_acks = 0;
            return Some(Transmit {
                kind: TransmitKind::Retransmit,
                opcode: packet.opcode,
                message_id: Some(packet.message_id),
                acks,
                payload: &packet.payload,
            });
        }
        if let Some((message_id, opcode, payload)) = self.next_new_packet() {
            let acks = self.take_acks(MAX_PIGGYBACK_ACKS);
            self.next_tx += 1;
            self.in_flight.push(InFlight {
                message_id,
                opcode,
                payload,
                next_try: now + self.config.initial_timeout,
                timeout: self.config.initial_timeout,
                later_acks: 0,
            });
            let packet = self.in_flight.last()?;
            return Some(Transmit {
                kind: TransmitKind::New,
                opcode,
                message_id: Some(message_id),
                acks,
                payload: &packet.payload,
            });
        }
        if !self.fresh_acks.is_empty() {
            return Some(Transmit {
                kind: TransmitKind::Ack,
                opcode: Opcode::AckV1,
                message_id: None,
                acks: self.take_acks(MAX_ACKS),
                payload: &[],
            });
        }
        None
    }

    /// Cuts the next new packet if the window allows one: the queued reset, else up to
    /// `payload_budget` stream bytes once msg-id 0 is spent.
    /// `None` once all 2^32 msg-ids are spent.
    fn next_new_packet(&mut self) -> Option<(u32, Opcode, Vec<u8>)> {
        let lowest = self
            .in_flight
            .first()
            .map_or(self.next_tx, |p| u64::from(p.message_id));
        if self.next_tx >= lowest + u64::from(SEND_WINDOW) {
            return None;
        }
        let message_id = u32::try_from(self.next_tx).ok()?;
        if let Some((opcode, payload)) = self.pending_reset.take() {
            return Some((message_id, opcode, payload));
        }
        if message_id == 0 || self.pending.is_empty() {
            return None;
        }
        let len = self.pending.len().min(self.config.payload_budget);
        Some((
            message_id,
            Opcode::ControlV1,
            self.pending.drain(..len).collect(),
        ))
    }

    /// When the next retransmission falls due; `None` with nothing in flight. Only
    /// meaningful after [`poll_transmit`](Self::poll_transmit) returned `None`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.iter().map(|p| p.next_try).min()
    }

    /// Copies received stream bytes, in msg-id order, into `buf`; returns how many.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let len = buf.len().min(self.readable.len());
        for (dst, src) in buf.iter_mut().zip(self.readable.drain(..len)) {
            *dst = src;
        }
        len
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
mod tests {
    use super::*;
    use crate::packet::ControlPacket;
    use proptest::prelude::*;

    const CLIENT_SID: SessionId = SessionId([0xC1; 8]);
    const SERVER_SID: SessionId = SessionId([0x5E; 8]);
    const SECOND: Duration = Duration::from_secs(1);

    /// A transmit copied out of the borrow.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Sent {
        kind: TransmitKind,
        opcode: Opcode,
        message_id: Option<u32>,
        acks: Vec<u32>,
        payload: Vec<u8>,
    }

    fn config(budget: usize) -> ReliableConfig {
        ReliableConfig {
            payload_budget: budget,
            ..ReliableConfig::default()
        }
    }

    /// A stream whose resets are done: msg-ids start at 1 both ways.
    fn started(budget: usize) -> Reliable {
        Reliable::with_next_ids(config(budget), 1, 1).unwrap()
    }

    fn poll(r: &mut Reliable, now: Instant) -> Option<Sent> {
        r.poll_transmit(now).map(|t| Sent {
            kind: t.kind,
            opcode: t.opcode,
            message_id: t.message_id,
            acks: t.acks.as_slice().to_vec(),
            payload: t.payload.to_vec(),
        })
    }

    fn drain(r: &mut Reliable, now: Instant) -> Vec<Sent> {
        std::iter::from_fn(|| poll(r, now)).collect()
    }

    fn repr<'a>(
        opcode: Opcode,
        message_id: Option<u32>,
        acks: &[u32],
        payload: &'a [u8],
    ) -> ControlRepr<'a> {
        let acks = Acks::from_slice(acks).unwrap();
        ControlRepr {
            opcode,
            key_id: KeyId::ZERO,
            session_id: CLIENT_SID,
            acks,
            remote_session_id: (!acks.is_empty()).then_some(SERVER_SID),
            message_id,
            payload,
        }
    }

    fn control(id: u32, payload: &[u8]) -> ControlRepr<'_> {
        repr(Opcode::ControlV1, Some(id), &[], payload)
    }

    fn ack(ids: &[u32]) -> ControlRepr<'static> {
        repr(Opcode::AckV1, None, ids, &[])
    }

    fn read_all(r: &mut Reliable) -> Vec<u8> {
        let mut out = vec![0; r.readable_len()];
        let n = r.read(&mut out);
        out.truncate(n);
        out
    }

    // ---- configuration ----

    #[test]
    fn payload_budget_subtracts_every_header() {
        assert_eq!(payload_budget(1250, IPV4_UDP_OVERHEAD, 40), Ok(1144));
        assert_eq!(MAX_CONTROL_HEADER_LEN, 38);
        assert_eq!(DEFAULT_PAYLOAD_BUDGET, 1092);
        assert_eq!(payload_budget(67, 28, 0), Ok(1));
        assert_eq!(
            payload_budget(66, 28, 0),
            Err(ReliableConfigError::MtuTooSmall {
                tls_mtu: 66,
                overhead: 66
            })
        );
        assert!(matches!(
            payload_budget(10, usize::MAX, 1),
            Err(ReliableConfigError::MtuTooSmall { .. })
        ));
    }

    #[test]
    fn full_packet_with_four_acks_fills_the_default_tls_mtu_exactly() {
        let mut r = Reliable::new(ReliableConfig::default()).unwrap();
        for id in 0..4 {
            let opcode = if id == 0 {
                Opcode::ControlHardResetClientV2
            } else {
                Opcode::ControlV1
            };
            r.on_packet(&repr(opcode, Some(id), &[], b"x"), Instant::now())
                .unwrap();
        }
        r.queue_reset(Opcode::ControlHardResetServerV2, &[])
            .unwrap();
        r.queue(&vec![7u8; 5000]).unwrap();
        let now = Instant::now();
        let sent = drain(&mut r, now);
        let full = sent.iter().find(|s| s.opcode == Opcode::ControlV1).unwrap();
        assert_eq!(full.payload.len(), DEFAULT_PAYLOAD_BUDGET);
        let acks = Acks::from_slice(&[0, 1, 2, 3]).unwrap();
        let wire = ControlRepr {
            acks,
            remote_session_id: Some(CLIENT_SID),
            ..control(1, &full.payload)
        };
        assert_eq!(
            wire.buffer_len() + MAX_WRAP_OVERHEAD + IPV6_UDP_OVERHEAD,
            DEFAULT_TLS_MTU
        );
    }

    #[test]
    fn invalid_configs_are_refused() {
        let base = ReliableConfig::default();
        let cases = [
            (
                ReliableConfig {
                    payload_budget: 0,
                    ..base
                },
                ReliableConfigError::ZeroPayloadBudget,
            ),
            (
                ReliableConfig {
                    initial_timeout: Duration::ZERO,
                    ..base
                },
                ReliableConfigError::ZeroTimeout,
            ),
            (
                ReliableConfig {
                    max_timeout: SECOND,
                    ..base
                },
                ReliableConfigError::MaxTimeoutBelowInitial {
                    initial: DEFAULT_INITIAL_TIMEOUT,
                    max: SECOND,
                },
            ),
            (
                ReliableConfig {
                    max_timeout: MAX_TIMEOUT_LIMIT + SECOND,
                    ..base
                },
                ReliableConfigError::TimeoutTooLarge {
                    found: MAX_TIMEOUT_LIMIT + SECOND,
                },
            ),
            (
                ReliableConfig {
                    max_send_buffer: 10,
                    ..base
                },
                ReliableConfigError::BufferTooSmall {
                    which: "send",
                    found: 10,
                    min: DEFAULT_PAYLOAD_BUDGET,
                },
            ),
            (
                ReliableConfig {
                    max_recv_buffer: 10,
                    ..base
                },
                ReliableConfigError::BufferTooSmall {
                    which: "receive",
                    found: 10,
                    min: DEFAULT_PAYLOAD_BUDGET,
                },
            ),
        ];
        for (cfg, err) in cases {
            assert_eq!(Reliable::new(cfg).unwrap_err(), err);
            assert_eq!(Reliable::with_next_ids(cfg, 1, 1).unwrap_err(), err);
        }
        assert!(Reliable::new(base).is_ok());
    }

    // ---- send side ----

    #[test]
    fn reset_takes_message_id_zero_and_stream_waits_for_it() {
        let now = Instant::now();
        let mut r = Reliable::new(config(100)).unwrap();
        r.queue(b"hello").unwrap();
        assert_eq!(poll(&mut r, now), None, "stream must not take msg-id 0");
        r.queue_reset(Opcode::ControlSoftResetV1, &[1, 2]).unwrap();
        let sent = drain(&mut r, now);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].opcode, Opcode::ControlSoftResetV1);
        assert_eq!(sent[0].message_id, Some(0));
        assert_eq!(sent[0].payload, [1, 2]);
        assert_eq!(sent[0].kind, TransmitKind::New);
        assert_eq!(sent[1].opcode, Opcode::ControlV1);
        assert_eq!(sent[1].message_id, Some(1));
        assert_eq!(sent[1].payload, b"hello");
        assert_eq!(r.next_tx_message_id(), 2);
    }

    #[test]
    fn queue_reset_errors() {
        let mut r = Reliable::new(config(100)).unwrap();
        assert_eq!(
            r.queue_reset(Opcode::ControlV1, &[]),
            Err(SendError::NotAReset {
                found: Opcode::ControlV1
            })
        );
        assert_eq!(
            r.queue_reset(Opcode::ControlHardResetClientV1, &[]),
            Err(SendError::NotAReset {
                found: Opcode::ControlHardResetClientV1
            })
        );
        assert_eq!(
            r.queue_reset(Opcode::ControlHardResetServerV2, &[0; 101]),
            Err(SendError::ResetPayloadTooLarge { len: 101, max: 100 })
        );
        let mut big = Reliable::new(ReliableConfig::default()).unwrap();
        assert_eq!(
            big.queue_reset(Opcode::ControlHardResetServerV2, &[0; 257]),
            Err(SendError::ResetPayloadTooLarge { len: 257, max: 256 })
        );
        r.queue_reset(Opcode::ControlHardResetServerV2, &[])
            .unwrap();
        assert_eq!(
            r.queue_reset(Opcode::ControlHardResetServerV2, &[]),
            Err(SendError::ResetNotFirst)
        );
        drain(&mut r, Instant::now());
        assert_eq!(
            r.queue_reset(Opcode::ControlHardResetServerV2, &[]),
            Err(SendError::ResetNotFirst)
        );
        let mut resumed = started(100);
        assert_eq!(
            resumed.queue_reset(Opcode::ControlHardResetServerV2, &[]),
            Err(SendError::ResetNotFirst)
        );
    }

    #[test]
    fn stream_is_cut_at_the_payload_budget() {
        let now = Instant::now();
        let mut r = started(1000);
        let data: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        r.queue(&data).unwrap();
        let sent = drain(&mut r, now);
        let lens: Vec<usize> = sent.iter().map(|s| s.payload.len()).collect();
        assert_eq!(lens, [1000, 1000, 500]);
        let ids: Vec<_> = sent.iter().map(|s| s.message_id).collect();
        assert_eq!(ids, [Some(1), Some(2), Some(3)]);
        assert!(sent.iter().all(|s| s.opcode == Opcode::ControlV1));
        assert_eq!(sent.concat_payloads(), data);
    }

    trait Concat {
        fn concat_payloads(&self) -> Vec<u8>;
    }

    impl Concat for Vec<Sent> {
        fn concat_payloads(&self) -> Vec<u8> {
            self.iter().flat_map(|s| s.payload.clone()).collect()
        }
    }

    #[test]
    fn send_buffer_cap_is_all_or_nothing() {
        let mut r = Reliable::with_next_ids(
            ReliableConfig {
                payload_budget: 10,
                max_send_buffer: 25,
                ..ReliableConfig::default()
            },
            1,
            1,
        )
        .unwrap();
        r.queue(&[1; 20]).unwrap();
        assert_eq!(r.send_capacity(), 5);
        assert_eq!(
            r.queue(&[2; 6]),
            Err(SendError::SendBufferFull {
                len: 6,
                available: 5
            })
        );
        assert_eq!(r.send_capacity(), 5, "a refused write queues nothing");
        r.queue(&[3; 5]).unwrap();
        drain(&mut r, Instant::now());
        assert_eq!(r.send_capacity(), 25, "packetised bytes leave the buffer");
    }

    #[test]
    fn send_window_holds_six_ids_above_the_lowest_unacked() {
        let now = Instant::now();
        let mut r = started(10);
        r.queue(&[0; 200]).unwrap();
        let first = drain(&mut r, now);
        let ids: Vec<_> = first.iter().filter_map(|s| s.message_id).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
        assert_eq!(r.in_flight(), 6);
        // ACKing a later id does not move the window: 1 is still the lowest.
        let got = r.on_packet(&ack(&[2]), now).unwrap();
        assert_eq!(got.newly_acked, 1);
        assert_eq!(drain(&mut r, now), []);
        // ACKing 1 makes 3 the lowest: ids up to 8 may go.
        r.on_packet(&ack(&[1]), now).unwrap();
        let ids: Vec<_> = drain(&mut r, now)
            .iter()
            .filter_map(|s| s.message_id)
            .collect();
        assert_eq!(ids, [7, 8]);
        assert!(r.is_in_flight(3) && !r.is_in_flight(2) && r.is_in_flight(8));
    }

    #[test]
    fn acks_for_ids_we_do_not_hold_are_ignored() {
        let now = Instant::now();
        let mut r = started(10);
        r.queue(&[0; 20]).unwrap();
        drain(&mut r, now);
        let got = r.on_packet(&ack(&[1, 1, 0, 9, u32::MAX]), now).unwrap();
        assert_eq!(got.newly_acked, 1);
        assert_eq!(got.message, MessageOutcome::AckOnly);
        let again = r.on_packet(&ack(&[1]), now).unwrap();
        assert_eq!(again.newly_acked, 0);
        assert!(r.is_in_flight(2));
        assert_eq!(r.in_flight(), 1);
    }

    #[test]
    fn retransmit_timeout_doubles_up_to_the_cap() {
        let t0 = Instant::now();
        let mut r = Reliable::with_next_ids(
            ReliableConfig {
                max_timeout: Duration::from_secs(16),
                ..config(100)
            },
            1,
            1,
        )
        .unwrap();
        r.queue(b"abc").unwrap();
        let first = poll(&mut r, t0).unwrap();
        assert_eq!(first.kind, TransmitKind::New);
        let mut due = t0;
        for gap in [2u64, 4, 8, 16, 16, 16] {
            due += Duration::from_secs(gap);
            assert_eq!(r.poll_timeout(), Some(due));
            assert_eq!(poll(&mut r, due - Duration::from_millis(1)), None);
            let again = poll(&mut r, due).unwrap();
            assert_eq!(again.kind, TransmitKind::Retransmit);
            assert_eq!(again.message_id, Some(1));
            assert_eq!(again.payload, b"abc");
            assert_eq!(poll(&mut r, due), None, "one retransmission per timeout");
        }
        r.on_packet(&ack(&[1]), due).unwrap();
        assert_eq!(r.poll_timeout(), None);
        assert!(r.is_idle());
    }

    #[test]
    fn late_poll_schedules_from_the_actual_send_time() {
        let t0 = Instant::now();
        let mut r = started(100);
        r.queue(b"x").unwrap();
        poll(&mut r, t0).unwrap();
        let late = t0 + Duration::from_secs(5);
        poll(&mut r, late).unwrap();
        assert_eq!(r.poll_timeout(), Some(late + Duration::from_secs(4)));
    }

    #[test]
    fn retransmissions_go_lowest_id_first() {
        let t0 = Instant::now();
        let mut r = started(1);
        r.queue(b"ab").unwrap();
        poll(&mut r, t0).unwrap();
        let t1 = t0 + SECOND;
        poll(&mut r, t1).unwrap();
        let sent = drain(&mut r, t0 + Duration::from_secs(10));
        let ids: Vec<_> = sent.iter().filter_map(|s| s.message_id).collect();
        assert_eq!(ids, [1, 2]);
    }

    #[test]
    fn three_later_acks_trigger_an_early_retransmit() {
        let t0 = Instant::now();
        let mut r = started(1);
        r.queue(b"abcde").unwrap();
        assert_eq!(drain(&mut r, t0).len(), 5);
        let t1 = t0 + Duration::from_millis(100);
        r.on_packet(&ack(&[2, 3]), t1).unwrap();
        // A repeated ACK releases nothing and must not count.
        r.on_packet(&ack(&[3]), t1).unwrap();
        assert_eq!(poll(&mut r, t1), None);
        r.on_packet(&ack(&[4]), t1).unwrap();
        let early = poll(&mut r, t1).unwrap();
        assert_eq!(early.kind, TransmitKind::Retransmit);
        assert_eq!(early.message_id, Some(1));
        assert_eq!(early.payload, b"a");
        assert_eq!(poll(&mut r, t1), None, "only id 1 had three later ACKs");
        // The counter restarts: one more later ACK is not enough.
        r.on_packet(&ack(&[5]), t1).unwrap();
        assert_eq!(poll(&mut r, t1), None);
        assert_eq!(r.poll_timeout(), Some(t1 + Duration::from_secs(4)));
    }

    #[test]
    fn transmit_repr_carries_the_peer_sid_only_with_acks() {
        let now = Instant::now();
        let mut r = Reliable::new(config(100)).unwrap();
        r.queue_reset(Opcode::ControlHardResetClientV2, &[])
            .unwrap();
        let t = r.poll_transmit(now).unwrap();
        let repr = t.to_repr(KeyId::ZERO, CLIENT_SID, SERVER_SID);
        assert_eq!(repr.remote_session_id, None);
        let mut buf = [0u8; 64];
        let len = repr.emit(&mut buf).unwrap();
        assert_eq!(len, 14);

        let mut s = Reliable::new(config(100)).unwrap();
        let parsed = ControlRepr::parse(&ControlPacket::new_checked(&buf[..len]).unwrap());
        s.on_packet(&parsed, now).unwrap();
        s.queue_reset(Opcode::ControlHardResetServerV2, &[])
            .unwrap();
        let t = s.poll_transmit(now).unwrap();
        let repr = t.to_repr(KeyId::ZERO, SERVER_SID, CLIENT_SID);
        assert_eq!(repr.remote_session_id, Some(CLIENT_SID));
        assert_eq!(repr.acks.as_slice(), [0]);
        assert_eq!(repr.message_id, Some(0));
        let len = repr.emit(&mut buf).unwrap();
        let back = ControlRepr::parse(&ControlPacket::new_checked(&buf[..len]).unwrap());
        assert_eq!(back, repr);
    }

    #[test]
    fn message_ids_stop_at_exhaustion() {
        let now = Instant::now();
        let mut r = Reliable::with_next_ids(config(1), u32::MAX, 1).unwrap();
        r.queue(b"ab").unwrap();
        let sent = drain(&mut r, now);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].message_id, Some(u32::MAX));
        r.on_packet(&ack(&[u32::MAX]), now).unwrap();
        assert_eq!(drain(&mut r, now), [], "no id after u32::MAX");
    }

    // ---- receive side ----

    #[test]
    fn peer_reset_is_acked_and_kept_out_of_the_stream() {
        let now = Instant::now();
        let mut r = Reliable::new(config(100)).unwrap();
        let got = r
            .on_packet(
                &repr(Opcode::ControlHardResetClientV2, Some(0), &[], b"tlv"),
                now,
            )
            .unwrap();
        assert_eq!(got.message, MessageOutcome::Accepted { message_id: 0 });
        assert_eq!(r.readable_len(), 0);
        assert_eq!(r.next_rx_message_id(), 1);
        let sent = drain(&mut r, now);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].kind, TransmitKind::Ack);
        assert_eq!(sent[0].opcode, Opcode::AckV1);
        assert_eq!(sent[0].message_id, None);
        assert_eq!(sent[0].acks, [0]);
        // A retransmitted reset is ACKed again.
        let dup = r
            .on_packet(
                &repr(Opcode::ControlHardResetClientV2, Some(0), &[], &[]),
                now,
            )
            .unwrap();
        assert_eq!(dup.message, MessageOutcome::Duplicate { message_id: 0 });
        assert_eq!(drain(&mut r, now)[0].acks, [0]);
    }

    #[test]
    fn malformed_packets_are_refused_before_their_acks_apply() {
        let now = Instant::now();
        let mut r = started(100);
        r.queue(b"x").unwrap();
        drain(&mut r, now);
        let cases = [
            (
                repr(Opcode::ControlHardResetClientV1, Some(0), &[1], &[]),
                ReceiveError::UnexpectedOpcode {
                    found: Opcode::ControlHardResetClientV1,
                },
            ),
            (
                repr(Opcode::DataV2, Some(3), &[1], &[]),
                ReceiveError::UnexpectedOpcode {
                    found: Opcode::DataV2,
                },
            ),
            (
                repr(Opcode::ControlV1, None, &[1], &[]),
                ReceiveError::MissingMessageId {
                    opcode: Opcode::ControlV1,
                },
            ),
            (
                repr(Opcode::ControlSoftResetV1, None, &[1], &[]),
                ReceiveError::MissingMessageId {
                    opcode: Opcode::ControlSoftResetV1,
                },
            ),
            (
                repr(Opcode::ControlHardResetClientV2, Some(1), &[1], &[]),
                ReceiveError::ResetWithNonZeroId {
                    opcode: Opcode::ControlHardResetClientV2,
                    message_id: 1,
                },
            ),
            (
                repr(Opcode::ControlWkcV1, Some(0), &[1], b"x"),
                ReceiveError::ExpectedReset {
                    opcode: Opcode::ControlWkcV1,
                },
            ),
        ];
        for (packet, err) in cases {
            assert_eq!(r.on_packet(&packet, now), Err(err));
        }
        assert!(r.is_in_flight(1), "refused packets must not release id 1");
        assert_eq!(r.pending_acks(), 0);
    }

    #[test]
    fn receive_window_edges() {
        let now = Instant::now();
        let mut r = started(100);
        r.queue(b"x").unwrap();
        drain(&mut r, now);
        // next expected is 1: the window is [1, 13).
        let last = r.on_packet(&control(12, b"L"), now).unwrap();
        assert_eq!(last.message, MessageOutcome::Accepted { message_id: 12 });
        let beyond = repr(Opcode::ControlV1, Some(13), &[1], b"B");
        assert_eq!(
            r.on_packet(&beyond, now),
            Err(ReceiveError::BeyondWindow {
                message_id: 13,
                next_expected: 1
            })
        );
        assert!(
            !r.is_in_flight(1),
            "ACKs of a beyond-window packet still apply"
        );
        assert_eq!(
            r.on_packet(&control(u32::MAX, b"B"), now),
            Err(ReceiveError::BeyondWindow {
                message_id: u32::MAX,
                next_expected: 1
            })
        );
        let acks = drain(&mut r, now);
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].acks, [12], "beyond-window ids are not ACKed");
        assert_eq!(r.readable_len(), 0);
        // Filling 1..=11 delivers 1..=12; the window then is [13, 25).
        for id in 1..=11 {
            r.on_packet(&control(id, &[id as u8]), now).unwrap();
        }
        let mut expected: Vec<u8> = (1..=11).collect();
        expected.push(b'L');
        assert_eq!(read_all(&mut r), expected);
        assert_eq!(r.next_rx_message_id(), 13);
        assert!(r.on_packet(&control(24, b""), now).is_ok());
        assert!(matches!(
            r.on_packet(&control(25, b""), now),
            Err(ReceiveError::BeyondWindow { .. })
        ));
    }

    #[test]
    fn duplicates_are_reacked_and_not_redelivered() {
        let now = Instant::now();
        let mut r = started(100);
        r.on_packet(&control(1, b"one"), now).unwrap();
        r.on_packet(&control(3, b"three"), now).unwrap();
        drain(&mut r, now);
        let old = r.on_packet(&control(1, b"one"), now).unwrap();
        assert_eq!(old.message, MessageOutcome::Duplicate { message_id: 1 });
        let held = r.on_packet(&control(3, b"XXXXX"), now).unwrap();
        assert_eq!(held.message, MessageOutcome::Duplicate { message_id: 3 });
        let sent = drain(&mut r, now);
        assert_eq!(sent.len(), 1);
        assert_eq!(&sent[0].acks[..2], [1, 3]);
        r.on_packet(&control(2, b"two"), now).unwrap();
        assert_eq!(read_all(&mut r), b"onetwothree");
        assert_eq!(r.next_rx_message_id(), 4);
    }

    #[test]
    fn read_hands_out_bytes_in_pieces() {
        let mut r = started(100);
        r.on_packet(&control(1, b"abcdef"), Instant::now()).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(r.read(&mut buf), 4);
        assert_eq!(&buf, b"abcd");
        assert_eq!(r.readable_len(), 2);
        assert_eq!(r.read(&mut buf), 2);
        assert_eq!(&buf[..2], b"ef");
        assert_eq!(r.read(&mut buf), 0);
    }

    #[test]
    fn receive_buffer_cap_drops_without_ack() {
        let now = Instant::now();
        let mut r = Reliable::with_next_ids(
            ReliableConfig {
                payload_budget: 10,
                max_recv_buffer: 10,
                ..ReliableConfig::default()
            },
            1,
            1,
        )
        .unwrap();
        r.on_packet(&control(2, &[0; 6]), now).unwrap();
        r.on_packet(&control(1, &[0; 3]), now).unwrap();
        drain(&mut r, now);
        assert_eq!(
            r.on_packet(&control(3, &[0; 2]), now),
            Err(ReceiveError::ReceiveBufferFull {
                needed: 2,
                available: 1
            })
        );
        assert_eq!(r.pending_acks(), 0);
        assert_eq!(r.next_rx_message_id(), 3);
        let mut buf = [0u8; 9];
        r.read(&mut buf);
        assert!(r.on_packet(&control(3, &[0; 2]), now).is_ok());
    }

    #[test]
    fn ack_queue_cap_drops_new_packets() {
        let now = Instant::now();
        let mut r = started(100);
        for id in 1..=MAX_PENDING_ACKS as u32 {
            r.on_packet(&control(id, b"a"), now).unwrap();
        }
        let next = MAX_PENDING_ACKS as u32 + 1;
        assert_eq!(
            r.on_packet(&control(next, b"a"), now),
            Err(ReceiveError::AckQueueFull)
        );
        // A duplicate is still answered with Ok, its ACK already pending.
        assert_eq!(
            r.on_packet(&control(1, b"a"), now).unwrap().message,
            MessageOutcome::Duplicate { message_id: 1 }
        );
        assert_eq!(r.pending_acks(), MAX_PENDING_ACKS);
        assert_eq!(r.next_rx_message_id(), u64::from(next));
        let sent = drain(&mut r, now);
        assert_eq!(sent.len(), MAX_PENDING_ACKS / MAX_ACKS);
        assert!(sent.iter().all(|s| s.acks.len() == MAX_ACKS));
        assert!(r.on_packet(&control(next, b"a"), now).is_ok());
    }

    #[test]
    fn acks_piggyback_then_fill_from_recent_ids() {
        let now = Instant::now();
        let mut r = started(100);
        for id in 1..=6 {
            r.on_packet(&control(id, b"."), now).unwrap();
        }
        r.queue(b"reply").unwrap();
        let sent = drain(&mut r, now);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].opcode, Opcode::ControlV1);
        assert_eq!(sent[0].acks, [1, 2, 3, 4], "at most 4 piggy-backed");
        assert_eq!(sent[1].opcode, Opcode::AckV1);
        assert_eq!(sent[1].acks, [5, 6, 1, 2, 3, 4], "fresh first, then recent");
        // No fresh ACK left: no standalone P_ACK_V1, but the next packet re-sends recent ids.
        assert_eq!(drain(&mut r, now), []);
        r.queue(b"more").unwrap();
        let sent = drain(&mut r, now);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].acks, [5, 6, 1, 2]);
        // The list keeps the 8 most recent ids.
        for id in 7..=11 {
            r.on_packet(&control(id, b"."), now).unwrap();
        }
        let sent = drain(&mut r, now);
        assert_eq!(sent[0].acks, [7, 8, 9, 10, 11, 5, 6, 1]);
        r.queue(b"x").unwrap();
        let sent = drain(&mut r, now);
        assert_eq!(sent[0].acks, [7, 8, 9, 10]);
        r.on_packet(&control(12, b"."), now).unwrap();
        r.on_packet(&control(7, b"."), now).unwrap();
        let sent = drain(&mut r, now);
        assert_eq!(sent[0].acks, [12, 7, 8, 9, 10, 11, 5, 6]);
    }

    #[test]
    fn retransmissions_carry_pending_acks() {
        let t0 = Instant::now();
        let mut r = started(100);
        r.queue(b"x").unwrap();
        drain(&mut r, t0);
        r.on_packet(&control(1, b"y"), t0).unwrap();
        let t1 = t0 + Duration::from_secs(2);
        let sent = drain(&mut r, t1);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].kind, TransmitKind::Retransmit);
        assert_eq!(sent[0].acks, [1]);
    }

    // ---- reassembly property ----

    fn chunk_stream(chunks: &[Vec<u8>]) -> Vec<u8> {
        chunks.concat()
    }

    proptest! {
        #[test]
        fn reassembly_delivers_a_prefix_then_the_whole_stream(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..40),
            arrivals in prop::collection::vec(any::<prop::sample::Index>(), 0..200),
        ) {
            let now = Instant::now();
            let expected = chunk_stream(&chunks);
            let mut r = started(100);
            let mut got = Vec::new();
            for index in &arrivals {
                let id = index.index(chunks.len()) as u32 + 1;
                let result = r.on_packet(&control(id, &chunks[id as usize - 1]), now);
                let in_window = u64::from(id) < r.next_rx_message_id() + u64::from(RECV_WINDOW);
                match result {
                    Ok(_) => prop_assert!(in_window),
                    Err(ReceiveError::BeyondWindow { .. }) => prop_assert!(!in_window),
                    Err(e) => prop_assert!(false, "unexpected error {e:?}"),
                }
                got.extend(read_all(&mut r));
                prop_assert!(expected.starts_with(&got));
                drain(&mut r, now);
            }
            for (i, chunk) in chunks.iter().enumerate() {
                r.on_packet(&control(i as u32 + 1, chunk), now).unwrap();
                drain(&mut r, now);
            }
            got.extend(read_all(&mut r));
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn shuffled_rounds_with_duplicates_reassemble(
            (chunks, order) in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..30), 1..30)
                .prop_flat_map(|chunks| {
                    let n = chunks.len();
                    let ids: Vec<usize> = (0..n).chain(0..n / 2).collect();
                    (Just(chunks), Just(ids).prop_shuffle())
                }),
        ) {
            let now = Instant::now();
            let expected = chunk_stream(&chunks);
            let mut r = started(100);
            let mut got = Vec::new();
            let mut rounds = 0;
            while got.len() < expected.len() || r.next_rx_message_id() <= chunks.len() as u64 {
                rounds += 1;
                prop_assert!(rounds <= chunks.len(), "no progress");
                for &i in &order {
                    let _ = r.on_packet(&control(i as u32 + 1, &chunks[i]), now);
                    got.extend(read_all(&mut r));
                    drain(&mut r, now);
                }
            }
            prop_assert_eq!(got, expected);
        }
    }

    // ---- two endpoints over a lossy link ----

    /// Deterministic xorshift64* generator for the simulated link.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
    }

    struct Endpoint {
        reliable: Reliable,
        sid: SessionId,
        peer_sid: SessionId,
        to_send: Vec<u8>,
        sent_bytes: usize,
        received: Vec<u8>,
        transmissions: usize,
        retransmissions: usize,
    }

    impl Endpoint {
        fn new(reset: Opcode, sid: SessionId, peer_sid: SessionId, to_send: Vec<u8>) -> Self {
            let mut reliable = Reliable::new(config(300)).unwrap();
            reliable.queue_reset(reset, &[]).unwrap();
            Self {
                reliable,
                sid,
                peer_sid,
                to_send,
                sent_bytes: 0,
                received: Vec::new(),
                transmissions: 0,
                retransmissions: 0,
            }
        }

        /// Queues more stream bytes in uneven chunks, like TLS output arriving in pieces.
        fn feed(&mut self, rng: &mut Rng) {
            while self.sent_bytes < self.to_send.len() {
                let want = 1 + (rng.next() % 700) as usize;
                let end = (self.sent_bytes + want).min(self.to_send.len());
                let chunk = &self.to_send[self.sent_bytes..end];
                if self.reliable.queue(chunk).is_err() {
                    break;
                }
                self.sent_bytes = end;
            }
        }

        fn transmit(&mut self, now: Instant) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            while let Some(t) = self.reliable.poll_transmit(now) {
                if t.kind == TransmitKind::Retransmit {
                    self.retransmissions += 1;
                }
                let repr = t.to_repr(KeyId::ZERO, self.sid, self.peer_sid);
                let mut buf = vec![0u8; repr.buffer_len()];
                repr.emit(&mut buf).unwrap();
                out.push(buf);
            }
            self.transmissions += out.len();
            out
        }

        fn receive(&mut self, wire: &[u8], now: Instant) {
            let packet = ControlPacket::new_checked(wire).unwrap();
            let repr = ControlRepr::parse(&packet);
            assert_eq!(repr.session_id, self.peer_sid);
            if let Some(remote) = repr.remote_session_id {
                assert_eq!(remote, self.sid);
            }
            // The peer's send window (6) lies inside our receive window (12): an honest
            // peer never triggers an error, whatever the link does.
            if let Err(e) = self.reliable.on_packet(&repr, now) {
                panic!("unexpected receive error {e:?}");
            }
            let mut buf = [0u8; 512];
            loop {
                let n = self.reliable.read(&mut buf);
                if n == 0 {
                    break;
                }
                self.received.extend_from_slice(&buf[..n]);
            }
        }
    }

    struct InTransit {
        at: Instant,
        to_server: bool,
        bytes: Vec<u8>,
    }

    /// Runs client and server over a link with `loss`% loss, `dup`% duplication and a delay
    /// of 50 ms plus up to `jitter_ms` (reordering); returns both endpoints once it is quiet.
    fn run_lossy_link(
        seed: u64,
        loss: u64,
        dup: u64,
        jitter_ms: u64,
    ) -> (Endpoint, Endpoint, Duration) {
        let mut rng = Rng(seed);
        let pattern = |len: usize, mul: u32| -> Vec<u8> {
            (0..len as u32)
                .map(|i| (i.wrapping_mul(mul) >> 3) as u8)
                .collect()
        };
        let mut client = Endpoint::new(
            Opcode::ControlHardResetClientV2,
            CLIENT_SID,
            SERVER_SID,
            pattern(20_000, 2_654_435_761),
        );
        let mut server = Endpoint::new(
            Opcode::ControlHardResetServerV2,
            SERVER_SID,
            CLIENT_SID,
            pattern(9_000, 40_503),
        );
        let t0 = Instant::now();
        let mut now = t0;
        let mut link: Vec<InTransit> = Vec::new();
        for _ in 0..100_000 {
            for (endpoint, to_server) in [(&mut client, true), (&mut server, false)] {
                endpoint.feed(&mut rng);
                for bytes in endpoint.transmit(now) {
                    if rng.chance(loss) {
                        continue;
                    }
                    let copies = if rng.chance(dup) { 2 } else { 1 };
                    for _ in 0..copies {
                        let delay = Duration::from_millis(50 + rng.next() % (jitter_ms + 1));
                        link.push(InTransit {
                            at: now + delay,
                            to_server,
                            bytes: bytes.clone(),
                        });
                    }
                }
            }
            let next_delivery = link.iter().map(|p| p.at).min();
            let next_timer = [
                client.reliable.poll_timeout(),
                server.reliable.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next_delivery.into_iter().chain(next_timer).min() else {
                return (client, server, now - t0);
            };
            now = now.max(next);
            let (due, later): (Vec<_>, Vec<_>) = link.into_iter().partition(|p| p.at <= now);
            link = later;
            for packet in due {
                let endpoint = if packet.to_server {
                    &mut server
                } else {
                    &mut client
                };
                endpoint.receive(&packet.bytes, now);
            }
        }
        panic!("link never went quiet");
    }

    #[test]
    fn lossy_link_delivers_both_streams_intact_and_goes_quiet() {
        for (seed, loss, dup) in [
            (1, 10, 10),
            (2, 15, 10),
            (3, 20, 20),
            (0x9E37_79B9, 20, 5),
            (42, 15, 15),
        ] {
            let (client, server, elapsed) = run_lossy_link(seed, loss, dup, 400);
            assert_eq!(
                server.received, client.to_send,
                "seed {seed}: client→server"
            );
            assert_eq!(
                client.received, server.to_send,
                "seed {seed}: server→client"
            );
            for end in [&client, &server] {
                assert!(end.reliable.is_idle(), "seed {seed}: endpoint not idle");
                assert_eq!(end.reliable.poll_timeout(), None);
            }
            assert_eq!(
                server.reliable.next_rx_message_id(),
                client.reliable.next_tx_message_id()
            );
            assert_eq!(
                client.reliable.next_rx_message_id(),
                server.reliable.next_tx_message_id()
            );
            // 20 kB at 300 bytes per packet is ~67 packets; loss costs retransmissions,
            // not an unbounded stream of them.
            assert!(
                client.transmissions < 1_000,
                "seed {seed}: {}",
                client.transmissions
            );
            assert!(
                client.retransmissions > 0,
                "seed {seed}: loss must cost retransmissions"
            );
            assert!(
                elapsed < Duration::from_secs(3_600),
                "seed {seed}: {elapsed:?}"
            );
        }
    }

    #[test]
    fn lossless_in_order_link_needs_no_retransmission() {
        let (client, server, _) = run_lossy_link(7, 0, 0, 0);
        assert_eq!(server.received, client.to_send);
        assert_eq!(client.received, server.to_send);
        assert_eq!(client.retransmissions + server.retransmissions, 0);
    }
}
