//! Data-plane workers (architecture §3, §4): N threads, each pinned to a core, each with
//! its own `SO_REUSEPORT` UDP socket on the listen port and its own queue of the
//! multi-queue TAP device. A worker opens the data packets of established UDP sessions
//! (`recvmmsg` batches), writes the tunnelled packets into its TAP queue (where `inner`
//! runs), reads what `target` sends back from its queue, seals it with the session's key
//! and sends it (`sendmmsg` batches, or the TCP connection's writer).
//!
//! In AF_XDP mode a worker also owns AF_XDP sockets ([`Xsk`]) on rx queues of the public
//! interface and of the target interfaces: `edge` steers data packets into the first
//! kind (no UDP socket, no kernel UDP stack) and `target` steers translated replies into
//! the second, with the session's peer-id in the XDP metadata (no TAP read). Packets
//! on queues without a worker's socket take the socket-mode path, which stays open.
//!
//! Sessions come from the control plane as [`Command`]s over crossbeam channels and are
//! immutable: a rekey or a float replaces the whole [`Carried`] entry. The keys inside are
//! the control-plane session's own ([`DataChannel`]), so there is one packet-id counter
//! and one replay window per key whoever sends or receives. What a worker cannot or must
//! not decide goes back as a [`Report`]: control packets and data it has no key for (the
//! control plane handles those with the session itself), floats, OCC_EXIT, the first use
//! of a new key. A worker never waits on the control plane: a full report channel drops
//! the report and counts it.

use std::{
    collections::HashMap,
    io,
    net::{Ipv4Addr, SocketAddr},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use gateway_proto::{
    data::{DATA_V2_OVERHEAD, OCC_EXIT, Plaintext},
    packet::{DataHeader, KeyId, Opcode, peek_header, peek_peer_id},
    session::DataChannel,
};
use mio::{Events, Interest, Poll, Token, Waker, unix::SourceFd};
use tracing::{info, warn};

use gateway_ebpf_common::{XSK_META_MAGIC, XskMeta};

use super::{
    batch::{self, Batch},
    tap::Tap,
    xsk::Xsk,
};

/// Datagrams or frames handled per batch.
pub const BATCH: usize = 32;
/// Ethernet header in front of packets written to the TAP.
const ETH_LEN: usize = 14;
/// Where a frame read from the TAP is put in a slot: its IPv4 packet then starts at
/// [`DATA_V2_OVERHEAD`], right where sealing wants the plaintext.
const TAP_READ_AT: usize = DATA_V2_OVERHEAD - ETH_LEN;
/// Socket buffer size asked for (the kernel caps it at `net.core.[rw]mem_max`).
const SOCKET_BUFFER: usize = 4 << 20;

const UDP: Token = Token(0);
const TAP: Token = Token(1);
const WAKE: Token = Token(2);
/// Token of a worker's AF_XDP socket k: `XSK_TOKENS + k`.
const XSK_TOKENS: usize = 16;

/// A session's data traffic: when it last received and sent data packets (read by the
/// control plane for its keepalive timers) and how many tunnel packets and bytes went
/// each way (for `gateway connections`). Updated by the workers and, for what it opens
/// or seals itself, the control plane.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    /// Milliseconds after `epoch`, plus one (0: never).
    rx: AtomicU64,
    tx: AtomicU64,
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
}

/// Tunnel packets and their bytes, from the client (`rx`) and to it (`tx`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

impl Activity {
    pub fn new(now: Instant) -> Self {
        Self {
            epoch: now,
            rx: AtomicU64::new(0),
            tx: AtomicU64::new(0),
            rx_packets: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
        }
    }

    /// A tunnel packet of `len` bytes came from the client.
    pub fn count_received(&self, len: usize) {
        add(&self.rx_packets, 1);
        add(&self.rx_bytes, len as u64);
    }

    /// A tunnel packet of `len` bytes went to the client.
    pub fn count_sent(&self, len: usize) {
        add(&self.tx_packets, 1);
        add(&self.tx_bytes, len as u64);
    }

    pub fn traffic(&self) -> Traffic {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Traffic {
            rx_packets: get(&self.rx_packets),
            rx_bytes: get(&self.rx_bytes),
            tx_packets: get(&self.tx_packets),
            tx_bytes: get(&self.tx_bytes),
        }
    }

