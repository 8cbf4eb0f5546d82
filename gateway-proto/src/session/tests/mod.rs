//! In-memory client ↔ server pairs over a simulated link and clock: handshake with each
//! wrap and TLS version, push, data, keepalive, exit, rekey, certificate refusal, and a
//! lossy, reordering, duplicating link. Certificates are the test-only fixtures in
//! `testdata/` (EC P-256, and a separate RSA-2048 hierarchy; made once with `openssl`).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::*;
use crate::cookie::{CookieConfig, CookieKey};
use crate::data::Cipher;
use crate::key_method::ProtoFlags;
use crate::keys::Role;
use crate::packet::{ControlPacket, ControlRepr, KeyId, Opcode, PeerId};
use crate::push::{AuthFailure, KeepaliveSettings, PushPolicy, ServerFeatures, TunnelMode};
use crate::static_key::{KeyDirection, StaticKey};
use crate::wrap::{AuthDigest, TlsAuth, TlsCrypt, Wrap};

const CA: &[u8] = include_bytes!("../testdata/ca.pem");
const CRL: &[u8] = include_bytes!("../testdata/ca.crl.pem");
const SERVER_CERT: &[u8] = include_bytes!("../testdata/server.pem");
const SERVER_KEY: &[u8] = include_bytes!("../testdata/server.key");
const ALICE_CERT: &[u8] = include_bytes!("../testdata/alice.pem");
const ALICE_KEY: &[u8] = include_bytes!("../testdata/alice.key");
const MALLORY_CERT: &[u8] = include_bytes!("../testdata/mallory.pem");
const MALLORY_KEY: &[u8] = include_bytes!("../testdata/mallory.key");
const EVE_CERT: &[u8] = include_bytes!("../testdata/eve.pem");
const EVE_KEY: &[u8] = include_bytes!("../testdata/eve.key");
const RSA_CA: &[u8] = include_bytes!("../testdata/rsa-ca.pem");
const RSA_CRL: &[u8] = include_bytes!("../testdata/rsa-ca.crl.pem");
const RSA_SERVER_CERT: &[u8] = include_bytes!("../testdata/rsa-server.pem");
const RSA_SERVER_KEY: &[u8] = include_bytes!("../testdata/rsa-server.key");
const RSA_BOB_CERT: &[u8] = include_bytes!("../testdata/rsa-bob.pem");
const RSA_BOB_KEY: &[u8] = include_bytes!("../testdata/rsa-bob.key");

const UNIX_START: u32 = 1_700_000_000;
const PEER_ID: u32 = 7;
const LATENCY: Duration = Duration::from_millis(10);

fn cert(pem: &[u8]) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem).unwrap()
}

fn key(pem: &[u8]) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem).unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WrapMode {
    None,
    TlsAuth,
    TlsCrypt,
}

fn static_key() -> StaticKey {
    let mut bytes = [0u8; 256];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = i as u8;
    }
    StaticKey::from_bytes(bytes)
}

fn wrap(mode: WrapMode, role: Role) -> Wrap {
    match mode {
        WrapMode::None => Wrap::None,
        WrapMode::TlsAuth => {
            let direction = match role {
                Role::Server => KeyDirection::Normal,
                Role::Client => KeyDirection::Inverse,
            };
            Wrap::TlsAuth(TlsAuth::new(&static_key(), direction, AuthDigest::Sha256))
        }
        WrapMode::TlsCrypt => Wrap::TlsCrypt(TlsCrypt::new(&static_key(), role)),
    }
}

