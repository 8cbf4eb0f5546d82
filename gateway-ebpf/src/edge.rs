//! `edge`: the program on the public ENI. OpenVPN data packets (P_DATA_V2) to a listen
//! port go to the worker's AF_XDP socket when their peer-id is live and are dropped when
//! it is not; control packets pass to the control plane, hard resets within a per-source
//! rate; malformed IPv4 is dropped, and so is anything else to the client CIDR (only the
//! data plane delivers to clients); everything else passes untouched.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use gateway_ebpf_common::{
    EdgeConfig, EdgePeer, EdgeStat, MAX_RESET_SOURCES, MAX_SESSIONS, MAX_XSK_QUEUES, ResetBucket,
    XSK_MAX_FRAME,
};

use crate::packet::{
    ETH_HDR_LEN, ETHERTYPE_IPV4, EthHdr, Ipv4Hdr, Transport, fragment, header_at, in_network,
    ipv4_lengths, transport,
};

#[map(name = "EDGE_STATS")]
static EDGE_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(EdgeStat::COUNT, 0);

#[map(name = "EDGE_CONFIG")]
static EDGE_CONFIG: Array<EdgeConfig> = Array::with_max_entries(1, 0);

#[map(name = "EDGE_PEERS")]
static EDGE_PEERS: HashMap<u32, EdgePeer> = HashMap::with_max_entries(MAX_SESSIONS, 0);

#[map(name = "EDGE_XSKS")]
static EDGE_XSKS: XskMap = XskMap::with_max_entries(MAX_XSK_QUEUES, 0);

#[map(name = "RESET_BUCKETS")]
static RESET_BUCKETS: LruHashMap<[u8; 4], ResetBucket> =
    LruHashMap::with_max_entries(MAX_RESET_SOURCES, 0);

/// OpenVPN opcodes (the high five bits of a packet's first byte, as in OpenVPN's
/// `ssl_pkt.h`).
const P_CONTROL_HARD_RESET_CLIENT_V2: u8 = 7;
const P_CONTROL_HARD_RESET_SERVER_V2: u8 = 8;
const P_DATA_V2: u8 = 9;
const P_CONTROL_HARD_RESET_CLIENT_V3: u8 = 10;
const P_CONTROL_WKC_V1: u8 = 11;
const P_CONTROL_SOFT_RESET_V1: u8 = 3;
/// Peer-id meaning "none" in P_DATA_V2.
const UNDEFINED_PEER_ID: u32 = 0x00ff_ffff;
/// Refill is computed over at most this long, so the arithmetic cannot overflow.
const MAX_REFILL_NS: u64 = 60_000_000_000;

/// What to do with a frame that is not dropped.
enum Verdict {
    /// Pass to the kernel, counting what it was.
    Pass(EdgeStat),
    /// Already decided (an XSK redirect): return this action.
    Redirect(u32),
}

