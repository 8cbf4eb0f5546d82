//! The TAP device that is the socket-mode seam (architecture §4): data-plane workers
//! write decrypted client packets into it (where `inner` runs as native XDP) and read
//! from it the replies `target` redirects in. One file descriptor per queue.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read, Write},
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// Most queues Linux gives a TAP device (`MAX_TAP_QUEUES`).
pub const MAX_QUEUES: usize = 256;

/// A multi-queue TAP device; dropping the last queue removes it.
pub struct Tap {
    name: String,
    queues: Vec<File>,
    mac: [u8; 6],
    ifindex: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("interface name {0:?} must be 1 to 15 bytes of letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error("TAP {name}: {what}: {source}")]
    Io {
        name: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

impl Tap {
    /// Creates (or attaches to) TAP `name` with `queues` queues, no packet-info header,
    /// ARP off (neighbours of client leases resolve to the device itself), brought up
    /// with `addr`/`prefix_len` as the gateway's end of the tunnel subnet.
    pub fn create(
        name: &str,
        queues: usize,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<Self, TapError> {
        if name.is_empty()
            || name.len() > 15
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(TapError::BadName(name.to_string()));
        }
        let err = |what| {
            move |source| TapError::Io {
                name: name.to_string(),
                what,
                source,
            }
        };
        let mut files = Vec::with_capacity(queues.max(1));
        for _ in 0..queues.max(1) {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .map_err(err("opening /dev/net/tun"))?;
            let mut req = ifreq(name);
            req.ifr_ifru.ifru_flags =
                (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE) as libc::c_short;
            // SAFETY: TUNSETIFF reads and writes one ifreq through the pointer: `req` is a
            // live local for the call, and its name is NUL-terminated (at most 15 bytes,
            // checked above, copied into the zeroed 16-byte ifr_name).
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
            if rc < 0 {
                return Err(err("TUNSETIFF")(io::Error::last_os_error()));
            }
            files.push(file);
        }
        let control = control_socket().map_err(err("opening a control socket"))?;
        let mut flags = ifreq(name);
        ioctl(&control, libc::SIOCGIFFLAGS, &mut flags).map_err(err("reading flags"))?;
        // SAFETY: the union holds only plain integer members and `ifreq` zeroed it, so
        // any member reads as a valid value; SIOCGIFFLAGS filled this one.
        let current = unsafe { flags.ifr_ifru.ifru_flags };
        flags.ifr_ifru.ifru_flags = current | (libc::IFF_UP | libc::IFF_NOARP) as libc::c_short;
        let mut address = ifreq(name);
        address.ifr_ifru.ifru_addr = sockaddr(addr);
        ioctl(&control, libc::SIOCSIFADDR, &mut address).map_err(err("setting the address"))?;
        let mut netmask = ifreq(name);
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0);
        netmask.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::from(mask));
        ioctl(&control, libc::SIOCSIFNETMASK, &mut netmask).map_err(err("setting the netmask"))?;
        ioctl(&control, libc::SIOCSIFFLAGS, &mut flags).map_err(err("bringing it up"))?;
        let mut hw = ifreq(name);
        ioctl(&control, libc::SIOCGIFHWADDR, &mut hw).map_err(err("reading the MAC"))?;
        // SAFETY: as for the flags: a plain-integer union member, here the hwaddr that
        // SIOCGIFHWADDR filled.
        let sa_data = unsafe { hw.ifr_ifru.ifru_hwaddr.sa_data };
        let mut mac = [0u8; 6];
        for (m, b) in mac.iter_mut().zip(sa_data) {
            *m = b as u8;
        }
        let mut index = ifreq(name);
        ioctl(&control, libc::SIOCGIFINDEX, &mut index).map_err(err("reading the index"))?;
        // SAFETY: as for the flags: a plain-integer union member, here the ifindex that
        // SIOCGIFINDEX filled.
        let ifindex = unsafe { index.ifr_ifru.ifru_ifindex } as u32;
        Ok(Self {
            name: name.to_string(),
            queues: files,
            mac,
            ifindex,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn queues(&self) -> usize {
        self.queues.len()
    }

    /// Writes one Ethernet frame into queue `q`.
    pub fn write_frame(&self, q: usize, frame: &[u8]) -> io::Result<()> {
        let n = (&self.queues[q]).write(frame)?;
        if n != frame.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short TAP write"));
        }
        Ok(())
    }

    /// Reads one Ethernet frame from queue `q` into `buf` (blocking unless the queue was
    /// made non-blocking); returns its length.
    pub fn read_frame(&self, q: usize, buf: &mut [u8]) -> io::Result<usize> {
        (&self.queues[q]).read(buf)
    }

    /// Makes queue `q` non-blocking (reads return `WouldBlock` when empty).
    pub fn set_nonblocking(&self, q: usize) -> io::Result<()> {
        let fd = self.queues[q].as_raw_fd();
        // SAFETY: F_GETFL takes no pointer argument; `fd` is open, owned by
        // `self.queues[q]`, which `&self` keeps alive for the call.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above; F_SETFL's third argument is an int, not a pointer.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The descriptor of queue `q`, for registering with a poller.
    pub fn raw_fd(&self, q: usize) -> i32 {
        self.queues[q].as_raw_fd()
    }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is a name array and a union of plain integer members (no pointer is
    // read by the ioctls used here), so all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes of plain integers (transmute
    // checks the sizes), so every bit pattern of one is a valid other; the kernel reads
    // it as a sockaddr_in because sa_family is AF_INET.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is an open descriptor socket(2) just returned, owned by nothing else;
    // the OwnedFd becomes its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl(socket: &OwnedFd, request: libc::Ioctl, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: every request passed here (SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCSIFADDR,
    // SIOCSIFNETMASK, SIOCGIFHWADDR, SIOCGIFINDEX) reads and writes exactly one ifreq
    // through the pointer; `req` is an exclusive borrow, live for the call, with a
    // NUL-terminated name built by `ifreq`.
    if unsafe { libc::ioctl(socket.as_raw_fd(), request, req as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