#[derive(Debug, Clone)]
struct Setup {
    wrap: WrapMode,
    tls: TlsVersions,
    server_cert: &'static [u8],
    server_key: &'static [u8],
    /// The CA the server trusts for clients, and its CRL.
    server_ca: &'static [u8],
    server_crl: &'static [u8],
    client_cert: &'static [u8],
    client_key: &'static [u8],
    client_ca: &'static [u8],
    client_flags: u32,
    features: ServerFeatures,
    renegotiation: Renegotiation,
    keepalive: Option<KeepaliveSettings>,
    cookie: bool,
    /// IV_SSO the client announces, if any.
    client_sso: Option<&'static str>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            wrap: WrapMode::TlsCrypt,
            tls: TlsVersions::Tls12And13,
            server_cert: SERVER_CERT,
            server_key: SERVER_KEY,
            server_ca: CA,
            server_crl: CRL,
            client_cert: ALICE_CERT,
            client_key: ALICE_KEY,
            client_ca: CA,
            client_flags: DEFAULT_CLIENT_PROTO_FLAGS,
            features: ServerFeatures {
                tls_ekm: true,
                cc_exit: true,
                dyn_tls_crypt: false,
            },
            renegotiation: Renegotiation::default(),
            keepalive: Some(KeepaliveSettings {
                ping: 10,
                ping_restart: 60,
            }),
            cookie: true,
            client_sso: None,
        }
    }
}

fn server_config(setup: &Setup) -> Arc<ServerConfig> {
    let mut common = Common::new(wrap(setup.wrap, Role::Server)).unwrap();
    common.renegotiation = setup.renegotiation;
    Arc::new(
        ServerConfig::new(ServerSettings {
            ca: vec![cert(setup.server_ca)],
            crls: vec![CertificateRevocationListDer::from_pem_slice(setup.server_crl).unwrap()],
            enforce_crl_expiry: true,
            require_client_eku: true,
            cert_chain: vec![cert(setup.server_cert)],
            key: key(setup.server_key),
            tls_versions: setup.tls,
            ciphers: vec![Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305],
            features: setup.features,
            common,
        })
        .unwrap(),
    )
}

fn client_config(setup: &Setup) -> Arc<ClientConfig> {
    let common = Common::new(wrap(setup.wrap, Role::Client)).unwrap();
    Arc::new(
        ClientConfig::new(ClientSettings {
            ca: vec![cert(setup.client_ca)],
            cert_chain: vec![cert(setup.client_cert)],
            key: key(setup.client_key),
            tls_versions: setup.tls,
            ciphers: vec![Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm],
            username: "alice-user".into(),
            password: "secret".into(),
            peer_info_extra: std::iter::once(("UV_TEST".into(), "1".into()))
                .chain(setup.client_sso.map(|sso| ("IV_SSO".into(), sso.into())))
                .collect(),
            proto_flags: setup.client_flags,
            common,
        })
        .unwrap(),
    )
}

fn policy(keepalive: Option<KeepaliveSettings>) -> PushPolicy {
    PushPolicy {
        address: Ipv4Addr::new(10, 8, 0, 2),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        gateway: Ipv4Addr::new(10, 8, 0, 1),
        ipv6: None,
        tunnel: TunnelMode::Split {
            routes: Vec::new(),
            routes_ipv6: Vec::new(),
        },
        dns_servers: Vec::new(),
        search_domains: Vec::new(),
        block_outside_dns: false,
        keepalive,
        tun_mtu: None,
        features: ServerFeatures::default(),
        auth_token: None,
        extra: Vec::new(),
    }
}

fn has_keys(session: &Session, key_id: KeyId) -> bool {
    session
        .key_index(key_id)
        .is_some_and(|i| session.keys[i].active.is_some())
}

/// Deterministic xorshift64* generator for the link.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Impairment {
    loss: u64,
    duplicate: u64,
    reorder: u64,
}

/// What the test application answers to an AuthRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Accept,
    Reject,
    Ignore,
}

/// Client, server (or the server's stateless listener before it) and the link between.
struct Pair {
    setup: Setup,
    now: Instant,
    start: Instant,
    client: Session,
    server: Option<Session>,
    server_config: Arc<ServerConfig>,
    cookie: CookieKey,
    listener_wrap: Wrap,
    link: Vec<(Instant, bool, Vec<u8>)>,
    rng: Rng,
    impairment: Impairment,
    client_events: Vec<Event>,
    server_events: Vec<Event>,
    client_packets: VecDeque<Vec<u8>>,
    server_packets: VecDeque<Vec<u8>>,
    decision: Decision,
    client_drops: usize,
    server_drops: usize,
}

const CLIENT_ADDR: &str = "192.0.2.10:50000";

