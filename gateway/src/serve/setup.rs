//! Setting `gateway serve` up: the configuration and the system checks, the TLS and
//! session settings, the TAP seam and its sysctls, the XDP programs with their maps, the
//! data-plane workers (AF_XDP mode or socket mode) and the XSKMAP entries that steer
//! into them. Everything here runs once, before the driver loop starts.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use gateway_proto::{
    data::Cipher,
    keys::Role,
    push::ServerFeatures,
    session::{Common, Renegotiation, ServerConfig, ServerSettings, TlsVersions},
    static_key::KeyDirection,
    wrap::{AuthDigest as WrapDigest, TlsAuth, TlsCrypt, Wrap},
};
use ring::rand::{SecureRandom, SystemRandom};
use tracing::{error, info, warn};

use super::{Server, TAP_NAME, TAP_PEER_MAC, driver::Xdp};
use crate::{
    config::{AuthDigest, Config, DataplaneMode, ExpiredCrl, Listen, Transport},
    control::{crl::Revocations, pool::AddressPool, tls},
    dataplane::{
        afxdp::{AfXdp, XskRole},
        carry::Report,
        tap::Tap,
        worker::{self, Workers},
    },
    net::{gateway_addresses, lookup_interface},
    policy,
    xdp::{AttachMode, Edge, Policy, RedirectWatch},
};

/// Reports from the workers the control plane may fall behind by before they drop.
const REPORT_QUEUE: usize = 4096;

/// What setup hands to the driver.
pub(super) struct Running {
    pub config: Config,
    pub server: Server,
    pub xdp: Xdp,
    pub workers: Workers,
    pub tap: Arc<Tap>,
    pub reports: tokio::sync::mpsc::Receiver<Report>,
    /// The TLS material read at start (without CRLs): a reload re-reads `tls.crl` only.
    pub tls: tls::TlsMaterial,
    /// The listen entries served: one UDP and one TCP at most.
    pub udp: Option<Listen>,
    pub tcp: Option<Listen>,
    /// The nftables forwarding guard, removed when dropped (`dataplane.forward_guard`).
    pub guard: Option<super::guard::ForwardGuard>,
}

/// Loads and checks the configuration and brings up everything the driver needs.
pub(super) fn start(config_path: &std::path::Path) -> Result<Running> {
    let config = Config::load(config_path)?;
    if let Err(problems) = config.check_system() {
        bail!("{}", list(&problems));
    }
    let material = tls::load(&config.tls).map_err(|p| anyhow::anyhow!("{}", list(&p)))?;
    check_crls(&config.tls, &material)?;
    let tls_base = material.with_crls(Vec::new());
    let (session_config, wrap) = session_config(material, SessionPolicy::of(&config))?;

    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    if forwarding.trim() != "1" {
        bail!(
            "IPv4 forwarding is off: set net.ipv4.ip_forward=1 (the XDP next-hop lookup needs it)"
        );
    }
    let (udp, tcp) = served_listeners(&config);
    if tcp.is_some() {
        // Each TCP connection is a descriptor; the rest (sockets, TAP queues, AF_XDP,
        // BPF maps, the admin socket, files a reload reads) fit in a margin.
        raise_open_files_for_tcp(config.endpoint.max_tcp_connections as u64 + OPEN_FILES_MARGIN);
    }

    let pool = AddressPool::new(config.endpoint.client_cidr);
    let workers = worker::worker_count(config.dataplane.workers);
    let tap = Tap::create(
        TAP_NAME,
        workers,
        pool.gateway_addr(),
        config.endpoint.client_cidr.prefix_len(),
    )
    .context("creating the TAP device")?;
    // A translated packet whose next hop has no neighbour entry yet goes to the kernel
    // with the gateway's own address as source: let the TAP accept that, so the kernel
    // forwards it (and resolves the neighbour for the XDP path of later packets).
    for (knob, value) in [("accept_local", "1"), ("rp_filter", "0")] {
        let path = format!("/proc/sys/net/ipv4/conf/{TAP_NAME}/{knob}");
        std::fs::write(&path, value).with_context(|| format!("setting {path}"))?;
    }
    let guard = if config.dataplane.forward_guard {
        let targets: Vec<String> = config.targets.iter().map(|t| t.interface.clone()).collect();
        Some(super::guard::ForwardGuard::install(
            &config.endpoint.public_interface,
            tap.name(),
            &targets,
        )?)
    } else {
        warn!("dataplane.forward_guard is off: the kernel forwards whatever it is sent");
        None
    };
    let udp_ports: Vec<u16> = udp.iter().map(|l| l.port).collect();
    let mut xdp = attach(&config, &tap, &udp_ports)?;
    let tap = Arc::new(tap);
    let (report_tx, reports) = tokio::sync::mpsc::channel::<Report>(REPORT_QUEUE);
    let settings = |afxdp| worker::Settings {
        pin: config.dataplane.pin,
        udp_port: udp.map(|l| l.port),
        tap: tap.clone(),
        tap_peer_mac: TAP_PEER_MAC,
        afxdp,
        reports: report_tx.clone(),
    };
    let workers = match config.dataplane.mode {
        DataplaneMode::Sockets => Workers::start(settings(None)),
        DataplaneMode::AfXdp => Workers::start(settings(Some(afxdp_interfaces(&config, udp)?))),
        DataplaneMode::Auto => {
            match Workers::start(settings(Some(afxdp_interfaces(&config, udp)?))) {
                Ok(workers) => Ok(workers),
                Err(e) => {
                    warn!("AF_XDP is not available ({e}); running socket mode");
                    Workers::start(settings(None))
                }
            }
        }
    }
    .context("starting the data-plane workers")?;
    drop(report_tx);
    steer_to_workers(&mut xdp, &workers)?;

    let mut secret = [0u8; 32];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| anyhow::anyhow!("random number generator failed"))?;
    let server = Server::new(config.clone(), Arc::new(session_config), wrap, &secret)?;
    Ok(Running {
        config,
        server,
        xdp,
        workers,
        tap,
        reports,
        tls: tls_base,
        udp,
        tcp,
        guard,
    })
}

