//! What a worker decides about each packet, apart from its I/O: a [`Carrier`] holds the
//! sessions a worker carries and turns bytes into a verdict — a tunnelled packet for the
//! policy seam ([`Inbound::ToSeam`]), a sealed packet for a client ([`Outbound`]), a
//! [`Report`] for the control plane, or a counted [`Discard`]. No sockets, no TAP, no
//! threads: the worker's I/O backends (`socket`, `afxdp`) feed it and carry out its
//! verdicts, and the tests drive it with plain buffers.
//!
//! Sessions come from the control plane as [`Command`]s and are immutable: a rekey or a
//! float replaces the whole [`Carried`] entry. The keys inside are the control-plane
//! session's own ([`DataChannel`]), so there is one packet-id counter, one replay window
//! and one set of renegotiation counters per key whoever sends or receives.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    ops::Range,
    sync::Arc,
    time::Instant,
};

use gateway_proto::{
    data::{DATA_V2_OVERHEAD, DataChannel, OCC_EXIT, Plaintext},
    packet::{DataHeader, KeyId, Opcode, peek_header, peek_peer_id},
};

use super::{
    activity::Activity,
    counters::{Counter, Counters},
    frame::{self, ETH_LEN},
};

/// Where a frame read from the TAP (or steered by `target`) is put in a send slot: its
/// IPv4 packet then starts at [`DATA_V2_OVERHEAD`], right where sealing wants the
/// plaintext.
pub const SEAL_AT: usize = DATA_V2_OVERHEAD - ETH_LEN;

/// Where a session's packets go.
#[derive(Debug, Clone)]
pub enum Peer {
    /// A UDP client at this address (sent from the worker's socket).
    Udp(SocketAddr),
    /// A TCP client: sealed packets go to its connection's writer task, which frames them
    /// (a bounded queue: a client that stops reading loses packets).
    Stream(tokio::sync::mpsc::Sender<Vec<u8>>),
}

/// A session as the workers carry it.
#[derive(Debug, Clone)]
pub struct Carried {
    pub peer_id: u32,
    pub lease: Ipv4Addr,
    pub peer: Peer,
    pub data: DataChannel,
    pub activity: Arc<Activity>,
}

/// Control plane → workers.
pub enum Command {
    /// Carry this session (new, or replacing the entry with the same peer-id).
    Carry(Arc<Carried>),
    /// Stop carrying the session with this peer-id.
    Forget(u32),
    Stop,
}

/// Workers → control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A datagram that is not a data packet the worker could open (control packets,
    /// P_DATA_V1, unknown peer-ids or key_ids): the control plane handles it.
    Datagram { from: SocketAddr, bytes: Vec<u8> },
    /// A session's authenticated data came from a new address; the worker already
    /// sends there.
    Floated { peer_id: u32, to: SocketAddr },
    /// The client sent OCC_EXIT.
    Exited { peer_id: u32 },
    /// A packet opened with a key_id other than the sending key (a rekey's new key).
    KeyUsed { peer_id: u32, key_id: KeyId },
    /// A packet the worker sealed or opened took its key past `reneg-bytes` or
    /// `reneg-pkts` (or near the end of its packet-ids): the session renegotiates.
    RenegotiationDue { peer_id: u32 },
}

/// Why a packet went nowhere. Each is counted (see [`Discard::counter`]) except the
/// kernel's own chatter on the TAP and a session without a sending key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// A data packet that failed authentication or the replay window.
    Unopened,
    /// A tunnelled packet whose source is not the session's lease.
    Spoofed,
    /// A frame for no carried session.
    NoSession,
    /// A frame from an AF_XDP socket that is not the IPv4 (from `edge`: UDP) it should be.
    Malformed,
    /// Longer than a slot holds.
    Truncated,
    /// The key would not seal (its packet-ids are spent).
    SealFailed,
    /// A frame from the TAP that is not IPv4 (the kernel's IPv6 or ARP chatter).
    NotIpv4,
    /// The session has no sending key.
    NoSendKey,
}

impl Discard {
    /// The counter this discard adds to.
    pub fn counter(self) -> Option<Counter> {
        Some(match self {
            Discard::Unopened => Counter::RxDropped,
            Discard::Spoofed => Counter::Spoofed,
            Discard::NoSession => Counter::NoSession,
            Discard::Malformed => Counter::Malformed,
            Discard::Truncated => Counter::Truncated,
            Discard::SealFailed => Counter::SendErrors,
            Discard::NotIpv4 | Discard::NoSendKey => return None,
        })
    }
}

/// What to do with a datagram from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Write this range of the buffer, an Ethernet frame (header already written), into
    /// the policy seam.
    ToSeam(Range<usize>),
    /// A keepalive ping or an OCC message; nothing more to do.
    Consumed,
    /// Passed to the control plane (see [`Carrier::drain_reports`]).
    ToControl,
    Discarded(Discard),
}