#[xdp]
pub fn edge(ctx: XdpContext) -> u32 {
    match try_edge(&ctx) {
        Ok(Verdict::Pass(seen)) => {
            count(seen);
            count(EdgeStat::Pass);
            XDP_PASS
        }
        Ok(Verdict::Redirect(action)) => {
            count(EdgeStat::DataSteered);
            action
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
        // SAFETY: `get_ptr_mut` returned a non-null, aligned pointer to this CPU's u64
        // of EDGE_STATS, a per-CPU array whose storage lives as long as the map. XDP programs
        // run with migration and preemption off, so no other program touches this CPU's
        // copy meanwhile; userspace only reads it (a copy through the bpf syscall).
        unsafe { *slot += 1 };
    }
}

/// Classifies a frame: `Ok` what to do with it, `Err` why it is dropped.
#[inline(always)]
fn try_edge(ctx: &XdpContext) -> Result<Verdict, EdgeStat> {
    let seen = try_classify(ctx)?;
    if let Some((src_addr, l4)) = seen.openvpn {
        return openvpn(ctx, src_addr, l4);
    }
    Ok(Verdict::Pass(seen.stat))
}

/// What parsing found: the kind of frame, and for UDP to a listen port the source
/// address and the UDP header's offset.
struct Seen {
    stat: EdgeStat,
    openvpn: Option<([u8; 4], usize)>,
}

impl From<EdgeStat> for Seen {
    fn from(stat: EdgeStat) -> Self {
        Seen {
            stat,
            openvpn: None,
        }
    }
}

/// Steers or passes a UDP datagram sent to a listen port, by its OpenVPN opcode.
#[inline(always)]
fn openvpn(ctx: &XdpContext, src_addr: [u8; 4], l4: usize) -> Result<Verdict, EdgeStat> {
    let head: &[u8; 4] = header_at(ctx, l4 + 8).ok_or(EdgeStat::NotOpenVpn)?;
    match head[0] >> 3 {
        P_DATA_V2 => {
            let peer_id = u32::from_be_bytes([0, head[1], head[2], head[3]]);
            if peer_id == UNDEFINED_PEER_ID || EDGE_PEERS.get_ptr(peer_id).is_none() {
                return Err(EdgeStat::UnknownPeer);
            }
            if ctx.data_end() - ctx.data() > XSK_MAX_FRAME {
                // Longer than an AF_XDP frame: the UDP socket takes it.
                return Ok(Verdict::Pass(EdgeStat::DataPassed));
            }
            match EDGE_XSKS.redirect(ctx.rx_queue_index(), u64::from(XDP_PASS)) {
                Ok(action) => Ok(Verdict::Redirect(action)),
                Err(_) => Ok(Verdict::Pass(EdgeStat::DataPassed)),
            }
        }
        P_CONTROL_HARD_RESET_CLIENT_V2 | P_CONTROL_HARD_RESET_CLIENT_V3 => {
            if reset_allowed(src_addr) {
                Ok(Verdict::Pass(EdgeStat::ControlPassed))
            } else {
                Err(EdgeStat::ResetRateLimited)
            }
        }
        P_CONTROL_HARD_RESET_SERVER_V2 => Err(EdgeStat::NotOpenVpn),
        P_CONTROL_SOFT_RESET_V1..=P_CONTROL_WKC_V1 => Ok(Verdict::Pass(EdgeStat::ControlPassed)),
        _ => Err(EdgeStat::NotOpenVpn),
    }
}

/// Token bucket per source address: refills at `resets_per_second`, holds at most
/// `reset_burst`. Updates from several CPUs may race; the limit is then approximate.
#[inline(always)]
fn reset_allowed(src_addr: [u8; 4]) -> bool {
    let Some(config) = EDGE_CONFIG.get(0) else {
        return true;
    };
    if config.resets_per_second == 0 {
        return true;
    }
    // SAFETY: a BPF helper that takes no arguments and only returns the clock.
    let now = unsafe { bpf_ktime_get_ns() };
    let burst = u64::from(config.reset_burst.max(1)) * 1000;
    let Some(bucket) = RESET_BUCKETS.get_ptr_mut(src_addr) else {
        let fresh = ResetBucket {
            milli_tokens: burst - 1000,
            last_ns: now,
        };
        let _ = RESET_BUCKETS.insert(src_addr, fresh, 0);
        return true;
    };
    // SAFETY: `get_ptr_mut` returned a non-null pointer to the bucket's value in the map,
    // aligned for ResetBucket (map values are 8-byte aligned); RCU keeps that memory
    // valid for this program run even if the entry is evicted or deleted meanwhile. The
    // same source's bucket may be updated at once from another CPU: plain u64 loads and
    // stores, not torn, where a lost update only makes the rate limit slightly loose.
    let bucket = unsafe { &mut *bucket };
    let elapsed = now.saturating_sub(bucket.last_ns).min(MAX_REFILL_NS);
    let refill = elapsed * u64::from(config.resets_per_second) / 1_000_000;
    bucket.milli_tokens = (bucket.milli_tokens + refill).min(burst);
    bucket.last_ns = now;
    if bucket.milli_tokens < 1000 {
        return false;
    }
    bucket.milli_tokens -= 1000;
    true
}

/// Parses a frame into what it is, or why it must be dropped.
#[inline(always)]
fn try_classify(ctx: &XdpContext) -> Result<Seen, EdgeStat> {
    let eth: &EthHdr = header_at(ctx, 0).ok_or(EdgeStat::TruncatedEthernet)?;
    if u16::from_be_bytes(eth.ether_type) != ETHERTYPE_IPV4 {
        return Ok(EdgeStat::NonIpv4.into());
    }
    let ip: &Ipv4Hdr = header_at(ctx, ETH_HDR_LEN).ok_or(EdgeStat::MalformedIpv4)?;
    let (header_len, total_len) = ipv4_lengths(ctx, ip).ok_or(EdgeStat::MalformedIpv4)?;
    if header_len > 20 {
        count(EdgeStat::Ipv4Options);
    }
    let to_clients = to_client_network(ip.dst);
    let (frag_offset, more_fragments) = fragment(ip);
    if frag_offset != 0 {
        if to_clients {
            return Err(EdgeStat::ToClientNetwork);
        }
        return Ok(EdgeStat::Fragment.into());
    }
    let l4 = ETH_HDR_LEN + header_len;
    let seen = match transport(ctx, ip.protocol, l4, total_len - header_len, more_fragments) {
        Ok(Transport::Tcp { .. }) => EdgeStat::Tcp.into(),
        Ok(Transport::Udp { dst_port, .. }) => Seen {
            stat: EdgeStat::Udp,
            openvpn: is_listen_port(dst_port).then_some((ip.src, l4)),
        },
        Ok(Transport::Icmp { .. }) => EdgeStat::Icmp.into(),
        Ok(Transport::Other) => EdgeStat::OtherProtocol.into(),
        Err(()) => return Err(EdgeStat::MalformedL4),
    };
    if to_clients && seen.openvpn.is_none() {
        return Err(EdgeStat::ToClientNetwork);
    }
    Ok(seen)
}

/// Whether `dst` lies in the client CIDR (`EdgeConfig`): the kernel would forward such a
/// frame into the TAP, and a worker on to the session that leases it.
#[inline(always)]
fn to_client_network(dst: [u8; 4]) -> bool {
    EDGE_CONFIG
        .get(0)
        .is_some_and(|config| in_network(dst, config.client_network, config.client_netmask))
}

#[inline(always)]
fn is_listen_port(port: [u8; 2]) -> bool {
    let Some(config) = EDGE_CONFIG.get(0) else {
        return false;
    };
    port != [0, 0] && config.listen_ports.contains(&port)
}
