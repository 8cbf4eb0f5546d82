//! `inner`: where decrypted client packets enter. Checks that the source is a live
//! session's lease (anti-spoof), that the packet carries no source route, that the
//! destination is not one a client may never reach (the gateway itself, loopback,
//! link-local and the metadata service, multicast, broadcast, reserved), that a route
//! covers the destination and that the most specific authorization rule admits the
//! session; then translates the source to the target ENI's address and forwards.
//! Everything else is dropped and counted by reason.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    macros::{map, xdp},
    maps::{Array, DevMapHash, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use gateway_ebpf_common::{
    FlowKey, InnerConfig, InnerStat, MAX_GATEWAY_ADDRS, MAX_POLICY_PREFIXES, MAX_SESSIONS,
    PolicyValue, SessionInfo,
};

use crate::{
    forward::{Forwarded, Why, forward},
    nat::{End, NatError, mapping, rewrite},
    packet::{
        ETH_HDR_LEN, ETHERTYPE_IPV4, EthHdr, ICMP_ECHO_REQUEST, Ipv4Hdr, Transport, fragment,
        header_at, in_network, ipv4_lengths, ipv4_source_routed, transport,
    },
};

#[map(name = "INNER_STATS")]
static INNER_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(InnerStat::COUNT, 0);

#[map(name = "SESSIONS")]
static SESSIONS: HashMap<[u8; 4], SessionInfo> = HashMap::with_max_entries(MAX_SESSIONS, 0);

/// Also read by `target` (one object, one map): replies go only to leases with a flow.
#[map(name = "INNER_CONFIG")]
pub(crate) static INNER_CONFIG: Array<InnerConfig> = Array::with_max_entries(1, 0);

#[map(name = "GATEWAY_ADDRS")]
static GATEWAY_ADDRS: HashMap<[u8; 4], u8> = HashMap::with_max_entries(MAX_GATEWAY_ADDRS, 0);

#[map(name = "POLICY_GENERATION")]
static POLICY_GENERATION: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "POLICY_0")]
static POLICY_0: LpmTrie<[u8; 4], PolicyValue> = LpmTrie::with_max_entries(MAX_POLICY_PREFIXES, 0);
#[map(name = "POLICY_1")]
static POLICY_1: LpmTrie<[u8; 4], PolicyValue> = LpmTrie::with_max_entries(MAX_POLICY_PREFIXES, 0);

#[map(name = "TARGET_DEVS")]
static TARGET_DEVS: DevMapHash = DevMapHash::with_max_entries(64, 0);

#[xdp]
pub fn inner(ctx: XdpContext) -> u32 {
    match try_inner(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            count(reason);
            count(InnerStat::Drop);
            XDP_DROP
        }
    }
}

#[inline(always)]
fn count(stat: InnerStat) {
    if let Some(slot) = INNER_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: `get_ptr_mut` returned a non-null, aligned pointer to this CPU's u64
        // of INNER_STATS, a per-CPU array whose storage lives as long as the map. XDP programs
        // run with migration and preemption off, so no other program touches this CPU's
        // copy meanwhile; userspace only reads it (a copy through the bpf syscall).
        unsafe { *slot += 1 };
    }
}

/// Refuses destinations no client may reach, whatever the routes and rules say: the
/// gateway's own addresses and the special-purpose ranges (RFC 6890) that are never a
/// host behind a target interface.
#[inline(always)]
fn check_destination(dst: [u8; 4]) -> Result<(), InnerStat> {
    match dst {
        [169, 254, 169, 254] => return Err(InnerStat::MetadataService),
        [255, 255, 255, 255] => return Err(InnerStat::MulticastOrBroadcast),
        [0 | 127, ..] | [169, 254, ..] => return Err(InnerStat::SpecialDestination),
        _ => {}
    }
    match dst[0] >> 4 {
        0xe => return Err(InnerStat::MulticastOrBroadcast),
        0xf => return Err(InnerStat::SpecialDestination),
        _ => {}
    }
    if GATEWAY_ADDRS.get_ptr(dst).is_some() {
        return Err(InnerStat::GatewayAddress);
    }
    Ok(())
}

