//! `target`: on each target ENI. Replies to translated client flows are rewritten back
//! to the client's lease and forwarded towards the data plane; anything else to the
//! client CIDR is dropped (clients are reachable only through their own flows);
//! everything else passes to the host untouched.
//!
//! A reply from a local sender (a veth or bridge peer on this host) may carry a partial
//! TCP/UDP checksum: the sender's kernel left the folded pseudo-header sum for the
//! device to finish (CHECKSUM_PARTIAL), a state XDP cannot see. A field that holds
//! exactly that value is kept in partial form for the rewritten addresses (an
//! incremental update would corrupt it); whoever the frame reaches next finishes it: the
//! kernel where it is still a socket buffer in that state, the worker that reads it from
//! the TAP or an AF_XDP socket otherwise (`gateway::dataplane::frame`).

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::generated::bpf_xdp_adjust_meta,
    macros::{map, xdp},
    maps::{DevMapHash, HashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use gateway_ebpf_common::{
    FlowKey, MAX_TARGET_XSKS, MAX_XSK_QUEUES, MAX_XSK_TARGETS, TargetStat, XSK_MAX_FRAME,
    XSK_META_MAGIC, XskMeta,
};

use crate::{
    checksum::{partial_form, pseudo_header, replace16},
    forward::{Forwarded, Why, forward},
    inner::INNER_CONFIG,
    nat::{
        End, ICMP_DEST_UNREACHABLE, ICMP_PARAMETER_PROBLEM, ICMP_TIME_EXCEEDED, icmp_error_flow,
        reverse, rewrite, rewrite_icmp_error,
    },
    packet::{
        ETH_HDR_LEN, ETHERTYPE_IPV4, EthHdr, ICMP_ECHO_REPLY, IPPROTO_TCP, IPPROTO_UDP, Ipv4Hdr,
        Transport, fragment, header_at, header_at_mut, in_network, ipv4_lengths, transport,
    },
};

#[map(name = "TARGET_STATS")]
static TARGET_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(TargetStat::COUNT, 0);

#[map(name = "DATAPLANE_DEVS")]
static DATAPLANE_DEVS: DevMapHash = DevMapHash::with_max_entries(64, 0);

#[map(name = "TARGET_XSK_SLOTS")]
static TARGET_XSK_SLOTS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_XSK_TARGETS, 0);

#[map(name = "TARGET_XSKS")]
static TARGET_XSKS: XskMap = XskMap::with_max_entries(MAX_TARGET_XSKS, 0);

#[xdp]
pub fn target(ctx: XdpContext) -> u32 {
    match try_target(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            count(reason);
            if reason != TargetStat::Drop {
                count(TargetStat::Drop);
            }
            XDP_DROP
        }
    }
}

#[inline(always)]
fn count(stat: TargetStat) {
    if let Some(slot) = TARGET_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: `get_ptr_mut` returned a non-null, aligned pointer to this CPU's u64
        // of TARGET_STATS, a per-CPU array whose storage lives as long as the map. XDP programs
        // run with migration and preemption off, so no other program touches this CPU's
        // copy meanwhile; userspace only reads it (a copy through the bpf syscall).
        unsafe { *slot += 1 };
    }
}

/// Passes a frame that is not IPv4.
#[inline(always)]
fn miss() -> Result<u32, TargetStat> {
    count(TargetStat::Miss);
    Ok(XDP_PASS)
}

/// Passes an IPv4 packet to `dst` that is not a reply to a translated flow, unless it is
/// to the client CIDR: nothing but the replies translated here may reach a client.
#[inline(always)]
fn miss_to(dst: [u8; 4]) -> Result<u32, TargetStat> {
    if let Some(config) = INNER_CONFIG.get(0)
        && in_network(dst, config.client_network, config.client_netmask)
    {
        return Err(TargetStat::Unsolicited);
    }
    miss()
}