impl Pair {
    fn new(setup: Setup) -> Self {
        let start = Instant::now();
        let server_config = server_config(&setup);
        let client = Session::client(client_config(&setup), start, UNIX_START).unwrap();
        Self {
            listener_wrap: wrap(setup.wrap, Role::Server),
            setup,
            now: start,
            start,
            client,
            server: None,
            server_config,
            cookie: CookieKey::new(&[0x42; 32], CookieConfig::default()).unwrap(),
            link: Vec::new(),
            rng: Rng(0x9E37_79B9_7F4A_7C15),
            impairment: Impairment::default(),
            client_events: Vec::new(),
            server_events: Vec::new(),
            client_packets: VecDeque::new(),
            server_packets: VecDeque::new(),
            decision: Decision::Accept,
            client_drops: 0,
            server_drops: 0,
        }
    }

    fn unix_now(&self) -> u32 {
        UNIX_START + self.now.duration_since(self.start).as_secs() as u32
    }

    fn send(&mut self, to_server: bool, bytes: Vec<u8>) {
        let imp = self.impairment;
        if self.rng.percent(imp.loss) {
            return;
        }
        let copies = if self.rng.percent(imp.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let extra = if self.rng.percent(imp.reorder) {
                Duration::from_millis(self.rng.next() % 40)
            } else {
                Duration::ZERO
            };
            self.link
                .push((self.now + LATENCY + extra, to_server, bytes.clone()));
        }
    }

    /// Moves everything both sides want to send onto the link and collects events.
    fn flush(&mut self) {
        while let Some(t) = self.client.poll_transmit(self.now) {
            self.send(true, t.contents);
        }
        while let Some(e) = self.client.poll_event() {
            match &e {
                Event::Packet(p) => self.client_packets.push_back(p.clone()),
                Event::Rekeyed(material) => {
                    // The server derives its keys before sending what gave us ours.
                    let server = self.server.as_ref().unwrap();
                    assert!(has_keys(server, material.key_id));
                }
                _ => {}
            }
            self.client_events.push(e);
        }
        let now = self.now;
        let mut decisions = Vec::new();
        if let Some(server) = &mut self.server {
            while let Some(e) = server.poll_event() {
                match &e {
                    Event::AuthRequest(_) => decisions.push(()),
                    Event::Packet(p) => self.server_packets.push_back(p.clone()),
                    Event::Rekeyed(material) => {
                        // The server switches only once the client has the new key.
                        assert!(has_keys(&self.client, material.key_id));
                    }
                    _ => {}
                }
                self.server_events.push(e);
            }
            for () in decisions {
                match self.decision {
                    Decision::Accept => server.accept(now, policy(self.setup.keepalive)).unwrap(),
                    Decision::Reject => {
                        let failure = AuthFailure::Plain {
                            reason: Some("denied".into()),
                        };
                        server.reject(now, failure).unwrap();
                    }
                    Decision::Ignore => {}
                }
            }
            let mut out = Vec::new();
            while let Some(t) = server.poll_transmit(now) {
                out.push(t.contents);
            }
            while let Some(e) = server.poll_event() {
                self.server_events.push(e);
            }
            for bytes in out {
                self.send(false, bytes);
            }
        }
    }

    fn deliver_to_server(&mut self, bytes: &[u8]) {
        let now = self.now;
        if let Some(server) = &mut self.server {
            if server.handle_datagram(now, bytes).is_err() {
                self.server_drops += 1;
            }
            return;
        }
        let addr: SocketAddr = CLIENT_ADDR.parse().unwrap();
        if !self.setup.cookie {
            if let Ok(s) = Session::server_from_reset(
                self.server_config.clone(),
                now,
                self.unix_now(),
                PeerId::new(PEER_ID).unwrap(),
                bytes,
            ) {
                self.server = Some(s);
            }
            return;
        }
        let mut buf = vec![0u8; bytes.len()];
        let Ok(unwrapped) = self.listener_wrap.unwrap(bytes, &mut buf) else {
            return;
        };
        let Ok(packet) = ControlPacket::new_checked(&buf[..unwrapped.len]) else {
            return;
        };
        let repr = ControlRepr::parse(&packet);
        let now_secs = u64::from(self.unix_now());
        if repr.opcode == Opcode::ControlHardResetClientV2 {
            let reply = self
                .cookie
                .reply_to_reset(&repr, addr, unwrapped.replay.map(|r| r.id), now_secs)
                .unwrap();
            let out = reply.repr();
            let mut plain = vec![0u8; out.buffer_len()];
            let len = out.emit(&mut plain).unwrap();
            let mut wire = vec![0u8; len + self.listener_wrap.overhead()];
            let stamp = reply.replay_stamp(UNIX_START);
            let len = self
                .listener_wrap
                .wrap(&plain[..len], stamp, &mut wire)
                .unwrap();
            wire.truncate(len);
            self.send(false, wire);
            return;
        }
        if let Ok(cookie) = self.cookie.verify(&repr, addr, now_secs) {
            let session = Session::server_from_cookie(
                self.server_config.clone(),
                now,
                UNIX_START,
                &cookie,
                PeerId::new(PEER_ID).unwrap(),
                bytes,
            )
            .unwrap();
            self.server = Some(session);
        }
    }

