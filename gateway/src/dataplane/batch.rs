//! Batched UDP I/O for the workers: `recvmmsg` into a ring of fixed slots and `sendmmsg`
//! from one, so a burst costs one system call per batch rather than one per datagram.
//!
//! Each slot keeps `HEADROOM` bytes in front of the datagram, so that a worker can put
//! an Ethernet header in front of a decrypted packet, or a data-packet header in front
//! of a packet read from the TAP, without copying.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    ops::Range,
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
    scratch: Scratch,
}

/// Bytes of one UDP_SEGMENT control message (a cmsghdr and a u16 segment size).
// SAFETY: CMSG_SPACE only does arithmetic on its argument; it reads no memory.
const GSO_CONTROL: usize = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
/// [`GSO_CONTROL`] in u64 words: each run's control buffer is u64-aligned, as cmsghdr
/// needs.
const GSO_CONTROL_WORDS: usize = GSO_CONTROL.div_ceil(size_of::<u64>());

/// What one `recvmmsg` or `sendmmsg` call hands the kernel, besides the slots and
/// addresses: the iovecs, the message headers, the UDP_SEGMENT control buffers and the
/// run lists. Allocated once with room for every slot of the batch, cleared and refilled
/// by each call (never grown: a batch has at most one iovec, header and run per slot).
struct Scratch {
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// [`GSO_CONTROL_WORDS`] per run of a send.
    gso_control: Box<[u64]>,
    runs: Vec<Range<usize>>,
    /// The datagrams of one refused GSO run, as runs of one.
    singles: Vec<Range<usize>>,
}

// SAFETY: the only !Send parts are the raw pointers inside `iovecs` and `headers`. They
// are written at the start of every `Batch::recv` / `Batch::send_runs` call, before the
// system call, and point only into the owning batch's own heap buffers (`bufs`, `addrs`,
// `control`) and into this scratch's `iovecs` and `gso_control`; those heap blocks do not
// move when the batch moves, and are never reallocated (fixed length or fixed capacity).
// The kernel reads and writes through the pointers only during that call, which holds
// `&mut Batch`, and no code reads them after it returns: between calls they are stale
// values that nothing dereferences. Moving the batch to another thread thus shares no
// memory with the thread it left.
unsafe impl Send for Scratch {}

