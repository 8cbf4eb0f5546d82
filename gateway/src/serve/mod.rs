//! `gateway serve`: sets up the TAP seam, the XDP programs and the data-plane workers
//! (`dataplane::worker`), then runs the control plane in one tokio task: control
//! packets the workers pass up, TCP connections, session timers, the NAT sweep, and
//! SIGHUP (reload routes and rules) / SIGTERM (close every session).
//!
//! The workers carry the data packets of established sessions in both directions; the
//! control plane hands each session's keys to them when it is established and after
//! every rekey or float. One UDP and one TCP listen entry are served.

mod server;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use gateway_proto::{
    data::Cipher,
    framing::{MAX_FRAME_LEN, StreamDecoder, frame_header},
    keys::Role,
    push::ServerFeatures,
    session::{Common, Renegotiation, ServerConfig, ServerSettings, TlsVersions},
    static_key::KeyDirection,
    wrap::{AuthDigest as WrapDigest, TlsAuth, TlsCrypt, Wrap},
};
use ring::rand::{SecureRandom, SystemRandom};
use tracing::{error, info, warn};

pub use self::server::{CarryRequest, DataPath, Server};
use crate::{
    admin::{Request as AdminRequest, Response as AdminResponse},
    config::{AuthDigest, Config, DataplaneMode, Transport},
    control::{pool::AddressPool, tls},
    dataplane::{
        afxdp::{AfXdp, XskRole},
        carry::{Carried, Peer, Report},
        counters::{Counter, Totals},
        tap::Tap,
        worker::{self, Workers},
    },
    nat::{NatTimeouts, monotonic_now_ns},
    net::lookup_interface,
    policy::{self, GroupId},
    xdp::{AttachMode, Edge, Policy},
};

/// Name of the TAP device of the socket-mode seam.
pub const TAP_NAME: &str = "gw-tap0";
/// MAC the gateway writes as the source of frames it puts into the TAP.
const TAP_PEER_MAC: [u8; 6] = [0x02, 0x67, 0x77, 0x00, 0x00, 0x01];
/// Reports from the workers the control plane may fall behind by before they drop.
const REPORT_QUEUE: usize = 4096;
/// How often idle NAT mappings are swept.
const NAT_SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The XDP programs, kept in step with the sessions.
pub struct Xdp {
    pub edge: Edge,
    pub policy: Policy,
}

/// What the control plane keeps in step with its sessions: the XDP maps and the workers.
struct Plane {
    xdp: Xdp,
    workers: Workers,
    /// Writers of the TCP connections, by client address.
    tcp_writers: HashMap<SocketAddr, tokio::sync::mpsc::UnboundedSender<Vec<u8>>>,
}

impl DataPath for Plane {
    fn session_up(&mut self, lease: Ipv4Addr, peer_id: u32, groups: &[GroupId]) {
        self.xdp.session_up(lease, peer_id, groups);
    }

    fn session_down(&mut self, lease: Ipv4Addr, peer_id: u32) {
        self.xdp.session_down(lease, peer_id);
    }

    fn carry(&mut self, peer_id: u32, carried: Option<CarryRequest>) {
        let Some(request) = carried else {
            self.workers.forget(peer_id);
            return;
        };
        let peer = if request.udp {
            Peer::Udp(request.addr)
        } else if let Some(writer) = self.tcp_writers.get(&request.addr) {
            Peer::Stream(writer.clone())
        } else {
            // The connection is already gone; its close event ends the session.
            return;
        };
        self.workers.carry(Carried {
            peer_id,
            lease: request.lease,
            peer,
            data: request.data,
            activity: request.activity,
        });
    }
}

impl Xdp {
    pub fn session_up(&mut self, lease: Ipv4Addr, peer_id: u32, groups: &[GroupId]) {
        if let Err(e) = self
            .policy
            .insert_session(lease, server::session_info(peer_id, groups))
        {
            error!(%lease, peer_id, "admitting the session in XDP: {e}");
        }
        if let Err(e) = self.edge.insert_peer(peer_id, lease) {
            error!(%lease, peer_id, "admitting the peer-id in XDP: {e}");
        }
    }

    pub fn session_down(&mut self, lease: Ipv4Addr, peer_id: u32) {
        if let Err(e) = self.policy.end_session(lease) {
            error!(%lease, peer_id, "ending the session in XDP: {e}");
        }
        if let Err(e) = self.edge.remove_peer(peer_id) {
            warn!(peer_id, "removing the peer-id from XDP: {e}");
        }
    }
}

