//! `edge`: the program on the public ENI. This first stage parses every frame safely and
//! counts what it saw; malformed IPv4 is dropped, everything else passes untouched.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use gateway_ebpf_common::EdgeStat;

use crate::packet::{
    ETH_HDR_LEN, ETHERTYPE_IPV4, EthHdr, Ipv4Hdr, Transport, fragment, header_at, ipv4_lengths,
    transport,
};

#[map(name = "EDGE_STATS")]
static EDGE_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(EdgeStat::COUNT, 0);

#[xdp]
pub fn edge(ctx: XdpContext) -> u32 {
    match try_edge(&ctx) {
        Ok(seen) => {
            count(seen);
            count(EdgeStat::Pass);
            XDP_PASS
        }
        Err(reason) => {
            count(reason);
            count(EdgeStat::Drop);
            XDP_DROP
        }
    }
}

#[inline(always)]
fn count(stat: EdgeStat) {
    if let Some(slot) = EDGE_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: the slot belongs to this CPU; XDP programs are not preempted on it.
        unsafe { *slot += 1 };
    }
}

/// Classifies a frame: `Ok` is what was seen in a frame to pass, `Err` why it is dropped.
#[inline(always)]
fn try_edge(ctx: &XdpContext) -> Result<EdgeStat, EdgeStat> {
    let eth: &EthHdr = header_at(ctx, 0).ok_or(EdgeStat::TruncatedEthernet)?;
    if u16::from_be_bytes(eth.ether_type) != ETHERTYPE_IPV4 {
        return Ok(EdgeStat::NonIpv4);
    }
    let ip: &Ipv4Hdr = header_at(ctx, ETH_HDR_LEN).ok_or(EdgeStat::MalformedIpv4)?;
    let (header_len, total_len) = ipv4_lengths(ctx, ip).ok_or(EdgeStat::MalformedIpv4)?;
    if header_len > 20 {
        count(EdgeStat::Ipv4Options);
    }
    let (frag_offset, more_fragments) = fragment(ip);
    if frag_offset != 0 {
        return Ok(EdgeStat::Fragment);
    }
    let l4 = ETH_HDR_LEN + header_len;
    match transport(ctx, ip.protocol, l4, total_len - header_len, more_fragments) {
        Ok(Transport::Tcp { .. }) => Ok(EdgeStat::Tcp),
        Ok(Transport::Udp { .. }) => Ok(EdgeStat::Udp),
        Ok(Transport::Icmp { .. }) => Ok(EdgeStat::Icmp),
        Ok(Transport::Other) => Ok(EdgeStat::OtherProtocol),
        Err(()) => Err(EdgeStat::MalformedL4),
    }
}