    /// One step: deliver a due packet or advance the clock to the next event.
    fn step(&mut self) {
        self.step_until(None);
    }

    /// Like [`Self::step`], but never moves the clock past `limit`; false once the next
    /// event lies beyond it (the clock then stands at `limit`).
    fn step_until(&mut self, limit: Option<Instant>) -> bool {
        let before = self.activity();
        self.flush();
        if self.activity() != before {
            return true;
        }
        if let Some(pos) = self.link.iter().position(|(at, _, _)| *at <= self.now) {
            let (_, to_server, bytes) = self.link.remove(pos);
            if to_server {
                self.deliver_to_server(&bytes);
            } else if self.client.handle_datagram(self.now, &bytes).is_err() {
                self.client_drops += 1;
            }
            return true;
        }
        let mut next = self.link.iter().map(|(at, _, _)| *at).min();
        for t in [
            self.client.poll_timeout(),
            self.server.as_ref().and_then(Session::poll_timeout),
        ]
        .into_iter()
        .flatten()
        {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        let next = next.unwrap_or(self.now + Duration::from_secs(1));
        if let Some(limit) = limit.filter(|limit| next > *limit) {
            self.now = limit;
            return false;
        }
        self.now = self.now.max(next);
        self.client.handle_timeout(self.now);
        let now = self.now;
        if let Some(server) = &mut self.server {
            server.handle_timeout(now);
        }
        true
    }

    /// Steps until `done` holds; panics after `limit` of simulated time.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Pair) -> bool) {
        let deadline = self.now + limit;
        while !done(self) {
            assert!(self.now <= deadline, "no convergence within {limit:?}");
            self.step();
        }
        self.flush();
    }

    /// Lets `duration` of simulated time pass.
    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.step_until(Some(end)) {}
        self.flush();
    }

    /// Counts that change whenever a flush moved something (for stepping).
    fn activity(&self) -> (usize, usize, usize) {
        (
            self.link.len(),
            self.client_events.len(),
            self.server_events.len(),
        )
    }

    fn both_established(&self) -> bool {
        self.client.is_established() && self.server.as_ref().is_some_and(Session::is_established)
    }

    fn server(&mut self) -> &mut Session {
        self.server.as_mut().unwrap()
    }

    fn established(events: &[Event]) -> Option<&Established> {
        events.iter().find_map(|e| match e {
            Event::Established(est) => Some(&**est),
            _ => None,
        })
    }

    fn closed(events: &[Event]) -> Option<&CloseReason> {
        events.iter().find_map(|e| match e {
            Event::Closed { reason } => Some(reason),
            _ => None,
        })
    }

    /// Data both ways; returns when both arrived.
    fn exchange_data(&mut self, tag: u8) {
        let up = vec![0x45, tag, 1, 2, 3];
        let down = vec![0x45, tag, 9, 8, 7, 6];
        let now = self.now;
        self.client.send_data(now, &up).unwrap();
        self.server().send_data(now, &down).unwrap();
        self.run_until(Duration::from_secs(5), |p| {
            !p.server_packets.is_empty() && !p.client_packets.is_empty()
        });
        assert_eq!(self.server_packets.pop_front().unwrap(), up);
        assert_eq!(self.client_packets.pop_front().unwrap(), down);
    }
}

mod cases;
mod float;
mod rsa;
mod server_control;
