//! Source NAT state shared by `inner` (creates mappings, rewrites sources) and `target`
//! (finds the reverse mapping, rewrites destinations back). Mappings are
//! endpoint-dependent: a NAT port is unique per remote address, port and protocol.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    macros::map,
    maps::HashMap,
    programs::XdpContext,
};
use gateway_ebpf_common::{FlowKey, MAX_NAT_FLOWS, NAT_PORT_PROBES, NatIn, NatOut};

use crate::{
    checksum::{replace16, replace32},
    packet::{
        ETH_HDR_LEN, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IcmpHdr, Ipv4Hdr, TcpHdr, UdpHdr,
        header_at_mut,
    },
};

#[map(name = "NAT_OUT")]
pub static NAT_OUT: HashMap<FlowKey, NatOut> = HashMap::with_max_entries(MAX_NAT_FLOWS, 0);

#[map(name = "NAT_IN")]
pub static NAT_IN: HashMap<FlowKey, NatIn> = HashMap::with_max_entries(MAX_NAT_FLOWS, 0);

const EEXIST: i32 = 17;

/// Why no mapping could be made.
pub enum NatError {
    /// Every port tried is taken for this remote endpoint, or the table is full.
    Exhausted,
}

/// The mapping for a client flow: the existing one (refreshed), or a new one that keeps
/// the client's source port when it is free for this remote endpoint. Returns the
/// mapping and whether it is new, and whether its port differs from the client's.
#[inline(always)]
pub fn mapping(
    flow: &FlowKey,
    snat_addr: [u8; 4],
    peer_id: u32,
    tcp_flags: u8,
) -> Result<(NatOut, bool, bool), NatError> {
    // SAFETY: a BPF helper that takes no arguments and only returns the clock.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(existing) = NAT_OUT.get_ptr_mut(flow) {
        // SAFETY: `get_ptr_mut` returned a non-null pointer to the flow's value, aligned
        // for NatOut (map values are 8-byte aligned); RCU keeps that memory valid for this
        // run even if the sweeper deletes the entry meanwhile, and the reference does not
        // outlive the run. Another CPU carrying the same flow may store the same fields
        // at once: plain u64/u8 stores, not torn, where a lost update of the timestamp
        // or flags only shifts the flow's expiry.
        let existing = unsafe { &mut *existing };
        if existing.nat_addr == snat_addr {
            existing.last_seen_ns = now;
            existing.tcp_flags |= tcp_flags;
            return Ok((*existing, false, false));
        }
    }
    let reply = NatIn {
        client_addr: flow.src_addr,
        client_port: flow.src_port,
        tcp_flags: 0,
        _pad: 0,
        peer_id,
        _pad2: 0,
        last_seen_ns: now,
    };
    let mut reverse = FlowKey {
        src_addr: flow.dst_addr,
        dst_addr: snat_addr,
        src_port: flow.dst_port,
        dst_port: flow.src_port,
        protocol: flow.protocol,
        _pad: [0; 3],
    };
    let mut claimed = false;
    for attempt in 0..=NAT_PORT_PROBES {
        if attempt > 0 {
            // SAFETY: a BPF helper that takes no arguments and only returns a number.
            let r = unsafe { bpf_get_prandom_u32() };
            // Ports 1024..65535: never a privileged port, never 0.
            let port = 1024 + (r % (65536 - 1024)) as u16;
            reverse.dst_port = port.to_be_bytes();
        }
        match NAT_IN.insert(reverse, reply, u64::from(BPF_NOEXIST)) {
            Ok(()) => {
                claimed = true;
                break;
            }
            Err(e) if e == -EEXIST => continue,
            Err(_) => return Err(NatError::Exhausted),
        }
    }
    if !claimed {
        return Err(NatError::Exhausted);
    }
    let out = NatOut {
        nat_addr: snat_addr,
        nat_port: reverse.dst_port,
        tcp_flags,
        _pad: 0,
        last_seen_ns: now,
    };
    if NAT_OUT.insert(flow, out, 0).is_err() {
        let _ = NAT_IN.remove(reverse);
        return Err(NatError::Exhausted);
    }
    Ok((out, true, reverse.dst_port != flow.src_port))
}