    fn stamp(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    fn read(&self, at: &AtomicU64) -> Option<Instant> {
        match at.load(Ordering::Relaxed) {
            0 => None,
            ms => self.epoch.checked_add(Duration::from_millis(ms - 1)),
        }
    }

    pub fn received(&self, now: Instant) {
        self.rx.fetch_max(self.stamp(now), Ordering::Relaxed);
    }

    pub fn sent(&self, now: Instant) {
        self.tx.fetch_max(self.stamp(now), Ordering::Relaxed);
    }

    pub fn last_received(&self) -> Option<Instant> {
        self.read(&self.rx)
    }

    pub fn last_sent(&self) -> Option<Instant> {
        self.read(&self.tx)
    }
}

/// Where a session's packets go.
#[derive(Debug, Clone)]
pub enum Peer {
    /// A UDP client at this address (sent from the worker's socket).
    Udp(SocketAddr),
    /// A TCP client: sealed packets go to its connection's writer task, which frames them.
    Stream(tokio::sync::mpsc::UnboundedSender<Vec<u8>>),
}

/// A session as the workers carry it.
#[derive(Debug, Clone)]
pub struct Carried {
    pub peer_id: u32,
    pub lease: Ipv4Addr,
    pub peer: Peer,
    pub data: DataChannel,
    pub activity: Arc<Activity>,
}

/// Control plane → workers.
pub enum Command {
    /// Carry this session (new, or replacing the entry with the same peer-id).
    Carry(Arc<Carried>),
    /// Stop carrying the session with this peer-id.
    Forget(u32),
    Stop,
}

/// Workers → control plane.
#[derive(Debug)]
pub enum Report {
    /// A datagram that is not a data packet the worker could open (control packets,
    /// P_DATA_V1, unknown peer-ids or key_ids): the control plane handles it.
    Datagram { from: SocketAddr, bytes: Vec<u8> },
    /// A session's authenticated data came from a new address; the worker already
    /// sends there.
    Floated { peer_id: u32, to: SocketAddr },
    /// The client sent OCC_EXIT.
    Exited { peer_id: u32 },
    /// A packet opened with a key_id other than the sending key (a rekey's new key).
    KeyUsed { peer_id: u32, key_id: KeyId },
}

/// One worker's counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Data packets opened.
    pub rx_packets: AtomicU64,
    /// Their plaintext bytes.
    pub rx_bytes: AtomicU64,
    /// Data packets sealed and sent.
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Data packets that failed authentication or the replay window.
    pub rx_dropped: AtomicU64,
    /// Tunnelled packets whose source was not the session's lease.
    pub spoofed: AtomicU64,
    /// Frames read from the TAP, or steered by `target`, for no carried session.
    pub no_session: AtomicU64,
    /// Datagrams, and frames from AF_XDP sockets, too big for a slot.
    pub truncated: AtomicU64,
    /// Reports dropped because the control plane was behind.
    pub report_overflow: AtomicU64,
    /// Datagrams the kernel refused or could not take, and failed TAP writes.
    pub send_errors: AtomicU64,
    /// UDP GSO sends (each several datagrams to one client).
    pub gso_sends: AtomicU64,
    /// UDP GRO reads (each several datagrams of one client).
    pub gro_reads: AtomicU64,
    /// Data packets `edge` steered to the worker's AF_XDP sockets.
    pub xsk_edge_frames: AtomicU64,
    /// Translated replies `target` steered to the worker's AF_XDP sockets.
    pub xsk_target_frames: AtomicU64,
    /// Frames from AF_XDP sockets that were not the IPv4 (and, from `edge`, UDP) they
    /// should be.
    pub malformed: AtomicU64,
    /// Frames the kernel dropped on the way into the worker's AF_XDP sockets (rx ring
    /// full, no free frame, too long), as the kernel counts them (`XDP_STATISTICS`),
    /// read about once a second.
    pub xsk_kernel_drops: AtomicU64,
}

/// Sums of the workers' counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_dropped: u64,
    pub spoofed: u64,
    pub no_session: u64,
    pub truncated: u64,
    pub report_overflow: u64,
    pub send_errors: u64,
    pub gso_sends: u64,
    pub gro_reads: u64,
    pub xsk_edge_frames: u64,
    pub xsk_target_frames: u64,
    pub malformed: u64,
    pub xsk_kernel_drops: u64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// How the workers are set up.
