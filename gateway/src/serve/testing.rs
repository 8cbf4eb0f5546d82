//! An in-memory harness for `Server`: our client-role sessions talk to it with no
//! sockets and no XDP (its outputs are recorded), from simulated addresses; time is the
//! real clock but nothing waits on it. What the server hands to the data plane goes into
//! a real worker core ([`Carrier`]), so the tests see exactly what a worker would do with
//! it. Used by `serve::tests` and, through the `testing` feature, by the worker tests in
//! `tests/`.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use gateway_proto::{
    data::DATA_V2_OVERHEAD,
    session::{Event, Renegotiation, Session},
};
use gateway_tests::config::LabConfig;

use super::{CarryRequest, Now, Output, Server};
use crate::{
    config::Config,
    control::tls,
    dataplane::{
        carry::{Carried, Carrier, Command, Inbound, Outbound, Peer, Report, SEAL_AT},
        counters::Counters,
        frame::{ETH_LEN, write_eth_header},
    },
    pki::Pki,
    policy::GroupId,
};

/// MACs of the frames the harness's worker core writes and reads.
const SEAM_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// What the server asked of the XDP side and of the data plane, and the worker core
/// that carries what it handed over.
pub struct Recorder {
    pub up: Vec<(Ipv4Addr, u32, Vec<GroupId>)>,
    pub down: Vec<(Ipv4Addr, u32)>,
    /// Hand-overs to the data plane, in order.
    pub carried: Vec<(u32, Option<CarryRequest>)>,
    /// A worker's core, given every hand-over.
    pub carrier: Carrier,
    /// The receiving ends of TCP sessions' writers.
    streams: Vec<tokio::sync::mpsc::Receiver<Vec<u8>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            up: Vec::new(),
            down: Vec::new(),
            carried: Vec::new(),
            carrier: Carrier::new(SEAM_MAC, PEER_MAC, Arc::new(Counters::default())),
            streams: Vec::new(),
        }
    }
}

/// A datagram the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

impl Recorder {
    fn carry(&mut self, peer_id: u32, carried: Option<CarryRequest>) {
        let command = match &carried {
            Some(request) => {
                let peer = if request.udp {
                    Peer::Udp(request.addr)
                } else {
                    let (writer, reader) = tokio::sync::mpsc::channel(1024);
                    self.streams.push(reader);
                    Peer::Stream(writer)
                };
                Command::Carry(Arc::new(Carried {
                    peer_id,
                    lease: request.lease,
                    peer,
                    data: request.data.clone(),
                    activity: request.activity.clone(),
                }))
            }
            None => Command::Forget(peer_id),
        };
        self.carrier.apply(command);
        self.carried.push((peer_id, carried));
    }
}

pub struct Harness {
    pub server: Server,
    pub pki: Pki,
    /// Datagrams the server sent, in order.
    pub outbox: Vec<Datagram>,
    /// Tunnel packets the server opened itself, for the seam.
    pub to_tap: Vec<Vec<u8>>,
    /// TCP connections the server closed.
    pub closed_streams: Vec<SocketAddr>,
    dir: std::path::PathBuf,
    pub xdp: Recorder,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unix() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

impl Harness {
    /// A server for `client_cidr`, with alice and bob in group "eng".
    pub fn new(tag: &str, client_cidr: &str) -> Self {
        Self::build(tag, client_cidr, false)
    }

    /// With `ou`, groups also come from certificate OUs, and dave (in no `[groups]`
    /// entry) carries OU=eng.
    pub fn build(tag: &str, client_cidr: &str, ou: bool) -> Self {
        Self::build_with(tag, client_cidr, ou, None)
    }

    /// [`Harness::new`] with the lab configuration changed by `configure`.
    pub fn configured(
        tag: &str,
        client_cidr: &str,
        configure: impl FnOnce(LabConfig) -> LabConfig,
    ) -> Self {
        Self::assemble(tag, client_cidr, false, None, configure)
    }

    /// [`Harness::build`] with the server sessions' renegotiation limits (`None`: what
    /// `gateway serve` derives from the configuration).
    pub fn build_with(
        tag: &str,
        client_cidr: &str,
        ou: bool,
        renegotiation: Option<Renegotiation>,
    ) -> Self {
        Self::assemble(tag, client_cidr, ou, renegotiation, |c| c)
    }

