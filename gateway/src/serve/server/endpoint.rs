//! The endpoint: where a datagram or stream packet goes. Known addresses go to their
//! session; a data packet of a known peer-id from a new address may float the session;
//! anything else is a new client, which over UDP must pass the stateless cookie
//! handshake before any state is kept, and over TCP starts from its reset (the
//! connection proves the address).

use std::net::SocketAddr;

use gateway_proto::{
    packet::{ControlPacket, ControlRepr, Opcode, PeerId, peek_peer_id},
    session::Session,
};
use tracing::{info, warn};

use super::{Now, Output, Server};

impl Server {
    /// A datagram from `from` on the UDP listener.
    pub fn handle_datagram(&mut self, now: Now, from: SocketAddr, bytes: &[u8]) {
        if let Some(&peer_id) = self.by_addr.get(&from) {
            if let Some(client) = self.clients.get_mut(&peer_id)
                && client.session.handle_datagram(now.at, bytes).is_err()
            {
                // The peer's fault; the session is left as it was.
                self.dropped += 1;
            }
            self.drive(peer_id, now);
            return;
        }
        if let Some(peer_id) = peek_peer_id(bytes)
            && self.clients.get(&peer_id).is_some_and(|c| c.udp)
        {
            self.float(now, from, peer_id, bytes);
            return;
        }
        self.new_client(now, from, bytes);
    }

    /// A data packet of a known session from a new source address: the session moves
    /// there only if the packet carries a valid tag (a client behind NAT whose mapping
    /// changed, or a roaming laptop); anything else from that address is dropped.
    fn float(&mut self, now: Now, from: SocketAddr, peer_id: u32, bytes: &[u8]) {
        let Some(client) = self.clients.get_mut(&peer_id) else {
            return;
        };
        match client.session.handle_datagram(now.at, bytes) {
            Err(_) => {
                self.dropped += 1;
                return;
            }
            Ok(accepted) if accepted.allows_float() => {
                info!(peer_id, cn = %client.common_name, old = %client.addr, new = %from, "client floated");
                self.by_addr.remove(&client.addr);
                client.addr = from;
                self.by_addr.insert(from, peer_id);
            }
            _ => return,
        }
        self.drive(peer_id, now);
    }

    /// The data plane saw the session's authenticated data arrive from `to`: the session
    /// moves there (as [`Server::handle_datagram`] does for data it handles itself).
    pub fn floated(&mut self, now: Now, peer_id: u32, to: SocketAddr) {
        let Some(client) = self.clients.get_mut(&peer_id) else {
            return;
        };
        if !client.udp || client.addr == to {
            return;
        }
        info!(peer_id, cn = %client.common_name, old = %client.addr, new = %to, "client floated");
        self.by_addr.remove(&client.addr);
        client.addr = to;
        self.by_addr.insert(to, peer_id);
        self.drive(peer_id, now);
    }

    /// A packet read from the TCP connection of `from` (already deframed). The
    /// connection itself proves the address, so a session starts statefully from the
    /// client's reset, with no cookie round.
    pub fn handle_stream_packet(&mut self, now: Now, from: SocketAddr, bytes: &[u8]) {
        if let Some(&peer_id) = self.by_addr.get(&from) {
            if let Some(client) = self.clients.get_mut(&peer_id) {
                let _ = client.session.handle_datagram(now.at, bytes);
            }
            self.drive(peer_id, now);
            return;
        }
        let Some(pid) = self.allocate_peer_id() else {
            warn!(%from, "no free peer-id");
            self.wire.push_back(Output::CloseStream { to: from });
            return;
        };
        match Session::server_from_reset(
            self.session_config.clone(),
            now.at,
            now.unix_secs(),
            pid,
            bytes,
        ) {
            Ok(session) => self.add_client(pid.get(), session, from, false, now),
            Err(e) => {
                self.dropped += 1;
                self.quiet
                    .warn(|held| warn!(%from, held, "TCP session not started: {e}"));
                self.wire.push_back(Output::CloseStream { to: from });
            }
        }
    }

    /// The TCP connection of `from` closed: its session ends.
    pub fn stream_closed(&mut self, now: Now, from: SocketAddr) {
        if let Some(&peer_id) = self.by_addr.get(&from) {
            self.remove(now, peer_id, "TCP connection closed");
        }
    }

    /// The cookie handshake: answer a reset without keeping state; create the session
    /// when the client's next packet proves it received our reply.
    fn new_client(&mut self, now: Now, from: SocketAddr, bytes: &[u8]) {
        let mut buf = vec![0u8; bytes.len()];
        let Ok(unwrapped) = self.wrap.unwrap(bytes, &mut buf) else {
            self.dropped += 1;
            return;
        };
        let Ok(packet) = ControlPacket::new_checked(&buf[..unwrapped.len]) else {
            self.dropped += 1;
            return;
        };
        let repr = ControlRepr::parse(&packet);
        let unix = now.unix_secs();
        if repr.opcode == Opcode::ControlHardResetClientV2 {
            if !self.resets.allow(now.at) {
                return;
            }
            let Ok(reply) = self.cookie.reply_to_reset(
                &repr,
                from,
                unwrapped.replay.map(|r| r.id),
                u64::from(unix),
            ) else {
                return;
            };
            let out = reply.repr();
            let mut plain = vec![0u8; out.buffer_len()];
            let Ok(len) = out.emit(&mut plain) else {
                return;
            };
            let mut wire = vec![0u8; len + self.wrap.overhead()];
            if let Ok(len) = self
                .wrap
                .wrap(&plain[..len], reply.replay_stamp(unix), &mut wire)
            {
                wire.truncate(len);
                self.wire.push_back(Output::Transmit {
                    to: from,
                    bytes: wire,
                });
            }
            return;
        }
        let Ok(cookie) = self.cookie.verify(&repr, from, u64::from(unix)) else {
            self.dropped += 1;
            return;
        };
        let Some(pid) = self.allocate_peer_id() else {
            warn!(%from, "no free peer-id");
            return;
        };
        match Session::server_from_cookie(
            self.session_config.clone(),
            now.at,
            unix,
            &cookie,
            pid,
            bytes,
        ) {
            Ok(session) => self.add_client(pid.get(), session, from, true, now),
            Err(e) => warn!(%from, "session not started: {e}"),
        }
    }

    /// The next peer-id no session holds, round robin.
    fn allocate_peer_id(&mut self) -> Option<PeerId> {
        for _ in 0..=PeerId::MAX {
            let id = self.next_peer_id;
            self.next_peer_id = if id >= PeerId::MAX { 0 } else { id + 1 };
            if !self.clients.contains_key(&id) {
                return PeerId::new(id).ok();
            }
        }
        None
    }
}
