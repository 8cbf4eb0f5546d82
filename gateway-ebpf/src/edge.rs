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
    ETH_HDR_LEN, ETHERTYPE_IPV4, EthHdr, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IcmpHdr, Ipv4Hdr,
    TcpHdr, UdpHdr, fragment, header_at, ipv4_lengths,
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
    let l4_len = total_len - header_len;
    match ip.protocol {
        IPPROTO_TCP => {
            let tcp: &TcpHdr = header_at(ctx, l4).ok_or(EdgeStat::MalformedL4)?;
            let data_offset = ((tcp.offset_flags[0] >> 4) as usize) * 4;
            if data_offset < 20 || data_offset > l4_len {
                return Err(EdgeStat::MalformedL4);
            }
            Ok(EdgeStat::Tcp)
        }
        IPPROTO_UDP => {
            let udp: &UdpHdr = header_at(ctx, l4).ok_or(EdgeStat::MalformedL4)?;
            let udp_len = u16::from_be_bytes(udp.len) as usize;
            // A first fragment carries only part of the datagram the UDP length covers.
            if l4_len < 8 || udp_len < 8 || (!more_fragments && udp_len > l4_len) {
                return Err(EdgeStat::MalformedL4);
            }
            Ok(EdgeStat::Udp)
        }
        IPPROTO_ICMP => {
            header_at::<IcmpHdr>(ctx, l4).ok_or(EdgeStat::MalformedL4)?;
            if l4_len < 8 {
                return Err(EdgeStat::MalformedL4);
            }
            Ok(EdgeStat::Icmp)
        }
        _ => Ok(EdgeStat::OtherProtocol),
    }
}
