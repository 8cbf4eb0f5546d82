//! The load generator: OpenVPN client sessions from `gateway-proto`'s client role (real
//! TLS handshakes, tls-crypt, the negotiated AEAD), each on its own UDP socket, sending
//! UDP packets through a VPN server to a reflector in the target namespace and timing
//! the echoes. It speaks the protocol, so it runs unchanged against our gateway and the
//! stock OpenVPN server.
//!
//! Connecting: [`connect`] starts `n` sessions at once (a connect storm) and records each
//! handshake's time. Pumping: [`pump`] spreads the sessions over pinned threads that
//! seal packets straight into `sendmmsg` batches with the session's data keys, open the
//! echoes from `recvmmsg` batches, and record round-trip times in an HDR histogram; a
//! window bounds the packets in flight, a rate (if any) paces the sends, and it stops
//! after its duration. [`Reflector`] echoes in the target namespace and counts what
//! arrived there (`probe`: the probe packets and the reflector).

use std::{
    collections::HashMap,
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use gateway::dataplane::batch::Batch;
use gateway_proto::{
    data::DataChannel,
    data::{DATA_V2_OVERHEAD, Plaintext},
    packet::peek_header,
    session::{ClientConfig, Event, Session},
};
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

mod probe;

pub use probe::{MIN_PACKET, REFLECTOR_PORT, Reflector};
use probe::{probe, probe_time};

/// Datagrams per batch.
const BATCH: usize = 32;

/// One established session.
pub struct Conn {
    session: Session,
    socket: UdpSocket,
    server: SocketAddr,
    lease: Ipv4Addr,
    data: DataChannel,
    /// How many times the key we send with changed (a rekey completed).
    key_changes: u64,
}

impl Conn {
    /// How many rekeys this session has completed, seen from the client side.
    pub fn key_changes(&self) -> u64 {
        self.key_changes
    }

    /// Takes the session's current data channel, counting a change of send key.
    fn refresh_data(&mut self) {
        if let Some(data) = self.session.data_channel() {
            if data.send_key != self.data.send_key {
                self.key_changes += 1;
            }
            self.data = data;
        }
    }
}

/// What a connect storm gave.
pub struct Storm {
    pub conns: Vec<Conn>,
    /// Handshake time of every session that connected.
    pub handshakes: Histogram<u64>,
    pub failures: usize,
    /// From the first reset sent to the last session established (or the deadline).
    pub elapsed: Duration,
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// Starts `sockets.len()` sessions at once, one per socket (non-blocking, connected to
/// the server), and drives them until every one is established or `deadline` passes.
pub fn connect(
    config: Arc<ClientConfig>,
    sockets: Vec<UdpSocket>,
    deadline: Duration,
) -> Result<Storm> {
    let mut poll = Poll::new()?;
    let started = Instant::now();
    let mut pending: HashMap<usize, (Session, UdpSocket)> = HashMap::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        socket.set_nonblocking(true)?;
        let session = Session::client(config.clone(), Instant::now(), unix_now())
            .map_err(|e| anyhow::anyhow!("starting a session: {e:?}"))?;
        poll.registry().register(
            &mut mio::unix::SourceFd(&socket.as_raw_fd()),
            Token(i),
            Interest::READABLE,
        )?;
        pending.insert(i, (session, socket));
    }
    let total = pending.len();
    let mut handshakes = histogram();
    let mut conns = Vec::with_capacity(total);
    let mut failures = 0;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 4096];
    let mut ready: Vec<usize> = pending.keys().copied().collect();
    let mut next_scan = Instant::now();
    while !pending.is_empty() && started.elapsed() < deadline {
        let now = Instant::now();
        let mut done = Vec::new();
        for i in ready.drain(..) {
            let Some((session, socket)) = pending.get_mut(&i) else {
                continue;
            };
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => {
                        let _ = session.handle_datagram(now, &buf[..n]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => break,
                }
            }
            if session.poll_timeout().is_some_and(|t| t <= now) {
                session.handle_timeout(now);
            }
            while let Some(t) = session.poll_transmit(now) {
                let _ = socket.send(&t.contents);
            }
            while let Some(event) = session.poll_event() {
                match event {
                    Event::Established(e) => {
                        let lease = e.push.as_ref().and_then(|p| p.ifconfig).map(|i| i.address);
                        done.push((i, lease));
                    }
                    Event::Closed { .. } => done.push((i, None)),
                    _ => {}
                }
            }
        }
        for (i, lease) in done {
            let Some((session, socket)) = pending.remove(&i) else {
                continue;
            };
            let _ = poll
                .registry()
                .deregister(&mut mio::unix::SourceFd(&socket.as_raw_fd()));
            match (lease, session.data_channel()) {
                (Some(lease), Some(data)) => {
                    let _ = handshakes.record(started.elapsed().as_micros().max(1) as u64);
                    let server = socket.peer_addr()?;
                    conns.push(Conn {
                        session,
                        socket,
                        server,
                        lease,
                        data,
                        key_changes: 0,
                    });
                }
                _ => failures += 1,
            }
        }
        // Events, then (every few milliseconds, not per event: thousands of sessions)
        // the sessions whose timers are due.
        poll.poll(&mut events, Some(Duration::from_millis(5)))?;
        ready.extend(events.iter().map(|e| e.token().0));
        let now = Instant::now();
        if now >= next_scan {
            next_scan = now + Duration::from_millis(20);
            ready.extend(
                pending
                    .iter()
                    .filter(|(_, (s, _))| s.poll_timeout().is_some_and(|t| t <= now))
                    .map(|(i, _)| *i),
            );
        }
        ready.sort_unstable();
        ready.dedup();
    }
    failures += pending.len();
    Ok(Storm {
        conns,
        handshakes,
        failures,
        elapsed: started.elapsed(),
    })
}

