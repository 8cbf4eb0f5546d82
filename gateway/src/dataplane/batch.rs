//! Batched UDP I/O for the workers: `recvmmsg` into a ring of fixed slots and `sendmmsg`
//! from one, so a burst costs one system call per batch rather than one per datagram.
//!
//! Each slot keeps `HEADROOM` bytes in front of the datagram, so that a worker can put
//! an Ethernet header in front of a decrypted packet, or a data-packet header in front
//! of a packet read from the TAP, without copying.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::RawFd,
};

/// Bytes of one slot: headroom plus the largest datagram carried. Larger datagrams
/// arrive truncated and are dropped (the TAP's MTU keeps our own well below this).
pub const SLOT: usize = 4096;

/// A batch of datagram slots, used for receiving (filled by [`Batch::recv`]) or for
/// sending (filled by the caller, drained by [`Batch::send`]).
pub struct Batch {
    bufs: Box<[u8]>,
    /// Per slot: where the datagram starts in the slot, and its length.
    spans: Vec<(usize, usize)>,
    addrs: Vec<libc::sockaddr_storage>,
    truncated: Vec<bool>,
    /// Slots in use.
    len: usize,
}

impl Batch {
    /// `slots` empty slots.
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        Self {
            bufs: vec![0u8; slots * SLOT].into_boxed_slice(),
            spans: vec![(0, 0); slots],
            // SAFETY: sockaddr_storage is plain data; all-zero bytes are valid.
            addrs: vec![unsafe { std::mem::zeroed() }; slots],
            truncated: vec![false; slots],
            len: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.spans.len()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == self.capacity()
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Slot `i` whole (headroom included), for filling in place.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i * SLOT..(i + 1) * SLOT]
    }

    /// The datagram in slot `i`: its peer, the slot, and where in the slot it lies.
    /// `None` for a datagram that did not fit the slot.
    pub fn datagram_mut(&mut self, i: usize) -> Option<(SocketAddr, &mut [u8], usize, usize)> {
        if i >= self.len || self.truncated[i] {
            return None;
        }
        let addr = from_storage(&self.addrs[i])?;
        let (start, len) = self.spans[i];
        Some((addr, self.slot_mut(i), start, len))
    }

    /// Appends the datagram the caller wrote into the next slot at `start..start + len`,
    /// for `to`. Returns false when the batch is full.
    pub fn push(&mut self, to: SocketAddr, start: usize, len: usize) -> bool {
        if self.is_full() || start + len > SLOT {
            return false;
        }
        let i = self.len;
        self.spans[i] = (start, len);
        self.addrs[i] = to_storage(to);
        self.truncated[i] = false;
        self.len += 1;
        true
    }

    /// The next free slot, for [`Batch::push`] after filling it.
    pub fn next_free(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let i = self.len;
        Some(self.slot_mut(i))
    }

    /// Receives up to a batch of datagrams from the non-blocking socket `fd`, each at
    /// `headroom` in its slot. Returns how many (0 never: `WouldBlock` when none).
    pub fn recv(&mut self, fd: RawFd, headroom: usize) -> io::Result<usize> {
        let n = self.capacity();
        let room = SLOT.saturating_sub(headroom);
        let base = self.bufs.as_mut_ptr();
        let mut iovecs: Vec<libc::iovec> = (0..n)
            .map(|i| libc::iovec {
                // SAFETY: slot i starts at i * SLOT inside `bufs`; headroom < SLOT.
                iov_base: unsafe { base.add(i * SLOT + headroom.min(SLOT)) }.cast(),
                iov_len: room,
            })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = (0..n)
            .map(|i| {
                // SAFETY: msghdr is plain data; all-zero bytes are valid.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
                h.msg_hdr.msg_iov = &raw mut iovecs[i];
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // SAFETY: every header points at a live iovec, slot and address of this batch,
        // sized as declared; the kernel writes within those bounds.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                headers.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            self.len = 0;
            return Err(io::Error::last_os_error());
        }
        let got = got as usize;
        for (i, h) in headers.iter().take(got).enumerate() {
            let len = h.msg_len as usize;
            self.spans[i] = (headroom, len.min(room));
            self.truncated[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > room;
        }
        self.len = got;
        Ok(got)
    }

    /// Sends every datagram in the batch on `fd` and empties it. Returns how many went
    /// out; a datagram the kernel refuses is skipped (counted by the caller from the
    /// difference), and a full socket buffer drops the rest of the batch.
    pub fn send(&mut self, fd: RawFd) -> usize {
        let total = self.len;
        let mut sent = 0;
        let mut next = 0;
        while next < total {
            let base = self.bufs.as_mut_ptr();
            let mut iovecs: Vec<libc::iovec> = (next..total)
                .map(|i| {
                    let (start, len) = self.spans[i];
                    libc::iovec {
                        // SAFETY: start + len <= SLOT was checked in `push`.
                        iov_base: unsafe { base.add(i * SLOT + start) }.cast(),
                        iov_len: len,
                    }
                })
                .collect();
            let mut headers: Vec<libc::mmsghdr> = (next..total)
                .zip(iovecs.iter_mut())
                .map(|(i, iov)| {
                    // SAFETY: msghdr is plain data; all-zero bytes are valid.
                    let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    h.msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
                    h.msg_hdr.msg_namelen = storage_len(&self.addrs[i]);
                    h.msg_hdr.msg_iov = iov;
                    h.msg_hdr.msg_iovlen = 1;
                    h
                })
                .collect();
            // SAFETY: the headers point at live iovecs, slots and addresses, sized as
            // declared; the kernel only reads them.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    headers.as_mut_ptr(),
                    headers.len() as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                sent += n as usize;
                next += n as usize;
                continue;
            }
            match io::Error::last_os_error().kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted if n < 0 => break,
                // The first datagram was refused (too big, unreachable): skip it.
                _ => next += 1,
            }
        }
        self.len = 0;
        sent
    }
}