impl Scratch {
    fn new(slots: usize) -> Self {
        Self {
            iovecs: Vec::with_capacity(slots),
            headers: Vec::with_capacity(slots),
            gso_control: vec![0u64; slots * GSO_CONTROL_WORDS].into_boxed_slice(),
            runs: Vec::with_capacity(slots),
            singles: Vec::with_capacity(slots.min(GSO_MAX_SEGMENTS)),
        }
    }
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
            // SAFETY: sockaddr_storage is plain integers and byte arrays (no pointers,
            // references or enums), so all-zero bytes are a valid value.
            addrs: vec![unsafe { std::mem::zeroed() }; slots],
            truncated: vec![false; slots],
            len: 0,
            scratch: Scratch::new(slots),
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
        let Scratch {
            iovecs, headers, ..
        } = &mut self.scratch;
        iovecs.clear();
        for i in 0..n {
            iovecs.push(libc::iovec {
                // SAFETY: `bufs` is n * slot bytes, so slot i starts at i * slot inside
                // it and i * slot + min(headroom, slot) is at most its end.
                iov_base: unsafe { base.add(i * slot + headroom.min(slot)) }.cast(),
                iov_len: room,
            });
        }
        let control = self.control.as_mut_ptr();
        headers.clear();
        for (i, (iov, addr)) in iovecs.iter_mut().zip(&mut self.addrs).enumerate() {
            // SAFETY: mmsghdr is integers and raw pointers only; all-zero bytes (null
            // pointers, zero lengths) are a valid value.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&raw mut *addr).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_iov = &raw mut *iov;
            h.msg_hdr.msg_iovlen = 1;
            // SAFETY: `control` is n * RECV_CONTROL bytes of u64s, so message i's
            // RECV_CONTROL bytes start i * RECV_CONTROL / 8 words in, inside it and
            // u64-aligned as cmsghdr needs.
            h.msg_hdr.msg_control =
                unsafe { control.add(i * RECV_CONTROL / size_of::<u64>()) }.cast();
            h.msg_hdr.msg_controllen = RECV_CONTROL;
            headers.push(h);
        }
        // SAFETY: `headers` holds n initialised headers. Header i points at slot i's
        // `room` bytes after the headroom (iovec i), at `addrs[i]` (a whole
        // sockaddr_storage) and at message i's RECV_CONTROL control bytes, all inside
        // buffers this batch owns, which `&mut self` keeps live and unaliased for the
        // call; the kernel writes within the lengths declared and keeps no pointer after
        // returning.
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
            // SAFETY: header i's control pointer is message i's RECV_CONTROL bytes of
            // `self.control` (u64-aligned, initialised since construction), still live
            // under `&mut self`; the kernel set msg_controllen to what it wrote there,
            // at most RECV_CONTROL, and writes nothing more after returning.
            let segment = unsafe { gro_segment(&h.msg_hdr) };
            self.segments[i] = segment.filter(|&s| s > 0 && s < len).unwrap_or(len);
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
        // The run lists leave the scratch for the call so that `send_runs` may borrow the
        // batch; taking a Vec and putting it back moves it without allocating.
        let mut runs = std::mem::take(&mut self.scratch.runs);
        let mut singles = std::mem::take(&mut self.scratch.singles);
        self.runs(*gso, &mut runs);
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
                        singles.clear();
                        singles.extend(run.map(|i| i..i + 1));
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
        self.scratch.runs = runs;
        self.scratch.singles = singles;
        self.len = 0;
        Sent {
            datagrams: sent,
            gso_runs,
        }
    }

    /// Cuts the batch into `runs` that can each go out as one send.
    fn runs(&self, gso: bool, runs: &mut Vec<Range<usize>>) {
        runs.clear();
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
    }

    /// One `sendmmsg` of `runs` (each a GSO send when longer than one datagram); returns
    /// how many runs went out, or the error of the first.
    fn send_runs(&mut self, fd: RawFd, runs: &[Range<usize>]) -> io::Result<usize> {
        let base = self.bufs.as_mut_ptr();
        let Scratch {
            iovecs,
            headers,
            gso_control,
            ..
        } = &mut self.scratch;
        iovecs.clear();
        for i in runs.iter().flat_map(|r| r.clone()) {
            let (start, len) = self.spans[i];
            iovecs.push(libc::iovec {
                // SAFETY: i < len <= slots, and `push` checked start + len <= slot, so
                // the datagram lies inside slot i of `bufs` (slots * slot bytes).
                iov_base: unsafe { base.add(i * self.slot + start) }.cast(),
                iov_len: len,
            });
        }
        // One aligned control buffer per run: a UDP_SEGMENT cmsg with the segment size.
        gso_control[..GSO_CONTROL_WORDS * runs.len()].fill(0);
        headers.clear();
        let mut iov_at = 0;
        for (k, run) in runs.iter().enumerate() {
            // SAFETY: mmsghdr is integers and raw pointers only; all-zero bytes (null
            // pointers, zero lengths) are a valid value.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&raw mut self.addrs[run.start]).cast();
            h.msg_hdr.msg_namelen = storage_len(&self.addrs[run.start]);
            h.msg_hdr.msg_iov = &raw mut iovecs[iov_at];
            h.msg_hdr.msg_iovlen = run.len();
            iov_at += run.len();
            if run.len() > 1 {
                let buf = &raw mut gso_control[k * GSO_CONTROL_WORDS];
                h.msg_hdr.msg_control = buf.cast();
                h.msg_hdr.msg_controllen = GSO_CONTROL;
                // SAFETY: `buf` is run k's GSO_CONTROL bytes of `gso_control` (k <
                // runs.len() <= slots, and the box has GSO_CONTROL_WORDS words per slot),
                // u64-aligned as cmsghdr needs. msg_controllen = CMSG_SPACE(2) >=
                // size_of::<cmsghdr>(), so CMSG_FIRSTHDR returns `buf` (not null), and the
                // cmsghdr plus its 2 data bytes fit in the buffer; the u16 is written
                // unaligned.
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
        // SAFETY: `headers` holds one initialised header per run. Header k points at run
        // k's iovecs (`iovecs[iov_at..iov_at + run.len()]`, each a datagram inside its
        // slot of `bufs`), at the address of the run's first slot in `addrs` with that
        // address's own length, and at its control buffer of `gso_control` (or null with
        // length 0): all owned by this batch and kept live and unaliased by `&mut self`
        // for the call. The kernel only reads them, and keeps no pointer after returning.
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

    /// Where the scratch buffers are and how large, to check that calls reuse them.
    #[cfg(test)]
    fn scratch_buffers(&self) -> [(usize, usize); 5] {
        let s = &self.scratch;
        [
            (s.iovecs.as_ptr() as usize, s.iovecs.capacity()),
            (s.headers.as_ptr() as usize, s.headers.capacity()),
            (s.gso_control.as_ptr() as usize, s.gso_control.len()),
            (s.runs.as_ptr() as usize, s.runs.capacity()),
            (s.singles.as_ptr() as usize, s.singles.capacity()),
        ]
    }
}

/// The UDP_GRO segment size the kernel put in a received message's control data.
///
/// # Safety
///
/// `msg.msg_control` must point at `msg.msg_controllen` initialised bytes, aligned for
/// `cmsghdr`, that nothing writes during the call (the control area of a message that
/// `recvmmsg` just filled).
unsafe fn gro_segment(msg: &libc::msghdr) -> Option<usize> {
    // SAFETY: by the caller's contract the control area is `msg_controllen` readable,
    // aligned bytes. CMSG_FIRSTHDR and CMSG_NXTHDR return only null or a cmsghdr that,
    // with the `cmsg_len` it declares, lies inside that area, so reading its fields is in
    // bounds; the c_int behind CMSG_DATA is read (unaligned) only when `cmsg_len` says
    // the cmsg holds one.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP
                && (*cmsg).cmsg_type == UDP_GRO
                && (*cmsg).cmsg_len >= libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as usize
            {
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
    // SAFETY: setsockopt reads size_of::<c_int>() bytes from `on`, a live local, during
    // the call only.
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
    // SAFETY: sockaddr_storage is plain integers and byte arrays (no pointers,
    // references or enums), so all-zero bytes are a valid value.
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
            // SAFETY: `storage` is a local we own; sockaddr_storage (128 bytes, aligned to
            // 8) is larger than and aligned for sockaddr_in, so the write is in bounds.
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
            // SAFETY: `storage` is a local we own; sockaddr_storage (128 bytes, aligned to
            // 8) is larger than and aligned for sockaddr_in6, so the write is in bounds.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6) };
        }
    }
    storage
}

/// The kernel's socket address as a `SocketAddr` (IPv4 and IPv6; `None` otherwise).
pub fn from_storage(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in, and
            // every bit pattern is a valid sockaddr_in (plain integers), so the shared
            // reborrow is in bounds and valid; the family says the bytes mean one.
            let sin = unsafe { &*(&raw const *storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6, and
            // every bit pattern is a valid sockaddr_in6 (plain integers), so the shared
            // reborrow is in bounds and valid; the family says the bytes mean one.
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
#[path = "batch_tests.rs"]
mod tests;