/// How to load the sessions.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Inner IPv4 packet size in bytes (at least [`MIN_PACKET`]).
    pub packet: usize,
    /// Packets per second over all sessions; `None` = as fast as the window allows.
    pub rate: Option<u64>,
    /// Most probes in flight per thread.
    pub window: usize,
    pub duration: Duration,
    /// Threads (each pinned to a CPU when `pin`).
    pub threads: usize,
    pub pin: bool,
    /// Calibration: send the same sealed datagrams to this plain UDP echo instead of the
    /// server (one socket per thread), and count every echo after trying to open it, as
    /// the real run does; no round-trip times.
    pub calibrate: Option<SocketAddr>,
}

/// What a pump measured.
pub struct Pumped {
    pub sent: u64,
    pub received: u64,
    /// Round-trip times in microseconds.
    pub rtt: Histogram<u64>,
    pub elapsed: Duration,
    /// The sessions, for another pump.
    pub conns: Vec<Conn>,
}

/// Sends probes through every session to `reflector` under `load`; see the module docs.
pub fn pump(conns: Vec<Conn>, reflector: SocketAddrV4, load: Load) -> Result<Pumped> {
    if load.packet < MIN_PACKET || load.packet > 1500 {
        bail!("packet size {} is not {MIN_PACKET} to 1500", load.packet);
    }
    let threads = load.threads.clamp(1, conns.len().max(1));
    let mut groups: Vec<Vec<(usize, Conn)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, conn) in conns.into_iter().enumerate() {
        groups[i % threads].push((i, conn));
    }
    let cpus = gateway::dataplane::worker::worker_count(0);
    let started = Instant::now();
    let handles: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(t, group)| {
            let load = Load {
                rate: load.rate.map(|r| (r / threads as u64).max(1)),
                ..load
            };
            std::thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn(move || {
                    if load.pin {
                        let mut set = nix::sched::CpuSet::new();
                        if set.set(t % cpus.max(1)).is_ok() {
                            let _ =
                                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
                        }
                    }
                    run_thread(group, reflector, load, started)
                })
        })
        .collect::<io::Result<_>>()?;
    let mut out = Pumped {
        sent: 0,
        received: 0,
        rtt: histogram(),
        elapsed: Duration::ZERO,
        conns: Vec::new(),
    };
    let mut indexed = Vec::new();
    for h in handles {
        let part = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        out.sent += part.sent;
        out.received += part.received;
        out.rtt.add(&part.rtt).context("merging histograms")?;
        indexed.extend(part.conns);
    }
    out.elapsed = started.elapsed();
    indexed.sort_by_key(|(i, _)| *i);
    out.conns = indexed.into_iter().map(|(_, c)| c).collect();
    Ok(out)
}