pub struct Settings {
    /// Pin worker i to the i-th allowed CPU.
    pub pin: bool,
    /// The UDP listen port (none: TCP only, workers serve just the TAP).
    pub udp_port: Option<u16>,
    /// The TAP device: one worker per queue.
    pub tap: Arc<Tap>,
    /// Source MAC of frames written into the TAP.
    pub tap_peer_mac: [u8; 6],
    /// AF_XDP mode: the interfaces whose rx queues get the workers' AF_XDP sockets.
    pub afxdp: Option<AfXdp>,
    pub reports: tokio::sync::mpsc::Sender<Report>,
}

/// The interfaces of AF_XDP mode, by ifindex (in the calling thread's namespace).
#[derive(Debug, Clone, Default)]
pub struct AfXdp {
    /// Where `edge` runs (the public interface), if UDP is served.
    pub edge: Option<u32>,
    /// Where `target` runs.
    pub targets: Vec<u32>,
}

/// Which program steers into an AF_XDP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XskRole {
    Edge,
    Target,
}

/// An AF_XDP socket a worker owns, for the XSKMAP entries that steer into it.
#[derive(Debug)]
pub struct XskBinding {
    pub role: XskRole,
    pub ifindex: u32,
    pub queue: u32,
    pub worker: usize,
    /// A duplicate of the socket's descriptor, to put into the map.
    pub fd: std::os::fd::OwnedFd,
}

struct Handle {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

/// The running workers.
pub struct Workers {
    handles: Vec<Handle>,
    stats: Vec<Arc<Stats>>,
    /// A descriptor of worker 0's socket, for the control plane's own sends.
    control_socket: Option<std::net::UdpSocket>,
    xsks: Vec<XskBinding>,
}

/// The number of workers `count` asks for (0 = one per allowed CPU).
pub fn worker_count(count: usize) -> usize {
    if count > 0 {
        return count.min(super::tap::MAX_QUEUES);
    }
    allowed_cpus().len().clamp(1, super::tap::MAX_QUEUES)
}

fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// A non-blocking UDP socket on `port` that shares the port with the other workers'.
fn reuseport_socket(port: u16) -> io::Result<std::net::UdpSocket> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    // Best effort: a small buffer only costs drops under load.
    let _ = setsockopt(&fd, sockopt::RcvBuf, &SOCKET_BUFFER);
    let _ = setsockopt(&fd, sockopt::SndBuf, &SOCKET_BUFFER);
    bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, port))?;
    Ok(std::net::UdpSocket::from(fd))
}