/// Packets (sent plus received) after which a data-channel key is replaced, below the
/// AEAD usage limits: TLS 1.3 allows AES-GCM 2^24.5 full 16 KiB records per key (about
/// 2^34.5 cipher blocks); 2^27 packets of at most 1,500 bytes are under 2^33.6 blocks,
/// and far below the packet-id space (2^32). At a gigabit of full packets that is a new
/// key about every 25 minutes.
pub const REKEY_PACKETS: u64 = 1 << 27;

/// When the server sessions start a new data-channel key: `endpoint.rekey_interval_secs`
/// and [`REKEY_PACKETS`] (whoever carried the packets; the data plane reports when a
/// limit is reached).
pub fn renegotiation(endpoint: &crate::config::Endpoint) -> Renegotiation {
    Renegotiation {
        seconds: endpoint.rekey_interval.as_secs(),
        bytes: 0,
        packets: REKEY_PACKETS,
    }
}

/// What the server sessions take from the configuration beside the TLS material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    pub renegotiation: Renegotiation,
    /// `tls.expired_crl = "refuse"`: no client gets in while a CRL is expired.
    pub enforce_crl_expiry: bool,
    /// `tls.require_client_eku`.
    pub require_client_eku: bool,
}

impl SessionPolicy {
    pub fn of(config: &Config) -> Self {
        Self {
            renegotiation: renegotiation(&config.endpoint),
            enforce_crl_expiry: config.tls.expired_crl == ExpiredCrl::Refuse,
            require_client_eku: config.tls.require_client_eku,
        }
    }
}

/// Checks the CRLs of `material` against its client CAs (each must be signed by one),
/// and says loudly when they have expired: with `tls.expired_crl = "refuse"` no client
/// gets in until `tls.crl` is renewed.
pub fn check_crls(tls: &crate::config::Tls, material: &tls::TlsMaterial) -> Result<Revocations> {
    let revocations = Revocations::check(&material.crls, &material.client_ca)
        .map_err(|e| anyhow::anyhow!("tls.crl: {e}"))?;
    if revocations.expired(std::time::SystemTime::now()) {
        let path = tls.crl.as_deref().unwrap_or(std::path::Path::new("-"));
        match tls.expired_crl {
            ExpiredCrl::Refuse => error!(
                crl = %path.display(),
                "tls.crl has expired: every client is refused until it is renewed (gateway pki crl)"
            ),
            ExpiredCrl::Warn => warn!(
                crl = %path.display(),
                "tls.crl has expired (tls.expired_crl = \"warn\": it still counts); renew it (gateway pki crl)"
            ),
        }
    }
    Ok(revocations)
}

