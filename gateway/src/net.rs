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
}