#[inline(always)]
fn try_target(ctx: &XdpContext) -> Result<u32, TargetStat> {
    let Some(eth) = header_at::<EthHdr>(ctx, 0) else {
        return miss();
    };
    if u16::from_be_bytes(eth.ether_type) != ETHERTYPE_IPV4 {
        return miss();
    }
    let ip: &Ipv4Hdr = header_at(ctx, ETH_HDR_LEN).ok_or(TargetStat::Drop)?;
    let (header_len, total_len) = ipv4_lengths(ctx, ip).ok_or(TargetStat::Drop)?;
    let (frag_offset, more_fragments) = fragment(ip);
    if frag_offset != 0 {
        return miss_to(ip.dst);
    }
    let l4 = ETH_HDR_LEN + header_len;
    let (src_port, dst_port, tcp_flags) =
        match transport(ctx, ip.protocol, l4, total_len - header_len, more_fragments) {
            Ok(Transport::Tcp {
                src_port,
                dst_port,
                flags,
            }) => (src_port, dst_port, flags),
            Ok(Transport::Udp { src_port, dst_port }) => (src_port, dst_port, 0),
            Ok(Transport::Icmp { kind, id }) if kind == ICMP_ECHO_REPLY => ([0, 0], id, 0),
            Ok(Transport::Icmp { kind, .. })
                if kind == ICMP_DEST_UNREACHABLE
                    || kind == ICMP_TIME_EXCEEDED
                    || kind == ICMP_PARAMETER_PROBLEM =>
            {
                return icmp_error(ctx, l4, ip.dst);
            }
            Ok(_) => return miss_to(ip.dst),
            Err(()) => return Err(TargetStat::Drop),
        };
    let reply = FlowKey {
        src_addr: ip.src,
        dst_addr: ip.dst,
        src_port,
        dst_port,
        protocol: ip.protocol,
        _pad: [0; 3],
    };
    let Some(client) = reverse(&reply, tcp_flags) else {
        return miss_to(reply.dst_addr);
    };
    let l4_len = (total_len - header_len) as u16;
    let check_at = l4 + if reply.protocol == IPPROTO_UDP { 6 } else { 16 };
    let partial = (reply.protocol == IPPROTO_TCP || reply.protocol == IPPROTO_UDP)
        && header_at::<[u8; 2]>(ctx, check_at).is_some_and(|check| {
            *check
                == partial_form(pseudo_header(
                    reply.src_addr,
                    reply.dst_addr,
                    reply.protocol,
                    l4_len,
                ))
        });
    rewrite(
        ctx,
        l4,
        End::Destination,
        client.client_addr,
        client.client_port,
    )
    .map_err(|()| TargetStat::Drop)?;
    if partial {
        // Still partial, now over the client's address (ports are not in the
        // pseudo-header, and the finisher sums them from the segment).
        let pseudo = pseudo_header(reply.src_addr, client.client_addr, reply.protocol, l4_len);
        *header_at_mut::<[u8; 2]>(ctx, check_at).ok_or(TargetStat::Drop)? = partial_form(pseudo);
        count(TargetStat::PartialChecksum);
    }
    Ok(towards_client(ctx, client.peer_id))
}

/// An ICMP error (to `dst`) about a translated flow goes back to the client rewritten;
/// one about anything else is a miss.
#[inline(always)]
fn icmp_error(ctx: &XdpContext, l4: usize, dst: [u8; 4]) -> Result<u32, TargetStat> {
    let Some((about, embedded, embedded_len)) = icmp_error_flow(ctx, l4) else {
        return miss_to(dst);
    };
    let Some(client) = reverse(&about, 0) else {
        return miss_to(dst);
    };
    rewrite_icmp_error(
        ctx,
        l4,
        embedded,
        embedded_len,
        client.client_addr,
        client.client_port,
    )
    .map_err(|()| TargetStat::Drop)?;
    count(TargetStat::IcmpError);
    Ok(towards_client(ctx, client.peer_id))
}

