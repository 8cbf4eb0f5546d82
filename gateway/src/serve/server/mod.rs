//! The gateway's sessions over UDP and TCP, with no I/O and no clock of its own (quinn-
//! proto style): the driver in `serve` passes every datagram, stream packet, data-plane
//! report and timer expiry in with the time ([`Now`]), and takes [`Output`] values out —
//! datagrams to send, tunnel packets for the seam, XDP map changes and hand-overs to the
//! data-plane workers — which it carries out in order.
//!
//! Its rooms:
//! - `endpoint`: where a packet goes (its session, a float, or the cookie handshake for a
//!   new client);
//! - `registry`: the clients from first packet to removal, and their timers;
//! - `admission`: identity, groups, lease, push, banner — where directory and SSO
//!   authentication will plug in;
//! - `connections`: the connection list and terminate;
//! - here: the server, its outputs, and driving a session after each input.

mod admission;
mod connections;
mod endpoint;
mod registry;

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use gateway_proto::{
    cookie::{CookieConfig, CookieConfigError, CookieKey, ResetRateLimiter},
    data::DataChannel,
    packet::KeyId,
    session::{Event, ServerConfig},
    wrap::Wrap,
};
use tracing::{info, warn};

pub use self::admission::{Regroup, banner, session_info};
pub use self::connections::TerminateError;
use self::registry::Client;
use crate::{
    admin::Connection,
    config::Config,
    control::pool::AddressPool,
    dataplane::{activity::Activity, carry::Report, frame},
    policy::GroupId,
};

/// The two clocks the server reads, both passed in by the caller: monotonic time for
/// timers, wall-clock time for replay stamps, cookies and the connection list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub at: Instant,
    pub wall: SystemTime,
}

impl Now {
    /// Both clocks now.
    pub fn system() -> Self {
        Self {
            at: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// `at` with the wall clock now (tests that move monotonic time on).
    pub fn at(at: Instant) -> Self {
        Self {
            at,
            wall: SystemTime::now(),
        }
    }

    /// Seconds since the Unix epoch, for the replay time of wrapped control packets.
    fn unix_secs(&self) -> u32 {
        self.wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0)
    }
}

/// What the data plane needs to carry a session.
#[derive(Debug)]
pub struct CarryRequest {
    pub lease: Ipv4Addr,
    pub addr: SocketAddr,
    /// Over UDP; else over the TCP connection from `addr`.
    pub udp: bool,
    pub data: DataChannel,
    pub activity: Arc<Activity>,
}

/// Something for the driver to do. [`Server::poll_output`] yields the XDP and
/// data-plane changes of a step before its datagrams, so that a client never gets its
/// PUSH_REPLY before `edge` knows its peer-id.
#[derive(Debug)]
pub enum Output {
    /// A session is up: admit its lease with its groups and its peer-id in XDP.
    SessionUp {
        lease: Ipv4Addr,
        peer_id: u32,
        groups: Vec<GroupId>,
    },
    /// A session ended: drop its lease, peer-id and NAT state from XDP.
    SessionDown { lease: Ipv4Addr, peer_id: u32 },
    /// The data plane carries the session's data packets from now on, with these keys
    /// to this address (again after every rekey or float); `None`: it stops.
    Carry {
        peer_id: u32,
        request: Option<CarryRequest>,
    },
    /// Send to a client: over UDP from the listen port, or on its TCP connection.
    Transmit { to: SocketAddr, bytes: Vec<u8> },
    /// A tunnel packet the control plane opened itself (TCP sessions, data that raced
    /// a key hand-over), for the seam.
    ToSeam(Vec<u8>),
    /// Close the TCP connection from `to` once what was sent to it is written: its
    /// session ended, or its first packet started none.
    CloseStream { to: SocketAddr },
}

/// The server could not be set up (our configuration, never a peer's doing).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cookie key: {0}")]
    CookieKey(#[from] CookieConfigError),
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
    /// XDP and data-plane outputs not yet polled.
    plane: VecDeque<Output>,
    /// Datagrams and seam packets not yet polled.
    wire: VecDeque<Output>,
    /// Tunnel packets dropped because their source was not the sending session's lease.
    spoofed: u64,
    /// Sessions ended for a newer one of the same identity at its limit.
    pub(super) replaced: u64,
    /// Datagrams dropped: unwrap, cookie or session checks failed (garbage, forgeries,
    /// replays, packets of unknown sessions).
    dropped: u64,
    /// Connections that ended, newest last, with when they ended.
    ended: VecDeque<(Instant, Connection)>,
    /// Session deadlines, earliest first; an entry counts only while it matches
    /// `scheduled` (older ones are skipped when they surface).
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    scheduled: HashMap<u32, Instant>,
    rng: ring::rand::SystemRandom,
    /// Holds back repeated warnings about what clients send.
    quiet: crate::serve::tcp::Quiet,
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

impl Server {
    pub fn new(
        config: Config,
        session_config: Arc<ServerConfig>,
        wrap: Wrap,
        cookie_secret: &[u8],
    ) -> Result<Self, ServerError> {
        let cookie = CookieKey::new(
            cookie_secret,
            CookieConfig {
                hand_window_secs: 60,
                early_negotiation: false,
            },
        )?;
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
            plane: VecDeque::new(),
            wire: VecDeque::new(),
            spoofed: 0,
            replaced: 0,
            dropped: 0,
            ended: VecDeque::new(),
            timers: BinaryHeap::new(),
            scheduled: HashMap::new(),
            rng: ring::rand::SystemRandom::new(),
            quiet: Default::default(),
        })
    }

