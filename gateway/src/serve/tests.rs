//! `Server` driven in memory by our client-role session: no sockets, no XDP (a recording
//! `DataPath`), simulated addresses; time is the real clock but nothing waits on it.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use gateway_proto::{
    data::Cipher,
    keys::Role,
    session::{
        ClientConfig, ClientSettings, Common, DEFAULT_CLIENT_PROTO_FLAGS, Event, Session,
        TlsVersions,
    },
    wrap::{TlsCrypt, Wrap},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::{DataPath, Server};
use crate::{config::Config, control::tls, pki::Pki, policy::GroupId};

/// What the server asked of the XDP side.
#[derive(Default)]
struct Recorder {
    up: Vec<(Ipv4Addr, u32, Vec<GroupId>)>,
    down: Vec<(Ipv4Addr, u32)>,
}

impl DataPath for Recorder {
    fn session_up(&mut self, lease: Ipv4Addr, peer_id: u32, groups: &[GroupId]) {
        self.up.push((lease, peer_id, groups.to_vec()));
    }
    fn session_down(&mut self, lease: Ipv4Addr, peer_id: u32) {
        self.down.push((lease, peer_id));
    }
}

struct Harness {
    server: Server,
    pki: Pki,
    wrap_key: gateway_proto::static_key::StaticKey,
    dir: std::path::PathBuf,
    xdp: Recorder,
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
    fn new(tag: &str, client_cidr: &str) -> Self {
        Self::build(tag, client_cidr, false)
    }

    /// With `ou`, groups also come from certificate OUs, and dave (in no `[groups]`
    /// entry) carries OU=eng.
    fn build(tag: &str, client_cidr: &str, ou: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("gw-serve-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki = Pki::init(&dir, "Serve CA", "server").unwrap();
        for name in ["alice", "bob", "carol"] {
            pki.issue_client(name, None).unwrap();
        }
        pki.issue_client("dave", Some("eng")).unwrap();
        let text = format!(
            r#"
[endpoint]
name = "t"
client_cidr = "{client_cidr}"
split_tunnel = true
[tls]
server_cert = "{}"
server_key = "{}"
client_ca = "{}"
crl = "{}"
tls_crypt_key = "{}"
groups_from_certificate_ou = {ou}
[[target]]
interface = "eth1"
[[route]]
destination = "10.10.0.0/24"
target = "eth1"
[[authorize]]
destination = "10.10.0.0/24"
groups = ["eng"]
[groups]
eng = ["alice", "bob"]
"#,
            pki.server_cert().display(),
            pki.server_key().display(),
            pki.ca_cert().display(),
            pki.crl().display(),
            pki.tls_crypt_key().display(),
        );
        let config = Config::parse(&text, "t").unwrap();
        let material = tls::load(&config.tls).unwrap();
        let wrap_key = material.tls_crypt_key.clone().unwrap();
        let (session_config, wrap) = super::session_config(material).unwrap();
        let server = Server::new(config, Arc::new(session_config), wrap, &[7u8; 32]).unwrap();
        Self {
            server,
            pki,
            wrap_key,
            dir,
            xdp: Recorder::default(),
        }
    }

    fn client(&self, name: &str) -> Session {
        let config = ClientConfig::new(ClientSettings {
            ca: CertificateDer::pem_file_iter(self.pki.ca_cert())
                .unwrap()
                .map(Result::unwrap)
                .collect(),
            cert_chain: CertificateDer::pem_file_iter(self.pki.client_cert(name))
                .unwrap()
                .map(Result::unwrap)
                .collect(),
            key: PrivateKeyDer::from_pem_file(self.pki.client_key(name)).unwrap(),
            tls_versions: TlsVersions::default(),
            ciphers: vec![Cipher::Aes256Gcm],
            username: String::new(),
            password: String::new(),
            peer_info_extra: Vec::new(),
            proto_flags: DEFAULT_CLIENT_PROTO_FLAGS,
            common: Common::new(Wrap::TlsCrypt(TlsCrypt::new(&self.wrap_key, Role::Client)))
                .unwrap(),
        })
        .unwrap();
        Session::client(Arc::new(config), Instant::now(), unix()).unwrap()
    }

    /// Exchanges packets between `client` (at `addr`) and the server until neither has
    /// anything to send; returns the client's events.
    fn pump(&mut self, client: &mut Session, addr: SocketAddr) -> Vec<Event> {
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

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, last], 40000 + u16::from(last)))
}

fn established(events: &[Event]) -> Option<Ipv4Addr> {
    events.iter().find_map(|e| match e {
        Event::Established(e) => e.push.as_ref()?.ifconfig.map(|i| i.address),
        _ => None,
    })
}

/// An IPv4/UDP packet (no Ethernet header) from `src` to `dst`.
fn ip_udp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
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