/// Counts a translated frame and sends it towards the data plane: to the AF_XDP socket
/// of this rx queue when a worker has one, else forwarded (to the TAP). One whose TTL
/// expires here is never steered: forwarding leaves it to the kernel, which answers the
/// sender with time exceeded, as a router does.
#[inline(always)]
fn towards_client(ctx: &XdpContext, peer_id: u32) -> u32 {
    count(TargetStat::Translated);
    let expiring = header_at::<Ipv4Hdr>(ctx, ETH_HDR_LEN).is_none_or(|ip| ip.ttl <= 1);
    if expiring {
        count(TargetStat::TtlExpired);
    } else if let Some(action) = steer(ctx, peer_id) {
        count(TargetStat::Steered);
        return action;
    }
    match forward(ctx, &DATAPLANE_DEVS) {
        Forwarded::Redirected(action) => {
            count(TargetStat::Redirected);
            action
        }
        Forwarded::Kernel(why) => {
            count(TargetStat::PassedToKernel);
            match why {
                Why::NoNeighbour => count(TargetStat::NoNeighbour),
                Why::NoFibRoute => count(TargetStat::NoFibRoute),
                Why::TtlExpiring | Why::KernelPath => {}
            }
            XDP_PASS
        }
    }
}

/// Redirects to the worker's AF_XDP socket on this interface's rx queue, with `peer_id`
/// in the metadata and the TTL decremented (the frame is forwarded, as by
/// [`forward`]); `None` (frame and metadata unchanged) when there is no socket. The
/// caller has checked that the TTL is above 1.
#[inline(always)]
fn steer(ctx: &XdpContext, peer_id: u32) -> Option<u32> {
    let ifindex = ctx.ingress_ifindex() as u32;
    // SAFETY: HashMap::get is unsafe because userspace may update or delete the entry
    // while the reference lives; RCU keeps the value's memory valid for this program
    // run, and the u32 is copied out at once, so no reference outlives this statement.
    let first = *unsafe { TARGET_XSK_SLOTS.get(ifindex) }?;
    let queue = ctx.rx_queue_index();
    if queue >= MAX_XSK_QUEUES || ctx.data_end() - ctx.data() > XSK_MAX_FRAME {
        return None;
    }
    let slot = first + queue;
    TARGET_XSKS.get(slot)?;
    let meta_len = size_of::<XskMeta>() as i32;
    // SAFETY: `ctx.ctx` is this run's live xdp_md; the helper itself checks there is
    // room in front of the frame and fails otherwise. It moves data_meta, so packet
    // pointers taken before are stale (the verifier enforces it): below, both metadata
    // and data are read from `ctx` again.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -meta_len) } != 0 {
        return None;
    }
    let meta = ctx.metadata();
    if meta + size_of::<XskMeta>() > ctx.data() {
        return None;
    }
    // SAFETY: [meta, meta + size_of::<XskMeta>()) was just checked to lie between
    // data_meta and data, the metadata room this run reserved in front of its own frame;
    // the write is unaligned, so the address needs no alignment.
    unsafe {
        (meta as *mut XskMeta).write_unaligned(XskMeta {
            magic: XSK_META_MAGIC,
            peer_id,
        });
    }
    match TARGET_XSKS.redirect(slot, 0) {
        Ok(action) => {
            // The redirect happens once the program returns: the frame may still change.
            // The packet is read again, after the metadata move.
            if let Some(ip) = header_at_mut::<Ipv4Hdr>(ctx, ETH_HDR_LEN) {
                let before = [ip.ttl, ip.protocol];
                ip.ttl = ip.ttl.saturating_sub(1);
                ip.check = replace16(ip.check, before, [ip.ttl, ip.protocol]);
            }
            Some(action)
        }
        // The socket went away since the lookup.
        Err(_) => {
            // SAFETY: `ctx.ctx` is this run's live xdp_md; this gives back exactly the
            // metadata room taken above, and nothing after it uses packet pointers.
            unsafe { bpf_xdp_adjust_meta(ctx.ctx, meta_len) };
            None
        }
    }
}
