//! The probe packets the load generator sends (IPv4/UDP with our magic, the session,
//! a sequence number and the send time) and the reflector that echoes them in the
//! target namespace.

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use anyhow::Result;
use gateway::dataplane::batch::Batch;

use super::BATCH;

/// Marks the payload of our probe packets.
const MAGIC: u32 = 0x6777_4c47;
/// IPv4 + UDP headers of a probe.
const HEADERS: usize = 28;
/// Smallest probe: headers plus magic, session index, sequence and send time.
pub const MIN_PACKET: usize = HEADERS + 24;
/// Port the reflector listens on.
pub const REFLECTOR_PORT: u16 = 9000;

/// What the reflector in the target namespace counted.
#[derive(Debug, Default)]
pub struct ReflectorCounts {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
}

/// A UDP echo server on its own thread; stops when dropped.
pub struct Reflector {
    stop: Arc<AtomicBool>,
    pub counts: Arc<ReflectorCounts>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reflector {
    /// Echoes every datagram arriving on `socket` (non-blocking) back to its sender.
    pub fn start(socket: UdpSocket) -> Result<Self> {
        socket.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(ReflectorCounts::default());
        let (stop2, counts2) = (stop.clone(), counts.clone());
        let thread = std::thread::Builder::new()
            .name("reflector".into())
            .spawn(move || {
                let mut rx = Batch::new(BATCH);
                let mut tx = Batch::new(BATCH);
                let fd = socket.as_raw_fd();
                while !stop2.load(Ordering::Relaxed) {
                    match rx.recv(fd, 0) {
                        Ok(n) => {
                            for i in 0..n {
                                let Some((from, slot, start, len)) = rx.datagram_mut(i) else {
                                    continue;
                                };
                                counts2.packets.fetch_add(1, Ordering::Relaxed);
                                counts2.bytes.fetch_add(len as u64, Ordering::Relaxed);
                                if let Some(out) = tx.next_free() {
                                    out[..len].copy_from_slice(&slot[start..start + len]);
                                    tx.push(from, 0, len);
                                }
                            }
                            tx.send(fd, &mut false);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            wait_readable(fd, 20);
                        }
                        Err(_) => wait_readable(fd, 20),
                    }
                }
            })?;
        Ok(Self {
            stop,
            counts,
            thread: Some(thread),
        })
    }

    pub fn packets(&self) -> u64 {
        self.counts.packets.load(Ordering::Relaxed)
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits up to `ms` for `fd` to become readable.
fn wait_readable(fd: i32, ms: i32) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes one pollfd (nfds = 1) through the pointer: `pfd` is
    // a live local for the call, and the kernel keeps no pointer after it.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// Writes a probe into `buf` (its whole length): IPv4/UDP from `lease` to `reflector`
/// with a valid header checksum and UDP checksum 0, then magic, session, sequence and
/// send time.
pub(super) fn probe(
    buf: &mut [u8],
    lease: Ipv4Addr,
    reflector: SocketAddrV4,
    session: u32,
    seq: u64,
    sent_ns: u64,
) {
    let len = buf.len();
    buf.fill(0);
    buf[0] = 0x45;
    buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    buf[6] = 0x40; // DF
    buf[8] = 64;
    buf[9] = 17;
    buf[12..16].copy_from_slice(&lease.octets());
    buf[16..20].copy_from_slice(&reflector.ip().octets());
    let sum = ipv4_checksum(&buf[..20]);
    buf[10..12].copy_from_slice(&sum.to_be_bytes());
    let sport = 10_000 + (session % 50_000) as u16;
    buf[20..22].copy_from_slice(&sport.to_be_bytes());
    buf[22..24].copy_from_slice(&reflector.port().to_be_bytes());
    buf[24..26].copy_from_slice(&((len - 20) as u16).to_be_bytes());
    buf[28..32].copy_from_slice(&MAGIC.to_be_bytes());
    buf[32..36].copy_from_slice(&session.to_be_bytes());
    buf[36..44].copy_from_slice(&seq.to_be_bytes());
    buf[44..52].copy_from_slice(&sent_ns.to_be_bytes());
}

/// The send time of an echoed probe.
pub(super) fn probe_time(packet: &[u8]) -> Option<u64> {
    if packet.len() < MIN_PACKET || packet[9] != 17 || packet[28..32] != MAGIC.to_be_bytes() {
        return None;
    }
    Some(u64::from_be_bytes(packet[44..52].try_into().ok()?))
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in header.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_has_a_valid_header_and_its_time_reads_back() {
        let mut buf = vec![0u8; 100];
        let reflector = SocketAddrV4::new(Ipv4Addr::new(10, 10, 0, 10), REFLECTOR_PORT);
        probe(
            &mut buf,
            Ipv4Addr::new(10, 200, 0, 2),
            reflector,
            7,
            9,
            123_456,
        );
        assert_eq!(ipv4_checksum(&buf[..20]), 0, "header checksum verifies");
        assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), 100);
        assert_eq!(u16::from_be_bytes([buf[24], buf[25]]), 80);
        assert_eq!(probe_time(&buf), Some(123_456));
        buf[28] ^= 1;
        assert_eq!(probe_time(&buf), None, "not our magic");
    }
}