#[test]
fn a_client_is_leased_admitted_in_xdp_and_carries_data_both_ways() {
    let mut h = Harness::new("data", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let events = h.pump(&mut alice, addr(2));
    let lease = established(&events).expect("alice established");
    assert_eq!(lease, Ipv4Addr::new(10, 200, 0, 2));
    assert_eq!(h.xdp.up.len(), 1);
    assert_eq!(h.xdp.up[0].0, lease);
    assert_eq!(h.xdp.up[0].2.len(), 1, "alice is in one group");

    // Client → server: into the TAP.
    let out = ip_udp(lease, Ipv4Addr::new(10, 10, 0, 10), b"hello");
    alice.send_data(Instant::now(), &out).unwrap();
    h.pump(&mut alice, addr(2));
    assert_eq!(std::mem::take(&mut h.server.to_tap), [out]);

    // TAP → client, found by the lease.
    let back = ip_udp(Ipv4Addr::new(10, 10, 0, 10), lease, b"world");
    h.server
        .handle_tap_packet(Instant::now(), &back, &mut h.xdp);
    let events = h.pump(&mut alice, addr(2));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Packet(p) if *p == back)),
        "{events:?}"
    );
    // A TAP packet for nobody's lease goes nowhere.
    h.server.handle_tap_packet(
        Instant::now(),
        &ip_udp(
            Ipv4Addr::new(10, 10, 0, 10),
            Ipv4Addr::new(10, 200, 0, 77),
            b"x",
        ),
        &mut h.xdp,
    );
    assert!(h.server.outbox.is_empty());
}

