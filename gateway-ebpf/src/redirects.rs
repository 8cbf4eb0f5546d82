//! Redirects that fail after an XDP program has returned `XDP_REDIRECT`: the kernel
//! reports those only through tracepoints, so two BTF tracepoint programs count them
//! (`gateway::xdp::RedirectWatch` loads and attaches them).

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::{HashMap, PerCpuArray},
    programs::BtfTracePointContext,
};
use gateway_ebpf_common::{MAX_WATCHED_MAPS, RedirectStat};

#[map(name = "REDIRECT_STATS")]
static REDIRECT_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(RedirectStat::COUNT, 0);

/// The ids of the gateway's redirect maps (devmaps and XSKMAPs) → 1.
#[map(name = "REDIRECT_MAPS")]
static REDIRECT_MAPS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_WATCHED_MAPS, 0);

#[inline(always)]
fn add(stat: RedirectStat, n: u64) {
    if let Some(slot) = REDIRECT_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: `get_ptr_mut` returned a non-null, aligned pointer to this CPU's u64
        // of a per-CPU array that lives as long as the map; tracepoint programs run with
        // migration off, so nothing else on this CPU writes it meanwhile (userspace only
        // reads a copy).
        unsafe { *slot += n };
    }
}

/// `xdp_redirect_err(dev, xdp, tgt, err, map_type, map_id, index)`: a redirect found no
/// target, or the target refused it (down, MTU, no XDP transmit, an AF_XDP ring full).
/// Counted when it went through one of the gateway's maps.
#[btf_tracepoint(function = "xdp_redirect_err")]
pub fn xdp_redirect_err(ctx: BtfTracePointContext) -> i32 {
    let map_id: u32 = ctx.arg(5);
    // SAFETY: HashMap::get is unsafe because userspace may change the entry while the
    // reference lives; only its presence is tested here.
    if unsafe { REDIRECT_MAPS.get(map_id) }.is_some() {
        add(RedirectStat::Failed, 1);
    }
    0
}

/// `xdp_devmap_xmit(from_dev, to_dev, sent, drops, err)`: a devmap's bulk transmit,
/// where the destination driver may take fewer frames than it was given (a veth whose
/// peer has no NAPI takes none, a TAP whose queue is full takes what fits). The
/// tracepoint names no map, so this counts every devmap on the host; on a gateway the
/// gateway's are the only ones.
#[btf_tracepoint(function = "xdp_devmap_xmit")]
pub fn xdp_devmap_xmit(ctx: BtfTracePointContext) -> i32 {
    let drops: i32 = ctx.arg(3);
    if drops > 0 {
        add(RedirectStat::TransmitDropped, drops as u64);
    }
    0
}
