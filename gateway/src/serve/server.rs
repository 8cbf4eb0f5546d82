//! The gateway's sessions over UDP and TCP: the stateless cookie handshake for new UDP
//! clients, `gateway-proto` sessions for known ones, authorization and leases, and the
//! XDP maps kept in step with every session that starts or ends. No I/O: the driver in
//! `serve::serve` feeds it datagrams, stream packets, TAP packets and time.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use gateway_ebpf_common::SessionInfo;
use gateway_proto::{
    cookie::{CookieConfig, CookieKey, ResetRateLimiter},
    data::DataChannel,
    key_method::Directive,
    packet::KeyId,
    packet::{ControlPacket, ControlRepr, Opcode, PeerId, peek_peer_id},
    push::{AuthFailure, KeepaliveSettings, PushPolicy, Route, RouteGateway, TunnelMode},
    session::{Event, ServerConfig, Session},
    wrap::Wrap,
};
use tracing::{info, warn};

use crate::{
    admin::{Connection, Selector, TerminateStatus},
    config::Config,
    control::pool::AddressPool,
    dataplane::activity::Activity,
    policy::{GroupId, group_set},
};

/// The XDP side the server keeps in step with its sessions.
pub trait DataPath {
    /// A session is up: admit its lease with its groups and its peer-id.
    fn session_up(&mut self, lease: Ipv4Addr, peer_id: u32, groups: &[GroupId]);
    /// A session ended: drop its lease, peer-id and NAT state.
    fn session_down(&mut self, lease: Ipv4Addr, peer_id: u32);
    /// The data plane carries the session's data packets from now on, with these keys to
    /// this address (called again after every rekey or float); `None`: it stops.
    fn carry(&mut self, peer_id: u32, carried: Option<CarryRequest>);
}

/// What the data plane needs to carry a session.
pub struct CarryRequest {
    pub lease: Ipv4Addr,
    pub addr: SocketAddr,
    /// Over UDP; else over the TCP connection from `addr`.
    pub udp: bool,
    pub data: DataChannel,
    pub activity: Arc<Activity>,
}

/// How long ended connections stay listed (AWS lists them for 60 minutes).
const ENDED_KEPT_FOR: Duration = Duration::from_secs(3600);
/// Most ended connections kept.
const MAX_ENDED: usize = 10_000;
/// Most connections one username terminate may end (as AWS).
const MAX_TERMINATE_BY_USERNAME: usize = 5;

/// Why the server ends a session it is not asked to by the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    SessionTimeout,
    Terminated,
    Shutdown,
}

/// One client.
struct Client {
    /// Stable id for the admin API (`cvpn-connection-` and 17 hex digits, as AWS).
    connection_id: String,
    session: Session,
    addr: SocketAddr,
    lease: Option<Ipv4Addr>,
    common_name: String,
    established_at: Option<Instant>,
    /// Wall-clock time of establishment, for the admin API.
    established_wall: Option<SystemTime>,
    /// Set once the server started ending the session.
    ending: Option<Ending>,
    /// Whether a spoofed packet from this client was already logged.
    spoof_logged: bool,
    /// Over UDP (may float to a new source address) rather than TCP.
    udp: bool,
    /// The groups authorization rules test, settled at authentication.
    groups: Vec<GroupId>,
    /// The data channel the data plane carries, and to which address.
    carried: Option<(DataChannel, SocketAddr)>,
    /// Data-plane traffic stamps, for the keepalive timers.
    activity: Arc<Activity>,
}