impl Workers {
    /// Starts the workers. The TAP must have one queue per worker.
    pub fn start(settings: Settings) -> io::Result<Self> {
        let count = settings.tap.queues();
        let cpus = allowed_cpus();
        let mut handles = Vec::with_capacity(count);
        let mut stats = Vec::with_capacity(count);
        let mut control_socket = None;
        let mut xsks = Vec::new();
        let owned = bind_xsks(settings.afxdp.as_ref(), count, &mut xsks)?;
        for (index, own_xsks) in owned.into_iter().enumerate() {
            let udp = match settings.udp_port {
                Some(port) => {
                    let socket = reuseport_socket(port).map_err(|e| {
                        io::Error::new(e.kind(), format!("binding udp/{port}: {e}"))
                    })?;
                    if index == 0 {
                        control_socket = Some(socket.try_clone()?);
                    }
                    // Best effort: without GRO every read is one datagram.
                    let _ = batch::enable_gro(socket.as_raw_fd());
                    Some(mio::net::UdpSocket::from_std(socket))
                }
                None => None,
            };
            settings.tap.set_nonblocking(index)?;
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
            let (commands, inbox) = crossbeam_channel::unbounded();
            let counters = Arc::new(Stats::default());
            let cpu = settings
                .pin
                .then(|| cpus.get(index % cpus.len().max(1)).copied())
                .flatten();
            let worker = Worker {
                core: Core {
                    index,
                    tap: settings.tap.clone(),
                    tap_peer_mac: settings.tap_peer_mac,
                    sessions: HashMap::new(),
                    by_lease: HashMap::new(),
                    reported_keys: HashMap::new(),
                    inbox,
                    reports: settings.reports.clone(),
                    stats: counters.clone(),
                },
                udp,
                rx: Batch::with_slot_size(BATCH, batch::GRO_SLOT),
                tx: Batch::new(BATCH),
                gso: true,
                xsks: own_xsks,
            };
            let thread = std::thread::Builder::new()
                .name(format!("gw-worker-{index}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        pin_to(cpu, index);
                    }
                    worker.run(poll);
                })?;
            handles.push(Handle {
                commands,
                waker,
                thread: Some(thread),
            });
            stats.push(counters);
        }
        info!(
            workers = count,
            pinned = settings.pin,
            af_xdp_sockets = xsks.len(),
            "data-plane workers started"
        );
        Ok(Self {
            handles,
            stats,
            control_socket,
            xsks,
        })
    }

    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// The workers' AF_XDP sockets (none in socket mode), to be put into the XSKMAPs.
    pub fn xsks(&self) -> &[XskBinding] {
        &self.xsks
    }

    /// The socket the control plane sends its datagrams from (the listen port).
    pub fn control_socket(&self) -> Option<&std::net::UdpSocket> {
        self.control_socket.as_ref()
    }

    fn broadcast(&self, make: impl Fn() -> Command) {
        for handle in &self.handles {
            if handle.commands.send(make()).is_ok() {
                let _ = handle.waker.wake();
            }
        }
    }

    /// Every worker carries `session` from now on (replacing its previous entry).
    pub fn carry(&self, session: Carried) {
        let session = Arc::new(session);
        self.broadcast(|| Command::Carry(session.clone()));
    }

    /// No worker carries the session with `peer_id` any longer.
    pub fn forget(&self, peer_id: u32) {
        self.broadcast(|| Command::Forget(peer_id));
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in &self.stats {
            let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
            t.rx_packets += get(&s.rx_packets);
            t.rx_bytes += get(&s.rx_bytes);
            t.tx_packets += get(&s.tx_packets);
            t.tx_bytes += get(&s.tx_bytes);
            t.rx_dropped += get(&s.rx_dropped);
            t.spoofed += get(&s.spoofed);
            t.no_session += get(&s.no_session);
            t.truncated += get(&s.truncated);
            t.report_overflow += get(&s.report_overflow);
            t.send_errors += get(&s.send_errors);
            t.gso_sends += get(&s.gso_sends);
            t.gro_reads += get(&s.gro_reads);
            t.xsk_edge_frames += get(&s.xsk_edge_frames);
            t.xsk_target_frames += get(&s.xsk_target_frames);
            t.malformed += get(&s.malformed);
            t.xsk_kernel_drops += get(&s.xsk_kernel_drops);
        }
        t
    }

    /// Stops every worker and waits for it.
    pub fn stop(&mut self) {
        self.broadcast(|| Command::Stop);
        for handle in &mut self.handles {
            if let Some(thread) = handle.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds the AF_XDP sockets of AF_XDP mode: worker i takes rx queues i, i + count,
/// i + 2·count… of each interface, for as many queues as the interface has (a bind
/// beyond the last fails with `EINVAL`). Returns each worker's sockets, and records
/// each in `bindings`. Every interface must take at least its queue 0.
fn bind_xsks(
    afxdp: Option<&AfXdp>,
    count: usize,
    bindings: &mut Vec<XskBinding>,
) -> io::Result<Vec<Vec<(XskRole, Xsk)>>> {
    let mut owned: Vec<Vec<(XskRole, Xsk)>> = (0..count).map(|_| Vec::new()).collect();
    let Some(afxdp) = afxdp else {
        return Ok(owned);
    };
    let interfaces = afxdp
        .edge
        .iter()
        .map(|&i| (XskRole::Edge, i))
        .chain(afxdp.targets.iter().map(|&i| (XskRole::Target, i)));
    for (role, ifindex) in interfaces {
        for queue in 0..gateway_ebpf_common::MAX_XSK_QUEUES {
            let xsk = match Xsk::bind(ifindex, queue) {
                Ok(xsk) => xsk,
                Err(e) if queue > 0 && e.raw_os_error() == Some(libc::EINVAL) => break,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("AF_XDP socket on interface {ifindex} queue {queue}: {e}"),
                    ));
                }
            };
            let worker = queue as usize % count.max(1);
            bindings.push(XskBinding {
                role,
                ifindex,
                queue,
                worker,
                fd: std::os::fd::AsFd::as_fd(&xsk).try_clone_to_owned()?,
            });
            owned[worker].push((role, xsk));
        }
    }
    Ok(owned)
}

fn pin_to(cpu: usize, index: usize) {
    let mut set = nix::sched::CpuSet::new();
    let pinned = set.set(cpu).is_ok()
        && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok();
    if !pinned {
        warn!(
            worker = index,
            cpu, "could not pin the worker; it runs unpinned"
        );
    }
}