/// The reverse mapping for a reply flow as it arrives on a target ENI, refreshed and
/// with the reply's TCP flags recorded.
#[inline(always)]
pub fn reverse(reply: &FlowKey, tcp_flags: u8) -> Option<NatIn> {
    let entry = NAT_IN.get_ptr_mut(reply)?;
    // SAFETY: as in `mapping`: a non-null, aligned pointer to a map value that RCU keeps
    // valid for this run; concurrent stores from other CPUs only race on the timestamp
    // and flags.
    let entry = unsafe { &mut *entry };
    // SAFETY: a BPF helper that takes no arguments and only returns the clock.
    entry.last_seen_ns = unsafe { bpf_ktime_get_ns() };
    entry.tcp_flags |= tcp_flags;
    Some(*entry)
}

/// Which end of the packet a rewrite changes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Source,
    Destination,
}

/// Rewrites one end of an unfragmented (or first-fragment) IPv4 packet to `addr:port`,
/// updating the IP and L4 checksums incrementally. For ICMP echo, `port` is the
/// identifier. A UDP checksum of zero ("none") stays zero. `Err` if a header vanished.
#[inline(always)]
pub fn rewrite(
    ctx: &XdpContext,
    l4: usize,
    end: End,
    addr: [u8; 4],
    port: [u8; 2],
) -> Result<(), ()> {
    let ip = header_at_mut::<Ipv4Hdr>(ctx, ETH_HDR_LEN).ok_or(())?;
    let field = match end {
        End::Source => &mut ip.src,
        End::Destination => &mut ip.dst,
    };
    let old_addr = *field;
    *field = addr;
    ip.check = replace32(ip.check, old_addr, addr);
    match ip.protocol {
        IPPROTO_TCP => {
            let tcp = header_at_mut::<TcpHdr>(ctx, l4).ok_or(())?;
            let field = match end {
                End::Source => &mut tcp.src_port,
                End::Destination => &mut tcp.dst_port,
            };
            let old_port = *field;
            *field = port;
            tcp.check = replace16(replace32(tcp.check, old_addr, addr), old_port, port);
        }
        IPPROTO_UDP => {
            let udp = header_at_mut::<UdpHdr>(ctx, l4).ok_or(())?;
            let field = match end {
                End::Source => &mut udp.src_port,
                End::Destination => &mut udp.dst_port,
            };
            let old_port = *field;
            *field = port;
            if udp.check != [0, 0] {
                let check = replace16(replace32(udp.check, old_addr, addr), old_port, port);
                // Zero means "no checksum" in UDP; a computed zero is sent as all ones.
                udp.check = if check == [0, 0] { [0xff, 0xff] } else { check };
            }
        }
        IPPROTO_ICMP => {
            let icmp = header_at_mut::<IcmpHdr>(ctx, l4).ok_or(())?;
            let old_id = [icmp.rest[0], icmp.rest[1]];
            icmp.rest[0] = port[0];
            icmp.rest[1] = port[1];
            // ICMP's checksum has no pseudo-header: only the identifier changed.
            icmp.check = replace16(icmp.check, old_id, port);
        }
        _ => return Err(()),
    }
    Ok(())
}