/// `tls.crl` read again (a reload), checked as at start ([`check_crls`]): the session
/// settings for new clients with it, and what it revokes. `None` without `tls.crl`.
pub fn reload_crl(
    config: &Config,
    base: &tls::TlsMaterial,
) -> Result<Option<(ServerConfig, Revocations)>> {
    let Some(path) = &config.tls.crl else {
        return Ok(None);
    };
    let material = base.with_crls(tls::load_crls(path).map_err(|e| anyhow::anyhow!("{e}"))?);
    let revocations = check_crls(&config.tls, &material)?;
    let (session, _) = session_config(material, SessionPolicy::of(config))?;
    Ok(Some((session, revocations)))
}

/// Descriptors beside the TCP connections.
const OPEN_FILES_MARGIN: u64 = 1024;

/// Raises the soft open-files limit of this process towards `want`, as far as the hard
/// limit allows (never lowers it); returns the limits before and after.
pub fn raise_open_files(want: u64) -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through the pointer, a live local for the
    // call, and keeps no pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur >= want {
        return Ok((limit.rlim_cur, limit.rlim_cur));
    }
    let raised = libc::rlimit {
        rlim_cur: want.min(limit.rlim_max),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads one rlimit through the pointer, a live local for the call,
    // and keeps no pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, raised.rlim_cur))
}

/// [`raise_open_files`] for the TCP connections, saying so; warns when even the hard
/// limit is lower, since TCP connections beyond it fail to accept.
fn raise_open_files_for_tcp(want: u64) {
    match raise_open_files(want) {
        Ok((before, now)) => {
            if now > before {
                info!(
                    from = before,
                    to = now,
                    "raised the open-files limit for the TCP connections"
                );
            }
            if now < want {
                warn!(
                    limit = now,
                    want,
                    "the open-files hard limit is below endpoint.max_tcp_connections plus a margin: raise LimitNOFILE"
                );
            }
        }
        Err(e) => warn!("raising the open-files limit: {e}"),
    }
}

/// The first UDP and the first TCP listen entry; others are logged as not served.
fn served_listeners(config: &Config) -> (Option<Listen>, Option<Listen>) {
    let listen = &config.endpoint.listen;
    let first = |transport| listen.iter().find(|l| l.transport == transport).copied();
    let (udp, tcp) = (first(Transport::Udp), first(Transport::Tcp));
    for other in listen
        .iter()
        .filter(|l| Some(**l) != udp && Some(**l) != tcp)
    {
        warn!("{other} is not served: one UDP and one TCP port are");
    }
    (udp, tcp)
}

/// The server role's session settings from the TLS material: the three AEAD ciphers in
/// the gateway's order of preference, key export and cc-exit on, and the renegotiation
/// limits ([`renegotiation`]; the exported profile says `reneg-sec 0`, so the server
/// decides); and the listener's control-channel wrap.
pub fn session_config(
    material: tls::TlsMaterial,
    policy: SessionPolicy,
) -> Result<(ServerConfig, Wrap)> {
    let wrap = match (&material.tls_crypt_key, &material.tls_auth) {
        (Some(key), _) => Wrap::TlsCrypt(TlsCrypt::new(key, Role::Server)),
        // The server side of `key-direction 0`.
        (None, Some((key, digest))) => {
            let digest = match digest {
                AuthDigest::Sha1 => WrapDigest::Sha1,
                AuthDigest::Sha256 => WrapDigest::Sha256,
                AuthDigest::Sha512 => WrapDigest::Sha512,
            };
            Wrap::TlsAuth(TlsAuth::new(key, KeyDirection::Normal, digest))
        }
        (None, None) => Wrap::None,
    };
    let config = ServerConfig::new(ServerSettings {
        ca: material.client_ca,
        crls: material.crls,
        enforce_crl_expiry: policy.enforce_crl_expiry,
        require_client_eku: policy.require_client_eku,
        cert_chain: material.cert_chain,
        key: material.key,
        tls_versions: TlsVersions::default(),
        ciphers: vec![
            Cipher::Aes256Gcm,
            Cipher::Aes128Gcm,
            Cipher::ChaCha20Poly1305,
        ],
        features: ServerFeatures {
            tls_ekm: true,
            cc_exit: true,
            dyn_tls_crypt: false,
        },
        common: Common {
            renegotiation: policy.renegotiation,
            ..Common::new(wrap.clone()).map_err(|e| anyhow::anyhow!("session settings: {e}"))?
        },
    })
    .map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?;
    Ok((config, wrap))
}

