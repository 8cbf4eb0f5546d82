//! Interfaces of the gateway's network namespace, as the XDP maps name them.

use std::net::Ipv4Addr;

/// What the XDP programs need to know about a target interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetInterface {
    pub ifindex: u32,
    /// Its primary IPv4 address, which client sources are translated to.
    pub addr: Ipv4Addr,
}

/// Why an interface named in the configuration cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InterfaceError {
    /// The configuration names an interface this network namespace does not have.
    #[error("interface {name:?}: no such interface in this network namespace ({source})")]
    NotFound {
        name: String,
        #[source]
        source: nix::Error,
    },
    /// The host could not list its addresses (not the configuration's fault).
    #[error("interface {name:?}: listing the host's addresses: {source}")]
    Addresses {
        name: String,
        #[source]
        source: nix::Error,
    },
    /// The interface exists but has no IPv4 address (set one up, or pick another).
    #[error("interface {name:?} has no IPv4 address to translate client sources to")]
    NoIpv4 { name: String },
}

/// Resolves an interface of this network namespace: its index and first IPv4 address.
pub fn lookup_interface(name: &str) -> Result<TargetInterface, InterfaceError> {
    let ifindex =
        nix::net::if_::if_nametoindex(name).map_err(|source| InterfaceError::NotFound {
            name: name.to_string(),
            source,
        })?;
    let addrs = nix::ifaddrs::getifaddrs().map_err(|source| InterfaceError::Addresses {
        name: name.to_string(),
        source,
    })?;
    let addr = addrs
        .filter(|a| a.interface_name == name)
        .find_map(|a| a.address?.as_sockaddr_in().map(|sin| sin.ip()))
        .ok_or_else(|| InterfaceError::NoIpv4 {
            name: name.to_string(),
        })?;
    Ok(TargetInterface { ifindex, addr })
}

/// Every IPv4 address of this network namespace's interfaces, with the directed
/// broadcast address of each (from its netmask; /31 and /32 have none), sorted and
/// without repeats: what `inner` refuses as the gateway's own
/// (`Policy::set_gateway_addresses`).
pub fn gateway_addresses() -> nix::Result<Vec<Ipv4Addr>> {
    let mut addresses = Vec::new();
    for interface in nix::ifaddrs::getifaddrs()? {
        let ipv4 = |s: Option<nix::sys::socket::SockaddrStorage>| {
            s.and_then(|s| s.as_sockaddr_in().map(|sin| sin.ip()))
        };
        let Some(addr) = ipv4(interface.address) else {
            continue;
        };
        addresses.push(addr);
        if let Some(broadcast) = ipv4(interface.netmask).and_then(|m| directed_broadcast(addr, m)) {
            addresses.push(broadcast);
        }
    }
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

/// The directed broadcast address of `addr`'s network (all host bits set), if `netmask`
/// is a prefix of at most 30 bits: a /31 (RFC 3021) or /32 has no broadcast address.
pub fn directed_broadcast(addr: Ipv4Addr, netmask: Ipv4Addr) -> Option<Ipv4Addr> {
    let net = ipnet::Ipv4Net::with_netmask(addr, netmask).ok()?;
    (net.prefix_len() <= 30).then(|| net.broadcast())
}

/// The kernel driver behind an interface of this network namespace ("veth", "ena",
/// "tun", "bridge", …), as `ethtool -i` shows it (`SIOCETHTOOL` / `ETHTOOL_GDRVINFO`).
pub fn interface_driver(name: &str) -> std::io::Result<String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// `struct ethtool_drvinfo` of `linux/ethtool.h`.
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    const ETHTOOL_GDRVINFO: u32 = 3;
    const SIOCETHTOOL: libc::Ioctl = 0x8946;

    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not an interface name"),
        ));
    }
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    // SAFETY: ifreq is a name array and a union of plain integers and pointers, for all
    // of which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is an open descriptor socket(2) just returned, owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCETHTOOL reads the ifreq (a NUL-terminated name, checked shorter than
    // IFNAMSIZ above, in a zeroed array) and, for ETHTOOL_GDRVINFO, writes one
    // ethtool_drvinfo through ifru_data, which points at `info`: a live, exclusively
    // borrowed local of exactly that layout, for the duration of the call.
    if unsafe {
        libc::ioctl(
            socket.as_raw_fd(),
            SIOCETHTOOL,
            &mut req as *mut libc::ifreq,
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    let len = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..len]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolves_and_unknown_interfaces_do_not() {
        let lo = lookup_interface("lo").unwrap();
        assert_eq!(lo.addr, Ipv4Addr::LOCALHOST);
        assert!(lo.ifindex >= 1);
        let err = lookup_interface("gw-no-such-if").unwrap_err();
        assert!(matches!(&err, InterfaceError::NotFound { name, .. } if name == "gw-no-such-if"));
        assert!(err.to_string().contains("no such interface"), "{err}");
    }

    #[test]
    fn directed_broadcasts_follow_the_netmask() {
        let b = |addr: [u8; 4], mask: [u8; 4]| directed_broadcast(addr.into(), mask.into());
        assert_eq!(
            b([10, 0, 1, 9], [255, 255, 0, 0]),
            Some([10, 0, 255, 255].into())
        );
        assert_eq!(
            b([10, 200, 0, 1], [255, 255, 252, 0]),
            Some([10, 200, 3, 255].into())
        );
        assert_eq!(
            b([127, 0, 0, 1], [255, 0, 0, 0]),
            Some([127, 255, 255, 255].into())
        );
        assert_eq!(
            b([192, 0, 2, 1], [255, 255, 255, 252]),
            Some([192, 0, 2, 3].into())
        );
        // Point-to-point and host addresses have none; a netmask with holes is no prefix.
        assert_eq!(b([192, 0, 2, 1], [255, 255, 255, 254]), None);
        assert_eq!(b([192, 0, 2, 1], [255, 255, 255, 255]), None);
        assert_eq!(b([192, 0, 2, 1], [255, 0, 255, 0]), None);
    }

    #[test]
    fn gateway_addresses_include_loopback_and_its_broadcast() {
        let all = gateway_addresses().unwrap();
        assert!(all.contains(&Ipv4Addr::LOCALHOST), "{all:?}");
        assert!(all.contains(&Ipv4Addr::new(127, 255, 255, 255)), "{all:?}");
        assert!(
            all.is_sorted() && all.windows(2).all(|w| w[0] != w[1]),
            "{all:?}"
        );
    }

    #[test]
    fn drivers_are_read_by_interface_name() {
        // Loopback has no ethtool driver information; an unknown name is an error.
        assert!(interface_driver("gw-no-such-if").is_err());
        assert!(interface_driver("").is_err());
        assert!(interface_driver("a-name-far-too-long").is_err());
    }
}