/// Runs the gateway until SIGTERM or SIGINT.
pub fn run(config_path: &Path) -> Result<()> {
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        serve(config_path, stop).await
    })
}

/// Serves `config_path` until `shutdown` completes; then closes every session.
pub async fn serve(config_path: &Path, shutdown: impl Future<Output = ()>) -> Result<()> {
    let config = Config::load(config_path)?;
    if let Err(problems) = config.check_system() {
        bail!("{}", list(&problems));
    }
    let material = tls::load(&config.tls).map_err(|p| anyhow::anyhow!("{}", list(&p)))?;
    let (session_config, wrap) = session_config(material, Renegotiation::default())?;

    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    if forwarding.trim() != "1" {
        bail!(
            "IPv4 forwarding is off: set net.ipv4.ip_forward=1 (the XDP next-hop lookup needs it)"
        );
    }
    let udp = config
        .endpoint
        .listen
        .iter()
        .find(|l| l.transport == Transport::Udp)
        .copied();
    let tcp = config
        .endpoint
        .listen
        .iter()
        .find(|l| l.transport == Transport::Tcp)
        .copied();
    for other in config
        .endpoint
        .listen
        .iter()
        .filter(|l| Some(**l) != udp && Some(**l) != tcp)
    {
        warn!("{other} is not served: one UDP and one TCP port are");
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
    let udp_ports: Vec<u16> = udp.iter().map(|l| l.port).collect();
    let mut xdp = attach(&config, &tap, &udp_ports)?;
    let tap = std::sync::Arc::new(tap);
    let (report_tx, mut reports) = tokio::sync::mpsc::channel::<Report>(REPORT_QUEUE);
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
    let mut server = Server::new(
        config.clone(),
        std::sync::Arc::new(session_config),
        wrap,
        &secret,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let admin = crate::admin::bind(&config.admin.socket)?;
    let (admin_tx, mut admin_requests) = tokio::sync::mpsc::channel(16);
    tokio::spawn(crate::admin::serve(admin, admin_tx));
    let (stream_tx, mut streams) = tokio::sync::mpsc::channel::<StreamEvent>(1024);
    if let Some(tcp) = tcp {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], tcp.port)))
            .await
            .with_context(|| format!("binding {tcp}"))?;
        tokio::spawn(accept_streams(listener, stream_tx));
    }
    let mut plane = Plane {
        xdp,
        workers,
        tcp_writers: HashMap::new(),
    };
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut sweep = tokio::time::interval(NAT_SWEEP_EVERY);
    let listen: Vec<String> = udp
        .iter()
        .chain(tcp.iter())
        .map(ToString::to_string)
        .collect();
    info!(
        endpoint = %config.endpoint.name,
        listen = %listen.join(" "),
        client_cidr = %config.endpoint.client_cidr,
        workers = plane.workers.count(),
        "serving"
    );
    tokio::pin!(shutdown);
    // Dropped datagrams, spoofed packets and the workers' counters, logged with the
    // sweep when they changed.
    let mut logged = (0u64, 0u64, Totals::default());
    loop {
        let deadline = server
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            Some(report) = reports.recv() => {
                let now = Instant::now();
                match report {
                    Report::Datagram { from, bytes } => server.handle_datagram(now, from, &bytes, &mut plane),
                    Report::Floated { peer_id, to } => server.floated(now, peer_id, to, &mut plane),
                    Report::Exited { peer_id } => server.peer_exited(now, peer_id, &mut plane),
                    Report::KeyUsed { peer_id, key_id } => server.key_used(now, peer_id, key_id, &mut plane),
                    Report::RenegotiationDue { peer_id } => server.renegotiation_due(now, peer_id, &mut plane),
                }
            },
            Some(event) = streams.recv() => match event {
                StreamEvent::Opened(from, writer) => {
                    plane.tcp_writers.insert(from, writer);
                }
                StreamEvent::Packet(from, packet) => {
                    server.handle_stream_packet(Instant::now(), from, &packet, &mut plane);
                }
                StreamEvent::Closed(from) => {
                    server.stream_closed(from, &mut plane);
                    plane.tcp_writers.remove(&from);
                }
            },
            _ = tokio::time::sleep_until(deadline) => server.handle_timeout(Instant::now(), &mut plane),
            Some((request, reply)) = admin_requests.recv() => {
                let now = Instant::now();
                let response = match request {
                    AdminRequest::Connections => AdminResponse::Connections {
                        connections: server.connections(now),
                    },
                    AdminRequest::Terminate(selector) => {
                        match server.terminate(now, &selector, &mut plane) {
                            Ok(statuses) => AdminResponse::Terminated { statuses },
                            Err(message) => AdminResponse::Error { message },
                        }
                    }
                    AdminRequest::Dataplane => AdminResponse::Dataplane(dataplane_status(&plane.workers)),
                };
                let _ = reply.send(response);
            },
            _ = sweep.tick() => {
                match plane.xdp.policy.sweep_nat(monotonic_now_ns(), &NatTimeouts::default()) {
                    Ok(s) if s.expired + s.orphans > 0 => info!(expired = s.expired, orphans = s.orphans, kept = s.kept, "NAT sweep"),
                    Ok(_) => {}
                    Err(e) => warn!("NAT sweep: {e}"),
                }
                let counts = (server.dropped, server.spoofed, plane.workers.totals());
                if counts != logged {
                    logged = counts;
                    log_counters("counters", &server, &counts.2);
                }
            },
            _ = hangup.recv() => reload(config_path, &config, &mut plane.xdp).await,
            _ = &mut shutdown => {
                log_counters("shutting down", &server, &plane.workers.totals());
                server.close_all(Instant::now(), &mut plane);
                flush(&mut server, &plane, &tap);
                plane.workers.stop();
                let _ = std::fs::remove_file(&config.admin.socket);
                return Ok(());
            }
        }
        flush(&mut server, &plane, &tap);
    }
}