/// Loads the XDP programs and attaches them: `edge` on the public interface, `inner` on
/// the TAP, `target` on every target interface; routes and rules from the config, and
/// the isolation the programs enforce whatever the rules: the client CIDR to `edge`,
/// the gateway's own addresses to `inner` (the TAP's included: it exists by now).
fn attach(config: &Config, tap: &Tap, udp_ports: &[u16]) -> Result<Xdp> {
    let mut edge = Edge::load()?;
    edge.configure(
        udp_ports,
        config.endpoint.hard_reset_rate,
        config.endpoint.hard_reset_burst,
    )?;
    edge.set_client_network(config.endpoint.client_cidr)?;
    edge.attach(&config.endpoint.public_interface, AttachMode::Auto)?;
    let mut policy = Policy::load()?;
    let compiled = policy::compile(config, &lookup_interface)?;
    policy.apply(&compiled)?;
    let own = refresh_gateway_addresses(&mut policy)?;
    info!(addresses = own, "inner refuses the gateway's own addresses");
    let mut targets = Vec::with_capacity(compiled.targets.len());
    for target in &compiled.targets {
        let setup = policy.set_up_target(&target.name, target.interface.ifindex)?;
        info!(
            interface = %setup.interface,
            driver = %setup.driver,
            xdp = %setup.xdp_mode,
            forwarding = ?setup.forwarding,
            reason = %setup.reason,
            "target interface ready"
        );
        targets.push(setup);
    }
    policy.insert_dataplane_device(tap.ifindex())?;
    policy.attach_inner(tap.name(), AttachMode::Native)?;
    let watched = [policy.redirect_map_ids(), edge.redirect_map_ids()].concat();
    let redirects = match RedirectWatch::start(&watched) {
        Ok(watch) => Some(watch),
        Err(e) => {
            warn!("failed redirects are not counted: {e}");
            None
        }
    };
    Ok(Xdp {
        edge,
        policy,
        targets,
        redirects,
    })
}

/// Puts every IPv4 address of the gateway's network namespace (and each interface's
/// directed broadcast address) into `inner`'s refused destinations; returns how many.
pub(super) fn refresh_gateway_addresses(policy: &mut Policy) -> Result<usize> {
    let own = gateway_addresses().context("listing the gateway's addresses")?;
    policy.set_gateway_addresses(&own)?;
    Ok(own.len())
}

/// The interfaces AF_XDP mode puts sockets on: the public one (when UDP is served) and
/// every target interface.
fn afxdp_interfaces(config: &Config, udp: Option<Listen>) -> Result<AfXdp> {
    let ifindex = |name: &str| {
        lookup_interface(name)
            .map(|i| i.ifindex)
            .map_err(anyhow::Error::from)
    };
    let edge = match udp {
        Some(_) => Some(ifindex(&config.endpoint.public_interface)?),
        None => None,
    };
    let mut targets = Vec::new();
    for target in &config.targets {
        let index = ifindex(&target.interface)?;
        if !targets.contains(&index) {
            targets.push(index);
        }
    }
    Ok(AfXdp { edge, targets })
}

/// Puts the workers' AF_XDP sockets (if any) into the XSKMAPs of `edge` and `target`.
fn steer_to_workers(xdp: &mut Xdp, workers: &Workers) -> Result<()> {
    for binding in workers.xsks() {
        match binding.role {
            XskRole::Edge => xdp.edge.insert_xsk(binding.queue, &binding.fd)?,
            XskRole::Target => {
                xdp.policy
                    .insert_target_xsk(binding.ifindex, binding.queue, &binding.fd)?
            }
        }
    }
    info!(
        mode = super::driver::mode_name(workers),
        af_xdp_sockets = workers.xsks().len(),
        "data plane ready"
    );
    Ok(())
}

fn list(problems: &[crate::config::ConfigError]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}
