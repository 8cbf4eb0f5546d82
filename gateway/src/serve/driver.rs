//! The driver: one tokio task that feeds the control plane ([`Server`]) everything that
//! happens — worker reports, TCP stream events, timer expiries, admin requests, SIGHUP,
//! the NAT sweep, shutdown — with the time, and carries out the [`Output`]s it returns:
//! XDP map writes, hand-overs to the workers, datagrams and seam packets.

use std::{
    collections::HashMap,
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result};
use tracing::{error, info, warn};

use super::{
    Now, Output, Regroup, Server, TAP_PEER_MAC,
    server::session_info,
    setup::Running,
    tcp::{Connection, Limits, StreamEvent, accept_streams},
};
use crate::{
    admin::{Request as AdminRequest, Response as AdminResponse},
    config::Config,
    control::tls,
    dataplane::{
        carry::{Carried, Peer},
        counters::{Counter, Totals},
        tap::Tap,
        worker::Workers,
    },
    nat::{NatTimeouts, monotonic_now_ns},
    net::lookup_interface,
    policy::{self, GroupId},
    xdp::{Edge, Policy},
};

/// How often the CRL file is looked at for a change.
const CRL_CHECK_EVERY: Duration = Duration::from_millis(500);

/// What identifies the CRL file's content cheaply: modification time, size, inode.
fn crl_stamp(config: &Config) -> Option<(std::time::SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(config.tls.crl.as_ref()?).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// How often idle NAT mappings are swept.
const NAT_SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The XDP programs, kept in step with the sessions.
pub struct Xdp {
    pub edge: Edge,
    pub policy: Policy,
    /// How each target interface was set up, in the configuration's order.
    pub targets: Vec<crate::xdp::TargetSetup>,
    /// The failed-redirect counters, where the kernel's BTF allows them.
    pub redirects: Option<crate::xdp::RedirectWatch>,
}

impl Xdp {
    pub fn session_up(&mut self, lease: Ipv4Addr, peer_id: u32, groups: &[GroupId]) {
        self.set_groups(lease, peer_id, groups);
        if let Err(e) = self.edge.insert_peer(peer_id, lease) {
            error!(%lease, peer_id, "admitting the peer-id in XDP: {e}");
        }
    }

    /// Writes the session's entry (lease → groups, peer-id): when it comes up, and when
    /// a reload changes its groups.
    pub fn set_groups(&mut self, lease: Ipv4Addr, peer_id: u32, groups: &[GroupId]) {
        if let Err(e) = self
            .policy
            .insert_session(lease, session_info(peer_id, groups))
        {
            error!(%lease, peer_id, "writing the session's groups in XDP: {e}");
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

/// What the control plane keeps in step with its sessions: the XDP maps, the workers,
/// the TCP connections and the seam.
struct Plane {
    xdp: Xdp,
    workers: Workers,
    tap: std::sync::Arc<Tap>,
    /// The TCP connections, by client address.
    tcp: HashMap<SocketAddr, Connection>,
}

impl Plane {
    /// Carries out everything the server has to say.
    fn apply_all(&mut self, server: &mut Server) {
        while let Some(output) = server.poll_output() {
            self.apply(output);
        }
    }

    fn apply(&mut self, output: Output) {
        match output {
            Output::SessionUp {
                lease,
                peer_id,
                groups,
            } => self.xdp.session_up(lease, peer_id, &groups),
            Output::SessionDown { lease, peer_id } => self.xdp.session_down(lease, peer_id),
            Output::Carry {
                peer_id,
                request: None,
            } => self.workers.forget(peer_id),
            Output::Carry {
                peer_id,
                request: Some(request),
            } => {
                let peer = if request.udp {
                    Peer::Udp(request.addr)
                } else if let Some(connection) = self.tcp.get(&request.addr) {
                    Peer::Stream(connection.writer.clone())
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
            Output::Transmit { to, bytes } => {
                if let Some(connection) = self.tcp.get(&to) {
                    // A full queue (a client that stopped reading) drops the packet; the
                    // reliability layer resends control packets.
                    let _ = connection.writer.try_send(bytes);
                } else if let Some(socket) = self.workers.control_socket() {
                    // Non-blocking: a full socket buffer drops the datagram; the
                    // reliability layer resends control packets.
                    if let Err(e) = socket.send_to(&bytes, to) {
                        warn!(%to, "sending: {e}");
                    }
                }
            }
            Output::CloseStream { to } => {
                if let Some(connection) = self.tcp.remove(&to) {
                    connection.close();
                }
            }
            Output::ToSeam(packet) => {
                let mut frame = Vec::with_capacity(14 + packet.len());
                frame.extend_from_slice(&self.tap.mac());
                frame.extend_from_slice(&TAP_PEER_MAC);
                frame.extend_from_slice(&[0x08, 0x00]);
                frame.extend_from_slice(&packet);
                if let Err(e) = self.tap.write_frame(0, &frame) {
                    warn!("writing to the TAP: {e}");
                }
            }
        }
    }
}

/// Runs the control plane until `shutdown` completes; then closes every session.
pub(super) async fn run(
    config_path: &Path,
    running: Running,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let Running {
        config,
        mut server,
        xdp,
        workers,
        tap,
        mut reports,
        tls,
        udp,
        tcp,
        guard: _guard,
    } = running;
    let admin = crate::admin::bind(&config.admin.socket)?;
    let admin_socket = crate::admin::socket_identity(&config.admin.socket);
    let (admin_tx, mut admin_requests) = tokio::sync::mpsc::channel(16);
    tokio::spawn(crate::admin::serve(admin, admin_tx));
    let (stream_tx, mut streams) = tokio::sync::mpsc::channel::<StreamEvent>(1024);
    if let Some(tcp) = tcp {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], tcp.port)))
            .await
            .with_context(|| format!("binding {tcp}"))?;
        let limits = Limits {
            total: config.endpoint.max_tcp_connections,
            per_source: config.endpoint.max_tcp_connections_per_source,
        };
        tokio::spawn(accept_streams(listener, stream_tx, limits));
    }
    // Everything that needs root is done: continue unprivileged where configured.
    match &config.process.user {
        Some(user) => {
            super::privilege::drop_to(user)?;
        }
        None => warn!(
            "running as root for the gateway's whole life: set process.user to continue \
             as an unprivileged user once set up"
        ),
    }
    let mut plane = Plane {
        xdp,
        workers,
        tap,
        tcp: HashMap::new(),
    };
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut sweep = tokio::time::interval(NAT_SWEEP_EVERY);
    let mut crl_check = tokio::time::interval(CRL_CHECK_EVERY);
    let mut crl_seen = crl_stamp(&config);
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
            Some(report) = reports.recv() => server.handle_report(Now::system(), report),
            Some(event) = streams.recv() => match event {
                StreamEvent::Opened(from, connection) => {
                    plane.tcp.insert(from, connection);
                }
                StreamEvent::Packet(from, packet) => {
                    server.handle_stream_packet(Now::system(), from, &packet);
                }
                StreamEvent::Closed(from) => {
                    server.stream_closed(Now::system(), from);
                    plane.apply_all(&mut server);
                    plane.tcp.remove(&from);
                }
            },
            _ = tokio::time::sleep_until(deadline) => server.handle_timeout(Now::system()),
            Some((request, reply)) = admin_requests.recv() => {
                let now = Now::system();
                let response = match request {
                    AdminRequest::Connections => AdminResponse::Connections {
                        connections: server.connections(now),
                    },
                    AdminRequest::Terminate(selector) => match server.terminate(now, &selector) {
                        Ok(statuses) => AdminResponse::Terminated { statuses },
                        Err(e) => AdminResponse::Error { message: e.to_string() },
                    },
                    AdminRequest::Dataplane => AdminResponse::Dataplane(Box::new(dataplane_status(&plane.workers, &plane.xdp))),
                };
                let _ = reply.send(response);
            },
            _ = crl_check.tick() => {
                // A CRL written in place (gateway pki revoke, a CA's distribution job)
                // applies without a SIGHUP.
                let stamp = crl_stamp(&config);
                if stamp != crl_seen {
                    crl_seen = stamp;
                    reload_crl(&config, &tls, &mut server);
                }
            },
            _ = sweep.tick() => {
                match plane.xdp.policy.sweep_nat(monotonic_now_ns(), &NatTimeouts::default()) {
                    Ok(s) if s.expired + s.orphans > 0 => info!(expired = s.expired, orphans = s.orphans, kept = s.kept, "NAT sweep"),
                    Ok(_) => {}
                    Err(e) => warn!("NAT sweep: {e}"),
                }
                let counts = (server.dropped(), server.spoofed(), plane.workers.totals());
                if counts != logged {
                    logged = counts;
                    log_counters("counters", &server, &counts.2);
                }
            },
            _ = hangup.recv() => {
                reload_crl(&config, &tls, &mut server);
                reload(config_path, &config, &mut server, &mut plane.xdp).await;
            }
            _ = &mut shutdown => {
                log_counters("shutting down", &server, &plane.workers.totals());
                server.close_all(Now::system());
                plane.apply_all(&mut server);
                plane.workers.stop();
                crate::admin::remove_if_ours(&config.admin.socket, admin_socket);
                return Ok(());
            }
        }
        plane.apply_all(&mut server);
    }
}