/// What to do with a sealed packet.
#[derive(Debug)]
pub enum Outbound {
    /// Send the slot's first `len` bytes to this UDP address.
    Udp {
        to: SocketAddr,
        len: usize,
    },
    /// Hand the slot's first `len` bytes to a TCP connection's writer.
    Stream {
        writer: tokio::sync::mpsc::Sender<Vec<u8>>,
        len: usize,
    },
    Discarded(Discard),
}

/// The sessions one worker carries, and what it decides about their packets.
pub struct Carrier {
    sessions: HashMap<u32, Arc<Carried>>,
    by_lease: HashMap<Ipv4Addr, u32>,
    /// The non-sending key_id each session was last reported using.
    reported_keys: HashMap<u32, KeyId>,
    /// Destination and source MAC of frames into the seam.
    seam_mac: [u8; 6],
    peer_mac: [u8; 6],
    counters: Arc<Counters>,
    reports: Vec<Report>,
}

impl Carrier {
    /// A carrier writing frames into the seam to `seam_mac` from `peer_mac`, counting
    /// into `counters`.
    pub fn new(seam_mac: [u8; 6], peer_mac: [u8; 6], counters: Arc<Counters>) -> Self {
        Self {
            sessions: HashMap::new(),
            by_lease: HashMap::new(),
            reported_keys: HashMap::new(),
            seam_mac,
            peer_mac,
            counters,
            reports: Vec::new(),
        }
    }

    /// Applies a command; false on [`Command::Stop`].
    pub fn apply(&mut self, command: Command) -> bool {
        match command {
            Command::Carry(session) => {
                if let Some(old) = self.sessions.get(&session.peer_id)
                    && old.lease != session.lease
                {
                    self.by_lease.remove(&old.lease);
                }
                self.by_lease.insert(session.lease, session.peer_id);
                self.sessions.insert(session.peer_id, session);
            }
            Command::Forget(peer_id) => {
                if let Some(old) = self.sessions.remove(&peer_id) {
                    self.by_lease.remove(&old.lease);
                }
                self.reported_keys.remove(&peer_id);
            }
            Command::Stop => return false,
        }
        true
    }

    /// The session carried with `peer_id`.
    pub fn session(&self, peer_id: u32) -> Option<&Arc<Carried>> {
        self.sessions.get(&peer_id)
    }

