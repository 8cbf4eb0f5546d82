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
/// Bytes of one receive slot with UDP GRO: the most the kernel coalesces into one read.
pub const GRO_SLOT: usize = 65_536;
/// Linux's `UDP_SEGMENT` socket option / cmsg type (UDP GSO, linux/udp.h).
const UDP_SEGMENT: libc::c_int = 103;
/// Linux's `UDP_GRO` socket option / cmsg type (linux/udp.h).
const UDP_GRO: libc::c_int = 104;
/// Control bytes per received message (room for the UDP_GRO cmsg and then some).
const RECV_CONTROL: usize = 64;
/// Most datagrams in one GSO send (the kernel allows 64 or more).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO send (one IP datagram's worth before segmentation).
const GSO_MAX_BYTES: usize = 60_000;

/// What [`Batch::send`] got out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams sent.
    pub datagrams: usize,
    /// Of the sends, how many were UDP GSO runs of several datagrams.
    pub gso_runs: usize,
}

/// A batch of datagram slots, used for receiving (filled by [`Batch::recv`]) or for
/// sending (filled by the caller, drained by [`Batch::send`]).
pub struct Batch {
    bufs: Box<[u8]>,
    /// Bytes per slot.
    slot: usize,
    /// Per slot: where the datagram starts in the slot, and its length.
    spans: Vec<(usize, usize)>,
    /// Per received slot: the size of each datagram the kernel coalesced into it (UDP
    /// GRO; the last may be shorter), or the whole length.
    segments: Vec<usize>,
    control: Vec<u64>,
    addrs: Vec<libc::sockaddr_storage>,
    truncated: Vec<bool>,
    /// Slots in use.
    len: usize,
}

impl Batch {
    /// `slots` empty slots of [`SLOT`] bytes.
    pub fn new(slots: usize) -> Self {
        Self::with_slot_size(slots, SLOT)
    }