#[test]
fn packets_with_another_source_than_the_lease_are_dropped() {
    let mut h = Harness::new("spoof", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let lease = established(&h.pump(&mut alice, addr(2))).unwrap();
    let spoofed = ip_udp(
        Ipv4Addr::new(10, 200, 0, 3),
        Ipv4Addr::new(10, 10, 0, 10),
        b"x",
    );
    alice.send_data(Instant::now(), &spoofed).unwrap();
    h.pump(&mut alice, addr(2));
    assert!(h.server.to_tap.is_empty());
    assert_eq!(h.server.spoofed, 1);
    let honest = ip_udp(lease, Ipv4Addr::new(10, 10, 0, 10), b"y");
    alice.send_data(Instant::now(), &honest).unwrap();
    h.pump(&mut alice, addr(2));
    assert_eq!(h.server.to_tap.len(), 1);
}

#[test]
fn leases_are_distinct_returned_on_close_and_exhaustion_refuses() {
    let mut h = Harness::new("pool", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let mut bob = h.client("bob");
    let a = established(&h.pump(&mut alice, addr(2))).unwrap();
    let b = established(&h.pump(&mut bob, addr(3))).unwrap();
    assert_ne!(a, b);
    assert_eq!(h.server.sessions(), 2);
    // carol has no group: she still connects (authorization is per destination, in XDP).
    let mut carol = h.client("carol");
    established(&h.pump(&mut carol, addr(4))).expect("carol established");
    assert!(h.xdp.up.iter().any(|(_, _, groups)| groups.is_empty()));

    // alice leaves: her lease, peer-id and XDP state go.
    alice.close(Instant::now());
    h.pump(&mut alice, addr(2));
    assert_eq!(h.server.sessions(), 2);
    assert_eq!(h.xdp.down.len(), 1);
    assert_eq!(h.xdp.down[0].0, a);

    // Fill the pool; the next client is refused with a reason.
    while h.server.pool.lease().is_ok() {}
    let mut late = h.client("alice");
    let events = h.pump(&mut late, addr(5));
    assert!(established(&events).is_none());
    assert!(
        events.iter().any(|e| matches!(e, Event::Closed { reason } if format!("{reason:?}").contains("no free address"))),
        "{events:?}"
    );
}

#[test]
fn shutdown_closes_every_session_and_clears_xdp() {
    let mut h = Harness::new("shutdown", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let mut bob = h.client("bob");
    established(&h.pump(&mut alice, addr(2))).unwrap();
    established(&h.pump(&mut bob, addr(3))).unwrap();
    h.server.close_all(Instant::now(), &mut h.xdp);
    assert_eq!(h.server.sessions(), 0);
    assert_eq!(h.xdp.down.len(), 2);
    assert_eq!(h.server.pool().leased(), 0);
}

#[test]
fn a_session_floats_only_on_an_authenticated_data_packet() {
    let mut h = Harness::new("float", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let lease = established(&h.pump(&mut alice, addr(2))).unwrap();
    // Garbage with alice's peer-id from elsewhere does not move her.
    let mut forged = vec![0x48, 0, 0, 0, 0, 0, 0, 9];
    forged.extend_from_slice(&[0xab; 40]);
    h.server
        .handle_datagram(Instant::now(), addr(9), &forged, &mut h.xdp);
    let probe = ip_udp(Ipv4Addr::new(10, 10, 0, 10), lease, b"where are you");
    h.server
        .handle_tap_packet(Instant::now(), &probe, &mut h.xdp);
    assert!(!h.server.outbox.is_empty());
    assert!(
        h.server.outbox.iter().all(|d| d.to == addr(2)),
        "a forged packet moved alice"
    );
    h.pump(&mut alice, addr(2));
    let ping = ip_udp(lease, Ipv4Addr::new(10, 10, 0, 10), b"still here");
    alice.send_data(Instant::now(), &ping).unwrap();
    h.pump(&mut alice, addr(2));
    assert_eq!(
        std::mem::take(&mut h.server.to_tap).len(),
        1,
        "the forged packet moved alice"
    );

    // Her own data from a new address (a NAT rebinding) moves the session there.
    let moved = ip_udp(lease, Ipv4Addr::new(10, 10, 0, 10), b"from a new port");
    alice.send_data(Instant::now(), &moved).unwrap();
    h.pump(&mut alice, addr(9));
    assert_eq!(std::mem::take(&mut h.server.to_tap), [moved]);
    let back = ip_udp(Ipv4Addr::new(10, 10, 0, 10), lease, b"reply");
    h.server
        .handle_tap_packet(Instant::now(), &back, &mut h.xdp);
    assert!(
        h.server.outbox.iter().all(|d| d.to == addr(9)),
        "replies go to the new address"
    );
    assert!(!h.server.outbox.is_empty());
    let events = h.pump(&mut alice, addr(9));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Packet(p) if *p == back))
    );
}

#[test]
fn garbage_is_dropped_and_counted_and_the_session_keeps_working() {
    let mut h = Harness::new("garbage", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let lease = established(&h.pump(&mut alice, addr(2))).unwrap();
    let mut x: u32 = 0x9e37_79b9;
    for i in 0..500u32 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let mut p: Vec<u8> = (0..(x % 200)).map(|j| (x >> (j % 24)) as u8).collect();
        if let Some(first) = p.first_mut() {
            *first = ((i % 32) as u8) << 3;
        }
        // From alice's own address and from strangers.
        let from = if i % 2 == 0 {
            addr(2)
        } else {
            addr(100 + (i % 50) as u8)
        };
        h.server
            .handle_datagram(Instant::now(), from, &p, &mut h.xdp);
    }
    assert!(h.server.dropped >= 400, "dropped {}", h.server.dropped);
    assert_eq!(h.server.sessions(), 1, "garbage created or ended sessions");
    h.server.outbox.clear();
    let out = ip_udp(lease, Ipv4Addr::new(10, 10, 0, 10), b"after the storm");
    alice.send_data(Instant::now(), &out).unwrap();
    h.pump(&mut alice, addr(2));
    assert_eq!(std::mem::take(&mut h.server.to_tap), [out]);
}

#[test]
fn groups_come_from_certificate_ous_when_enabled() {
    for ou in [false, true] {
        let mut h = Harness::build(&format!("ou-{ou}"), "10.200.0.0/22", ou);
        let mut dave = h.client("dave");
        established(&h.pump(&mut dave, addr(2))).unwrap();
        let eng = h.server.config.groups.id("eng").unwrap();
        let want: Vec<GroupId> = if ou { vec![eng] } else { Vec::new() };
        assert_eq!(h.xdp.up[0].2, want, "groups_from_certificate_ou = {ou}");
    }
}

#[test]
fn a_silent_client_is_removed_after_ping_restart_and_its_lease_returns() {
    let mut h = Harness::new("silent", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let lease = established(&h.pump(&mut alice, addr(2))).unwrap();
    assert_eq!(h.server.pool().leased(), 1);
    // alice is killed: nothing more comes from her. The server pings, then gives up
    // after twice the pushed ping-restart (60 s).
    let mut now = Instant::now();
    for _ in 0..40 {
        now += std::time::Duration::from_secs(5);
        h.server.handle_timeout(now, &mut h.xdp);
        h.server.outbox.clear();
        if h.server.sessions() == 0 {
            break;
        }
    }
    assert_eq!(h.server.sessions(), 0, "the silent session is still there");
    assert_eq!(h.xdp.down, [(lease, h.xdp.up[0].1)]);
    assert_eq!(
        h.server.pool().leased(),
        0,
        "the lease returned to the pool"
    );
    // Not before the keepalive deadline: a fresh client survives a quiet minute.
    let mut bob = h.client("bob");
    established(&h.pump(&mut bob, addr(3))).unwrap();
    let later = Instant::now() + std::time::Duration::from_secs(60);
    h.server.handle_timeout(later, &mut h.xdp);
    assert_eq!(h.server.sessions(), 1);
}
