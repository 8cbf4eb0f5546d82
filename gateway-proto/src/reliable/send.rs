//! The send half of [`Reliable`]: queueing our reset and stream bytes, cutting them into
//! packets inside the send window, retransmission timers and the ACKs that ride along.

use std::time::Instant;

use super::{
    InFlight, MAX_RESET_PAYLOAD, RECENT_ACKS, Reliable, SEND_WINDOW, SendError, Transmit,
    TransmitKind, is_reset,
};
use crate::packet::{Acks, MAX_ACKS, MAX_PIGGYBACK_ACKS, Opcode};

impl Reliable {
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

    /// True when everything handed to us went out and was ACKed: no reset or stream
    /// bytes waiting, nothing in flight.
    pub fn all_acked(&self) -> bool {
        self.pending_reset.is_none() && self.pending.is_empty() && self.in_flight.is_empty()
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
}