#[inline(always)]
fn try_inner(ctx: &XdpContext) -> Result<u32, InnerStat> {
    let eth: &EthHdr = header_at(ctx, 0).ok_or(InnerStat::MalformedIpv4)?;
    if u16::from_be_bytes(eth.ether_type) != ETHERTYPE_IPV4 {
        return Err(InnerStat::NonIpv4);
    }
    let ip: &Ipv4Hdr = header_at(ctx, ETH_HDR_LEN).ok_or(InnerStat::MalformedIpv4)?;
    let (header_len, total_len) = ipv4_lengths(ctx, ip).ok_or(InnerStat::MalformedIpv4)?;
    if header_len > 20
        && ipv4_source_routed(ctx, header_len).map_err(|()| InnerStat::MalformedIpv4)?
    {
        return Err(InnerStat::SourceRoute);
    }
    // SAFETY: HashMap::get is unsafe because userspace may update or delete the entry
    // while the reference lives. RCU keeps the value's memory valid for this program
    // run, the reference is only read and does not outlive it, and SessionInfo is plain
    // integers, so even a value the control plane rewrites meanwhile reads as a valid
    // (if stale) SessionInfo.
    let session = unsafe { SESSIONS.get(ip.src) }.ok_or(InnerStat::Spoofed)?;
    // Before any lookup: no route or rule (not even 0.0.0.0/0) opens these.
    check_destination(ip.dst)?;
    let destination = Key::new(32, ip.dst);
    // One read of the generation: the route and the rule come from the same rule set,
    // and from one lookup (see `PolicyValue`).
    let policy = match POLICY_GENERATION.get(0) {
        Some(1) => &POLICY_1,
        _ => &POLICY_0,
    };
    let entry = policy.get(&destination);
    if let Some(config) = INNER_CONFIG.get(0)
        && in_network(ip.dst, config.client_network, config.client_netmask)
    {
        // Client to client: no route (AWS's `local`), but a rule; back to the data plane
        // untranslated, which hands it to the session that leases the destination.
        if config.client_to_client == 0 {
            return Err(InnerStat::ClientToClientDisabled);
        }
        // SAFETY: as for the source's session: valid for this run, and only tested for
        // presence here.
        unsafe { SESSIONS.get(ip.dst) }.ok_or(InnerStat::NoSuchClient)?;
        let rule = entry
            .filter(|e| e.has_rule != 0)
            .ok_or(InnerStat::NotAuthorized)?;
        if !rule.rule.allows(&session.groups) {
            return Err(InnerStat::NotAuthorized);
        }
        count(InnerStat::ClientToClient);
        return Ok(XDP_TX);
    }
    let entry = entry
        .filter(|e| e.has_route != 0)
        .ok_or(InnerStat::NoRoute)?;
    if entry.has_rule == 0 || !entry.rule.allows(&session.groups) {
        return Err(InnerStat::NotAuthorized);
    }
    let route = &entry.route;
    count(InnerStat::Allowed);
    if ip.ttl <= 1 {
        // A router answers with time exceeded, from its own address to the client's:
        // the kernel does, given the packet as the client sent it. Translated first, the
        // answer would go to the gateway's SNAT address instead, and a NAT mapping would
        // be made for a packet that never leaves.
        count(InnerStat::TtlExpired);
        return Ok(XDP_PASS);
    }

    let (frag_offset, more_fragments) = fragment(ip);
    if frag_offset != 0 {
        return Err(InnerStat::Fragment);
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
            Ok(Transport::Icmp { kind, id }) if kind == ICMP_ECHO_REQUEST => (id, [0, 0], 0),
            Ok(_) => return Err(InnerStat::Untranslatable),
            Err(()) => return Err(InnerStat::MalformedL4),
        };
    let flow = FlowKey {
        src_addr: ip.src,
        dst_addr: ip.dst,
        src_port,
        dst_port,
        protocol: ip.protocol,
        _pad: [0; 3],
    };
    let (nat, created, port_changed) = mapping(&flow, route.snat_addr, session.peer_id, tcp_flags)
        .map_err(|NatError::Exhausted| InnerStat::NatExhausted)?;
    if created {
        count(InnerStat::NatCreated);
    }
    if port_changed {
        count(InnerStat::NatPortChanged);
    }
    rewrite(ctx, l4, End::Source, nat.nat_addr, nat.nat_port)
        .map_err(|()| InnerStat::MalformedL4)?;
    Ok(match forward(ctx, &TARGET_DEVS) {
        Forwarded::Redirected(action) => {
            count(InnerStat::Redirected);
            action
        }
        Forwarded::Kernel(why) => {
            count(InnerStat::PassedToKernel);
            match why {
                Why::NoNeighbour => count(InnerStat::NoNeighbour),
                Why::NoFibRoute => count(InnerStat::NoFibRoute),
                Why::TtlExpiring | Why::KernelPath => {}
            }
            XDP_PASS
        }
    })
}
