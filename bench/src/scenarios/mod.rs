//! The load-generator scenarios, each run against our gateway and the stock OpenVPN
//! server in the same lab, one after the other: `throughput` (echo pps, Gbit/s and server
//! CPU per packet at several packet sizes and session counts, with a calibration run of
//! the generator alone and the AEAD floor), `handshakes` (a connect storm) and `latency`
//! (round trips at fractions of each server's measured capacity).

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use gateway_proto::{
    data::{Cipher, DATA_V2_OVERHEAD, DataKey},
    keys::{KEY_BLOCK_LEN, Role},
    packet::{DataHeader, KeyId, PeerId},
    session::ClientConfig,
};
use gateway_tests::lab::Topology;

mod connect;

pub use connect::{handshakes, sessions};

use crate::{
    bed::{Bed, Server, machine_ticks, process_ticks},
    loadgen::{self, Conn, Load, REFLECTOR_PORT, Reflector},
    report::Report,
};

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub quick: bool,
}

impl Size {
    fn packet_sizes(self) -> &'static [usize] {
        if self.quick {
            &[64, 1400]
        } else {
            &[64, 512, 1400]
        }
    }

    fn session_counts(self) -> &'static [usize] {
        if self.quick { &[1, 4] } else { &[1, 64] }
    }

    fn seconds(self) -> u64 {
        if self.quick { 2 } else { 5 }
    }

    /// Idle-session counts for `sessions`, ours; the stock server is measured at the
    /// first only (its connect rate makes bigger storms take many minutes).
    fn idle_counts(self) -> &'static [usize] {
        if self.quick {
            &[100]
        } else {
            &[1_000, 10_000, 50_000]
        }
    }

    fn storm_sizes(self) -> &'static [usize] {
        if self.quick { &[50] } else { &[1_000, 10_000] }
    }
}

fn reflector_addr() -> SocketAddrV4 {
    SocketAddrV4::new(
        Topology::TARGET_ADDR.parse().expect("a valid address"),
        REFLECTOR_PORT,
    )
}

fn server_addr() -> SocketAddr {
    SocketAddr::from((
        Topology::GATEWAY_PUBLIC_ADDR
            .parse::<Ipv4Addr>()
            .expect("a valid address"),
        1194,
    ))
}

/// The client-role configuration every generated session uses: alice's certificate,
/// tls-crypt, AES-256-GCM.
fn client_config(bed: &Bed) -> Result<Arc<ClientConfig>> {
    Ok(Arc::new(
        bed.pki.client_role_config("alice", &[Cipher::Aes256Gcm])?,
    ))
}

/// Connects `count` sessions from the client namespace.
fn storm(bed: &Bed, config: &Arc<ClientConfig>, count: usize) -> Result<loadgen::Storm> {
    let local: Ipv4Addr = Topology::CLIENT_ADDR.parse()?;
    let sockets = bed
        .topo
        .client
        .run_in(move || loadgen::sockets(local, server_addr(), count))??;
    loadgen::connect(config.clone(), sockets, Duration::from_secs(120))
}

fn start_reflector(bed: &Bed) -> Result<Reflector> {
    let socket = bed
        .topo
        .target
        .run_in(|| UdpSocket::bind(SocketAddr::V4(reflector_addr())))??;
    Reflector::start(socket)
}

/// CPU seconds the server process and softirq spent between two readings.
struct CpuMeter {
    pid: u32,
    process: u64,
    softirq: u64,
    busy: u64,
    total: u64,
}

impl CpuMeter {
    fn start(pid: u32) -> Result<Self> {
        let (busy, total, softirq) = machine_ticks()?;
        Ok(Self {
            pid,
            process: process_ticks(pid)?,
            softirq,
            busy,
            total,
        })
    }

    /// (server process + softirq seconds, machine busy fraction) since `start`.
    fn stop(&self) -> Result<(f64, f64)> {
        let (busy, total, softirq) = machine_ticks()?;
        let process = process_ticks(self.pid)?;
        // USER_HZ is 100 on Linux.
        let seconds = ((process - self.process) + (softirq - self.softirq)) as f64 / 100.0;
        let busy = (busy - self.busy) as f64 / (total - self.total).max(1) as f64;
        Ok((seconds, busy))
    }
}

/// Splits off the first `count` sessions for a pump and puts them back after.
fn with_sessions<T>(
    conns: &mut Vec<Conn>,
    count: usize,
    f: impl FnOnce(Vec<Conn>) -> Result<(Vec<Conn>, T)>,
) -> Result<T> {
    let rest = conns.split_off(count.min(conns.len()));
    let using = std::mem::take(conns);
    let (back, out) = f(using)?;
    *conns = back;
    conns.extend(rest);
    Ok(out)
}