    /// `slots` empty slots of `slot` bytes ([`GRO_SLOT`] to receive with UDP GRO).
    pub fn with_slot_size(slots: usize, slot: usize) -> Self {
        let slots = slots.max(1);
        Self {
            bufs: vec![0u8; slots * slot].into_boxed_slice(),
            slot,
            spans: vec![(0, 0); slots],
            segments: vec![0; slots],
            control: vec![0u64; slots * RECV_CONTROL / size_of::<u64>()],
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
        &mut self.bufs[i * self.slot..(i + 1) * self.slot]
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
        if self.is_full() || start + len > self.slot {
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

    /// The size of the datagrams in received slot `i`: with UDP GRO on the socket
    /// ([`enable_gro`]) one slot may hold several datagrams of one sender, each this long
    /// but the last; without it, the whole length.
    pub fn segment_size(&self, i: usize) -> usize {
        self.segments.get(i).copied().unwrap_or(0)
    }

    /// Receives up to a batch of datagrams from the non-blocking socket `fd`, each at
    /// `headroom` in its slot. Returns how many (0 never: `WouldBlock` when none).
    pub fn recv(&mut self, fd: RawFd, headroom: usize) -> io::Result<usize> {
        let n = self.capacity();
        let slot = self.slot;
        let room = slot.saturating_sub(headroom);
        let base = self.bufs.as_mut_ptr();
        let mut iovecs: Vec<libc::iovec> = (0..n)
            .map(|i| libc::iovec {
                // SAFETY: slot i starts at i * slot inside `bufs`; headroom < slot.
                iov_base: unsafe { base.add(i * slot + headroom.min(slot)) }.cast(),
                iov_len: room,
            })
            .collect();
        let control = self.control.as_mut_ptr();
        let mut headers: Vec<libc::mmsghdr> = (0..n)
            .map(|i| {
                // SAFETY: msghdr is plain data; all-zero bytes are valid.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
                h.msg_hdr.msg_iov = &raw mut iovecs[i];
                h.msg_hdr.msg_iovlen = 1;
                // SAFETY: message i's control area is its RECV_CONTROL bytes of
                // `control`, u64-aligned as cmsghdr needs.
                h.msg_hdr.msg_control =
                    unsafe { control.add(i * RECV_CONTROL / size_of::<u64>()) }.cast();
                h.msg_hdr.msg_controllen = RECV_CONTROL;
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
            self.segments[i] = gro_segment(&h.msg_hdr)
                .filter(|&s| s > 0 && s < len)
                .unwrap_or(len);
        }
        self.len = got;
        Ok(got)
    }

    /// Sends every datagram in the batch on `fd` and empties it. Returns how many went
    /// out; a datagram the kernel refuses is skipped (counted by the caller from the
    /// difference), and a full socket buffer drops the rest of the batch.
    ///
    /// With `gso` on, runs of datagrams to one address with one length (the last of a run
    /// may be shorter) go out as one UDP GSO send: the kernel cuts the run into the
    /// datagrams, so the stack is walked once per run. A run the kernel refuses as a whole
    /// (segments larger than the path MTU, or no GSO on the device) is sent datagram by
    /// datagram instead; `gso` is turned off when the kernel or device cannot do it at all.
    pub fn send(&mut self, fd: RawFd, gso: &mut bool) -> Sent {
        let runs = self.runs(*gso);
        let mut sent = 0;
        let mut gso_runs = 0;
        let mut next = 0;
        while next < runs.len() {
            match self.send_runs(fd, &runs[next..]) {
                Ok(n) => {
                    sent += runs[next..next + n].iter().map(|r| r.len()).sum::<usize>();
                    gso_runs += runs[next..next + n].iter().filter(|r| r.len() > 1).count();
                    next += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    let run = runs[next].clone();
                    if run.len() > 1 {
                        if e.raw_os_error() == Some(libc::EIO)
                            || e.raw_os_error() == Some(libc::ENOPROTOOPT)
                        {
                            *gso = false;
                        }
                        // One by one; each may still be refused on its own.
                        let singles: Vec<_> = run.map(|i| i..i + 1).collect();
                        let mut at = 0;
                        while at < singles.len() {
                            match self.send_runs(fd, &singles[at..]) {
                                Ok(n) => {
                                    sent += n;
                                    at += n;
                                }
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                Err(_) => at += 1,
                            }
                        }
                    }
                    next += 1;
                }
            }
        }
        self.len = 0;
        Sent {
            datagrams: sent,
            gso_runs,
        }
    }

    /// The batch cut into runs that can each go out as one send.
    fn runs(&self, gso: bool) -> Vec<std::ops::Range<usize>> {
        let mut runs = Vec::new();
        let mut start = 0;
        while start < self.len {
            let seg = self.spans[start].1;
            let mut end = start + 1;
            let mut bytes = seg;
            if gso && seg > 0 {
                while end < self.len
                    && end - start < GSO_MAX_SEGMENTS
                    && same_addr(&self.addrs[end], &self.addrs[start])
                    && self.spans[end].1 <= seg
                    && bytes + self.spans[end].1 <= GSO_MAX_BYTES
                {
                    bytes += self.spans[end].1;
                    end += 1;
                    if self.spans[end - 1].1 < seg {
                        break;
                    }
                }
            }
            runs.push(start..end);
            start = end;
        }
        runs
    }

    /// One `sendmmsg` of `runs` (each a GSO send when longer than one datagram); returns
    /// how many runs went out, or the error of the first.
    fn send_runs(&mut self, fd: RawFd, runs: &[std::ops::Range<usize>]) -> io::Result<usize> {
        let base = self.bufs.as_mut_ptr();
        let mut iovecs: Vec<libc::iovec> = runs
            .iter()
            .flat_map(|r| r.clone())
            .map(|i| {
                let (start, len) = self.spans[i];
                libc::iovec {
                    // SAFETY: start + len <= slot was checked in `push`.
                    iov_base: unsafe { base.add(i * self.slot + start) }.cast(),
                    iov_len: len,
                }
            })
            .collect();
        // One aligned control buffer per run: a UDP_SEGMENT cmsg with the segment size.
        let space = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
        let words = space.div_ceil(size_of::<u64>());
        let mut control = vec![0u64; words * runs.len()];
        let mut headers = Vec::with_capacity(runs.len());
        let mut iov_at = 0;
        for (k, run) in runs.iter().enumerate() {
            // SAFETY: msghdr is plain data; all-zero bytes are valid.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&raw mut self.addrs[run.start]).cast();
            h.msg_hdr.msg_namelen = storage_len(&self.addrs[run.start]);
            h.msg_hdr.msg_iov = &raw mut iovecs[iov_at];
            h.msg_hdr.msg_iovlen = run.len();
            iov_at += run.len();
            if run.len() > 1 {
                let buf = &raw mut control[k * words];
                h.msg_hdr.msg_control = buf.cast();
                h.msg_hdr.msg_controllen = space;
                // SAFETY: the control buffer is `space` bytes, aligned for cmsghdr, and
                // holds exactly one cmsg with a u16 payload.
                unsafe {
                    let cmsg = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                    (*cmsg).cmsg_level = libc::SOL_UDP;
                    (*cmsg).cmsg_type = UDP_SEGMENT;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
                    let segment = self.spans[run.start].1 as u16;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
                }
            }
            headers.push(h);
        }
        // SAFETY: the headers point at live iovecs, slots, addresses and control buffers,
        // sized as declared; the kernel only reads them.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                headers.as_mut_ptr(),
                headers.len() as u32,
                libc::MSG_DONTWAIT,
            )
        };
        match n {
            n if n > 0 => Ok(n as usize),
            0 => Err(io::Error::from(io::ErrorKind::WriteZero)),
            _ => Err(io::Error::last_os_error()),
        }
    }
}

/// The UDP_GRO segment size the kernel put in a received message's control data.
fn gro_segment(msg: &libc::msghdr) -> Option<usize> {
    // SAFETY: the kernel filled `msg`'s control area and set msg_controllen; the CMSG
    // macros stay within it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                return usize::try_from(size).ok();
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    None
}

/// Turns UDP GRO on for `fd`: the kernel may hand over several datagrams of one sender
/// in one read (see [`Batch::segment_size`]); receive into [`GRO_SLOT`] slots.
pub fn enable_gro(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from a live local.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            UDP_GRO,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn same_addr(a: &libc::sockaddr_storage, b: &libc::sockaddr_storage) -> bool {
    from_storage(a) == from_storage(b)
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
        assert_eq!(out.send(a.as_raw_fd(), &mut false).datagrams, 5);
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

    /// Receives `count` datagrams on `socket` (waiting up to 5 s), as byte vectors.
    fn drain(socket: &std::net::UdpSocket, count: usize) -> Vec<Vec<u8>> {
        let mut got = Batch::new(16);
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while seen.len() < count && std::time::Instant::now() < deadline {
            match got.recv(socket.as_raw_fd(), 0) {
                Ok(n) => {
                    for i in 0..n {
                        let (_, slot, start, len) = got.datagram_mut(i).unwrap();
                        seen.push(slot[start..start + len].to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("recvmmsg: {e}"),
            }
        }
        seen
    }

    #[test]
    fn runs_to_one_address_go_out_as_gso_sends_and_arrive_as_separate_datagrams() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        c.set_nonblocking(true).unwrap();
        let (to_b, to_c) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        // Five full datagrams and a short one to b, two to c, one more to b.
        let plan: Vec<(SocketAddr, usize)> = [1000, 1000, 1000, 1000, 1000, 300]
            .into_iter()
            .map(|len| (to_b, len))
            .chain([(to_c, 700), (to_c, 700), (to_b, 50)])
            .collect();
        let mut out = Batch::new(16);
        for (i, (to, len)) in plan.iter().enumerate() {
            let slot = out.next_free().unwrap();
            slot[24..24 + len].fill(i as u8);
            assert!(out.push(*to, 24, *len));
        }
        let mut gso = true;
        let sent = out.send(a.as_raw_fd(), &mut gso);
        assert_eq!(sent.datagrams, plan.len());
        assert!(gso, "loopback does UDP GSO");
        assert_eq!(sent.gso_runs, 2, "b's six and c's two");
        let expect = |to: SocketAddr| -> Vec<Vec<u8>> {
            plan.iter()
                .enumerate()
                .filter(|(_, (t, _))| *t == to)
                .map(|(i, (_, len))| vec![i as u8; *len])
                .collect()
        };
        assert_eq!(drain(&b, 7), expect(to_b));
        assert_eq!(drain(&c, 2), expect(to_c));

        // Without GSO the same batch goes out datagram by datagram.
        for (i, (to, len)) in plan.iter().enumerate() {
            let slot = out.next_free().unwrap();
            slot[24..24 + len].fill(i as u8);
            assert!(out.push(*to, 24, *len));
        }
        let sent = out.send(a.as_raw_fd(), &mut false);
        assert_eq!((sent.datagrams, sent.gso_runs), (plan.len(), 0));
        assert_eq!(drain(&b, 7), expect(to_b));
        assert_eq!(drain(&c, 2), expect(to_c));
    }

    #[test]
    fn a_gro_read_holds_several_datagrams_that_split_back_by_segment_size() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        enable_gro(b.as_raw_fd()).unwrap();
        let to = b.local_addr().unwrap();
        let lens = [1200, 1200, 1200, 1200, 1200, 500];
        let mut out = Batch::new(8);
        for (i, len) in lens.iter().enumerate() {
            let slot = out.next_free().unwrap();
            slot[..*len].fill(i as u8);
            assert!(out.push(to, 0, *len));
        }
        assert_eq!(out.send(a.as_raw_fd(), &mut true).gso_runs, 1);
        let mut got = Batch::with_slot_size(4, GRO_SLOT);
        let mut datagrams = Vec::new();
        let mut coalesced = false;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while datagrams.len() < lens.len() && std::time::Instant::now() < deadline {
            match got.recv(b.as_raw_fd(), 0) {
                Ok(n) => {
                    for i in 0..n {
                        let segment = got.segment_size(i);
                        let (_, slot, start, len) = got.datagram_mut(i).unwrap();
                        coalesced |= segment < len;
                        datagrams
                            .extend(slot[start..start + len].chunks(segment).map(<[u8]>::to_vec));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("recvmmsg: {e}"),
            }
        }
        assert!(coalesced, "the kernel handed the run over in one read");
        let expected: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, l)| vec![i as u8; *l])
            .collect();
        assert_eq!(datagrams, expected);
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
