//! How translated packets leave through each target interface, decided when `target`
//! is attached: by XDP redirect where the interface's driver delivers a redirected
//! frame whatever runs at the far end, else through the kernel's forwarding path.

use serde::{Deserialize, Serialize};

/// The path `inner` sends a target interface's translated packets on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Forwarding {
    /// `bpf_fib_lookup` and a devmap redirect (falling back to the kernel for a frame
    /// whose next hop has no neighbour entry yet or whose TTL expires).
    XdpRedirect,
    /// `XDP_PASS` after translation: the kernel routes, resolves neighbours and
    /// transmits.
    Kernel,
}

/// What was decided for one target interface, as `gateway dataplane` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSetup {
    pub interface: String,
    pub ifindex: u32,
    /// The kernel driver (`ethtool -i`), or `unknown` when the kernel would not say.
    pub driver: String,
    /// Where `target` runs: `native` (in the driver) or `generic` (on socket buffers).
    pub xdp_mode: String,
    pub forwarding: Forwarding,
    /// Why this path.
    pub reason: String,
}

/// Drivers whose XDP transmit (`ndo_xdp_xmit`) delivers redirected frames on its own:
/// the ENA of EC2 instances, virtio-net, and common physical NICs.
const REDIRECT_DRIVERS: &[&str] = &[
    "ena",
    "virtio_net",
    "ixgbe",
    "i40e",
    "ice",
    "igb",
    "igc",
    "mlx4_en",
    "mlx5_core",
    "bnxt_en",
];

/// The path for a target interface with this driver, and why.
pub fn forwarding_for(driver: &str) -> (Forwarding, String) {
    if REDIRECT_DRIVERS.contains(&driver) {
        return (
            Forwarding::XdpRedirect,
            format!("driver {driver} transmits redirected frames itself"),
        );
    }
    let reason = match driver {
        "veth" => "veth: a frame redirected into it is dropped unless its peer (the \
                   target host's end, not the gateway's to configure) runs XDP or GRO; \
                   the kernel forwards"
            .to_string(),
        "bridge" => "a bridge has no XDP transmit; the kernel forwards".to_string(),
        "unknown" => "driver unknown; the kernel forwards".to_string(),
        other => format!("driver {other} is not known to take XDP redirects; the kernel forwards"),
    };
    (Forwarding::Kernel, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ena_redirects_and_veth_bridges_and_unknown_drivers_use_the_kernel() {
        assert_eq!(forwarding_for("ena").0, Forwarding::XdpRedirect);
        assert_eq!(forwarding_for("virtio_net").0, Forwarding::XdpRedirect);
        for driver in ["veth", "bridge", "tun", "unknown", "vxlan"] {
            let (path, reason) = forwarding_for(driver);
            assert_eq!(path, Forwarding::Kernel, "{driver}");
            assert!(reason.contains("kernel forwards"), "{driver}: {reason}");
        }
        assert!(forwarding_for("veth").1.contains("peer"));
    }
}
