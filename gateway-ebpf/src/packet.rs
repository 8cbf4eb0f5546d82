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
    const { assert!(align_of::<T>() == 1, "headers must have byte fields only") };
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    // SAFETY: [start + offset, start + offset + size_of::<T>()) was just checked to lie
    // inside the frame, which stays valid for this program run; T has alignment 1
    // (asserted above at compile time), and the Ts used here (the header structs above
    // and byte arrays) are byte fields only, so any bytes are a valid T.
    Some(unsafe { &*((start + offset) as *const T) })
}

/// A mutable `T` at `offset` bytes into the frame, if the whole `T` lies inside it.
#[inline(always)]
#[allow(clippy::mut_from_ref)]
pub fn header_at_mut<T>(ctx: &XdpContext, offset: usize) -> Option<&mut T> {
    const { assert!(align_of::<T>() == 1, "headers must have byte fields only") };
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    // SAFETY: in bounds, aligned and valid as in `header_at`. The frame belongs to this
    // program run alone (no other CPU sees it), and callers hold at most one reference
    // to each header at a time and none across a helper that moves the frame.
    Some(unsafe { &mut *((start + offset) as *mut T) })
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

/// Whether `addr` lies in `network`/`netmask` (all network byte order); an all-zero
/// netmask (no network configured) contains nothing.
#[inline(always)]
pub fn in_network(addr: [u8; 4], network: [u8; 4], netmask: [u8; 4]) -> bool {
    u32::from_ne_bytes(addr) & u32::from_ne_bytes(netmask) == u32::from_ne_bytes(network)
        && u32::from_ne_bytes(netmask) != 0
}

/// IPv4 option types (RFC 791): end of the list, no-operation, and the loose and strict
/// source routes (copied flag set, as senders use them).
const IPOPT_END: u8 = 0;
const IPOPT_NOOP: u8 = 1;
const IPOPT_LSRR: u8 = 0x83;
const IPOPT_SSRR: u8 = 0x89;
/// Most bytes of options an IPv4 header holds (IHL 15).
const MAX_IPV4_OPTIONS: usize = 40;

/// Byte `at` of the IPv4 options (which start 20 bytes into the IPv4 header), if inside
/// the frame.
#[inline(always)]
fn option_byte(ctx: &XdpContext, at: usize) -> Option<u8> {
    // The offset varies with the walk: kept opaque so that LLVM compares the pointer
    // itself with data_end, the form the verifier accepts for variable packet offsets.
    let at = core::hint::black_box(ctx.data() + ETH_HDR_LEN + 20 + at);
    if at + 1 > ctx.data_end() {
        return None;
    }
    // SAFETY: the byte at `at` was just checked to lie inside the frame, which stays
    // valid for this program run; any byte is a valid u8.
    Some(unsafe { *(at as *const u8) })
}

/// Walks the options of the IPv4 header at `ETH_HDR_LEN` whose length is `header_len`
/// (checked by [`ipv4_lengths`]): `Ok(true)` when they hold a source route (LSRR or
/// SSRR), `Err` when the list is malformed (an option's length byte missing, below 2
/// or running past the header).
#[inline(always)]
pub fn ipv4_source_routed(ctx: &XdpContext, header_len: usize) -> Result<bool, ()> {
    let end = header_len.saturating_sub(20).min(MAX_IPV4_OPTIONS);
    let mut at = 0;
    // Every step moves on by at least one byte, so this many steps cover any list.
    for _ in 0..MAX_IPV4_OPTIONS {
        if at >= end {
            break;
        }
        match option_byte(ctx, at).ok_or(())? {
            IPOPT_END => break,
            IPOPT_NOOP => at += 1,
            IPOPT_LSRR | IPOPT_SSRR => return Ok(true),
            _ => {
                if at + 1 >= end {
                    return Err(());
                }
                let len = option_byte(ctx, at + 1).ok_or(())? as usize;
                if len < 2 || at + len > end {
                    return Err(());
                }
                at += len;
            }
        }
        // Changes nothing (`at` ≤ `end` ≤ 40 here) but the verifier's view of `at`: a
        // range as wide as the mask, the same on every path, so that the paths through
        // the walk prune each other instead of multiplying with each option.
        at = core::hint::black_box(at) & 63;
    }
    Ok(false)
}

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;

/// The transport header of an IPv4 packet, checked against the packet's lengths.
#[derive(Clone, Copy)]
pub enum Transport {
    Tcp {
        src_port: [u8; 2],
        dst_port: [u8; 2],
        /// The flags byte (FIN, SYN, RST, PSH, ACK, …).
        flags: u8,
    },
    Udp {
        src_port: [u8; 2],
        dst_port: [u8; 2],
    },
    Icmp {
        kind: u8,
        id: [u8; 2],
    },
    /// Another IP protocol: nothing was read after the IP header.
    Other,
}

/// Parses the TCP/UDP/ICMP header at `l4` of an IPv4 packet whose payload is `l4_len`
/// bytes. `Err` when the header is truncated or its length fields are impossible. In a
/// first fragment (`more_fragments`) the UDP length may exceed the fragment.
#[inline(always)]
pub fn transport(
    ctx: &XdpContext,
    protocol: u8,
    l4: usize,
    l4_len: usize,
    more_fragments: bool,
) -> Result<Transport, ()> {
    match protocol {
        IPPROTO_TCP => {
            let tcp: &TcpHdr = header_at(ctx, l4).ok_or(())?;
            let data_offset = ((tcp.offset_flags[0] >> 4) as usize) * 4;
            if data_offset < 20 || data_offset > l4_len {
                return Err(());
            }
            Ok(Transport::Tcp {
                src_port: tcp.src_port,
                dst_port: tcp.dst_port,
                flags: tcp.offset_flags[1],
            })
        }
        IPPROTO_UDP => {
            let udp: &UdpHdr = header_at(ctx, l4).ok_or(())?;
            let udp_len = u16::from_be_bytes(udp.len) as usize;
            if l4_len < 8 || udp_len < 8 || (!more_fragments && udp_len > l4_len) {
                return Err(());
            }
            Ok(Transport::Udp {
                src_port: udp.src_port,
                dst_port: udp.dst_port,
            })
        }
        IPPROTO_ICMP => {
            let icmp: &IcmpHdr = header_at(ctx, l4).ok_or(())?;
            if l4_len < 8 {
                return Err(());
            }
            Ok(Transport::Icmp {
                kind: icmp.kind,
                id: [icmp.rest[0], icmp.rest[1]],
            })
        }
        _ => Ok(Transport::Other),
    }
}