/// ICMP types that carry the header of the packet they are about.
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// The reply flow an ICMP error arriving at a target ENI is about: the embedded packet
/// is one we translated (source = NAT address and port), so its reverse is the key.
/// Also returns the embedded IP header's offset and length.
#[inline(always)]
pub fn icmp_error_flow(ctx: &XdpContext, l4: usize) -> Option<(FlowKey, usize, usize)> {
    let embedded = l4 + 8;
    let ip = crate::packet::header_at::<Ipv4Hdr>(ctx, embedded)?;
    if ip.version_ihl >> 4 != 4 {
        return None;
    }
    let header_len = ((ip.version_ihl & 0x0f) as usize) * 4;
    if header_len < 20 {
        return None;
    }
    // The error quotes at least 8 bytes of the embedded L4 header: ports or echo id.
    let ports: &[u8; 8] = crate::packet::header_at(ctx, embedded + header_len)?;
    let (src_port, dst_port) = match ip.protocol {
        IPPROTO_TCP | IPPROTO_UDP => ([ports[0], ports[1]], [ports[2], ports[3]]),
        IPPROTO_ICMP => ([ports[4], ports[5]], [0, 0]),
        _ => return None,
    };
    Some((
        FlowKey {
            src_addr: ip.dst,
            dst_addr: ip.src,
            src_port: dst_port,
            dst_port: src_port,
            protocol: ip.protocol,
            _pad: [0; 3],
        },
        embedded,
        header_len,
    ))
}

/// Rewrites an ICMP error about a translated flow back to the client: the outer
/// destination, the embedded source address and port (echo id), the embedded IP and L4
/// checksums, and the ICMP checksum covering all of them. `Err` if a header vanished.
#[inline(always)]
pub fn rewrite_icmp_error(
    ctx: &XdpContext,
    l4: usize,
    embedded: usize,
    embedded_len: usize,
    client_addr: [u8; 4],
    client_port: [u8; 2],
) -> Result<(), ()> {
    // Outer destination: the NAT address becomes the client's.
    let outer = header_at_mut::<Ipv4Hdr>(ctx, ETH_HDR_LEN).ok_or(())?;
    let old_dst = outer.dst;
    outer.dst = client_addr;
    outer.check = replace32(outer.check, old_dst, client_addr);

    // Every change below is inside the ICMP message, so its checksum follows each one.
    let mut icmp_check = header_at_mut::<IcmpHdr>(ctx, l4).ok_or(())?.check;

    let inner = header_at_mut::<Ipv4Hdr>(ctx, embedded).ok_or(())?;
    let nat_addr = inner.src;
    let protocol = inner.protocol;
    inner.src = client_addr;
    let old_check = inner.check;
    inner.check = replace32(inner.check, nat_addr, client_addr);
    icmp_check = replace32(icmp_check, nat_addr, client_addr);
    icmp_check = replace16(icmp_check, old_check, inner.check);

    let quoted = embedded + embedded_len;
    match protocol {
        IPPROTO_TCP | IPPROTO_UDP => {
            let ports = header_at_mut::<[u8; 8]>(ctx, quoted).ok_or(())?;
            let nat_port = [ports[0], ports[1]];
            ports[0] = client_port[0];
            ports[1] = client_port[1];
            icmp_check = replace16(icmp_check, nat_port, client_port);
            // The quoted L4 checksum, when the error carries it and it is in use.
            let check_at = if protocol == IPPROTO_UDP { 6 } else { 16 };
            if let Some(check) = header_at_mut::<[u8; 2]>(ctx, quoted + check_at)
                && !(protocol == IPPROTO_UDP && *check == [0, 0])
            {
                let old = *check;
                let new = replace16(replace32(old, nat_addr, client_addr), nat_port, client_port);
                *check = new;
                icmp_check = replace16(icmp_check, old, new);
            }
        }
        IPPROTO_ICMP => {
            let echo = header_at_mut::<IcmpHdr>(ctx, quoted).ok_or(())?;
            let nat_id = [echo.rest[0], echo.rest[1]];
            echo.rest[0] = client_port[0];
            echo.rest[1] = client_port[1];
            let old = echo.check;
            echo.check = replace16(echo.check, nat_id, client_port);
            icmp_check = replace16(icmp_check, nat_id, client_port);
            icmp_check = replace16(icmp_check, old, echo.check);
        }
        _ => return Err(()),
    }
    header_at_mut::<IcmpHdr>(ctx, l4).ok_or(())?.check = icmp_check;
    Ok(())
}