/// One log line with the control plane's and the workers' counters.
fn log_counters(message: &str, server: &Server, w: &Totals) {
    let workers: Vec<String> = w
        .iter()
        .map(|(counter, n)| match counter {
            // The control plane drops spoofed packets too (TCP sessions, data that raced
            // a key hand-over).
            Counter::Spoofed => format!("{}={}", counter.name(), n + server.spoofed()),
            _ => format!("{}={n}", counter.name()),
        })
        .collect();
    info!(
        sessions = server.sessions(),
        dropped = server.dropped(),
        workers = %workers.join(" "),
        "{message}"
    );
}

/// What `gateway dataplane` shows.
fn dataplane_status(workers: &Workers, xdp: &Xdp) -> crate::admin::DataplaneStatus {
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
        targets: xdp.targets.clone(),
        xdp: crate::admin::XdpCounters {
            edge: xdp.edge.stats().map(|s| s.by_name()).unwrap_or_default(),
            inner: xdp
                .policy
                .inner_stats()
                .map(|s| s.by_name())
                .unwrap_or_default(),
            target: xdp
                .policy
                .target_stats()
                .map(|s| s.by_name())
                .unwrap_or_default(),
            redirect: xdp
                .redirects
                .as_ref()
                .and_then(|w| w.stats().ok())
                .map(|s| s.by_name())
                .unwrap_or_default(),
        },
    }
}