/// One throughput measurement.
#[derive(Debug, Clone, Copy, Default)]
struct Flow {
    up_pps: f64,
    down_pps: f64,
    cpu_ns_per_packet: f64,
    busy: f64,
    /// Probes sent that never came back (either way), as a fraction.
    loss: f64,
}

/// `throughput`; returns each server's echo capacity (pps) at 512-byte packets (or the
/// largest size measured) with the most sessions, for `latency`.
pub fn throughput(
    bed: &mut Bed,
    gateway_bin: &Path,
    size: Size,
    report: &mut Report,
) -> Result<[f64; 2]> {
    let config = client_config(bed)?;
    let reflector = start_reflector(bed)?;
    let most = *size.session_counts().iter().max().unwrap_or(&1);
    let duration = Duration::from_secs(size.seconds());
    let mut flows =
        vec![
            vec![Flow::default(); size.packet_sizes().len() * size.session_counts().len()];
            Server::EVERY_MODE.len()
        ];
    let mut calibration = vec![0.0; size.packet_sizes().len()];
    for (s, server) in Server::EVERY_MODE.into_iter().enumerate() {
        let pid = bed.start(server, gateway_bin)?;
        let mut storm = storm(bed, &config, most)?;
        if storm.failures > 0 {
            bail!(
                "{} of {most} sessions did not connect to {}",
                storm.failures,
                server.name()
            );
        }
        let mut k = 0;
        for (p, &packet) in size.packet_sizes().iter().enumerate() {
            if server == Server::Ours {
                // The generator alone: the same sealing and opening against a plain echo
                // in the gateway namespace, no VPN server.
                let echo = start_plain_echo(bed)?;
                let load = load(packet, most, duration, Some(echo.1));
                let pumped = with_sessions(&mut storm.conns, most, |c| {
                    let out = loadgen::pump(c, reflector_addr(), load)?;
                    Ok((out.conns, out.received as f64 / out.elapsed.as_secs_f64()))
                })?;
                calibration[p] = pumped;
                drop(echo);
            }
            for &sessions in size.session_counts() {
                let before = reflector.packets();
                let meter = CpuMeter::start(pid.0)?;
                let (sent, received, elapsed) = with_sessions(&mut storm.conns, sessions, |c| {
                    let out =
                        loadgen::pump(c, reflector_addr(), load(packet, sessions, duration, None))?;
                    Ok((out.conns, (out.sent, out.received, out.elapsed)))
                })?;
                let (cpu_s, busy) = meter.stop()?;
                let up = reflector.packets() - before;
                let secs = elapsed.as_secs_f64();
                flows[s][k] = Flow {
                    up_pps: up as f64 / secs,
                    down_pps: received as f64 / secs,
                    cpu_ns_per_packet: cpu_s * 1e9 / (up + received).max(1) as f64,
                    busy,
                    loss: sent.saturating_sub(received) as f64 / sent.max(1) as f64,
                };
                k += 1;
            }
        }
        drop(storm);
        bed.lab.stop(pid)?;
    }
    let mut k = 0;
    for &packet in size.packet_sizes() {
        for &sessions in size.session_counts() {
            let (o, sockets, s) = (flows[0][k], flows[1][k], flows[2][k]);
            let label = format!("{sessions} sess, {packet} B");
            for (s, server) in Server::EVERY_MODE.into_iter().enumerate() {
                report.point(
                    "throughput.png",
                    "Echo throughput through the server",
                    "inner packet size (bytes)",
                    "echoes per second (thousands)",
                    format!("{}, {sessions} sessions", server.name()),
                    (packet as f64, flows[s][k].down_pps / 1e3),
                );
            }

            let gbit = |pps: f64| pps * packet as f64 * 8.0 / 1e9;
            report.row(
                "throughput",
                format!("{label}: up (kpps)"),
                "kpps",
                o.up_pps / 1e3,
                Some(s.up_pps / 1e3),
            );
            report.row(
                "throughput",
                format!("{label}: down (kpps)"),
                "kpps",
                o.down_pps / 1e3,
                Some(s.down_pps / 1e3),
            );
            report.row(
                "throughput",
                format!("{label}: down (Gbit/s)"),
                "Gbit/s",
                gbit(o.down_pps),
                Some(gbit(s.down_pps)),
            );
            report.row(
                "throughput",
                format!("{label}: server CPU per packet (µs)"),
                "us",
                o.cpu_ns_per_packet / 1e3,
                Some(s.cpu_ns_per_packet / 1e3),
            );
            report.row(
                "throughput",
                format!("{label}: machine busy"),
                "fraction",
                o.busy,
                Some(s.busy),
            );
            report.row(
                "throughput",
                format!("{label}: probes lost"),
                "fraction",
                o.loss,
                Some(s.loss),
            );
            // Our socket mode against the same stock figures.
            report.row(
                "throughput",
                format!("{label}, socket mode: down (kpps)"),
                "kpps",
                sockets.down_pps / 1e3,
                Some(s.down_pps / 1e3),
            );
            report.row(
                "throughput",
                format!("{label}, socket mode: server CPU per packet (µs)"),
                "us",
                sockets.cpu_ns_per_packet / 1e3,
                Some(s.cpu_ns_per_packet / 1e3),
            );
            k += 1;
        }
    }
    for (p, &packet) in size.packet_sizes().iter().enumerate() {
        report.row(
            "calibration",
            format!("generator alone, {most} sess, {packet} B (kpps)"),
            "kpps",
            calibration[p] / 1e3,
            None,
        );
        report.row(
            "calibration",
            format!("AEAD floor, seal + open of {packet} B (µs)"),
            "us",
            aead_floor(packet) / 1e3,
            None,
        );
    }
    // Capacity for `latency`: the most sessions at 512 B (or the largest size measured).
    let p = size
        .packet_sizes()
        .iter()
        .position(|&s| s == 512)
        .unwrap_or(size.packet_sizes().len() - 1);
    let k = p * size.session_counts().len() + size.session_counts().len() - 1;
    Ok([flows[0][k].down_pps, flows[1][k].down_pps])
}