struct Worker {
    core: Core,
    udp: Option<mio::net::UdpSocket>,
    rx: Batch,
    tx: Batch,
    /// UDP GSO for runs of datagrams to one client (off once the kernel refuses it).
    gso: bool,
    /// AF_XDP sockets (AF_XDP mode), polled with tokens from [`XSK_TOKENS`].
    xsks: Vec<(XskRole, Xsk)>,
}

/// What a worker knows and does, apart from its I/O.
struct Core {
    index: usize,
    tap: Arc<Tap>,
    tap_peer_mac: [u8; 6],
    sessions: HashMap<u32, Arc<Carried>>,
    by_lease: HashMap<Ipv4Addr, u32>,
    /// The non-sending key_id each session was last reported using.
    reported_keys: HashMap<u32, KeyId>,
    inbox: Receiver<Command>,
    reports: tokio::sync::mpsc::Sender<Report>,
    stats: Arc<Stats>,
}

/// What a worker does with an opened packet, decided before the buffer is rewritten.
enum Opened {
    Packet { start: usize, len: usize },
    Ping,
    Exit,
    OtherOcc,
    Spoofed,
}

impl Worker {
    fn run(mut self, mut poll: Poll) {
        let index = self.core.index;
        let tap_fd = self.core.tap.raw_fd(index);
        let mut registered = poll
            .registry()
            .register(&mut SourceFd(&tap_fd), TAP, Interest::READABLE)
            .and_then(|()| match self.udp.as_mut() {
                Some(udp) => poll.registry().register(udp, UDP, Interest::READABLE),
                None => Ok(()),
            });
        for (k, (_, xsk)) in self.xsks.iter().enumerate() {
            registered = registered.and_then(|()| {
                let fd = xsk.as_raw_fd();
                poll.registry().register(
                    &mut SourceFd(&fd),
                    Token(XSK_TOKENS + k),
                    Interest::READABLE,
                )
            });
        }
        if let Err(e) = registered {
            warn!(worker = index, "registering with the poller: {e}");
            return;
        }
        let mut events = Events::with_capacity(8 + self.xsks.len());
        // Sources that may have more to read: set by their events, cleared once a read
        // finds them drained (edge-triggered, so the next arrival brings a new event).
        // Reading only these spares an empty system call per idle source and round.
        let mut udp_ready = true;
        let mut tap_ready = true;
        let mut xsk_ready = vec![true; self.xsks.len()];
        let mut drops_read = Instant::now();
        loop {
            if let Err(e) = poll.poll(&mut events, Some(Duration::from_secs(1)))
                && e.kind() != io::ErrorKind::Interrupted
            {
                warn!(worker = index, "polling: {e}");
                return;
            }
            if !self.xsks.is_empty() && drops_read.elapsed() >= Duration::from_secs(1) {
                drops_read = Instant::now();
                self.read_kernel_drops();
            }
            for event in events.iter() {
                match event.token() {
                    UDP => udp_ready = true,
                    TAP => tap_ready = true,
                    Token(k) if k >= XSK_TOKENS => {
                        if let Some(ready) = xsk_ready.get_mut(k - XSK_TOKENS) {
                            *ready = true;
                        }
                    }
                    _ => {}
                }
            }
            // Drain every ready source, a batch of each in turn, and keep up with
            // commands in between.
            loop {
                if !self.core.apply_commands() {
                    return;
                }
                if udp_ready {
                    udp_ready = self.udp_batch();
                }
                if tap_ready {
                    tap_ready = self.tap_batch();
                }
                let mut more = udp_ready || tap_ready;
                for (k, ready) in xsk_ready.iter_mut().enumerate() {
                    if *ready {
                        *ready = self.xsk_batch(k);
                        more |= *ready;
                    }
                }
                if !more {
                    break;
                }
            }
        }
    }

