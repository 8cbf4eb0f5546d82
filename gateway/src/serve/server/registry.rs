//! The registry: the clients the server holds, from their first packet to their
//! removal, and their timers (the session's own, and the session timeout) in one heap,
//! so that finding the next deadline and the due sessions never walks every session.

use std::{
    cmp::Reverse,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Instant, SystemTime},
};

use gateway_proto::{data::DataChannel, session::Session};
use tracing::info;

use super::{CarryRequest, Now, Output, Server};
use crate::{dataplane::activity::Activity, policy::GroupId};

/// Why the server ends a session it is not asked to by the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ending {
    SessionTimeout,
    Terminated,
    /// The CRL now revokes the client's certificate.
    Revoked,
    /// A newer session of the same identity took its place
    /// (`endpoint.max_sessions_per_identity`).
    Replaced,
    Shutdown,
}

impl Ending {
    /// What the client is told, and what the connection list says.
    pub(super) fn message(self) -> &'static str {
        match self {
            Ending::SessionTimeout => "session timeout reached",
            Ending::Terminated => "terminated by the administrator",
            Ending::Revoked => "certificate revoked",
            Ending::Replaced => "replaced by a newer connection with the same certificate",
            Ending::Shutdown => "the gateway is shutting down",
        }
    }
}

/// One client.
pub(super) struct Client {
    /// Stable id for the admin API (`cvpn-connection-` and 17 hex digits, as AWS).
    pub connection_id: String,
    pub session: Session,
    pub addr: SocketAddr,
    pub lease: Option<Ipv4Addr>,
    pub common_name: String,
    pub established_at: Option<Instant>,
    /// Wall-clock time of establishment, for the admin API.
    pub established_wall: Option<SystemTime>,
    /// Set once the server started ending the session.
    pub ending: Option<Ending>,
    /// Whether a spoofed packet from this client was already logged.
    pub spoof_logged: bool,
    /// Over UDP (may float to a new source address) rather than TCP.
    pub udp: bool,
    /// The groups authorization rules test, settled at authentication.
    pub groups: Vec<GroupId>,
    /// The data channel the data plane carries, and to which address.
    pub carried: Option<(DataChannel, SocketAddr)>,
    /// Data-plane traffic stamps, for the keepalive timers.
    pub activity: Arc<Activity>,
}

impl Server {
    pub(super) fn add_client(
        &mut self,
        peer_id: u32,
        session: Session,
        from: SocketAddr,
        udp: bool,
        now: Now,
    ) {
        let mut id = [0u8; 9];
        let _ = ring::rand::SecureRandom::fill(&self.rng, &mut id);
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        self.clients.insert(
            peer_id,
            Box::new(Client {
                connection_id: format!("cvpn-connection-{}", &hex[..17]),
                session,
                addr: from,
                lease: None,
                common_name: String::new(),
                established_at: None,
                established_wall: None,
                ending: None,
                spoof_logged: false,
                udp,
                groups: Vec::new(),
                carried: None,
                activity: Arc::new(Activity::new(now.at)),
            }),
        );
        self.by_addr.insert(from, peer_id);
        self.drive(peer_id, now);
    }