/// Something to send.
pub struct Datagram {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

pub struct Server {
    pub(super) config: Config,
    session_config: Arc<ServerConfig>,
    wrap: Wrap,
    cookie: CookieKey,
    resets: ResetRateLimiter,
    pub(super) pool: AddressPool,
    /// Boxed: a free slot of the map then costs a pointer, not a whole client (the map
    /// keeps up to half its slots free).
    clients: HashMap<u32, Box<Client>>,
    by_addr: HashMap<SocketAddr, u32>,
    by_lease: HashMap<Ipv4Addr, u32>,
    next_peer_id: u32,
    /// Tunnel packets from clients, to write into the TAP.
    pub to_tap: Vec<Vec<u8>>,
    /// Tunnel packets dropped because their source was not the sending session's lease.
    pub spoofed: u64,
    /// Datagrams dropped: unwrap, cookie or session checks failed (garbage, forgeries,
    /// replays, packets of unknown sessions).
    pub dropped: u64,
    /// Datagrams to send.
    pub outbox: Vec<Datagram>,
    /// Connections that ended, newest last, with when they ended.
    ended: VecDeque<(Instant, Connection)>,
    /// Session deadlines, earliest first; an entry counts only while it matches
    /// `scheduled` (older ones are skipped when they surface), so that finding the next
    /// deadline and the due sessions never walks every session.
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    scheduled: HashMap<u32, Instant>,
    rng: ring::rand::SystemRandom,
}

/// The limit on stateless reset replies from `endpoint.reset_replies` per
/// `reset_replies_period` (0: no limit).
pub(super) fn reset_limiter(endpoint: &crate::config::Endpoint) -> ResetRateLimiter {
    let count = match endpoint.reset_replies {
        0 => u32::MAX,
        n => n,
    };
    ResetRateLimiter::new(count, endpoint.reset_replies_period).unwrap_or_default()
}

/// Seconds since the Unix epoch, for the replay time of wrapped control packets.
fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

impl Server {
    pub fn new(
        config: Config,
        session_config: Arc<ServerConfig>,
        wrap: Wrap,
        cookie_secret: &[u8],
    ) -> Result<Self, String> {
        let cookie = CookieKey::new(
            cookie_secret,
            CookieConfig {
                hand_window_secs: 60,
                early_negotiation: false,
            },
        )
        .map_err(|e| format!("cookie key: {e}"))?;
        let pool = AddressPool::new(config.endpoint.client_cidr);
        let resets = reset_limiter(&config.endpoint);
        Ok(Self {
            config,
            session_config,
            wrap,
            cookie,
            resets,
            pool,
            clients: HashMap::new(),
            by_addr: HashMap::new(),
            by_lease: HashMap::new(),
            next_peer_id: 0,
            to_tap: Vec::new(),
            spoofed: 0,
            dropped: 0,
            outbox: Vec::new(),
            ended: VecDeque::new(),
            timers: BinaryHeap::new(),
            scheduled: HashMap::new(),
            rng: ring::rand::SystemRandom::new(),
        })
    }

    pub fn pool(&self) -> &AddressPool {
        &self.pool
    }

    pub fn sessions(&self) -> usize {
        self.clients.len()
    }

    /// A datagram from `from` on the UDP listener.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        dp: &mut dyn DataPath,
    ) {
        if let Some(&peer_id) = self.by_addr.get(&from) {
            if let Some(client) = self.clients.get_mut(&peer_id)
                && client.session.handle_datagram(now, bytes).is_err()
            {
                // The peer's fault; the session is left as it was.
                self.dropped += 1;
            }
            self.drive(peer_id, now, dp);
            return;
        }
        if let Some(peer_id) = peek_peer_id(bytes)
            && self.clients.get(&peer_id).is_some_and(|c| c.udp)
        {
            self.float(now, from, peer_id, bytes, dp);
            return;
        }
        self.new_client(now, from, bytes, dp);
    }

