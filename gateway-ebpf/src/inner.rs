//! `inner`: where decrypted client packets enter. Checks that the source is a live
//! session's lease (anti-spoof), that a route covers the destination, and that the most
//! specific authorization rule admits the session; everything else is dropped and
//! counted by reason. Allowed packets pass on (SNAT and redirect come next).

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::{map, xdp},
    maps::{HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use gateway_ebpf_common::{
    AuthzValue, InnerStat, MAX_AUTHZ_RULES, MAX_ROUTES, MAX_SESSIONS, RouteValue, SessionInfo,
};

use crate::packet::{ETH_HDR_LEN, ETHERTYPE_IPV4, EthHdr, Ipv4Hdr, header_at, ipv4_lengths};

#[map(name = "INNER_STATS")]
static INNER_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(InnerStat::COUNT, 0);

#[map(name = "SESSIONS")]
static SESSIONS: HashMap<[u8; 4], SessionInfo> = HashMap::with_max_entries(MAX_SESSIONS, 0);

#[map(name = "ROUTES")]
static ROUTES: LpmTrie<[u8; 4], RouteValue> = LpmTrie::with_max_entries(MAX_ROUTES, 0);

#[map(name = "AUTHZ")]
static AUTHZ: LpmTrie<[u8; 4], AuthzValue> = LpmTrie::with_max_entries(MAX_AUTHZ_RULES, 0);

#[xdp]
pub fn inner(ctx: XdpContext) -> u32 {
    match try_inner(&ctx) {
        Ok(()) => {
            count(InnerStat::Allowed);
            XDP_PASS
        }
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
        // SAFETY: the slot belongs to this CPU; XDP programs are not preempted on it.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn try_inner(ctx: &XdpContext) -> Result<(), InnerStat> {
    let eth: &EthHdr = header_at(ctx, 0).ok_or(InnerStat::MalformedIpv4)?;
    if u16::from_be_bytes(eth.ether_type) != ETHERTYPE_IPV4 {
        return Err(InnerStat::NonIpv4);
    }
    let ip: &Ipv4Hdr = header_at(ctx, ETH_HDR_LEN).ok_or(InnerStat::MalformedIpv4)?;
    ipv4_lengths(ctx, ip).ok_or(InnerStat::MalformedIpv4)?;
    // SAFETY: the value is only read, within this program run.
    let session = unsafe { SESSIONS.get(ip.src) }.ok_or(InnerStat::Spoofed)?;
    let destination = Key::new(32, ip.dst);
    ROUTES.get(&destination).ok_or(InnerStat::NoRoute)?;
    let rule = AUTHZ.get(&destination).ok_or(InnerStat::NotAuthorized)?;
    if !rule.allows(&session.groups) {
        return Err(InnerStat::NotAuthorized);
    }
    Ok(())
}
