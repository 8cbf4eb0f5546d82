//! The data channel of a session: sealing tunnelled packets, pings and OCC_EXIT with the
//! sending key, and opening received data packets with the key their key_id names.

use std::time::Instant;

use super::core::{Life, Session};
use super::{Accepted, CloseReason, DropReason, Event, UsageError};
use crate::data::{DataChannel, OCC_EXIT, OCC_MAGIC, PACKET_ID_LEN, Plaintext, TAG_LEN};
use crate::keys::Role;
use crate::packet::{DataHeader, KeyId};

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
        let active = self
            .keys
            .get(index)
            .and_then(|k| k.active.as_ref())
            .ok_or(UsageError::NotEstablished)?;
        let overhead = header.buffer_len() + PACKET_ID_LEN + TAG_LEN;
        let mut buf = vec![0u8; overhead];
        buf.extend_from_slice(plaintext);
        // Crossing a limit needs no report here: the callers check renegotiation.
        let sealed = active.key.seal(header, &mut buf, plaintext.len())?;
        buf.truncate(sealed.len);
        self.outgoing.push_back(buf);
        Ok(())
    }

    /// The data channel as the data plane needs it, once established: the keys are the
    /// session's own (shared), so packet-ids and replay windows stay single. Compare
    /// snapshots with [`DataChannel::same_keys`] to see whether the data plane needs the
    /// new one.
    pub fn data_channel(&self) -> Option<DataChannel> {
        if !self.established || self.life != Life::Open {
            return None;
        }
        let keys = self
            .keys
            .iter()
            .filter_map(|k| Some(k.active.as_ref()?.key.clone()))
            .collect();
        Some(DataChannel {
            peer_id: self.data_v2.then_some(self.peer_id),
            send_key: self.send_key?,
            keys,
        })
    }

    /// The data plane received (`received`) or sent (`sent`) data packets of this session
    /// outside [`Session::handle_datagram`] / [`Session::send_data`]: the keepalive clocks
    /// move forward (never back).
    pub fn note_data_activity(&mut self, received: Option<Instant>, sent: Option<Instant>) {
        if let Some(at) = received {
            self.last_received = self.last_received.max(at);
        }
        if let Some(at) = sent {
            self.last_sent = self.last_sent.max(at);
        }
    }

    /// A data packet with `key_id` authenticated (here or in the data plane): when that
    /// is the newest key and not yet the sending key, the peer has it, so it takes over
    /// sending. Also runs the renegotiation triggers.
    pub fn note_key_used(&mut self, key_id: KeyId, now: Instant) {
        if Some(key_id) != self.send_key && self.keys.last().is_some_and(|k| k.key_id == key_id) {
            self.promote(key_id, now);
        }
        self.check_renegotiation(now);
    }

    /// Server role: the data plane received the client's OCC_EXIT; the session ends as
    /// if this session had opened it.
    pub fn peer_exited(&mut self) {
        if self.role() == Role::Server && self.life != Life::Closed {
            self.finish(CloseReason::ClientExit);
        }
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
        let active = self
            .keys
            .get(index)
            .and_then(|k| k.active.as_ref())
            .ok_or(DropReason::KeyId(key_id))?;
        let mut buf = datagram.to_vec();
        let opened = active.key.open(&mut buf, now)?;
        let plaintext = buf.get(opened.plaintext).unwrap_or(&[]);
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
        self.note_key_used(key_id, now);
        Ok(match header {
            DataHeader::V2 { .. } => Accepted::AuthenticatedData,
            DataHeader::V1 { .. } => Accepted::DataV1,
        })
    }
}