struct ThreadResult {
    sent: u64,
    received: u64,
    rtt: Histogram<u64>,
    conns: Vec<(usize, Conn)>,
}

/// Nanoseconds since `epoch`.
fn nanos(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

fn run_thread(
    mut conns: Vec<(usize, Conn)>,
    reflector: SocketAddrV4,
    load: Load,
    epoch: Instant,
) -> Result<ThreadResult> {
    let mut tx = Batch::new(BATCH);
    let mut rx = Batch::new(BATCH);
    let mut rtt = histogram();
    // Calibration: every session's socket talks to the echo for the run.
    if let Some(echo) = load.calibrate {
        for (_, conn) in &conns {
            conn.socket.connect(echo)?;
        }
    }
    let (mut sent, mut received) = (0u64, 0u64);
    let mut seq = 0u64;
    let end = Instant::now() + load.duration;
    let interval = load
        .rate
        .map(|r| Duration::from_nanos(1_000_000_000 / r.max(1)));
    let mut next_send = Instant::now();
    let mut turn = 0usize;
    let mut last_timers = Instant::now();
    while Instant::now() < end {
        // Send: one batch for the next session, within the window and the pace.
        let in_flight = sent.saturating_sub(received) as usize;
        let mut allowed = load.window.saturating_sub(in_flight).min(BATCH);
        if let Some(interval) = interval {
            let now = Instant::now();
            if now < next_send {
                allowed = 0;
            } else {
                let due = ((now - next_send).as_nanos() / interval.as_nanos().max(1)) as usize + 1;
                allowed = allowed.min(due);
            }
        }
        if allowed > 0 && !conns.is_empty() {
            let count = conns.len();
            let (index, conn) = &mut conns[turn % count];
            turn += 1;
            let key = conn
                .data
                .key(conn.data.send_key)
                .context("no sending key")?
                .clone();
            let header = conn.data.send_header();
            let overhead = header.buffer_len() + DATA_V2_OVERHEAD - 4;
            for _ in 0..allowed {
                let Some(slot) = tx.next_free() else {
                    break;
                };
                seq += 1;
                probe(
                    &mut slot[overhead..overhead + load.packet],
                    conn.lease,
                    reflector,
                    *index as u32,
                    seq,
                    nanos(epoch),
                );
                let len = key
                    .seal(header, slot, load.packet)
                    .map_err(|e| anyhow::anyhow!("sealing: {e}"))?
                    .len;
                tx.push(load.calibrate.unwrap_or(conn.server), 0, len);
            }
            let out = tx.send(conn.socket.as_raw_fd(), &mut false);
            sent += out.datagrams as u64;
            if let Some(interval) = interval {
                next_send += interval * out.datagrams.max(1) as u32;
            }
        }
        // Receive from every session.
        let mut got_any = false;
        if load.calibrate.is_some() {
            for (_, conn) in conns.iter() {
                while let Ok(n) = rx.recv(conn.socket.as_raw_fd(), 0) {
                    got_any = true;
                    for i in 0..n {
                        let Some((_, slot, start, len)) = rx.datagram_mut(i) else {
                            continue;
                        };
                        let packet = &mut slot[start..start + len];
                        // Our own ciphertext does not open with our opening key, but
                        // trying costs what opening costs.
                        if let Ok((_, key_id)) = peek_header(packet)
                            && let Some(key) = conn.data.key(key_id)
                        {
                            let _ = key.open(packet, Instant::now());
                        }
                        received += 1;
                    }
                    if n < rx.capacity() {
                        break;
                    }
                }
            }
        }
        if load.calibrate.is_none() {
            for (_, conn) in conns.iter_mut() {
                let (got, echoes) = receive_echoes(conn, &mut rx, &mut rtt, epoch, true);
                got_any |= got;
                received += echoes;
            }
        }
        // Session timers (keepalive, control retransmits) now and then.
        if last_timers.elapsed() > Duration::from_millis(100) {
            last_timers = Instant::now();
            for (_, conn) in conns.iter_mut() {
                let now = Instant::now();
                if conn.session.poll_timeout().is_some_and(|t| t <= now) {
                    conn.session.handle_timeout(now);
                }
                while let Some(t) = conn.session.poll_transmit(now) {
                    let _ = conn.socket.send(&t.contents);
                }
                conn.refresh_data();
            }
        }
        if !got_any && allowed == 0 {
            std::thread::yield_now();
        }
    }
    // Let the last echoes arrive.
    let drain_until = Instant::now() + Duration::from_millis(200);
    while load.calibrate.is_none() && Instant::now() < drain_until && received < sent {
        let mut got_any = false;
        for (_, conn) in conns.iter_mut() {
            let (got, echoes) = receive_echoes(conn, &mut rx, &mut rtt, epoch, false);
            got_any |= got;
            received += echoes;
        }
        if !got_any {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    if load.calibrate.is_some() {
        for (_, conn) in &conns {
            conn.socket.connect(conn.server)?;
            // Echoes still on their way must not reach the session.
            while rx.recv(conn.socket.as_raw_fd(), 0).is_ok() {}
        }
    }
    Ok(ThreadResult {
        sent,
        received,
        rtt,
        conns,
    })
}

/// Receives what waits on `conn`'s socket (all of it, or one batch unless `drain`):
/// echoes are opened, timed into `rtt` and counted; control packets go to the session.
/// Returns whether anything arrived, and the echoes.
fn receive_echoes(
    conn: &mut Conn,
    rx: &mut Batch,
    rtt: &mut Histogram<u64>,
    epoch: Instant,
    drain: bool,
) -> (bool, u64) {
    let fd = conn.socket.as_raw_fd();
    let (mut got_any, mut echoes) = (false, 0);
    while let Ok(n) = rx.recv(fd, 0) {
        got_any = true;
        let now_ns = nanos(epoch);
        for i in 0..n {
            let Some((_, slot, start, len)) = rx.datagram_mut(i) else {
                continue;
            };
            let packet = &mut slot[start..start + len];
            let Ok((opcode, key_id)) = peek_header(packet) else {
                continue;
            };
            if !opcode.is_data() {
                let bytes = packet.to_vec();
                let now = Instant::now();
                let _ = conn.session.handle_datagram(now, &bytes);
                // Answer (acks, the rekey handshake) at once, as a real client does:
                // a peer that waits for our ack before using its new key would
                // otherwise drop what we send meanwhile.
                while let Some(t) = conn.session.poll_transmit(now) {
                    let _ = conn.socket.send(&t.contents);
                }
                // A rekey's new key is used as soon as the session has it.
                conn.refresh_data();
                continue;
            }
            if conn.data.key(key_id).is_none() {
                conn.refresh_data();
            }
            if let Some(key) = conn.data.key(key_id)
                && let Ok(opened) = key.open(packet, Instant::now())
                && let Ok(Plaintext::Packet(p)) = Plaintext::classify(&packet[opened.plaintext])
                && let Some(sent_ns) = probe_time(p)
            {
                echoes += 1;
                let _ = rtt.record((now_ns.saturating_sub(sent_ns) / 1000).max(1));
            }
        }
        if !drain || n < rx.capacity() {
            break;
        }
    }
    (got_any, echoes)
}

/// `count` UDP sockets bound to `local` (ephemeral ports) and connected to `server`.
/// Call inside the client's namespace.
pub fn sockets(local: Ipv4Addr, server: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    (0..count)
        .map(|_| {
            let s = UdpSocket::bind(SocketAddr::from((local, 0)))?;
            s.connect(server)?;
            Ok(s)
        })
        .collect()
}