    fn assemble(
        tag: &str,
        client_cidr: &str,
        ou: bool,
        renegotiation: Option<Renegotiation>,
        configure: impl FnOnce(LabConfig) -> LabConfig,
    ) -> Self {
        let dir = std::env::temp_dir().join(format!("gw-serve-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki = Pki::init(&dir, "Serve CA", "server").unwrap();
        for name in ["alice", "bob", "carol"] {
            pki.issue_client(name, None).unwrap();
        }
        pki.issue_client("dave", Some("eng")).unwrap();
        let text = configure(
            LabConfig::new("t", &dir)
                .client_cidr(client_cidr)
                .groups_from_certificate_ou(ou)
                .authorize_groups("10.10.0.0/24", ["eng"])
                .group("eng", ["alice", "bob"]),
        )
        .to_toml();
        let config = Config::parse(&text, "t").unwrap();
        let material = tls::load(&config.tls).unwrap();
        let mut policy = super::SessionPolicy::of(&config);
        if let Some(renegotiation) = renegotiation {
            policy.renegotiation = renegotiation;
        }
        let (session_config, wrap) = super::session_config(material, policy).unwrap();
        let server = Server::new(config, Arc::new(session_config), wrap, &[7u8; 32]).unwrap();
        Self {
            server,
            pki,
            dir,
            outbox: Vec::new(),
            to_tap: Vec::new(),
            closed_streams: Vec::new(),
            xdp: Recorder::default(),
        }
    }

    /// Client `name` that also sends `username` and a password (`auth-user-pass`),
    /// which nothing verifies.
    pub fn client_claiming(&self, name: &str, username: &str) -> Session {
        let mut settings = self
            .pki
            .client_role_settings(name, &[gateway_proto::data::Cipher::Aes256Gcm])
            .unwrap();
        settings.username = username.into();
        settings.password = "anything".into();
        let config = gateway_proto::session::ClientConfig::new(settings).unwrap();
        Session::client(Arc::new(config), Instant::now(), unix()).unwrap()
    }

    pub fn client(&self, name: &str) -> Session {
        let config = self
            .pki
            .client_role_config(name, &[gateway_proto::data::Cipher::Aes256Gcm])
            .unwrap();
        Session::client(Arc::new(config), Instant::now(), unix()).unwrap()
    }

    /// Carries out what the server returned, as the serving loop does: XDP and
    /// data-plane changes into the recorder (and its worker core), datagrams into
    /// `outbox`, seam packets into `to_tap`.
    pub fn drain(&mut self) {
        while let Some(output) = self.server.poll_output() {
            match output {
                Output::SessionUp {
                    lease,
                    peer_id,
                    groups,
                } => self.xdp.up.push((lease, peer_id, groups)),
                Output::SessionDown { lease, peer_id } => self.xdp.down.push((lease, peer_id)),
                Output::Carry { peer_id, request } => self.xdp.carry(peer_id, request),
                Output::Transmit { to, bytes } => self.outbox.push(Datagram { to, bytes }),
                Output::ToSeam(packet) => self.to_tap.push(packet),
                Output::CloseStream { to } => self.closed_streams.push(to),
            }
        }
    }

    /// A datagram from `from` at `at`, handled and drained.
    pub fn datagram(&mut self, at: Instant, from: SocketAddr, bytes: &[u8]) {
        self.server.handle_datagram(Now::at(at), from, bytes);
        self.drain();
    }

    /// The server's timers at `at`, run and drained.
    pub fn timeout(&mut self, at: Instant) {
        self.server.handle_timeout(Now::at(at));
        self.drain();
    }

    /// The data plane saw `peer_id` float to `to`.
    pub fn floated(&mut self, peer_id: u32, to: SocketAddr) {
        self.server.floated(Now::system(), peer_id, to);
        self.drain();
    }

    /// The data plane saw `peer_id`'s OCC_EXIT.
    pub fn peer_exited(&mut self, peer_id: u32) {
        self.server.peer_exited(Now::system(), peer_id);
        self.drain();
    }

    /// Shutdown: every session told and released.
    pub fn close_all(&mut self) {
        self.server.close_all(Now::system());
        self.drain();
    }

    /// An administrator's terminate.
    pub fn terminate(
        &mut self,
        selector: &crate::admin::Selector,
    ) -> Result<Vec<crate::admin::TerminateStatus>, super::TerminateError> {
        let result = self.server.terminate(Now::system(), selector);
        self.drain();
        result
    }

    /// Hands what the worker core reported to the server, as the serving loop does;
    /// returns the reports.
    pub fn deliver_reports(&mut self) -> Vec<Report> {
        let reports: Vec<Report> = self.xdp.carrier.drain_reports().collect();
        for report in &reports {
            self.server.handle_report(Now::system(), report.clone());
            self.drain();
        }
        reports
    }

    /// Exchanges packets between `client` (at `addr`) and the server until neither has
    /// anything to send; returns the client's events.
    pub fn pump(&mut self, client: &mut Session, addr: SocketAddr) -> Vec<Event> {
        self.exchange(client, addr, false)
    }

    /// [`Harness::pump`] over the TCP transport: the client's packets arrive as a
    /// stream's (deframed) packets from `addr`.
    pub fn pump_stream(&mut self, client: &mut Session, addr: SocketAddr) -> Vec<Event> {
        self.exchange(client, addr, true)
    }

    /// A packet deframed from the TCP connection of `from`, handled and drained.
    pub fn stream_packet(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.server.handle_stream_packet(Now::system(), from, bytes);
        self.drain();
    }

    fn exchange(&mut self, client: &mut Session, addr: SocketAddr, stream: bool) -> Vec<Event> {
        let mut events = Vec::new();
        for _ in 0..200 {
            let now = Instant::now();
            let mut moved = false;
            while let Some(t) = client.poll_transmit(now) {
                if stream {
                    self.server
                        .handle_stream_packet(Now::at(now), addr, &t.contents);
                    self.drain();
                } else {
                    self.datagram(now, addr, &t.contents);
                }
                moved = true;
            }
            for d in std::mem::take(&mut self.outbox) {
                if d.to == addr {
                    let _ = client.handle_datagram(now, &d.bytes);
                    moved = true;
                }
            }
            while let Some(e) = client.poll_event() {
                events.push(e);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        events
    }
}

impl Recorder {
    /// What the data plane carries for `peer_id` now.
    pub fn carried(&self, peer_id: u32) -> Option<&CarryRequest> {
        self.carried
            .iter()
            .rev()
            .find(|(id, _)| *id == peer_id)
            .and_then(|(_, c)| c.as_ref())
    }

    /// What a worker does with a packet `target` put into the TAP: its core seals it
    /// with the keys the server handed over for the session of its destination lease;
    /// the datagram and where it goes (`None`: nobody's, or a TCP session's).
    pub fn worker_seal(&mut self, packet: &[u8]) -> Option<(SocketAddr, Vec<u8>)> {
        let mut slot = vec![0u8; DATA_V2_OVERHEAD + packet.len()];
        write_eth_header(&mut slot[SEAL_AT..], SEAM_MAC, PEER_MAC);
        slot[DATA_V2_OVERHEAD..].copy_from_slice(packet);
        let verdict = self
            .carrier
            .seal(&mut slot, ETH_LEN + packet.len(), None, Instant::now());
        match verdict {
            Outbound::Udp { to, len } => Some((to, slot[..len].to_vec())),
            _ => None,
        }
    }

    /// What a worker does with a datagram from `from`: its core's verdict, and the
    /// tunnelled packet (no Ethernet header) when the verdict is for the seam.
    pub fn worker_open(&mut self, datagram: &[u8], from: SocketAddr) -> (Inbound, Vec<u8>) {
        let mut buf = datagram.to_vec();
        let verdict = self.carrier.datagram(&mut buf, from, Instant::now());
        let packet = match &verdict {
            Inbound::ToSeam(frame) => buf[frame.start + ETH_LEN..frame.end].to_vec(),
            _ => Vec::new(),
        };
        (verdict, packet)
    }
}

pub fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, last], 40000 + u16::from(last)))
}

pub fn established(events: &[Event]) -> Option<Ipv4Addr> {
    events.iter().find_map(|e| match e {
        Event::Established(e) => e.push.as_ref()?.ifconfig.map(|i| i.address),
        _ => None,
    })
}

/// An IPv4/UDP packet (no Ethernet header) from `src` to `dst`.
pub fn ip_udp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0x9c, 0x40, 0x00, 0x35]);
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p
}
