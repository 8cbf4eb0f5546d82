//! AF_XDP sockets (XSK) for the data plane's AF_XDP mode (architecture §4): a socket
//! bound to one rx queue of one interface, its UMEM (the frames the kernel copies
//! steered packets into) and the two rings the receive side needs, the fill ring
//! (free frames handed to the kernel) and the rx ring (frames it filled).
//!
//! Written against `linux/if_xdp.h` through `libc` rather than with a crate: the pure
//! Rust one (`xdpilone`) is EUPL-1.2, a copyleft licence this Apache-2.0 project does
//! not take in, and `xsk-rs` compiles libxdp and libbpf from C and loads libxdp's own
//! XDP program beside ours.
//!
//! Sockets bind in copy mode: the kernel copies each frame (and the XDP metadata in
//! front of it) into the UMEM. That works on every driver with XDP, veth included;
//! zero-copy needs driver support (ENA has it, veth does not) and is not used yet.
//! Only receiving is implemented: the workers send through their UDP sockets.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

/// Bytes per UMEM frame (one page: the largest aligned chunk the kernel accepts).
pub const FRAME_SIZE: usize = gateway_ebpf_common::XSK_FRAME_SIZE;
/// Frames per socket (and entries of its fill and rx rings): 4 MiB of UMEM.
pub const FRAMES: u32 = 1024;

/// One mmap'ed ring: a producer and a consumer index shared with the kernel, flags, and
/// `size` descriptors of type `T`.
struct Ring<T> {
    map: NonNull<libc::c_void>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<T>,
    mask: u32,
}