fn storage_len(storage: &libc::sockaddr_storage) -> u32 {
    match i32::from(storage.ss_family) {
        libc::AF_INET6 => size_of::<libc::sockaddr_in6>() as u32,
        _ => size_of::<libc::sockaddr_in>() as u32,
    }
}

/// `addr` as the kernel's socket address.
pub fn to_storage(addr: SocketAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data; all-zero bytes are valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin) };
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6) };
        }
    }
    storage
}

/// The kernel's socket address as a `SocketAddr` (IPv4 and IPv6; `None` otherwise).
pub fn from_storage(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(&raw const *storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(&raw const *storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn addresses_round_trip() {
        for addr in [
            "192.0.2.7:51000".parse::<SocketAddr>().unwrap(),
            "[2001:db8::1]:443".parse().unwrap(),
        ] {
            assert_eq!(from_storage(&to_storage(addr)), Some(addr));
        }
    }

    #[test]
    fn a_batch_goes_out_and_comes_back_over_loopback() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        let to = b.local_addr().unwrap();
        let mut out = Batch::new(8);
        for i in 0..5u8 {
            let slot = out.next_free().unwrap();
            slot[100..100 + usize::from(i) + 1].fill(i);
            assert!(out.push(to, 100, usize::from(i) + 1));
        }
        assert_eq!(out.send(a.as_raw_fd()), 5);
        assert!(out.is_empty());
        let mut got = Batch::new(8);
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while seen.len() < 5 && std::time::Instant::now() < deadline {
            match got.recv(b.as_raw_fd(), 24) {
                Ok(n) => {
                    for i in 0..n {
                        let (from, slot, start, len) = got.datagram_mut(i).unwrap();
                        assert_eq!(from, a.local_addr().unwrap());
                        assert_eq!(start, 24);
                        seen.push(slot[start..start + len].to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("recvmmsg: {e}"),
            }
        }
        let expected: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; usize::from(i) + 1]).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn an_oversized_datagram_is_reported_as_truncated() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        a.send_to(&vec![7u8; SLOT], b.local_addr().unwrap())
            .unwrap();
        let mut got = Batch::new(2);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match got.recv(b.as_raw_fd(), 24) {
                Ok(n) => {
                    assert_eq!(n, 1);
                    assert!(got.datagram_mut(0).is_none());
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "nothing arrived");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("recvmmsg: {e}"),
            }
        }
    }
}
