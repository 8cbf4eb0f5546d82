//! The address pool over the client CIDR: one lease per session, released when the
//! session ends, never handed out twice. The first usable address is the gateway's own
//! end of the tunnel subnet (topology subnet), so it is never leased.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Why no lease could be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the client address pool {0} is exhausted")]
    Exhausted(Ipv4Net),
    #[error("{addr} is not a lease of the pool {pool}")]
    NotLeased { addr: Ipv4Addr, pool: Ipv4Net },
}

/// Leases over `client_cidr`: the network address, the gateway's address (the first
/// host) and the broadcast address are never leased.
#[derive(Debug)]
pub struct AddressPool {
    net: Ipv4Net,
    /// One bit per host offset; set = leased.
    used: Vec<u64>,
    leased: usize,
    /// Where the next search starts, so a released address is not reused at once.
    cursor: u32,
}

impl AddressPool {
    pub fn new(client_cidr: Ipv4Net) -> Self {
        let size = 1u64 << (32 - client_cidr.prefix_len());
        Self {
            net: client_cidr,
            used: vec![0; size.div_ceil(64) as usize],
            leased: 0,
            cursor: 0,
        }
    }

    /// The gateway's address inside the tunnel subnet (pushed as `route-gateway`).
    pub fn gateway_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net.network()) + 1)
    }

    pub fn netmask(&self) -> Ipv4Addr {
        self.net.netmask()
    }

    /// How many addresses can be leased in all.
    pub fn capacity(&self) -> usize {
        self.size() as usize - 3
    }

    pub fn leased(&self) -> usize {
        self.leased
    }

    fn size(&self) -> u32 {
        (1u64 << (32 - self.net.prefix_len())) as u32
    }

    fn is_used(&self, offset: u32) -> bool {
        self.used[(offset / 64) as usize] & (1 << (offset % 64)) != 0
    }

    fn set(&mut self, offset: u32, on: bool) {
        let word = &mut self.used[(offset / 64) as usize];
        if on {
            *word |= 1 << (offset % 64);
        } else {
            *word &= !(1 << (offset % 64));
        }
    }

    /// Leases a free address, round-robin from the last one leased.
    pub fn lease(&mut self) -> Result<Ipv4Addr, PoolError> {
        let size = self.size();
        // Offsets 0 (network), 1 (gateway) and size-1 (broadcast) are never leased.
        let usable = 2..size - 1;
        for step in 0..usable.len() as u32 {
            let offset = usable.start + (self.cursor + step) % usable.len() as u32;
            if !self.is_used(offset) {
                self.set(offset, true);
                self.leased += 1;
                self.cursor = offset + 1 - usable.start;
                return Ok(Ipv4Addr::from(u32::from(self.net.network()) + offset));
            }
        }
        Err(PoolError::Exhausted(self.net))
    }

    /// Returns a lease to the pool.
    pub fn release(&mut self, addr: Ipv4Addr) -> Result<(), PoolError> {
        let not_leased = PoolError::NotLeased {
            addr,
            pool: self.net,
        };
        if !self.net.contains(&addr) {
            return Err(not_leased);
        }
        let offset = u32::from(addr) - u32::from(self.net.network());
        if offset < 2 || offset == self.size() - 1 || !self.is_used(offset) {
            return Err(not_leased);
        }
        self.set(offset, false);
        self.leased -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn pool(cidr: &str) -> AddressPool {
        AddressPool::new(cidr.parse().unwrap())
    }

    #[test]
    fn leases_skip_network_gateway_and_broadcast_until_exhausted() {
        let mut p = pool("10.200.0.0/29");
        assert_eq!(p.gateway_addr(), Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(p.netmask(), Ipv4Addr::new(255, 255, 255, 248));
        assert_eq!(p.capacity(), 5);
        let got: Vec<Ipv4Addr> = (0..5).map(|_| p.lease().unwrap()).collect();
        assert_eq!(
            got,
            (2..7)
                .map(|i| Ipv4Addr::new(10, 200, 0, i))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            p.lease(),
            Err(PoolError::Exhausted("10.200.0.0/29".parse().unwrap()))
        );
        p.release(Ipv4Addr::new(10, 200, 0, 4)).unwrap();
        assert_eq!(p.lease().unwrap(), Ipv4Addr::new(10, 200, 0, 4));
        assert_eq!(p.leased(), 5);
    }

    #[test]
    fn a_released_address_is_not_reused_at_once() {
        let mut p = pool("10.200.0.0/22");
        let a = p.lease().unwrap();
        let b = p.lease().unwrap();
        p.release(a).unwrap();
        let c = p.lease().unwrap();
        assert_ne!(c, a, "round-robin moves on");
        assert_ne!(c, b);
    }

    #[test]
    fn only_leases_can_be_released() {
        let mut p = pool("10.200.0.0/24");
        let a = p.lease().unwrap();
        for bad in [
            "10.200.0.0",
            "10.200.0.1",
            "10.200.0.255",
            "10.201.0.5",
            "10.200.0.77",
        ] {
            assert!(p.release(bad.parse().unwrap()).is_err(), "{bad}");
        }
        p.release(a).unwrap();
        assert!(p.release(a).is_err(), "released twice");
        assert_eq!(p.leased(), 0);
    }

    proptest! {
        /// Against a set model: no address is ever leased twice while held, every lease
        /// is a usable host of the pool, and the count matches.
        #[test]
        fn leases_are_unique(ops in prop::collection::vec(any::<(bool, u8)>(), 1..400)) {
            let mut p = pool("10.200.0.0/26");
            let mut held: Vec<Ipv4Addr> = Vec::new();
            for (lease, pick) in ops {
                if lease || held.is_empty() {
                    match p.lease() {
                        Ok(a) => {
                            prop_assert!(!held.contains(&a));
                            let last = a.octets()[3];
                            prop_assert!((2..63).contains(&last));
                            held.push(a);
                        }
                        Err(_) => prop_assert_eq!(held.len(), p.capacity()),
                    }
                } else {
                    let a = held.swap_remove(pick as usize % held.len());
                    prop_assert!(p.release(a).is_ok());
                }
                prop_assert_eq!(p.leased(), held.len());
                prop_assert_eq!(held.iter().collect::<HashSet<_>>().len(), held.len());
            }
        }
    }
}