    /// A data packet of a known session from a new source address: the session moves
    /// there only if the packet carries a valid tag (a client behind NAT whose mapping
    /// changed, or a roaming laptop); anything else from that address is dropped.
    fn float(
        &mut self,
        now: Instant,
        from: SocketAddr,
        peer_id: u32,
        bytes: &[u8],
        dp: &mut dyn DataPath,
    ) {
        let Some(client) = self.clients.get_mut(&peer_id) else {
            return;
        };
        match client.session.handle_datagram(now, bytes) {
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
        self.drive(peer_id, now, dp);
    }

    /// A packet read from the TCP connection of `from` (already deframed). The
    /// connection itself proves the address, so a session starts statefully from the
    /// client's reset, with no cookie round.
    pub fn handle_stream_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        dp: &mut dyn DataPath,
    ) {
        if let Some(&peer_id) = self.by_addr.get(&from) {
            if let Some(client) = self.clients.get_mut(&peer_id) {
                let _ = client.session.handle_datagram(now, bytes);
            }
            self.drive(peer_id, now, dp);
            return;
        }
        let Some(peer_id) = self.allocate_peer_id() else {
            warn!(%from, "no free peer-id");
            return;
        };
        let Ok(pid) = PeerId::new(peer_id) else {
            return;
        };
        match Session::server_from_reset(self.session_config.clone(), now, unix_now(), pid, bytes) {
            Ok(session) => self.add_client(peer_id, session, from, false, now, dp),
            Err(e) => warn!(%from, "TCP session not started: {e:?}"),
        }
    }

    /// The TCP connection of `from` closed: its session ends.
    pub fn stream_closed(&mut self, from: SocketAddr, dp: &mut dyn DataPath) {
        if let Some(&peer_id) = self.by_addr.get(&from) {
            self.remove(peer_id, "TCP connection closed", dp);
        }
    }