    pub fn pool(&self) -> &AddressPool {
        &self.pool
    }

    pub fn sessions(&self) -> usize {
        self.clients.len()
    }

    /// Datagrams dropped: unwrap, cookie or session checks failed (garbage, forgeries,
    /// replays, packets of unknown sessions).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Tunnel packets the control plane dropped because their source was not the
    /// sending session's lease.
    pub fn spoofed(&self) -> u64 {
        self.spoofed
    }

    /// Sessions ended because their identity reached `endpoint.max_sessions_per_identity`.
    pub fn replaced(&self) -> u64 {
        self.replaced
    }

    /// The next thing to do: XDP and data-plane changes first, then datagrams and seam
    /// packets, each in the order they arose. Take them all after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.plane.pop_front().or_else(|| self.wire.pop_front())
    }

    /// What a data-plane worker reported.
    pub fn handle_report(&mut self, now: Now, report: Report) {
        match report {
            Report::Datagram { from, bytes } => self.handle_datagram(now, from, &bytes),
            Report::Floated { peer_id, to } => self.floated(now, peer_id, to),
            Report::Exited { peer_id } => self.peer_exited(now, peer_id),
            Report::KeyUsed { peer_id, key_id } => self.key_used(now, peer_id, key_id),
            Report::RenegotiationDue { peer_id } => self.renegotiation_due(now, peer_id),
        }
    }

    /// The data plane received the client's OCC_EXIT.
    pub fn peer_exited(&mut self, now: Now, peer_id: u32) {
        if let Some(client) = self.clients.get_mut(&peer_id) {
            client.session.peer_exited();
        }
        self.drive(peer_id, now);
    }

    /// The data plane opened a packet with a key_id other than the sending key.
    pub fn key_used(&mut self, now: Now, peer_id: u32, key_id: KeyId) {
        if let Some(client) = self.clients.get_mut(&peer_id) {
            client.session.note_key_used(key_id, now.at);
        }
        self.drive(peer_id, now);
    }

    /// A packet the data plane carried took the session's key past a renegotiation
    /// limit (`reneg-bytes`, `reneg-pkts`): the session starts a soft reset if its sending
    /// key is due one.
    pub fn renegotiation_due(&mut self, now: Now, peer_id: u32) {
        if let Some(client) = self.clients.get_mut(&peer_id) {
            client.session.check_renegotiation(now.at);
        }
        self.drive(peer_id, now);
    }

    /// Takes a session's transmits and events after it was fed.
    fn drive(&mut self, peer_id: u32, now: Now) {
        loop {
            let Some(client) = self.clients.get_mut(&peer_id) else {
                return;
            };
            while let Some(t) = client.session.poll_transmit(now.at) {
                self.wire.push_back(Output::Transmit {
                    to: client.addr,
                    bytes: t.contents,
                });
            }
            let Some(event) = client.session.poll_event() else {
                self.sync_data_plane(peer_id);
                self.schedule(peer_id);
                return;
            };
            match event {
                Event::AuthRequest(request) => self.authenticate(now, peer_id, &request),
                Event::Established(_) => {
                    client.established_at = Some(now.at);
                    client.established_wall = Some(now.wall);
                    if let Some(lease) = client.lease {
                        self.plane.push_back(Output::SessionUp {
                            lease,
                            peer_id,
                            groups: client.groups.clone(),
                        });
                        info!(peer_id, cn = %client.common_name, %lease, from = %client.addr, "connected");
                    }
                }
                Event::Rekeyed(k) => {
                    info!(peer_id, key_id = k.key_id.get(), "rekeyed");
                }
                // A session the server is ending (terminated, revoked, timed out) carries
                // nothing more while it tells the client and lingers.
                Event::Packet(_) if client.ending.is_some() => {}
                Event::Packet(p) => {
                    // Anti-spoofing per session: the TAP seam loses which session a packet
                    // came from (`inner` can only check that the source is some live
                    // lease), so the source must be this session's own lease here.
                    if client.lease.is_some_and(|lease| frame::is_from(&p, lease)) {
                        client.activity.count_received(p.len());
                        self.wire.push_back(Output::ToSeam(p));
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
                    self.remove(now, peer_id, &reason.to_string());
                    return;
                }
            }
        }
    }
}
