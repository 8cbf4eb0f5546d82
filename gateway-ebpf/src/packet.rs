//! Bounds-checked access to Ethernet, IPv4, TCP, UDP and ICMP headers in an XDP frame.
//!
//! Header structs use byte fields only: the IPv4 header after 14 bytes of Ethernet is
//! not 4-byte aligned, so wider fields would be misaligned loads.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;

pub const ETH_HDR_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type: [u8; 2],
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub total_len: [u8; 2],
    pub id: [u8; 2],
    pub flags_frag: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub check: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

#[repr(C)]
pub struct TcpHdr {
    pub src_port: [u8; 2],
    pub dst_port: [u8; 2],
    pub seq: [u8; 4],
    pub ack: [u8; 4],
    pub offset_flags: [u8; 2],
    pub window: [u8; 2],
    pub check: [u8; 2],
    pub urgent: [u8; 2],
}

#[repr(C)]
pub struct UdpHdr {
    pub src_port: [u8; 2],
    pub dst_port: [u8; 2],
    pub len: [u8; 2],
    pub check: [u8; 2],
}

#[repr(C)]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub check: [u8; 2],
    pub rest: [u8; 4],
}

/// A `T` at `offset` bytes into the frame, if the whole `T` lies inside it.
#[inline(always)]
pub fn header_at<T>(ctx: &XdpContext, offset: usize) -> Option<&T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    // SAFETY: the range [start+offset, start+offset+size_of::<T>()) was just checked to
    // lie inside the frame, and T has alignment 1 (byte fields only).
    Some(unsafe { &*((start + offset) as *const T) })
}

/// Frame length in bytes.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

/// IPv4 fragment offset in 8-byte units and the more-fragments flag.
#[inline(always)]
pub fn fragment(ip: &Ipv4Hdr) -> (u16, bool) {
    let v = u16::from_be_bytes(ip.flags_frag);
    (v & 0x1fff, v & 0x2000 != 0)
}

/// Header length and total length of the IPv4 header at `ip`, if they are consistent
/// with each other and with the frame: version 4, IHL ≥ 5, header ≤ total length ≤
/// the bytes after the Ethernet header (trailing Ethernet padding is allowed).
#[inline(always)]
pub fn ipv4_lengths(ctx: &XdpContext, ip: &Ipv4Hdr) -> Option<(usize, usize)> {
    if ip.version_ihl >> 4 != 4 {
        return None;
    }
    let header_len = ((ip.version_ihl & 0x0f) as usize) * 4;
    let total_len = u16::from_be_bytes(ip.total_len) as usize;
    if header_len < 20 || total_len < header_len || ETH_HDR_LEN + total_len > frame_len(ctx) {
        return None;
    }
    Some((header_len, total_len))
}