fn load(packet: usize, sessions: usize, duration: Duration, calibrate: Option<SocketAddr>) -> Load {
    Load {
        packet,
        rate: None,
        window: 256,
        duration,
        threads: sessions.min(2),
        pin: true,
        calibrate,
    }
}

/// A plain UDP echo in the gateway namespace on the public address (port 9001).
fn start_plain_echo(bed: &Bed) -> Result<(Reflector, SocketAddr)> {
    let addr = SocketAddr::from((Topology::GATEWAY_PUBLIC_ADDR.parse::<Ipv4Addr>()?, 9001));
    let socket = bed.topo.gateway.run_in(move || UdpSocket::bind(addr))??;
    Ok((Reflector::start(socket)?, addr))
}

/// Nanoseconds to seal and open one `packet`-byte data packet with AES-256-GCM in this
/// process: the floor any server's per-packet cost is compared with.
pub fn aead_floor(packet: usize) -> f64 {
    let block = [7u8; KEY_BLOCK_LEN];
    let (Ok(client), Ok(server)) = (
        DataKey::from_key_block(KeyId::ZERO, Cipher::Aes256Gcm, &block, Role::Client),
        DataKey::from_key_block(KeyId::ZERO, Cipher::Aes256Gcm, &block, Role::Server),
    ) else {
        return f64::NAN;
    };
    let header = DataHeader::V2 {
        key_id: KeyId::ZERO,
        peer_id: PeerId::new(1).expect("a valid peer-id"),
    };
    let rounds = 20_000u32;
    let mut buf = vec![0u8; DATA_V2_OVERHEAD + packet];
    let start = Instant::now();
    for _ in 0..rounds {
        let Ok(sealed) = client.seal(header, &mut buf, packet) else {
            return f64::NAN;
        };
        if server.open(&mut buf[..sealed.len], Instant::now()).is_err() {
            return f64::NAN;
        }
    }
    start.elapsed().as_nanos() as f64 / f64::from(rounds)
}

