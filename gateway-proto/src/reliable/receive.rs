//! The receive half of [`Reliable`]: checking a packet's msg-id, releasing what its ACKs
//! cover, and reordering payloads into the readable stream.

use std::time::Instant;

use super::{
    EARLY_RETRANSMIT_ACKS, MAX_PENDING_ACKS, MessageOutcome, RECV_WINDOW, ReceiveError, Received,
    Reliable, is_reset,
};
use crate::packet::{ControlRepr, Opcode};

impl Reliable {
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

    /// Copies received stream bytes, in msg-id order, into `buf`; returns how many.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let len = buf.len().min(self.readable.len());
        for (dst, src) in buf.iter_mut().zip(self.readable.drain(..len)) {
            *dst = src;
        }
        len
    }
}