/// One log line with the control plane's and the workers' counters.
fn log_counters(message: &str, server: &Server, w: &Totals) {
    let workers: Vec<String> = w
        .iter()
        .map(|(counter, n)| match counter {
            // The control plane drops spoofed packets too (TCP sessions, data that raced
            // a key hand-over).
            Counter::Spoofed => format!("{}={}", counter.name(), n + server.spoofed),
            _ => format!("{}={n}", counter.name()),
        })
        .collect();
    info!(
        sessions = server.sessions(),
        dropped = server.dropped,
        workers = %workers.join(" "),
        "{message}"
    );
}

/// The server role's session settings from the TLS material: the three AEAD ciphers in
/// the gateway's order of preference, key export and cc-exit on, and the renegotiation
/// limits (`gateway serve` sets none: the exported profile says `reneg-sec 0`); and the
/// listener's control-channel wrap.
pub fn session_config(
    material: tls::TlsMaterial,
    renegotiation: Renegotiation,
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
            renegotiation,
            ..Common::new(wrap.clone()).map_err(|e| anyhow::anyhow!("session settings: {e}"))?
        },
    })
    .map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?;
    Ok((config, wrap))
}

/// What the TCP connection tasks tell the serving task.
enum StreamEvent {
    /// A client connected; packets for it go to this writer.
    Opened(SocketAddr, tokio::sync::mpsc::UnboundedSender<Vec<u8>>),
    /// A packet deframed from a client's stream.
    Packet(SocketAddr, Vec<u8>),
    /// The connection ended (closed, reset, or broken framing).
    Closed(SocketAddr),
}

/// Accepts TCP clients; each gets a reader task (deframing into packets) and a writer
/// task (framing what the session sends).
async fn accept_streams(
    listener: tokio::net::TcpListener,
    events: tokio::sync::mpsc::Sender<StreamEvent>,
) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!("accepting TCP: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        if events
            .send(StreamEvent::Opened(from, out_tx))
            .await
            .is_err()
        {
            return;
        }
        let events = events.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let Ok(mut decoder) = StreamDecoder::new(MAX_FRAME_LEN) else {
                return;
            };
            let mut buf = vec![0u8; 65536];
            'read: loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut input = &buf[..n];
                loop {
                    match decoder.decode(&mut input) {
                        Ok(Some(packet)) => {
                            if events
                                .send(StreamEvent::Packet(from, packet.to_vec()))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            warn!(%from, "TCP framing: {e}");
                            break 'read;
                        }
                    }
                }
            }
            let _ = events.send(StreamEvent::Closed(from)).await;
        });
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Some(packet) = out_rx.recv().await {
                let Ok(header) = frame_header(packet.len()) else {
                    continue;
                };
                if writer.write_all(&header).await.is_err()
                    || writer.write_all(&packet).await.is_err()
                {
                    break;
                }
            }
        });
    }
}

