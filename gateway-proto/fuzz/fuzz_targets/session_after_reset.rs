//! A server session after a valid client hard reset, fed arbitrary datagrams. The
//! control channel is unwrapped (no tls-crypt), so the bytes reach the session itself;
//! the real client is driven first for as many rounds as the input's first byte says,
//! so the fuzzed datagrams arrive in every phase: before TLS, mid-handshake, after
//! key-method 2, established. Time moves with the input too. Nothing may panic.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use gateway_proto::data::Cipher;
use gateway_proto::packet::PeerId;
use gateway_proto::push::{PushPolicy, ServerFeatures, TunnelMode};
use gateway_proto::session::{
    ClientConfig, ClientSettings, Common, DEFAULT_CLIENT_PROTO_FLAGS, Event, ServerConfig,
    ServerSettings, Session, TlsVersions,
};
use gateway_proto::wrap::Wrap;
use libfuzzer_sys::fuzz_target;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

const CA: &[u8] = include_bytes!("../../src/session/testdata/ca.pem");
const CRL: &[u8] = include_bytes!("../../src/session/testdata/ca.crl.pem");
const SERVER_CERT: &[u8] = include_bytes!("../../src/session/testdata/server.pem");
const SERVER_KEY: &[u8] = include_bytes!("../../src/session/testdata/server.key");
const ALICE_CERT: &[u8] = include_bytes!("../../src/session/testdata/alice.pem");
const ALICE_KEY: &[u8] = include_bytes!("../../src/session/testdata/alice.key");
const UNIX: u32 = 1_700_000_000;

fn cert(pem: &[u8]) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem).expect("test certificate")
}

fn key(pem: &[u8]) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem).expect("test key")
}

fn configs() -> &'static (Arc<ServerConfig>, Arc<ClientConfig>) {
    static CONFIGS: OnceLock<(Arc<ServerConfig>, Arc<ClientConfig>)> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let server = ServerConfig::new(ServerSettings {
            ca: vec![cert(CA)],
            crls: vec![CertificateRevocationListDer::from_pem_slice(CRL).expect("test CRL")],
            enforce_crl_expiry: false,
            require_client_eku: true,
            cert_chain: vec![cert(SERVER_CERT)],
            key: key(SERVER_KEY),
            tls_versions: TlsVersions::default(),
            ciphers: vec![Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305],
            features: ServerFeatures {
                tls_ekm: true,
                cc_exit: true,
                dyn_tls_crypt: false,
            },
            common: Common::new(Wrap::None).expect("common settings"),
        })
        .expect("server config");
        let client = ClientConfig::new(ClientSettings {
            ca: vec![cert(CA)],
            cert_chain: vec![cert(ALICE_CERT)],
            key: key(ALICE_KEY),
            tls_versions: TlsVersions::default(),
            ciphers: vec![Cipher::Aes256Gcm],
            username: String::new(),
            password: String::new(),
            peer_info_extra: Vec::new(),
            proto_flags: DEFAULT_CLIENT_PROTO_FLAGS,
            common: Common::new(Wrap::None).expect("common settings"),
        })
        .expect("client config");
        (Arc::new(server), Arc::new(client))
    })
}

fn policy() -> PushPolicy {
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
        keepalive: None,
        tun_mtu: None,
        features: Default::default(),
        auth_token: None,
        extra: Vec::new(),
    }
}

/// The server's events: an authentication request is accepted, as `gateway serve` does.
fn drain_server(server: &mut Session, now: Instant) {
    while let Some(event) = server.poll_event() {
        if let Event::AuthRequest(_) = event {
            let _ = server.accept(now, policy());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&rounds, data)) = data.split_first() else {
        return;
    };
    let (server_config, client_config) = configs();
    let mut now = Instant::now();
    let Ok(mut client) = Session::client(client_config.clone(), now, UNIX) else {
        return;
    };
    let Some(reset) = client.poll_transmit(now) else {
        return;
    };
    let Ok(mut server) = Session::server_from_reset(
        server_config.clone(),
        now,
        UNIX,
        PeerId::new(1).expect("a valid peer-id"),
        &reset.contents,
    ) else {
        return;
    };
    // The real exchange, for up to 31 rounds.
    for _ in 0..rounds % 32 {
        while let Some(t) = server.poll_transmit(now) {
            let _ = client.handle_datagram(now, &t.contents);
        }
        while client.poll_event().is_some() {}
        while let Some(t) = client.poll_transmit(now) {
            let _ = server.handle_datagram(now, &t.contents);
        }
        drain_server(&mut server, now);
    }
    // Then the fuzzer's datagrams: a length byte, a time step byte, the bytes.
    let mut rest = data;
    while let [len, step, tail @ ..] = rest {
        let (datagram, tail) = tail.split_at(usize::from(*len).min(tail.len()));
        rest = tail;
        let _ = server.handle_datagram(now, datagram);
        drain_server(&mut server, now);
        while server.poll_transmit(now).is_some() {}
        now += Duration::from_millis(u64::from(*step) * 40);
        server.handle_timeout(now);
        drain_server(&mut server, now);
    }
});