pub(super) fn mode_name(workers: &Workers) -> &'static str {
    if workers.xsks().is_empty() {
        "sockets"
    } else {
        "afxdp"
    }
}

/// SIGHUP: `tls.crl` again (see [`super::setup::reload_crl`]): new clients are checked
/// against it, and live sessions whose certificate it now revokes are told to stop
/// (HALT) and end. A CRL that does not parse or is not signed by a client CA is
/// refused, and the one in force stays.
fn reload_crl(running: &Config, base: &tls::TlsMaterial, server: &mut Server) {
    match super::setup::reload_crl(running, base) {
        Ok(Some((config, revocations))) => {
            server.set_session_config(std::sync::Arc::new(config));
            let ended = server.end_revoked(Now::system(), &revocations);
            info!(revoked_sessions = ended, "reloaded the CRL");
        }
        Ok(None) => {}
        Err(e) => error!("CRL reload refused, the CRL in force stays: {e:#}"),
    }
}

/// SIGHUP: routes, authorization rules and groups from the file again, swapped in
/// whole; sessions stay up. The gateway's own addresses (refused as destinations) are
/// listed again too. Other changes need a restart.
///
/// Groups keep their numbers across reloads ([`Config::keep_group_ids`]), and the live
/// sessions' XDP entries change with the rules in two steps, so that no packet is ever
/// judged by one numbering's rules with the other's memberships: before the swap a
/// session keeps only the groups both numberings agree on, after it the new ones. A
/// reload right after another waits (without blocking the runtime) until the rule
/// generation to refill is out of use.
async fn reload(config_path: &Path, running: &Config, server: &mut Server, xdp: &mut Xdp) {
    let mut fresh = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            error!("reload refused, the rules in force stay: {e}");
            return;
        }
    };
    if fresh.endpoint != running.endpoint || fresh.tls != running.tls {
        warn!(
            "reload applies routes, authorization rules and groups only; other changes need a restart"
        );
    }
    if let Err(e) = fresh.keep_group_ids(server.groups()) {
        error!("reload refused, the rules in force stay: {e}");
        return;
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
    let changes = server.regroup(&fresh.groups);
    let set = |xdp: &mut Xdp, pick: fn(&Regroup) -> Vec<GroupId>| {
        for change in &changes {
            if let Some(lease) = change.lease {
                xdp.set_groups(lease, change.peer_id, &pick(change));
            }
        }
    };
    // Addresses may have changed since the start (a new interface or lease).
    if let Err(e) = super::setup::refresh_gateway_addresses(&mut xdp.policy) {
        warn!("reload: the gateway addresses refused stay as they were: {e:#}");
    }
    set(xdp, Regroup::both);
    match xdp.policy.replace_rules(&compiled) {
        Ok(()) => {
            set(xdp, |c| c.after.clone());
            server.set_groups(fresh.groups, &changes);
            info!(
                routes = compiled.routes.len(),
                rules = compiled.authorization.len(),
                sessions_regrouped = changes.len(),
                "reloaded routes, authorization rules and groups"
            );
        }
        Err(e) => {
            set(xdp, |c| c.before.clone());
            error!("reload failed, the rules and groups in force stay: {e}");
        }
    }
}
