//! An in-memory harness for `Server`: our client-role sessions talk to it with no
//! sockets and no XDP (a recording `DataPath`), from simulated addresses; time is the
//! real clock but nothing waits on it. Used by `serve::tests` and, through the `testing`
//! feature, by the worker tests in `tests/`.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use gateway_proto::session::{Event, Session};
use gateway_tests::config::LabConfig;

use super::{CarryRequest, DataPath, Server};
use crate::{config::Config, control::tls, pki::Pki, policy::GroupId};

/// What the server asked of the XDP side.
#[derive(Default)]
pub struct Recorder {
    pub up: Vec<(Ipv4Addr, u32, Vec<GroupId>)>,
    pub down: Vec<(Ipv4Addr, u32)>,
    /// Hand-overs to the data plane, in order.
    pub carried: Vec<(u32, Option<CarryRequest>)>,
}

impl DataPath for Recorder {
    fn session_up(&mut self, lease: Ipv4Addr, peer_id: u32, groups: &[GroupId]) {
        self.up.push((lease, peer_id, groups.to_vec()));
    }
    fn session_down(&mut self, lease: Ipv4Addr, peer_id: u32) {
        self.down.push((lease, peer_id));
    }
    fn carry(&mut self, peer_id: u32, carried: Option<CarryRequest>) {
        self.carried.push((peer_id, carried));
    }
}

pub struct Harness {
    pub server: Server,
    pub pki: Pki,
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
        let dir = std::env::temp_dir().join(format!("gw-serve-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki = Pki::init(&dir, "Serve CA", "server").unwrap();
        for name in ["alice", "bob", "carol"] {
            pki.issue_client(name, None).unwrap();
        }
        pki.issue_client("dave", Some("eng")).unwrap();
        let text = LabConfig::new("t", &dir)
            .client_cidr(client_cidr)
            .groups_from_certificate_ou(ou)
            .authorize_groups("10.10.0.0/24", ["eng"])
            .group("eng", ["alice", "bob"])
            .to_toml();
        let config = Config::parse(&text, "t").unwrap();
        let material = tls::load(&config.tls).unwrap();
        let (session_config, wrap) = super::session_config(material).unwrap();
        let server = Server::new(config, Arc::new(session_config), wrap, &[7u8; 32]).unwrap();
        Self {
            server,
            pki,
            dir,
            xdp: Recorder::default(),
        }
    }

    pub fn client(&self, name: &str) -> Session {
        let config = self
            .pki
            .client_role_config(name, &[gateway_proto::data::Cipher::Aes256Gcm])
            .unwrap();
        Session::client(Arc::new(config), Instant::now(), unix()).unwrap()
    }

    /// Exchanges packets between `client` (at `addr`) and the server until neither has
    /// anything to send; returns the client's events.
    pub fn pump(&mut self, client: &mut Session, addr: SocketAddr) -> Vec<Event> {
        let mut events = Vec::new();
        for _ in 0..200 {
            let now = Instant::now();
            let mut moved = false;
            while let Some(t) = client.poll_transmit(now) {
                self.server
                    .handle_datagram(now, addr, &t.contents, &mut self.xdp);
                moved = true;
            }
            for d in std::mem::take(&mut self.server.outbox) {
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

    /// What a worker does with a packet `target` put into the TAP: seal it with the keys
    /// the server handed over for the session of its destination lease; the datagram and
    /// where it goes.
    pub fn worker_seal(&self, packet: &[u8]) -> Option<(SocketAddr, Vec<u8>)> {
        let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        let carried = self
            .carried
            .iter()
            .filter_map(|(id, _)| self.carried(*id))
            .find(|c| c.lease == dst)?;
        let header = carried.data.send_header();
        let key = carried.data.key(carried.data.send_key)?;
        let overhead = header.buffer_len() + 4 + 16;
        let mut buf = vec![0u8; overhead + packet.len()];
        buf[overhead..].copy_from_slice(packet);
        let len = key
            .sealing
            .seal_in_place(header, &mut buf, packet.len())
            .ok()?;
        buf.truncate(len);
        Some((carried.addr, buf))
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