    /// Receives and handles one batch of datagrams; true if there may be more.
    fn udp_batch(&mut self) -> bool {
        let Some(fd) = self.udp.as_ref().map(AsRawFd::as_raw_fd) else {
            return false;
        };
        let n = match self.rx.recv(fd, 0) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
            Err(e) => {
                warn!(worker = self.core.index, "receiving: {e}");
                return false;
            }
        };
        let now = Instant::now();
        for i in 0..n {
            self.datagram(i, now);
        }
        n == self.rx.capacity()
    }

    /// Received slot `i`: one datagram, or with UDP GRO several of one sender.
    fn datagram(&mut self, i: usize, now: Instant) {
        let segment = self.rx.segment_size(i).max(1);
        let Some((from, slot, start, len)) = self.rx.datagram_mut(i) else {
            add(&self.core.stats.truncated, 1);
            return;
        };
        if segment < len {
            add(&self.core.stats.gro_reads, 1);
        }
        for packet in slot[start..start + len].chunks_mut(segment) {
            self.core.packet(packet, from, now);
        }
    }

    /// Reads, seals and sends one batch of frames from the TAP queue; true if there may
    /// be more.
    fn tap_batch(&mut self) -> bool {
        let now = Instant::now();
        let mut read = 0;
        let mut more = true;
        while read < BATCH {
            let Some(slot) = self.tx.next_free() else {
                break;
            };
            let n = match self
                .core
                .tap
                .read_frame(self.core.index, &mut slot[TAP_READ_AT..])
            {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(worker = self.core.index, "reading the TAP: {e}");
                    more = false;
                    break;
                }
            };
            read += 1;
            self.core.seal_frame(&mut self.tx, n, None, now);
        }
        self.flush();
        more
    }

    /// Handles one batch of frames from AF_XDP socket `k`; true if there may be more.
    fn xsk_batch(&mut self, k: usize) -> bool {
        let now = Instant::now();
        let (role, xsk) = &mut self.xsks[k];
        let (core, tx) = (&mut self.core, &mut self.tx);
        let n = match role {
            XskRole::Edge => xsk.receive(BATCH, |chunk, start, len| {
                let frame = &mut chunk[start..start + len];
                match udp_payload(frame) {
                    Some((from, payload)) => core.packet(&mut frame[payload], from, now),
                    None => add(&core.stats.malformed, 1),
                }
            }),
            XskRole::Target => xsk.receive(BATCH, |chunk, start, len| {
                let meta = start
                    .checked_sub(size_of::<XskMeta>())
                    .map(|at| xsk_meta(&chunk[at..start]))
                    .filter(|meta| meta.magic == XSK_META_MAGIC);
                if !is_ipv4_frame(&chunk[start..start + len]) {
                    add(&core.stats.malformed, 1);
                    return;
                }
                let Some(slot) = tx.next_free() else {
                    return;
                };
                let Some(room) = slot.get_mut(TAP_READ_AT..TAP_READ_AT + len) else {
                    // Longer than any tunnel packet can be.
                    add(&core.stats.truncated, 1);
                    return;
                };
                room.copy_from_slice(&chunk[start..start + len]);
                core.seal_frame(tx, len, meta.map(|m| m.peer_id), now);
            }),
        };
        if *role == XskRole::Target {
            add(&self.core.stats.xsk_target_frames, n as u64);
            self.flush();
        } else {
            add(&self.core.stats.xsk_edge_frames, n as u64);
        }
        n == BATCH
    }

    /// The kernel's drop counters of this worker's AF_XDP sockets, summed.
    fn read_kernel_drops(&self) {
        let drops: u64 = self
            .xsks
            .iter()
            .filter_map(|(_, xsk)| xsk.stats().ok())
            .map(|s| s.rx_dropped + s.rx_ring_full)
            .sum();
        self.core
            .stats
            .xsk_kernel_drops
            .store(drops, Ordering::Relaxed);
    }

    /// Sends what the send batch holds and empties it.
    fn flush(&mut self) {
        if !self.tx.is_empty()
            && let Some(udp) = &self.udp
        {
            let queued = self.tx.len();
            let sent = self.tx.send(udp.as_raw_fd(), &mut self.gso);
            add(
                &self.core.stats.send_errors,
                (queued - sent.datagrams) as u64,
            );
            add(&self.core.stats.gso_sends, sent.gso_runs as u64);
        }
        self.tx.clear();
    }
}

/// An Ethernet frame carrying (at least a header's worth of) IPv4.
fn is_ipv4_frame(frame: &[u8]) -> bool {
    frame.len() > ETH_LEN + 20 && frame[12..14] == [0x08, 0x00]
}

/// The metadata `target` wrote in front of a steered frame (8 bytes, native order).
fn xsk_meta(bytes: &[u8]) -> XskMeta {
    let word =
        |at: usize| u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    XskMeta {
        magic: word(0),
        peer_id: word(4),
    }
}