    /// The cookie handshake: answer a reset without keeping state; create the session
    /// when the client's next packet proves it received our reply.
    fn new_client(&mut self, now: Instant, from: SocketAddr, bytes: &[u8], dp: &mut dyn DataPath) {
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
        let unix = unix_now();
        if repr.opcode == Opcode::ControlHardResetClientV2 {
            if !self.resets.allow(now) {
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
                self.outbox.push(Datagram {
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
        let Some(peer_id) = self.allocate_peer_id() else {
            warn!(%from, "no free peer-id");
            return;
        };
        let Ok(pid) = PeerId::new(peer_id) else {
            return;
        };
        match Session::server_from_cookie(
            self.session_config.clone(),
            now,
            unix,
            &cookie,
            pid,
            bytes,
        ) {
            Ok(session) => self.add_client(peer_id, session, from, true, now, dp),
            Err(e) => warn!(%from, "session not started: {e:?}"),
        }
    }

    fn add_client(
        &mut self,
        peer_id: u32,
        session: Session,
        from: SocketAddr,
        udp: bool,
        now: Instant,
        dp: &mut dyn DataPath,
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
                activity: Arc::new(Activity::new(now)),
            }),
        );
        self.by_addr.insert(from, peer_id);
        self.drive(peer_id, now, dp);
    }

    fn allocate_peer_id(&mut self) -> Option<u32> {
        for _ in 0..=PeerId::MAX {
            let id = self.next_peer_id;
            self.next_peer_id = if id >= PeerId::MAX { 0 } else { id + 1 };
            if !self.clients.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    /// The earliest time any session needs `handle_timeout`.
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
    fn schedule(&mut self, peer_id: u32) {
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
    pub fn handle_timeout(&mut self, now: Instant, dp: &mut dyn DataPath) {
        let mut due = Vec::new();
        while let Some(&Reverse((at, peer_id))) = self.timers.peek() {
            if at > now {
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
            if c.session.poll_timeout().is_some_and(|t| t <= now) {
                c.session.handle_timeout(now);
            }
            let expired = c.ending.is_none()
                && c.established_at
                    .is_some_and(|t| now.saturating_duration_since(t) >= limit);
            if expired {
                info!(peer_id, cn = %c.common_name, "session timeout reached");
                self.end(now, peer_id, Ending::SessionTimeout, dp);
            } else {
                self.drive(peer_id, now, dp);
            }
        }
    }

    /// Ends a session from the server's side, telling the client why: HALT (the client
    /// stops) when it was terminated or reached the session timeout with
    /// `endpoint.disconnect_on_session_timeout`; RESTART (the client reconnects) at
    /// shutdown or a session timeout without it. A session not yet able to carry the
    /// message closes silently.
    fn end(&mut self, now: Instant, peer_id: u32, why: Ending, dp: &mut dyn DataPath) {
        let halt = match why {
            Ending::Terminated => true,
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
        let message = match why {
            Ending::SessionTimeout => "session timeout reached",
            Ending::Terminated => "terminated by the administrator",
            Ending::Shutdown => "the gateway is shutting down",
        };
        let told = if halt {
            c.session.halt(now, Some(message))
        } else {
            c.session.restart(now, Some(message))
        };
        if told.is_err() {
            c.session.close(now);
        }
        self.drive(peer_id, now, dp);
    }

    /// Ends every session at once (shutdown): clients are told to reconnect (the
    /// message is in `outbox` on return), and everything the sessions held is released.
    pub fn close_all(&mut self, now: Instant, dp: &mut dyn DataPath) {
        let ids: Vec<u32> = self.clients.keys().copied().collect();
        for peer_id in ids {
            self.end(now, peer_id, Ending::Shutdown, dp);
            self.remove(peer_id, "the gateway shut down", dp);
        }
    }

    /// Active connections and those that ended in the last 60 minutes, oldest first.
    pub fn connections(&mut self, now: Instant) -> Vec<Connection> {
        while self
            .ended
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > ENDED_KEPT_FOR)
        {
            self.ended.pop_front();
        }
        let mut active: Vec<Connection> = self
            .clients
            .values()
            .filter(|c| c.established_at.is_some())
            .map(|c| self.describe(c, None))
            .collect();
        active.sort_by_key(|c| c.connection_established_time);
        self.ended
            .iter()
            .map(|(_, c)| c.clone())
            .chain(active)
            .collect()
    }

    fn describe(&self, c: &Client, ended: Option<(SystemTime, &str)>) -> Connection {
        let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs());
        let traffic = c.activity.traffic();
        let (status, message) = match (ended, c.ending) {
            (Some((_, reason)), _) => ("terminated", reason.to_string()),
            (None, Some(Ending::Terminated)) => {
                ("terminating", "terminated by the administrator".into())
            }
            (None, Some(_)) => ("terminating", String::new()),
            (None, None) => ("active", String::new()),
        };
        let username = match c.session.identity().username.as_str() {
            "" => c.common_name.clone(),
            name => name.to_string(),
        };
        Connection {
            connection_id: c.connection_id.clone(),
            username,
            common_name: c.common_name.clone(),
            client_ip: c.lease,
            remote: c.addr,
            transport: if c.udp { "udp" } else { "tcp" }.into(),
            connection_established_time: c.established_wall.and_then(unix),
            connection_end_time: ended.and_then(|(t, _)| unix(t)),
            ingress_bytes: traffic.rx_bytes,
            egress_bytes: traffic.tx_bytes,
            ingress_packets: traffic.rx_packets,
            egress_packets: traffic.tx_packets,
            status: status.into(),
            status_message: message,
        }
    }

    /// Ends the established connection `selector` names (by id, or every one of a user's,
    /// at most 5): the client is told to stop (HALT); its lease, XDP and NAT state go when
    /// the session closes.
    pub fn terminate(
        &mut self,
        now: Instant,
        selector: &Selector,
        dp: &mut dyn DataPath,
    ) -> Result<Vec<TerminateStatus>, String> {
        let matches: Vec<u32> = self
            .clients
            .iter()
            .filter(|(_, c)| c.established_at.is_some())
            .filter(|(_, c)| match selector {
                Selector::ConnectionId(id) => c.connection_id == *id,
                Selector::Username(name) => {
                    c.common_name == *name || c.session.identity().username == *name
                }
            })
            .map(|(id, _)| *id)
            .collect();
        match selector {
            _ if matches.is_empty() => {
                return Err(match selector {
                    Selector::ConnectionId(id) => format!("no active connection {id}"),
                    Selector::Username(name) => format!("no active connection of user {name}"),
                });
            }
            Selector::Username(name) if matches.len() > MAX_TERMINATE_BY_USERNAME => {
                return Err(format!(
                    "user {name} has {} connections; terminate by connection id when there are more than {MAX_TERMINATE_BY_USERNAME}",
                    matches.len()
                ));
            }
            _ => {}
        }
        let mut statuses = Vec::new();
        for peer_id in matches {
            let Some(c) = self.clients.get(&peer_id) else {
                continue;
            };
            let previous = if c.ending.is_some() {
                "terminating"
            } else {
                "active"
            };
            let connection_id = c.connection_id.clone();
            info!(peer_id, cn = %c.common_name, connection_id = %connection_id, "terminating");
            self.end(now, peer_id, Ending::Terminated, dp);
            let current = if self.clients.contains_key(&peer_id) {
                "terminating"
            } else {
                "terminated"
            };
            statuses.push(TerminateStatus {
                connection_id,
                previous_status: previous.into(),
                current_status: current.into(),
            });
        }
        Ok(statuses)
    }

    /// Takes a session's transmits and events after it was fed.
    fn drive(&mut self, peer_id: u32, now: Instant, dp: &mut dyn DataPath) {
        loop {
            let Some(client) = self.clients.get_mut(&peer_id) else {
                return;
            };
            while let Some(t) = client.session.poll_transmit(now) {
                self.outbox.push(Datagram {
                    to: client.addr,
                    bytes: t.contents,
                });
            }
            let Some(event) = client.session.poll_event() else {
                self.sync_data_plane(peer_id, dp);
                self.schedule(peer_id);
                return;
            };
            match event {
                Event::AuthRequest(req) => {
                    let cn = req.identity.common_name.clone().unwrap_or_default();
                    let groups = self.groups_of(&cn, req.identity.certificate.as_deref());
                    self.authorize(peer_id, now, cn, groups);
                }
                Event::Established(_) => {
                    let groups = client.groups.clone();
                    client.established_at = Some(now);
                    client.established_wall = Some(SystemTime::now());
                    if let Some(lease) = client.lease {
                        dp.session_up(lease, peer_id, &groups);
                        info!(peer_id, cn = %client.common_name, %lease, from = %client.addr, "connected");
                    }
                }
                Event::Rekeyed(k) => {
                    info!(peer_id, key_id = k.key_id.get(), "rekeyed");
                }
                Event::Packet(p) => {
                    // Anti-spoofing per session: the TAP seam loses which session a packet
                    // came from (`inner` can only check that the source is some live
                    // lease), so the source must be this session's own lease here.
                    let own = client.lease.is_some_and(|lease| {
                        p.first().is_some_and(|b| b >> 4 == 4)
                            && p.get(12..16) == Some(&lease.octets()[..])
                    });
                    if own {
                        client.activity.count_received(p.len());
                        self.to_tap.push(p);
                    } else {
                        self.spoofed += 1;
                        if !client.spoof_logged {
                            client.spoof_logged = true;
                            warn!(peer_id, cn = %client.common_name, "dropping tunnel packets whose source is not the client's lease (logged once per session)");
                        }
                    }
                }
                // Client role only.
                Event::AuthPending { .. } => {}
                Event::Closed { reason } => {
                    self.remove(peer_id, &format!("{reason:?}"), dp);
                    return;
                }
            }
        }
    }

    /// Hands the session's data channel to the data plane when it changed (established,
    /// rekeyed, a key retired, floated) and takes it back when the session stops being
    /// open.
    fn sync_data_plane(&mut self, peer_id: u32, dp: &mut dyn DataPath) {
        let Some(client) = self.clients.get_mut(&peer_id) else {
            return;
        };
        let current = client
            .session
            .data_channel()
            .filter(|_| client.established_at.is_some());
        match (current, client.lease) {
            (Some(data), Some(lease)) => {
                let unchanged = client
                    .carried
                    .as_ref()
                    .is_some_and(|(old, addr)| *addr == client.addr && old.same_keys(&data));
                if !unchanged {
                    client.carried = Some((data.clone(), client.addr));
                    dp.carry(
                        peer_id,
                        Some(CarryRequest {
                            lease,
                            addr: client.addr,
                            udp: client.udp,
                            data,
                            activity: client.activity.clone(),
                        }),
                    );
                }
            }
            _ => {
                if client.carried.take().is_some() {
                    dp.carry(peer_id, None);
                }
            }
        }
    }

    /// The data plane saw the session's authenticated data arrive from `to`: the session
    /// moves there (as [`Server::handle_datagram`] does for data it handles itself).
    pub fn floated(&mut self, now: Instant, peer_id: u32, to: SocketAddr, dp: &mut dyn DataPath) {
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
        self.drive(peer_id, now, dp);
    }

    /// The data plane received the client's OCC_EXIT.
    pub fn peer_exited(&mut self, now: Instant, peer_id: u32, dp: &mut dyn DataPath) {
        if let Some(client) = self.clients.get_mut(&peer_id) {
            client.session.peer_exited();
        }
        self.drive(peer_id, now, dp);
    }

    /// The data plane opened a packet with a key_id other than the sending key.
    pub fn key_used(&mut self, now: Instant, peer_id: u32, key_id: KeyId, dp: &mut dyn DataPath) {
        if let Some(client) = self.clients.get_mut(&peer_id) {
            client.session.note_key_used(key_id, now);
        }
        self.drive(peer_id, now, dp);
    }

    /// A packet the data plane carried took the session's key past a renegotiation
    /// limit (`reneg-bytes`, `reneg-pkts`): the session starts a soft reset if its sending
    /// key is due one.
    pub fn renegotiation_due(&mut self, now: Instant, peer_id: u32, dp: &mut dyn DataPath) {
        if let Some(client) = self.clients.get_mut(&peer_id) {
            client.session.check_renegotiation(now);
        }
        self.drive(peer_id, now, dp);
    }

    /// The groups of a client: `[groups]` by common name, and the certificate's OUs
    /// when `tls.groups_from_certificate_ou` is on (OUs no rule names are ignored).
    fn groups_of(&self, common_name: &str, certificate: Option<&[u8]>) -> Vec<GroupId> {
        let mut groups = self.config.groups.of_common_name(common_name).to_vec();
        if self.config.tls.groups_from_certificate_ou
            && let Some(der) = certificate
        {
            for ou in crate::pki::organizational_units(der) {
                if let Some(id) = self.config.groups.id(&ou)
                    && !groups.contains(&id)
                {
                    groups.push(id);
                }
            }
        }
        groups
    }

    /// Admits an authenticated client: a lease and its push, or AUTH_FAILED.
    fn authorize(&mut self, peer_id: u32, now: Instant, common_name: String, groups: Vec<GroupId>) {
        let lease = self.pool.lease();
        let Some(client) = self.clients.get_mut(&peer_id) else {
            return;
        };
        client.common_name = common_name;
        client.groups = groups;
        match lease {
            Ok(lease) => {
                client.lease = Some(lease);
                self.by_lease.insert(lease, peer_id);
                let policy = self.push_policy(lease);
                let client = self.clients.get_mut(&peer_id).expect("present above");
                if let Err(e) = client.session.accept(now, policy) {
                    warn!(peer_id, "accept: {e:?}");
                }
            }
            Err(e) => {
                warn!(peer_id, cn = %client.common_name, "refused: {e}");
                let _ = client.session.reject(
                    now,
                    AuthFailure::Plain {
                        reason: Some("no free address in the client CIDR".into()),
                    },
                );
            }
        }
    }

    fn push_policy(&self, lease: Ipv4Addr) -> PushPolicy {
        let e = &self.config.endpoint;
        let tunnel = if e.split_tunnel {
            TunnelMode::Split {
                routes: self
                    .config
                    .routes
                    .iter()
                    .map(|r| Route {
                        network: r.destination.network(),
                        netmask: r.destination.netmask(),
                        gateway: RouteGateway::Default,
                        metric: None,
                    })
                    .collect(),
                routes_ipv6: Vec::new(),
            }
        } else {
            TunnelMode::Full {
                bypass_dhcp: true,
                ipv6: false,
            }
        };
        PushPolicy {
            address: lease,
            netmask: self.pool.netmask(),
            gateway: self.pool.gateway_addr(),
            ipv6: None,
            tunnel,
            dns_servers: e.dns_servers.iter().copied().map(IpAddr::V4).collect(),
            search_domains: Vec::new(),
            block_outside_dns: false,
            keepalive: Some(KeepaliveSettings {
                ping: e.keepalive_interval,
                ping_restart: e.keepalive_timeout,
            }),
            tun_mtu: None,
            features: Default::default(),
            auth_token: None,
            extra: e
                .login_banner
                .as_deref()
                .map(|text| banner(&e.name, text))
                .unwrap_or_default(),
        }
    }

    fn remove(&mut self, peer_id: u32, reason: &str, dp: &mut dyn DataPath) {
        let Some(client) = self.clients.remove(&peer_id) else {
            return;
        };
        self.scheduled.remove(&peer_id);
        if client.carried.is_some() {
            dp.carry(peer_id, None);
        }
        self.by_addr.remove(&client.addr);
        if let Some(lease) = client.lease {
            self.by_lease.remove(&lease);
            if client.established_at.is_some() {
                dp.session_down(lease, peer_id);
            }
            let _ = self.pool.release(lease);
        }
        info!(peer_id, cn = %client.common_name, from = %client.addr, reason, "disconnected");
        if client.established_at.is_some() {
            let reason = match client.ending {
                Some(Ending::Terminated) => "terminated by the administrator",
                Some(Ending::SessionTimeout) => "session timeout reached",
                Some(Ending::Shutdown) => "the gateway shut down",
                None => reason,
            };
            let record = self.describe(&client, Some((SystemTime::now(), reason)));
            if self.ended.len() >= MAX_ENDED {
                self.ended.pop_front();
            }
            self.ended.push_back((Instant::now(), record));
        }
    }
}

/// The login banner as `echo` options: `msg` lines, then `msg-window` with the endpoint
/// name as its title (OpenVPN GUI shows the lines in a window; the 2.6 command-line
/// client logs every `echo` line). `%`, `,` and control characters are percent-encoded,
/// since a push message cannot carry commas.
pub fn banner(endpoint: &str, text: &str) -> Vec<Directive> {
    fn encode(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                '%' | ',' => out.push_str(&format!("%{:02X}", c as u32)),
                c if c.is_control() => {
                    let mut bytes = [0u8; 4];
                    for b in c.encode_utf8(&mut bytes).bytes() {
                        out.push_str(&format!("%{b:02X}"));
                    }
                }
                c => out.push(c),
            }
        }
        out
    }
    let echo = |kind: &str, text: &str| Directive {
        name: "echo".into(),
        args: vec![kind.into(), encode(text)],
    };
    let mut lines: Vec<Directive> = text.lines().map(|line| echo("msg", line)).collect();
    lines.push(echo("msg-window", endpoint));
    lines
}

/// The XDP map value for a session.
pub fn session_info(peer_id: u32, groups: &[GroupId]) -> SessionInfo {
    SessionInfo {
        groups: group_set(groups),
        peer_id,
        _pad: 0,
    }
}