    /// The earliest time any session needs [`Server::handle_timeout`].
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, peer_id))) = self.timers.peek() {
            if self.scheduled.get(&peer_id) == Some(&at) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// When session `c` needs `handle_timeout` next: its own timers, and the session
    /// timeout.
    fn deadline(&self, c: &Client) -> Option<Instant> {
        let limit = c
            .established_at
            .filter(|_| c.ending.is_none())
            .and_then(|t| t.checked_add(self.config.endpoint.session_timeout));
        match (c.session.poll_timeout(), limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Files the session's next deadline (after anything that may have changed it).
    pub(super) fn schedule(&mut self, peer_id: u32) {
        let deadline = self.clients.get(&peer_id).and_then(|c| self.deadline(c));
        match deadline {
            Some(at) if self.scheduled.get(&peer_id) != Some(&at) => {
                self.scheduled.insert(peer_id, at);
                self.timers.push(Reverse((at, peer_id)));
            }
            Some(_) => {}
            None => {
                self.scheduled.remove(&peer_id);
            }
        }
    }

    /// Runs the timers that are due, and ends sessions past the session timeout. Only
    /// the sessions whose deadline passed are touched; a keepalive deadline is checked
    /// against the data plane's activity stamps first.
    pub fn handle_timeout(&mut self, now: Now) {
        let mut due = Vec::new();
        while let Some(&Reverse((at, peer_id))) = self.timers.peek() {
            if at > now.at {
                break;
            }
            self.timers.pop();
            if self.scheduled.get(&peer_id) == Some(&at) {
                self.scheduled.remove(&peer_id);
                due.push(peer_id);
            }
        }
        let limit = self.config.endpoint.session_timeout;
        for peer_id in due {
            let Some(c) = self.clients.get_mut(&peer_id) else {
                continue;
            };
            c.session
                .note_data_activity(c.activity.last_received(), c.activity.last_sent());
            if c.session.poll_timeout().is_some_and(|t| t <= now.at) {
                c.session.handle_timeout(now.at);
            }
            let expired = c.ending.is_none()
                && c.established_at
                    .is_some_and(|t| now.at.saturating_duration_since(t) >= limit);
            if expired {
                info!(peer_id, cn = %c.common_name, "session timeout reached");
                self.end(now, peer_id, Ending::SessionTimeout);
            } else {
                self.drive(peer_id, now);
            }
        }
    }

    /// Ends a session from the server's side, telling the client why: HALT (the client
    /// stops) when it was terminated or reached the session timeout with
    /// `endpoint.disconnect_on_session_timeout`; RESTART (the client reconnects) at
    /// shutdown or a session timeout without it. A session not yet able to carry the
    /// message closes silently.
    pub(super) fn end(&mut self, now: Now, peer_id: u32, why: Ending) {
        let halt = match why {
            Ending::Terminated | Ending::Revoked | Ending::Replaced => true,
            Ending::SessionTimeout => self.config.endpoint.disconnect_on_session_timeout,
            Ending::Shutdown => false,
        };
        let Some(c) = self.clients.get_mut(&peer_id) else {
            return;
        };
        if c.ending.is_some() {
            return;
        }
        c.ending = Some(why);
        let told = if halt {
            c.session.halt(now.at, Some(why.message()))
        } else {
            c.session.restart(now.at, Some(why.message()))
        };
        if told.is_err() {
            c.session.close(now.at);
        }
        self.drive(peer_id, now);
    }

    /// Ends the sessions whose client certificate `revocations` revokes (a reloaded
    /// CRL): each client is told to stop (HALT) and its session ends as a terminated
    /// one does. Returns how many.
    pub fn end_revoked(
        &mut self,
        now: Now,
        revocations: &crate::control::crl::Revocations,
    ) -> usize {
        let revoked: Vec<u32> = self
            .clients
            .iter()
            .filter(|(_, c)| c.ending.is_none())
            .filter(|(_, c)| {
                c.session
                    .identity()
                    .certificate
                    .as_deref()
                    .is_some_and(|der| revocations.revokes(der))
            })
            .map(|(&peer_id, _)| peer_id)
            .collect();
        for &peer_id in &revoked {
            if let Some(c) = self.clients.get(&peer_id) {
                info!(peer_id, cn = %c.common_name, "certificate revoked: ending the session");
            }
            self.end(now, peer_id, Ending::Revoked);
        }
        revoked.len()
    }

    /// The TLS and session settings for sessions that start from now on (a reloaded
    /// CRL); sessions in progress keep theirs.
    pub fn set_session_config(&mut self, config: Arc<gateway_proto::session::ServerConfig>) {
        self.session_config = config;
    }

    /// Ends every session at once (shutdown): clients are told to reconnect (the
    /// message is among the outputs), and everything the sessions held is released.
    pub fn close_all(&mut self, now: Now) {
        let ids: Vec<u32> = self.clients.keys().copied().collect();
        for peer_id in ids {
            self.end(now, peer_id, Ending::Shutdown);
            self.remove(now, peer_id, "the gateway shut down");
        }
    }

    /// Hands the session's data channel to the data plane when it changed (established,
    /// rekeyed, a key retired, floated) and takes it back when the session stops being
    /// open.
    pub(super) fn sync_data_plane(&mut self, peer_id: u32) {
        let Some(client) = self.clients.get_mut(&peer_id) else {
            return;
        };
        let current = client
            .session
            .data_channel()
            .filter(|_| client.established_at.is_some());
        let request = match (current, client.lease) {
            (Some(data), Some(lease)) => {
                let unchanged = client
                    .carried
                    .as_ref()
                    .is_some_and(|(old, addr)| *addr == client.addr && old.same_keys(&data));
                if unchanged {
                    return;
                }
                client.carried = Some((data.clone(), client.addr));
                Some(CarryRequest {
                    lease,
                    addr: client.addr,
                    udp: client.udp,
                    data,
                    activity: client.activity.clone(),
                })
            }
            _ if client.carried.take().is_some() => None,
            _ => return,
        };
        self.plane.push_back(Output::Carry { peer_id, request });
    }

    /// Forgets a session and releases what it held (lease, XDP state, the data plane's
    /// copy); an established one goes to the list of ended connections.
    pub(super) fn remove(&mut self, now: Now, peer_id: u32, reason: &str) {
        let Some(client) = self.clients.remove(&peer_id) else {
            return;
        };
        self.scheduled.remove(&peer_id);
        if client.carried.is_some() {
            self.plane.push_back(Output::Carry {
                peer_id,
                request: None,
            });
        }
        self.by_addr.remove(&client.addr);
        if let Some(lease) = client.lease {
            self.by_lease.remove(&lease);
            if client.established_at.is_some() {
                self.plane.push_back(Output::SessionDown { lease, peer_id });
            }
            let _ = self.pool.release(lease);
        }
        if !client.udp {
            self.wire.push_back(Output::CloseStream { to: client.addr });
        }
        info!(peer_id, cn = %client.common_name, from = %client.addr, reason, "disconnected");
        if client.established_at.is_some() {
            let reason = match client.ending {
                Some(Ending::Shutdown) => "the gateway shut down",
                Some(ending) => ending.message(),
                None => reason,
            };
            self.record_ended(now, &client, reason);
        }
    }
}