/// The sender and the payload's range of an Ethernet/IPv4/UDP frame, or `None` when the
/// frame is not one (or is a fragment).
pub fn udp_payload(frame: &[u8]) -> Option<(SocketAddr, std::ops::Range<usize>)> {
    let ip = frame.get(ETH_LEN..)?;
    if frame[12..14] != [0x08, 0x00] || ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
        return None;
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
    if header_len < 20 || total_len < header_len + 8 || total_len > ip.len() || fragment != 0 {
        return None;
    }
    let udp = &ip[header_len..total_len];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < 8 || udp_len > udp.len() {
        return None;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let port = u16::from_be_bytes([udp[0], udp[1]]);
    let payload = ETH_LEN + header_len + 8;
    Some((
        SocketAddr::from((src, port)),
        payload..ETH_LEN + header_len + udp_len,
    ))
}

impl Core {
    /// Applies pending commands; false on `Stop` (or when the control plane is gone).
    fn apply_commands(&mut self) -> bool {
        loop {
            match self.inbox.try_recv() {
                Ok(Command::Carry(session)) => {
                    if let Some(old) = self.sessions.get(&session.peer_id)
                        && old.lease != session.lease
                    {
                        self.by_lease.remove(&old.lease);
                    }
                    self.by_lease.insert(session.lease, session.peer_id);
                    self.sessions.insert(session.peer_id, session);
                }
                Ok(Command::Forget(peer_id)) => {
                    if let Some(old) = self.sessions.remove(&peer_id) {
                        self.by_lease.remove(&old.lease);
                    }
                    self.reported_keys.remove(&peer_id);
                }
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn report(&self, report: Report) {
        if self.reports.try_send(report).is_err() {
            add(&self.stats.report_overflow, 1);
        }
    }

    /// A datagram from `from`: opened and its tunnelled packet written to the TAP
    /// (Ethernet header written in place, in front of the plaintext), or reported.
    fn packet(&mut self, packet: &mut [u8], from: SocketAddr, now: Instant) {
        let header = peek_header(packet).ok();
        let session = match header {
            Some((Opcode::DataV2, _)) => {
                peek_peer_id(packet).and_then(|peer_id| self.sessions.get(&peer_id))
            }
            _ => None,
        };
        let key = session.zip(header).and_then(|(s, (_, k))| s.data.key(k));
        let (Some(session), Some(key)) = (session, key) else {
            let bytes = packet.to_vec();
            self.report(Report::Datagram { from, bytes });
            return;
        };
        let Ok(opened) = key.opening.open_shared(packet, &key.replay, now) else {
            add(&self.stats.rx_dropped, 1);
            return;
        };
        let session = session.clone();
        let key_id = key.key_id;
        session.activity.received(now);
        let plaintext = &packet[opened.plaintext.clone()];
        let verdict = match Plaintext::classify(plaintext) {
            Ok(Plaintext::Ping) => Opened::Ping,
            Ok(Plaintext::Occ { message_type, .. }) if message_type == OCC_EXIT => Opened::Exit,
            Ok(Plaintext::Occ { .. }) | Err(_) => Opened::OtherOcc,
            Ok(Plaintext::Packet(p)) => {
                let own = p.first().is_some_and(|b| b >> 4 == 4)
                    && p.get(12..16) == Some(&session.lease.octets()[..]);
                if own {
                    Opened::Packet {
                        start: opened.plaintext.start,
                        len: p.len(),
                    }
                } else {
                    Opened::Spoofed
                }
            }
        };
        match &session.peer {
            Peer::Udp(addr) if *addr != from => {
                let mut moved = (*session).clone();
                moved.peer = Peer::Udp(from);
                self.sessions.insert(session.peer_id, Arc::new(moved));
                self.report(Report::Floated {
                    peer_id: session.peer_id,
                    to: from,
                });
            }
            _ => {}
        }
        if key_id != session.data.send_key
            && self.reported_keys.get(&session.peer_id) != Some(&key_id)
        {
            self.reported_keys.insert(session.peer_id, key_id);
            self.report(Report::KeyUsed {
                peer_id: session.peer_id,
                key_id,
            });
        }
        match verdict {
            Opened::Packet { start, len } => {
                add(&self.stats.rx_packets, 1);
                add(&self.stats.rx_bytes, len as u64);
                session.activity.count_received(len);
                // The plaintext follows at least the 24 bytes of P_DATA_V2 header,
                // packet-id and tag, so the Ethernet header fits in front of it.
                let frame = &mut packet[start - ETH_LEN..start + len];
                frame[..6].copy_from_slice(&self.tap.mac());
                frame[6..12].copy_from_slice(&self.tap_peer_mac);
                frame[12..14].copy_from_slice(&[0x08, 0x00]);
                if self.tap.write_frame(self.index, frame).is_err() {
                    add(&self.stats.send_errors, 1);
                }
            }
            Opened::Exit => self.report(Report::Exited {
                peer_id: session.peer_id,
            }),
            Opened::Spoofed => add(&self.stats.spoofed, 1),
            Opened::Ping | Opened::OtherOcc => {}
        }
    }

    /// The Ethernet frame of `n` bytes at [`TAP_READ_AT`] of the next free send slot:
    /// seal its IPv4 packet for the session whose lease is its destination (`peer_id`,
    /// when given, names it) and queue it (UDP) or hand it to the connection's writer
    /// (TCP).
    fn seal_frame(&mut self, tx: &mut Batch, n: usize, peer_id: Option<u32>, now: Instant) {
        let Some(slot) = tx.next_free() else {
            return;
        };
        let frame = &slot[TAP_READ_AT..TAP_READ_AT + n];
        if !is_ipv4_frame(frame) {
            // From the TAP: the kernel's own IPv6 or ARP chatter, nobody's session.
            return;
        }
        // Without Ethernet padding a short frame may carry.
        let total_len = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
        let packet_len = total_len.clamp(20, n - ETH_LEN);
        let dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
        let named = peer_id
            .and_then(|id| self.sessions.get(&id))
            .filter(|s| s.lease == dst);
        let Some(session) =
            named.or_else(|| self.by_lease.get(&dst).and_then(|id| self.sessions.get(id)))
        else {
            add(&self.stats.no_session, 1);
            return;
        };
        let header = session.data.send_header();
        let Some(key) = session.data.key(session.data.send_key) else {
            return;
        };
        let overhead = header.buffer_len() + DATA_V2_OVERHEAD - 4;
        if let DataHeader::V1 { .. } = header {
            slot.copy_within(DATA_V2_OVERHEAD..DATA_V2_OVERHEAD + packet_len, overhead);
        }
        let Ok(len) = key.sealing.seal_in_place(header, slot, packet_len) else {
            add(&self.stats.send_errors, 1);
            return;
        };
        session.activity.sent(now);
        session.activity.count_sent(packet_len);
        add(&self.stats.tx_packets, 1);
        add(&self.stats.tx_bytes, packet_len as u64);
        match &session.peer {
            Peer::Udp(to) => {
                let to = *to;
                tx.push(to, 0, len);
            }
            Peer::Stream(writer) => {
                if writer.send(slot[..len].to_vec()).is_err() {
                    add(&self.stats.send_errors, 1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet/IPv4/UDP frame from 192.0.2.7:51000 with `payload`.
    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0]);
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[192, 0, 2, 7, 198, 51, 100, 1]);
        f.extend_from_slice(&51000u16.to_be_bytes());
        f.extend_from_slice(&1194u16.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn udp_payload_finds_sender_and_payload() {
        let mut f = udp_frame(b"openvpn");
        // Ethernet padding after the datagram is not payload.
        f.extend_from_slice(&[0; 6]);
        let (from, range) = udp_payload(&f).unwrap();
        assert_eq!(from, "192.0.2.7:51000".parse().unwrap());
        assert_eq!(&f[range], b"openvpn");
    }

    #[test]
    fn udp_payload_refuses_what_is_not_a_whole_udp_datagram() {
        let good = udp_frame(b"openvpn");
        type Breakage = fn(&mut Vec<u8>);
        let cases: [(&str, Breakage); 8] = [
            ("not IPv4 ethertype", |f| f[12] = 0x86),
            ("IPv6 version", |f| f[14] = 0x65),
            ("TCP", |f| f[23] = 6),
            ("header length 16", |f| f[14] = 0x44),
            ("total length past the frame", |f| f[17] += 1),
            ("more fragments", |f| f[20] = 0x20),
            ("fragment offset", |f| f[21] = 1),
            ("UDP length past the IP packet", |f| f[39] += 1),
        ];
        for (what, break_it) in cases {
            let mut f = good.clone();
            break_it(&mut f);
            assert_eq!(udp_payload(&f), None, "{what}");
        }
        for len in 0..good.len() {
            assert_eq!(udp_payload(&good[..len]), None, "truncated to {len}");
        }
    }

    proptest::proptest! {
        #[test]
        fn udp_payload_never_panics_and_stays_inside(frame in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            if let Some((_, range)) = udp_payload(&frame) {
                proptest::prop_assert!(range.start <= range.end && range.end <= frame.len());
            }
        }
    }
}