/// Sends what the sessions produced (over UDP from the listen port, or the client's TCP
/// connection) and writes the tunnel packets the control plane opened itself (TCP
/// sessions, data that raced a key hand-over) into the TAP.
fn flush(server: &mut Server, plane: &Plane, tap: &Tap) {
    for d in std::mem::take(&mut server.outbox) {
        if let Some(writer) = plane.tcp_writers.get(&d.to) {
            let _ = writer.send(d.bytes);
        } else if let Some(socket) = plane.workers.control_socket() {
            // Non-blocking: a full socket buffer drops the datagram; the reliability
            // layer resends control packets.
            if let Err(e) = socket.send_to(&d.bytes, d.to) {
                warn!(to = %d.to, "sending: {e}");
            }
        }
    }
    for packet in std::mem::take(&mut server.to_tap) {
        let mut frame = Vec::with_capacity(14 + packet.len());
        frame.extend_from_slice(&tap.mac());
        frame.extend_from_slice(&TAP_PEER_MAC);
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&packet);
        if let Err(e) = tap.write_frame(0, &frame) {
            warn!("writing to the TAP: {e}");
        }
    }
}

/// Loads the XDP programs and attaches them: `edge` on the public interface, `inner` on
/// the TAP, `target` on every target interface; routes and rules from the config.
fn attach(config: &Config, tap: &Tap, udp_ports: &[u16]) -> Result<Xdp> {
    let mut edge = Edge::load()?;
    edge.configure(
        udp_ports,
        config.endpoint.hard_reset_rate,
        config.endpoint.hard_reset_burst,
    )?;
    edge.attach(&config.endpoint.public_interface, AttachMode::Auto)?;
    let mut policy = Policy::load()?;
    let compiled = policy::compile(config, &lookup_interface)?;
    policy.apply(&compiled)?;
    for target in &compiled.targets {
        policy.attach_target(&target.name, AttachMode::Auto)?;
    }
    policy.insert_dataplane_device(tap.ifindex())?;
    policy.attach_inner(tap.name(), AttachMode::Native)?;
    Ok(Xdp { edge, policy })
}

/// The interfaces AF_XDP mode puts sockets on: the public one (when UDP is served) and
/// every target interface.
fn afxdp_interfaces(config: &Config, udp: Option<crate::config::Listen>) -> Result<AfXdp> {
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

/// What `gateway dataplane` shows.
fn dataplane_status(workers: &Workers) -> crate::admin::DataplaneStatus {
    let af_xdp_sockets: Vec<_> = workers
        .xsks()
        .iter()
        .map(|b| crate::admin::XskSocket {
            role: b.role.name().to_string(),
            ifindex: b.ifindex,
            queue: b.queue,
            worker: b.worker,
        })
        .collect();
    crate::admin::DataplaneStatus {
        mode: mode_name(workers).to_string(),
        workers: workers.count(),
        af_xdp_sockets,
        counters: workers.totals(),
    }
}

fn mode_name(workers: &Workers) -> &'static str {
    if workers.xsks().is_empty() {
        "sockets"
    } else {
        "afxdp"
    }
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
        mode = mode_name(workers),
        af_xdp_sockets = workers.xsks().len(),
        "data plane ready"
    );
    Ok(())
}

/// SIGHUP: routes and authorization rules from the file again, swapped in whole;
/// sessions stay up. Other changes need a restart. A reload right after another waits
/// (without blocking the runtime) until the rule generation to refill is out of use.
async fn reload(config_path: &Path, running: &Config, xdp: &mut Xdp) {
    let fresh = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            error!("reload refused, the rules in force stay: {e}");
            return;
        }
    };
    if fresh.endpoint != running.endpoint || fresh.groups != running.groups {
        warn!("reload applies routes and authorization rules only; other changes need a restart");
    }
    let compiled = match policy::compile_rules(&fresh, &lookup_interface) {
        Ok(compiled) => compiled,
        Err(e) => {
            error!("reload refused, the rules in force stay: {e}");
            return;
        }
    };
    while let Some(ready) = xdp.policy.rules_ready_at() {
        tokio::time::sleep_until(ready.into()).await;
    }
    match xdp.policy.replace_rules(&compiled) {
        Ok(()) => info!(
            routes = compiled.routes.len(),
            rules = compiled.authorization.len(),
            "reloaded routes and authorization rules"
        ),
        Err(e) => error!("reload failed, the rules in force stay: {e}"),
    }
}

fn list(problems: &[crate::config::ConfigError]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}
