//! The data channel of a session: sealing tunnelled packets, pings and OCC_EXIT with the
//! sending key, and opening received data packets with the key their key_id names.

use std::time::Instant;

use super::core::{Life, Session};
use super::{Accepted, CloseReason, DropReason, Event, UsageError};
use crate::data::{OCC_EXIT, OCC_MAGIC, PACKET_ID_LEN, Plaintext, TAG_LEN};
use crate::keys::Role;
use crate::packet::DataHeader;

impl Session {
    pub(crate) fn send_occ_exit(&mut self, now: Instant) {
        let mut message = OCC_MAGIC.to_vec();
        message.push(OCC_EXIT);
        // Best effort: the peer also notices our silence.
        let _ = self.send_plaintext(now, &message);
    }

    /// Seals a tunnelled packet with the current key and queues it for sending.
    pub fn send_data(&mut self, now: Instant, packet: &[u8]) -> Result<(), UsageError> {
        match self.life {
            Life::Open => {}
            _ => return Err(UsageError::Closed),
        }
        self.send_plaintext(now, packet)?;
        self.check_renegotiation(now);
        Ok(())
    }

    pub(crate) fn send_plaintext(
        &mut self,
        _now: Instant,
        plaintext: &[u8],
    ) -> Result<(), UsageError> {
        if !self.established {
            return Err(UsageError::NotEstablished);
        }
        let key_id = self.send_key.ok_or(UsageError::NotEstablished)?;
        let header = if self.data_v2 {
            DataHeader::V2 {
                key_id,
                peer_id: self.peer_id,
            }
        } else {
            DataHeader::V1 { key_id }
        };
        let index = self.key_index(key_id).ok_or(UsageError::NotEstablished)?;
        let active = self.keys[index]
            .active
            .as_mut()
            .ok_or(UsageError::NotEstablished)?;
        let overhead = header.buffer_len() + PACKET_ID_LEN + TAG_LEN;
        let mut buf = vec![0u8; overhead + plaintext.len()];
        buf[overhead..].copy_from_slice(plaintext);
        let len = active
            .keys
            .sealing
            .seal_in_place(header, &mut buf, plaintext.len())?;
        buf.truncate(len);
        active.bytes = active.bytes.saturating_add(plaintext.len() as u64);
        active.packets = active.packets.saturating_add(1);
        self.outgoing.push_back(buf);
        Ok(())
    }

    pub(crate) fn handle_data(
        &mut self,
        now: Instant,
        datagram: &[u8],
    ) -> Result<Accepted, DropReason> {
        if !self.established {
            return Err(DropReason::NotEstablished);
        }
        let header = DataHeader::parse(datagram)?;
        if let (Role::Server, Some(found)) = (self.role(), header.peer_id())
            && found != self.peer_id
        {
            return Err(DropReason::PeerId {
                found,
                expected: self.peer_id,
            });
        }
        let key_id = header.key_id();
        let index = self.key_index(key_id).ok_or(DropReason::KeyId(key_id))?;
        let active = self.keys[index]
            .active
            .as_mut()
            .ok_or(DropReason::KeyId(key_id))?;
        let mut buf = datagram.to_vec();
        let opened = active
            .keys
            .opening
            .open_in_place(&mut buf, &mut active.replay, now)?;
        let plaintext = buf.get(opened.plaintext).unwrap_or(&[]);
        active.bytes = active.bytes.saturating_add(plaintext.len() as u64);
        active.packets = active.packets.saturating_add(1);
        self.last_received = now;
        match Plaintext::classify(plaintext)? {
            Plaintext::Ping => {}
            Plaintext::Occ { message_type, .. } => {
                if message_type == OCC_EXIT && self.role() == Role::Server {
                    self.finish(CloseReason::ClientExit);
                }
            }
            Plaintext::Packet(packet) => self.events.push_back(Event::Packet(packet.to_vec())),
        }
        if Some(key_id) != self.send_key && self.keys.last().is_some_and(|k| k.key_id == key_id) {
            self.promote(key_id, now);
        }
        self.check_renegotiation(now);
        Ok(match header {
            DataHeader::V2 { .. } => Accepted::AuthenticatedData,
            DataHeader::V1 { .. } => Accepted::DataV1,
        })
    }
}