    /// The reports queued since the last call, oldest first.
    pub fn drain_reports(&mut self) -> std::vec::Drain<'_, Report> {
        self.reports.drain(..)
    }

    /// Counts `n` of `counter` (for the I/O backends' own events).
    pub fn count(&self, counter: Counter, n: u64) {
        self.counters.add(counter, n);
    }

    fn discard<T>(&self, why: Discard, verdict: fn(Discard) -> T) -> T {
        if let Some(counter) = why.counter() {
            self.counters.add(counter, 1);
        }
        verdict(why)
    }

    /// A datagram from `from` (the buffer is rewritten in place): opened, and its
    /// tunnelled packet framed for the seam, or reported, or discarded.
    pub fn datagram(&mut self, packet: &mut [u8], from: SocketAddr, now: Instant) -> Inbound {
        let header = peek_header(packet).ok();
        let session = match header {
            Some((Opcode::DataV2, _)) => {
                peek_peer_id(packet).and_then(|peer_id| self.sessions.get(&peer_id))
            }
            _ => None,
        };
        let key = session.zip(header).and_then(|(s, (_, k))| s.data.key(k));
        let (Some(session), Some(key)) = (session, key) else {
            let bytes = packet.to_vec();
            self.reports.push(Report::Datagram { from, bytes });
            return Inbound::ToControl;
        };
        let Ok(opened) = key.open(packet, now) else {
            return self.discard(Discard::Unopened, Inbound::Discarded);
        };
        let session = session.clone();
        let key_id = key.key_id();
        let peer_id = session.peer_id;
        session.activity.received(now);
        if opened.renegotiate {
            self.reports.push(Report::RenegotiationDue { peer_id });
        }
        if let Peer::Udp(addr) = &session.peer
            && *addr != from
        {
            let mut moved = (*session).clone();
            moved.peer = Peer::Udp(from);
            self.sessions.insert(peer_id, Arc::new(moved));
            self.reports.push(Report::Floated { peer_id, to: from });
        }
        if key_id != session.data.send_key && self.reported_keys.get(&peer_id) != Some(&key_id) {
            self.reported_keys.insert(peer_id, key_id);
            self.reports.push(Report::KeyUsed { peer_id, key_id });
        }
        let start = opened.plaintext.start;
        match Plaintext::classify(&packet[opened.plaintext]) {
            Ok(Plaintext::Ping) => Inbound::Consumed,
            Ok(Plaintext::Occ { message_type, .. }) if message_type == OCC_EXIT => {
                self.reports.push(Report::Exited { peer_id });
                Inbound::Consumed
            }
            Ok(Plaintext::Occ { .. }) | Err(_) => Inbound::Consumed,
            Ok(Plaintext::Packet(p)) if !frame::is_from(p, session.lease) => {
                self.discard(Discard::Spoofed, Inbound::Discarded)
            }
            Ok(Plaintext::Packet(p)) => {
                let len = p.len();
                self.counters.add(Counter::RxPackets, 1);
                self.counters.add(Counter::RxBytes, len as u64);
                session.activity.count_received(len);
                // The plaintext follows at least the 24 bytes of P_DATA_V2 header,
                // packet-id and tag, so the Ethernet header fits in front of it.
                let frame = start - ETH_LEN..start + len;
                frame::write_eth_header(
                    &mut packet[frame.start..start],
                    self.seam_mac,
                    self.peer_mac,
                );
                Inbound::ToSeam(frame)
            }
        }
    }

    /// An Ethernet frame `edge` steered to an AF_XDP socket: the datagram it carries, as
    /// [`Carrier::datagram`] (the range of a [`Inbound::ToSeam`] is within `frame`).
    pub fn edge_frame(&mut self, frame: &mut [u8], now: Instant) -> Inbound {
        let Some((from, payload)) = frame::udp_payload(frame) else {
            return self.discard(Discard::Malformed, Inbound::Discarded);
        };
        let offset = payload.start;
        match self.datagram(&mut frame[payload], from, now) {
            Inbound::ToSeam(r) => Inbound::ToSeam(r.start + offset..r.end + offset),
            other => other,
        }
    }

    /// A translated reply `target` steered to an AF_XDP socket (`peer_id` from its
    /// metadata, when it carried some): copied to [`SEAL_AT`] of `slot` and sealed as
    /// [`Carrier::seal`] does.
    pub fn steered_frame(
        &mut self,
        slot: &mut [u8],
        frame: &[u8],
        peer_id: Option<u32>,
        now: Instant,
    ) -> Outbound {
        if !frame::is_ipv4_frame(frame) {
            return self.discard(Discard::Malformed, Outbound::Discarded);
        }
        let Some(room) = slot.get_mut(SEAL_AT..SEAL_AT + frame.len()) else {
            // Longer than any tunnel packet can be.
            return self.discard(Discard::Truncated, Outbound::Discarded);
        };
        room.copy_from_slice(frame);
        self.seal(slot, frame.len(), peer_id, now)
    }

    /// The Ethernet frame of `frame_len` bytes at [`SEAL_AT`] of `slot`: its IPv4 packet
    /// sealed in place for the session whose lease is its destination (`peer_id`, when
    /// given, names it; it must hold that lease).
    pub fn seal(
        &mut self,
        slot: &mut [u8],
        frame_len: usize,
        peer_id: Option<u32>,
        now: Instant,
    ) -> Outbound {
        let Some(frame) = slot.get(SEAL_AT..SEAL_AT + frame_len) else {
            return self.discard(Discard::Truncated, Outbound::Discarded);
        };
        let Some((dst, packet_len)) = frame::ipv4_destination(frame) else {
            return self.discard(Discard::NotIpv4, Outbound::Discarded);
        };
        let named = peer_id
            .and_then(|id| self.sessions.get(&id))
            .filter(|s| s.lease == dst);
        let Some(session) =
            named.or_else(|| self.by_lease.get(&dst).and_then(|id| self.sessions.get(id)))
        else {
            return self.discard(Discard::NoSession, Outbound::Discarded);
        };
        let header = session.data.send_header();
        let Some(key) = session.data.key(session.data.send_key) else {
            return self.discard(Discard::NoSendKey, Outbound::Discarded);
        };
        let packet_at = SEAL_AT + frame::ETH_LEN;
        if let Some(packet) = slot.get_mut(packet_at..packet_at + packet_len)
            && frame::finish_partial_checksum(packet)
        {
            self.counters.add(Counter::ChecksumsFinished, 1);
        }
        let overhead = session.data.overhead();
        if let DataHeader::V1 { .. } = header {
            slot.copy_within(DATA_V2_OVERHEAD..DATA_V2_OVERHEAD + packet_len, overhead);
        }
        let Ok(sealed) = key.seal(header, slot, packet_len) else {
            return self.discard(Discard::SealFailed, Outbound::Discarded);
        };
        let session = session.clone();
        if sealed.renegotiate {
            self.reports.push(Report::RenegotiationDue {
                peer_id: session.peer_id,
            });
        }
        session.activity.sent(now);
        session.activity.count_sent(packet_len);
        self.counters.add(Counter::TxPackets, 1);
        self.counters.add(Counter::TxBytes, packet_len as u64);
        match &session.peer {
            Peer::Udp(to) => Outbound::Udp {
                to: *to,
                len: sealed.len,
            },
            Peer::Stream(writer) => Outbound::Stream {
                writer: writer.clone(),
                len: sealed.len,
            },
        }
    }
}

#[cfg(test)]
#[path = "carry_tests.rs"]
mod tests;
