//! Forwarding a rewritten IPv4 frame: next hop from `bpf_fib_lookup`, TTL decrement,
//! MAC rewrite and redirect through a devmap; anything else goes to the kernel.

use core::mem::size_of;

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams,
        xdp_action::XDP_PASS,
    },
    helpers::generated::bpf_fib_lookup,
    maps::DevMapHash,
    programs::XdpContext,
};

use crate::{
    checksum::replace16,
    packet::{ETH_HDR_LEN, EthHdr, Ipv4Hdr, header_at_mut},
};

const AF_INET: u8 = 2;

/// What became of a frame handed to [`forward`].
pub enum Forwarded {
    /// Redirected out of a device of the devmap; the action to return.
    Redirected(u32),
    /// Left for the kernel, unchanged by this function, for this reason.
    Kernel(Why),
}

/// Why a frame was left for the kernel.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// TTL about to expire: the kernel sends time exceeded.
    TtlExpiring,
    /// The next hop has no neighbour entry yet.
    NoNeighbour,
    /// The FIB gave no forwarding answer (no route, blackhole, unreachable, prohibited,
    /// forwarding off, fragmentation needed, …).
    NoFibRoute,
    /// The next hop's device is not in the devmap: its path is the kernel's by choice
    /// (`gateway::xdp::forwarding_for`), or the frame is headed elsewhere.
    KernelPath,
}

/// Looks up the next hop of the IPv4 frame in `ctx` and, when it leaves through a device
/// in `devs` with a known neighbour, decrements the TTL, rewrites the MACs and redirects.
#[inline(always)]
pub fn forward(ctx: &XdpContext, devs: &DevMapHash) -> Forwarded {
    let Some(ip) = header_at_mut::<Ipv4Hdr>(ctx, ETH_HDR_LEN) else {
        return Forwarded::Kernel(Why::KernelPath);
    };
    if ip.ttl <= 1 {
        return Forwarded::Kernel(Why::TtlExpiring);
    }
    // SAFETY: bpf_fib_lookup is integers, byte arrays and unions of them (no pointers),
    // so all-zero bytes are a valid value.
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = ip.protocol;
    params.__bindgen_anon_1.tot_len = u16::from_be_bytes(ip.total_len);
    params.__bindgen_anon_2.tos = ip.tos;
    params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(ip.src);
    params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(ip.dst);
    params.ifindex = ctx.ingress_ifindex() as u32;
    // SAFETY: `ctx.as_ptr()` is this run's live xdp_md; `params` is an initialised
    // bpf_fib_lookup on the stack, exclusively borrowed for the call, and the size passed
    // is its own, so the helper reads and writes only inside it.
    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), &mut params, size_of::<FibParams>() as i32, 0) };
    // Where the FIB found a device (success, or no neighbour on it), whether XDP may
    // send there decides first.
    let known = (rc == i64::from(BPF_FIB_LKUP_RET_SUCCESS)
        || rc == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH))
        && devs.get(params.ifindex).is_some();
    if rc == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) && known {
        return Forwarded::Kernel(Why::NoNeighbour);
    }
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) && rc != i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        return Forwarded::Kernel(Why::NoFibRoute);
    }
    if !known {
        return Forwarded::Kernel(Why::KernelPath);
    }
    let before = [ip.ttl, ip.protocol];
    ip.ttl -= 1;
    ip.check = replace16(ip.check, before, [ip.ttl, ip.protocol]);
    let Some(eth) = header_at_mut::<EthHdr>(ctx, 0) else {
        return Forwarded::Kernel(Why::KernelPath);
    };
    eth.dst = params.dmac;
    eth.src = params.smac;
    // The device was just found in the map, so this redirects; were it removed in
    // between, the default action passes the frame to the kernel.
    let (Ok(action) | Err(action)) = devs.redirect(params.ifindex, u64::from(XDP_PASS));
    Forwarded::Redirected(action)
}