impl<T> Ring<T> {
    /// Maps the ring of `fd` at page offset `pgoff` with the kernel's `offsets`.
    fn map(fd: RawFd, offsets: &libc::xdp_ring_offset, size: u32, pgoff: u64) -> io::Result<Self> {
        let map_len = offsets.desc as usize + size as usize * size_of::<T>();
        // SAFETY: a new mapping at an address the kernel picks (null hint, no MAP_FIXED),
        // so it cannot overlap memory Rust owns; the kernel checks `pgoff` and `map_len`
        // against the ring it created for `fd` and fails the call otherwise.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as libc::off_t,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let at = |offset: u64| {
            // SAFETY: the producer, consumer and flags offsets the kernel reported lie
            // below `offsets.desc`, and the descriptors end at `map_len`, so every
            // `offset` passed here is inside the mapping that just succeeded.
            NonNull::new(unsafe { map.cast::<u8>().add(offset as usize) })
                .expect("inside a successful mapping")
        };
        Ok(Self {
            map: NonNull::new(map).expect("mmap succeeded"),
            map_len,
            producer: at(offsets.producer).cast(),
            consumer: at(offsets.consumer).cast(),
            flags: at(offsets.flags).cast(),
            descs: at(offsets.desc).cast(),
            mask: size - 1,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: `producer` points at a 4-byte aligned u32 inside the mapping, which
        // stays mapped until `self` is dropped (the reference borrows `self`). The kernel
        // updates it concurrently, which is why it is only accessed as an AtomicU32.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`: an aligned u32 in the live mapping, only accessed
        // atomically.
        unsafe { self.consumer.as_ref() }
    }

    fn flags(&self) -> u32 {
        // SAFETY: as for `producer`: an aligned u32 in the live mapping, only accessed
        // atomically.
        unsafe { self.flags.as_ref() }.load(Ordering::Relaxed)
    }

    /// Pointer to descriptor `index` (taken modulo the ring size).
    fn desc(&self, index: u32) -> *mut T {
        // SAFETY: ring sizes are powers of two (FRAMES, COMPLETION; the kernel refuses
        // others) and mask = size - 1, so `index & mask` < size and the pointer stays
        // inside the `size` descriptors of the mapping.
        unsafe { self.descs.as_ptr().add((index & self.mask) as usize) }
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the range `map` mapped. References into it (`producer`,
        // `consumer`, `flags`) borrow the ring, so none outlives this drop, and the raw
        // descriptor pointers of `desc` are used only while the ring is borrowed.
        unsafe { libc::munmap(self.map.as_ptr(), self.map_len) };
    }
}

/// Counters the kernel keeps for a socket (`XDP_STATISTICS`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct XskStats {
    /// Frames dropped for reasons other than a full rx ring (no free frame, too long
    /// for a chunk).
    pub rx_dropped: u64,
    /// Frames dropped because the rx ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found no free frame in the fill ring (such frames are also in
    /// `rx_dropped`).
    pub fill_ring_empty: u64,
}

/// The frames: an anonymous mapping of [`FRAMES`] × [`FRAME_SIZE`] bytes.
struct Umem {
    base: NonNull<u8>,
    len: usize,
}

impl Umem {
    fn new() -> io::Result<Self> {
        let len = FRAMES as usize * FRAME_SIZE;
        // SAFETY: a new anonymous mapping at an address the kernel picks (null hint, no
        // MAP_FIXED), so it cannot overlap memory Rust owns.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<u8>()).expect("mmap succeeded");
        Ok(Self { base, len })
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`. The socket that registered it
        // is closed by now: `Xsk` drops `fd` before `umem` (field order), and `bind`
        // creates the UMEM before the socket so an early return drops them in that order
        // too. Chunks handed out by `Xsk::receive` borrow the socket and are gone.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// An AF_XDP socket bound to one rx queue of one interface, receiving.
pub struct Xsk {
    // Field order is drop order: the rings are unmapped, the socket closes, and only
    // then is the UMEM unmapped.
    fill: Ring<u64>,
    rx: Ring<libc::xdp_desc>,
    /// The completion ring is required by the kernel for a UMEM but unused here.
    _completion: Ring<u64>,
    fd: OwnedFd,
    /// Unmapped after the socket is closed.
    umem: Umem,
}

// SAFETY: every raw pointer in an `Xsk` (the rings' and the UMEM's) points into an
// mmap that this value alone owns and unmaps on drop; no other Rust value holds them, and
// the kernel, the other party to the rings, does not care which thread we run on. `Xsk`
// is not Sync and `receive` takes `&mut self`, so after the move only the receiving
// thread touches the rings and the UMEM.
unsafe impl Send for Xsk {}

fn setsockopt<T>(fd: RawFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: the kernel reads `size_of::<T>()` bytes from `value`, a live reference for
    // the duration of the call, and keeps no pointer to it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads socket option `name` of `fd` as a `T`.
///
/// # Safety
///
/// `T` must be a plain C struct (integers and arrays of them, such as the `xdp_*`
/// structs) for which all-zero bytes and any bytes the kernel writes are a valid value.
unsafe fn getsockopt<T>(fd: RawFd, name: libc::c_int) -> io::Result<T> {
    // SAFETY: by the caller's contract all-zero bytes are a valid T.
    let mut value: T = unsafe { std::mem::zeroed() };
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is a live local of `len` bytes; the kernel writes at most `len`
    // bytes into it, any of which make a valid T (caller's contract), and keeps no
    // pointer after the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            name,
            (&mut value as *mut T).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

impl Xsk {
    /// Creates a socket with its own UMEM of [`FRAMES`] frames and binds it, in copy
    /// mode, to rx queue `queue` of `ifindex` (in the calling thread's network
    /// namespace). Fails with `InvalidInput` when the interface has no such queue.
    pub fn bind(ifindex: u32, queue: u32) -> io::Result<Self> {
        // Created before the socket, so that an early return closes the socket first.
        let umem = Umem::new()?;
        // SAFETY: socket(2) takes no pointers; the result is checked below.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is an open descriptor socket(2) just returned, owned by nothing
        // else; the OwnedFd becomes its only owner.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let reg = libc::xdp_umem_reg {
            addr: umem.base.as_ptr() as u64,
            len: umem.len as u64,
            chunk_size: FRAME_SIZE as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        let setup = || -> io::Result<(Ring<u64>, Ring<libc::xdp_desc>, Ring<u64>)> {
            setsockopt(fd.as_raw_fd(), libc::XDP_UMEM_REG, &reg)?;
            setsockopt(fd.as_raw_fd(), libc::XDP_UMEM_FILL_RING, &FRAMES)?;
            setsockopt(fd.as_raw_fd(), libc::XDP_UMEM_COMPLETION_RING, &COMPLETION)?;
            setsockopt(fd.as_raw_fd(), libc::XDP_RX_RING, &FRAMES)?;
            // SAFETY: xdp_mmap_offsets is plain u64 fields; any bytes are a valid value.
            let offsets: libc::xdp_mmap_offsets =
                unsafe { getsockopt(fd.as_raw_fd(), libc::XDP_MMAP_OFFSETS) }?;
            let fill = Ring::map(
                fd.as_raw_fd(),
                &offsets.fr,
                FRAMES,
                libc::XDP_UMEM_PGOFF_FILL_RING,
            )?;
            let completion = Ring::map(
                fd.as_raw_fd(),
                &offsets.cr,
                COMPLETION,
                libc::XDP_UMEM_PGOFF_COMPLETION_RING,
            )?;
            let rx = Ring::map(
                fd.as_raw_fd(),
                &offsets.rx,
                FRAMES,
                libc::XDP_PGOFF_RX_RING as u64,
            )?;
            Ok((fill, rx, completion))
        };
        let (fill, rx, completion) = setup()?;
        let xsk = Self {
            fill,
            rx,
            _completion: completion,
            fd,
            umem,
        };
        // Every frame starts in the fill ring, free for the kernel.
        for frame in 0..FRAMES {
            // SAFETY: frame < FRAMES, the fill ring's size, so `desc` is in bounds (and
            // u64-aligned in the mapping); the kernel reads fill entries only below the
            // producer index, still 0 until the Release store below, so nothing else
            // accesses the entry now.
            unsafe { *xsk.fill.desc(frame) = u64::from(frame) * FRAME_SIZE as u64 };
        }
        xsk.fill.producer().store(FRAMES, Ordering::Release);
        let addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `addr` is a live, initialised sockaddr_xdp and the length is its own;
        // the kernel only reads it during the call.
        let rc = unsafe {
            libc::bind(
                xsk.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(xsk)
    }

    /// The kernel's counters for this socket.
    pub fn stats(&self) -> io::Result<XskStats> {
        // SAFETY: xdp_statistics is plain u64 fields; any bytes are a valid value.
        let s: libc::xdp_statistics =
            unsafe { getsockopt(self.fd.as_raw_fd(), libc::XDP_STATISTICS) }?;
        Ok(XskStats {
            rx_dropped: s.rx_dropped,
            rx_ring_full: s.rx_ring_full,
            fill_ring_empty: s.rx_fill_ring_empty_descs,
        })
    }

    /// Hands up to `max` received frames to `handle` as (chunk, start, len): the frame
    /// is `chunk[start..start + len]`, and what XDP put in front of it as metadata ends
    /// at `start`. The frames go back to the kernel afterwards; returns how many there
    /// were.
    pub fn receive(
        &mut self,
        max: usize,
        mut handle: impl FnMut(&mut [u8], usize, usize),
    ) -> usize {
        let consumer = self.rx.consumer().load(Ordering::Relaxed);
        let available = self
            .rx
            .producer()
            .load(Ordering::Acquire)
            .wrapping_sub(consumer);
        let n = available.min(max as u32);
        if n == 0 {
            return 0;
        }
        let mut fill_at = self.fill.producer().load(Ordering::Relaxed);
        for i in 0..n {
            // SAFETY: `desc` masks the index into the ring. Entries consumer..producer
            // are descriptors the kernel finished (the Acquire load of `producer` makes
            // its writes visible) and does not touch again until we move the consumer
            // past them, after this loop.
            let desc = unsafe { self.rx.desc(consumer.wrapping_add(i)).read() };
            let base = desc.addr as usize & !(FRAME_SIZE - 1);
            let start = desc.addr as usize - base;
            if base + FRAME_SIZE <= self.umem.len && start + desc.len as usize <= FRAME_SIZE {
                // SAFETY: base + FRAME_SIZE <= umem.len was just checked, so the chunk
                // lies inside the live UMEM mapping. The kernel handed this chunk over in
                // an rx descriptor and does not write it again until we return it
                // through the fill ring (published after the loop); each chunk is in one
                // descriptor only, and `&mut self` keeps any other Rust access out, so
                // the slice is unaliased for as long as `handle` holds it.
                let chunk = unsafe {
                    std::slice::from_raw_parts_mut(self.umem.base.as_ptr().add(base), FRAME_SIZE)
                };
                handle(chunk, start, desc.len as usize);
            }
            // SAFETY: `desc` masks the index into the ring. The fill ring has an entry
            // per UMEM frame and every frame is in exactly one place (fill ring, rx ring,
            // or here), so the entry at `fill_at`, past everything produced so far, is
            // not one the kernel has yet to consume; it reads it only after the producer
            // store below.
            unsafe { *self.fill.desc(fill_at) = base as u64 };
            fill_at = fill_at.wrapping_add(1);
        }
        self.rx
            .consumer()
            .store(consumer.wrapping_add(n), Ordering::Release);
        self.fill.producer().store(fill_at, Ordering::Release);
        if self.fill.flags() & libc::XDP_RING_NEED_WAKEUP != 0 {
            // SAFETY: a zero-length receive into a null buffer with null address
            // pointers: the kernel writes no memory, it only wakes its rx side up.
            unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
        }
        n as usize
    }
}

/// Entries of the (unused) completion ring.
const COMPLETION: u32 = 64;

impl AsFd for Xsk {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Xsk {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