/// `latency`: round trips at 10, 50 and 90 % of each server's capacity (`capacity`, echo
/// pps for ours and stock), 512-byte packets over the most sessions.
pub fn latency(
    bed: &mut Bed,
    gateway_bin: &Path,
    size: Size,
    capacity: [f64; 2],
    report: &mut Report,
) -> Result<()> {
    let config = client_config(bed)?;
    let reflector = start_reflector(bed)?;
    let sessions = *size.session_counts().iter().max().unwrap_or(&1);
    let packet = if size.packet_sizes().contains(&512) {
        512
    } else {
        size.packet_sizes()[size.packet_sizes().len() - 1]
    };
    let fractions = [0.1, 0.5, 0.9];
    let mut results = vec![Vec::new(); 2];
    for (s, server) in Server::BOTH.into_iter().enumerate() {
        let pid = bed.start(server, gateway_bin)?;
        let mut storm = storm(bed, &config, sessions)?;
        for fraction in fractions {
            let rate = (capacity[s] * fraction).max(100.0) as u64;
            let rtt = with_sessions(&mut storm.conns, sessions, |c| {
                let out = loadgen::pump(
                    c,
                    reflector_addr(),
                    Load {
                        packet,
                        rate: Some(rate),
                        window: 4096,
                        duration: Duration::from_secs(size.seconds()),
                        threads: sessions.min(2),
                        pin: true,
                        calibrate: None,
                    },
                )?;
                Ok((out.conns, out.rtt))
            })?;
            results[s].push([
                rtt.value_at_quantile(0.5) as f64,
                rtt.value_at_quantile(0.99) as f64,
                rtt.value_at_quantile(0.999) as f64,
            ]);
        }
        drop(storm);
        bed.lab.stop(pid)?;
    }
    drop(reflector);
    for (f, fraction) in fractions.iter().enumerate() {
        for (q, quantile) in ["p50", "p99", "p99.9"].iter().enumerate() {
            report.row(
                "latency",
                format!(
                    "{:.0} % of capacity, {packet} B: {quantile} RTT (µs)",
                    fraction * 100.0
                ),
                "us",
                results[0][f][q],
                Some(results[1][f][q]),
            );
            if q < 2 {
                for (server, r) in [("ours", &results[0]), ("stock", &results[1])] {
                    report.point(
                        "latency.png",
                        "Round trip at a fraction of each server's capacity",
                        "load (% of the server's measured capacity)",
                        "round-trip time (µs)",
                        format!("{server} {quantile}"),
                        (fraction * 100.0, r[f][q]),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Checks the bed works before a long run: one session each way.
pub fn smoke(bed: &mut Bed, gateway_bin: &Path) -> Result<()> {
    let config = client_config(bed)?;
    let reflector = start_reflector(bed)?;
    let pid = bed.start(Server::Ours, gateway_bin)?;
    let storm = storm(bed, &config, 1)?;
    let out = loadgen::pump(
        storm.conns,
        reflector_addr(),
        Load {
            packet: 100,
            rate: Some(100),
            window: 16,
            duration: Duration::from_millis(500),
            threads: 1,
            pin: false,
            calibrate: None,
        },
    )
    .context("pumping one session")?;
    bed.lab.stop(pid)?;
    if out.received == 0 {
        bail!("no echo came back through our gateway ({} sent)", out.sent);
    }
    drop(reflector);
    Ok(())
}

/// `rekey`: sessions under a paced load while both servers start a new data key every
/// [`crate::bed::REKEY_SECS`] seconds: probes lost across the rekeys (none expected:
/// the old key still opens what is in flight while the new one takes over).
pub fn rekey(bed: &mut Bed, gateway_bin: &Path, size: Size, report: &mut Report) -> Result<()> {
    let config = client_config(bed)?;
    let reflector = start_reflector(bed)?;
    let (sessions, seconds, rate) = if size.quick {
        (8, 6, 4_000)
    } else {
        (64, 12, 10_000)
    };
    bed.rekey = true;
    let mut results = Vec::new();
    for server in Server::BOTH {
        let pid = bed.start(server, gateway_bin)?;
        let mut storm = storm(bed, &config, sessions)?;
        let (sent, received, rekeys) = with_sessions(&mut storm.conns, sessions, |c| {
            let out = loadgen::pump(
                c,
                reflector_addr(),
                Load {
                    packet: 512,
                    rate: Some(rate),
                    window: 4096,
                    duration: Duration::from_secs(seconds),
                    threads: 2,
                    pin: true,
                    calibrate: None,
                },
            )?;
            let rekeys: u64 = out.conns.iter().map(loadgen::Conn::key_changes).sum();
            Ok((out.conns, (out.sent, out.received, rekeys)))
        })?;
        drop(storm);
        bed.lab.stop(pid)?;
        results.push((sent, received, rekeys));
    }
    bed.rekey = false;
    drop(reflector);
    let label = format!(
        "{sessions} sess, {rate} pps for {seconds} s, new key every {} s",
        crate::bed::REKEY_SECS
    );
    let [
        (ours_sent, ours_received, ours_rekeys),
        (stock_sent, stock_received, stock_rekeys),
    ] = [results[0], results[1]];
    // Without completed rekeys the loss rows would prove nothing.
    if ours_rekeys == 0 || stock_rekeys == 0 {
        bail!(
            "no session changed keys during the rekey run (ours {ours_rekeys}, stock {stock_rekeys})"
        );
    }
    report.row(
        "rekey",
        format!("{label}: rekeys completed"),
        "rekeys",
        ours_rekeys as f64,
        Some(stock_rekeys as f64),
    );
    report.row(
        "rekey",
        format!("{label}: probes sent"),
        "probes",
        ours_sent as f64,
        Some(stock_sent as f64),
    );
    report.row(
        "rekey",
        format!("{label}: probes lost"),
        "probes",
        ours_sent.saturating_sub(ours_received) as f64,
        Some(stock_sent.saturating_sub(stock_received) as f64),
    );
    Ok(())
}
