//! Types shared by the XDP programs (`gateway-ebpf`) and userspace (`gateway`): map
//! indexes and values, all `#[repr(C)]`/`#[repr(u32)]` with fixed layouts.
#![no_std]

/// What the `edge` program saw in a frame; one per-CPU counter each (`EDGE_STATS`).
///
/// The order is the counter index and part of the map's ABI with userspace.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeStat {
    /// Frames passed to the kernel stack.
    Pass = 0,
    /// Frames dropped.
    Drop,
    /// Not IPv4 (ARP, IPv6, VLAN-tagged …): passed untouched.
    NonIpv4,
    /// IPv4 TCP with a complete header.
    Tcp,
    /// IPv4 UDP with a complete header.
    Udp,
    /// IPv4 ICMP with a complete header.
    Icmp,
    /// IPv4 with another protocol number: passed untouched.
    OtherProtocol,
    /// IPv4 header carried options (IHL > 5); the L4 header was found after them.
    Ipv4Options,
    /// A non-first fragment: it has no L4 header, so no ports are read from it.
    Fragment,
    /// Shorter than an Ethernet header.
    TruncatedEthernet,
    /// IPv4 header truncated, or version/IHL/total length inconsistent with the frame.
    MalformedIpv4,
    /// TCP/UDP/ICMP header truncated or with an impossible length field.
    MalformedL4,
}

impl EdgeStat {
    /// Every counter, in index order.
    pub const ALL: [EdgeStat; 12] = [
        EdgeStat::Pass,
        EdgeStat::Drop,
        EdgeStat::NonIpv4,
        EdgeStat::Tcp,
        EdgeStat::Udp,
        EdgeStat::Icmp,
        EdgeStat::OtherProtocol,
        EdgeStat::Ipv4Options,
        EdgeStat::Fragment,
        EdgeStat::TruncatedEthernet,
        EdgeStat::MalformedIpv4,
        EdgeStat::MalformedL4,
    ];
    /// Number of entries in `EDGE_STATS`.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// Stable metric-style name.
    pub const fn name(self) -> &'static str {
        match self {
            EdgeStat::Pass => "pass",
            EdgeStat::Drop => "drop",
            EdgeStat::NonIpv4 => "non_ipv4",
            EdgeStat::Tcp => "tcp",
            EdgeStat::Udp => "udp",
            EdgeStat::Icmp => "icmp",
            EdgeStat::OtherProtocol => "other_protocol",
            EdgeStat::Ipv4Options => "ipv4_options",
            EdgeStat::Fragment => "fragment",
            EdgeStat::TruncatedEthernet => "truncated_ethernet",
            EdgeStat::MalformedIpv4 => "malformed_ipv4",
            EdgeStat::MalformedL4 => "malformed_l4",
        }
    }
}

/// Name of the per-CPU counter array of the `edge` program.
pub const EDGE_STATS_MAP: &str = "EDGE_STATS";
/// Name of the `edge` XDP program in the object file.
pub const EDGE_PROGRAM: &str = "edge";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_indexes_follow_all() {
        for (i, s) in EdgeStat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{} out of order", s.name());
        }
    }
}
