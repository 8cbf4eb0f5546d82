//! Data-plane workers (architecture §3, §4): N threads, each pinned to a core, each with
//! its own `SO_REUSEPORT` UDP socket on the listen port and its own queue of the
//! multi-queue TAP device, and in AF_XDP mode its AF_XDP sockets. This module spawns,
//! pins and stops them and runs each one's poll loop; what a worker decides about a
//! packet is [`Carrier`]'s (`carry`), and its sources are the backends in `socket` and
//! `afxdp` behind one [`Source`] trait.
//!
//! Sessions come from the control plane as [`Command`]s over crossbeam channels. What a
//! worker cannot or must not decide goes back as a [`Report`]: control packets and data
//! it has no key for (the control plane handles those with the session itself), floats,
//! OCC_EXIT, the first use of a new key, a renegotiation limit reached. A worker never
//! waits on the control plane: a full report channel drops the report and counts it.

use std::{
    io,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::{Events, Interest, Poll, Token, Waker, unix::SourceFd};
use tracing::{error, info, warn};

use super::{
    afxdp::{self, AfXdp, XskBinding},
    backend::{BATCH, Io, Source},
    batch::Batch,
    carry::{Carried, Carrier, Command, Report},
    counters::{Counter, Counters, Totals},
    socket::{TapSource, UdpSource, reuseport_socket},
    tap::Tap,
};

const WAKE: Token = Token(usize::MAX);

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

struct Handle {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

/// The running workers.
pub struct Workers {
    handles: Vec<Handle>,
    counters: Vec<Arc<Counters>>,
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

impl Workers {
    /// Starts the workers. The TAP must have one queue per worker.
    pub fn start(settings: Settings) -> io::Result<Self> {
        let count = settings.tap.queues();
        let cpus = allowed_cpus();
        let mut handles = Vec::with_capacity(count);
        let mut all_counters = Vec::with_capacity(count);
        let mut control_socket = None;
        let mut xsks = Vec::new();
        let owned = afxdp::bind(settings.afxdp.as_ref(), count, &mut xsks)?;
        for (index, own_xsks) in owned.into_iter().enumerate() {
            let udp = match settings.udp_port {
                Some(port) => {
                    let socket = reuseport_socket(port).map_err(|e| {
                        io::Error::new(e.kind(), format!("binding udp/{port}: {e}"))
                    })?;
                    if index == 0 {
                        control_socket = Some(socket.try_clone()?);
                    }
                    Some(mio::net::UdpSocket::from_std(socket))
                }
                None => None,
            };
            settings.tap.set_nonblocking(index)?;
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
            let (commands, inbox) = crossbeam_channel::unbounded();
            let counters = Arc::new(Counters::default());
            let cpu = settings
                .pin
                .then(|| cpus.get(index % cpus.len().max(1)).copied())
                .flatten();
            let io = Io {
                queue: index,
                tap: settings.tap.clone(),
                udp,
                tx: Batch::new(BATCH),
                gso: true,
                reports: settings.reports.clone(),
            };
            // Read in this order each round: datagrams, the TAP, the AF_XDP sockets.
            let mut sources: Vec<Box<dyn Source>> = Vec::new();
            if let Some(udp) = &io.udp {
                sources.push(Box::new(UdpSource::new(udp)));
            }
            sources.push(Box::new(TapSource::new(&io)));
            sources.extend(own_xsks.into_iter().map(|x| Box::new(x) as Box<dyn Source>));
            let worker = Worker {
                carrier: Carrier::new(settings.tap.mac(), settings.tap_peer_mac, counters.clone()),
                io,
                sources,
                inbox,
                counters: counters.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("gw-worker-{index}"))
                .spawn(move || {
                    abort_on_panic(&format!("data-plane worker {index}"), move || {
                        if let Some(cpu) = cpu {
                            pin_to(cpu, index);
                        }
                        worker.run(poll);
                    });
                })?;
            handles.push(Handle {
                commands,
                waker,
                thread: Some(thread),
            });
            all_counters.push(counters);
        }
        info!(
            workers = count,
            pinned = settings.pin,
            af_xdp_sockets = xsks.len(),
            "data-plane workers started"
        );
        Ok(Self {
            handles,
            counters: all_counters,
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

    /// The sums of the workers' counters.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for counters in &self.counters {
            totals.add(&counters.snapshot());
        }
        totals
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

/// Runs `f`; if it panics, logs that and aborts the process. A worker that died
/// quietly would leave its queue's sessions unserved while the gateway looks healthy;
/// aborting lets the supervisor (systemd) restart the whole gateway, and clients
/// reconnect.
pub fn abort_on_panic(what: &str, f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        error!("{what} panicked; aborting so that the supervisor restarts the gateway");
        eprintln!("{what} panicked; aborting so that the supervisor restarts the gateway");
        std::process::abort();
    }
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

/// One worker thread's state.
struct Worker {
    carrier: Carrier,
    io: Io,
    /// Polled with token i for source i.
    sources: Vec<Box<dyn Source>>,
    inbox: Receiver<Command>,
    counters: Arc<Counters>,
}

impl Worker {
    fn run(mut self, mut poll: Poll) {
        let index = self.io.queue;
        for (i, source) in self.sources.iter().enumerate() {
            let fd = source.fd();
            let registered =
                poll.registry()
                    .register(&mut SourceFd(&fd), Token(i), Interest::READABLE);
            if let Err(e) = registered {
                warn!(worker = index, "registering with the poller: {e}");
                return;
            }
        }
        let mut events = Events::with_capacity(8 + self.sources.len());
        // Sources that may have more to read: set by their events, cleared once a read
        // finds them drained (edge-triggered, so the next arrival brings a new event).
        // Reading only these spares an empty system call per idle source and round.
        let mut ready = vec![true; self.sources.len()];
        let counts_drops = self.sources.iter().any(|s| s.kernel_drops().is_some());
        let mut drops_read = Instant::now();
        loop {
            if let Err(e) = poll.poll(&mut events, Some(Duration::from_secs(1)))
                && e.kind() != io::ErrorKind::Interrupted
            {
                warn!(worker = index, "polling: {e}");
                return;
            }
            if counts_drops && drops_read.elapsed() >= Duration::from_secs(1) {
                drops_read = Instant::now();
                let drops = self.sources.iter().filter_map(|s| s.kernel_drops()).sum();
                self.counters.set(Counter::XskKernelDrops, drops);
            }
            for event in events.iter() {
                if let Some(flag) = ready.get_mut(event.token().0) {
                    *flag = true;
                }
            }
            // Drain every ready source, a batch of each in turn, and keep up with
            // commands in between.
            loop {
                if !self.apply_commands() {
                    return;
                }
                let mut more = false;
                for (source, flag) in self.sources.iter_mut().zip(ready.iter_mut()) {
                    if *flag {
                        *flag = source.batch(&mut self.carrier, &mut self.io, Instant::now());
                        self.io.report(&mut self.carrier);
                        more |= *flag;
                    }
                }
                if !more {
                    break;
                }
            }
        }
    }

    /// Applies pending commands; false on `Stop` (or when the control plane is gone).
    fn apply_commands(&mut self) -> bool {
        loop {
            match self.inbox.try_recv() {
                Ok(command) => {
                    if !self.carrier.apply(command) {
                        return false;
                    }
                }
                Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Set in the child process the test below starts.
    const CHILD: &str = "GATEWAY_TEST_PANICKING_WORKER";

    #[test]
    fn a_panicking_worker_aborts_the_process_instead_of_dying_alone() {
        if std::env::var_os(CHILD).is_some() {
            let worker = std::thread::spawn(|| {
                super::abort_on_panic("data-plane worker 7", || panic!("a bug"));
            });
            let _ = worker.join();
            // Only reached if the panic did not take the process down.
            std::process::exit(0);
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "dataplane::worker::tests::a_panicking_worker_aborts_the_process_instead_of_dying_alone",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{:?}\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains("data-plane worker 7 panicked; aborting"),
            "{stderr}"
        );
    }
}
