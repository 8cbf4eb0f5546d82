//! Socket mode's sources: the worker's `SO_REUSEPORT` UDP socket on the listen port
//! (`recvmmsg` batches, UDP GRO) and its queue of the multi-queue TAP, from which it
//! reads what `target` forwards back.

use std::{io, os::fd::AsRawFd, os::fd::RawFd, time::Instant};

use super::{
    backend::{BATCH, Io, Source, read_error},
    batch::{self, Batch},
    carry::{Carrier, SEAL_AT},
    counters::Counter,
};

/// Socket buffer size asked for (the kernel caps it at `net.core.[rw]mem_max`).
const SOCKET_BUFFER: usize = 4 << 20;

/// A non-blocking UDP socket on `port` that shares the port with the other workers',
/// with UDP GRO on where the kernel has it.
pub fn reuseport_socket(port: u16) -> io::Result<std::net::UdpSocket> {
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
    // Best effort: without GRO every read is one datagram.
    let _ = batch::enable_gro(fd.as_raw_fd());
    Ok(std::net::UdpSocket::from(fd))
}

/// Datagrams from clients on the worker's UDP socket (which [`Io`] owns and sends from).
pub struct UdpSource {
    fd: RawFd,
    rx: Batch,
}

impl UdpSource {
    /// Reads the socket `io` sends from.
    pub fn new(udp: &mio::net::UdpSocket) -> Self {
        Self {
            fd: udp.as_raw_fd(),
            rx: Batch::with_slot_size(BATCH, batch::GRO_SLOT),
        }
    }
}

impl Source for UdpSource {
    fn fd(&self) -> RawFd {
        self.fd
    }

    fn batch(&mut self, carrier: &mut Carrier, io: &mut Io, now: Instant) -> bool {
        let n = match self.rx.recv(self.fd, 0) {
            Ok(n) => n,
            Err(e) => return read_error(&e, io.queue, "receiving"),
        };
        for i in 0..n {
            // One datagram, or with UDP GRO several of one sender.
            let segment = self.rx.segment_size(i).max(1);
            let Some((from, slot, start, len)) = self.rx.datagram_mut(i) else {
                carrier.count(Counter::Truncated, 1);
                continue;
            };
            if segment < len {
                carrier.count(Counter::GroReads, 1);
            }
            for packet in slot[start..start + len].chunks_mut(segment) {
                let verdict = carrier.datagram(packet, from, now);
                io.inbound(carrier, packet, verdict);
            }
        }
        n == self.rx.capacity()
    }
}

/// What `target` forwards back through the worker's TAP queue: sealed and sent.
pub struct TapSource {
    fd: RawFd,
}

impl TapSource {
    /// Reads the TAP queue `io` writes into.
    pub fn new(io: &Io) -> Self {
        Self {
            fd: io.tap.raw_fd(io.queue),
        }
    }
}

impl Source for TapSource {
    fn fd(&self) -> RawFd {
        self.fd
    }

    fn batch(&mut self, carrier: &mut Carrier, io: &mut Io, now: Instant) -> bool {
        let mut read = 0;
        let mut more = true;
        while read < BATCH {
            let Some(slot) = io.tx.next_free() else {
                break;
            };
            let n = match io.tap.read_frame(io.queue, &mut slot[SEAL_AT..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    more = read_error(&e, io.queue, "reading the TAP");
                    break;
                }
            };
            read += 1;
            let verdict = carrier.seal(slot, n, None, now);
            io.outbound(carrier, verdict);
        }
        io.flush(carrier);
        more
    }
}
