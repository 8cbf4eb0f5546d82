//! `inner` through BPF_PROG_TEST_RUN: anti-spoof, route and authorization verdicts with
//! AWS Client VPN's rule semantics, through the real kernel LPM tries.

use std::net::Ipv4Addr;

use gateway::{
    policy::{Access, AuthorizationRule, GroupId, compile_authorization, group_set},
    xdp::Inner,
};
use gateway_ebpf_common::{InnerStat, RouteValue, SessionInfo};
use gateway_tests::{
    privilege,
    xdp::{self, Verdict, frame},
};

const DEV_LEASE: [u8; 4] = [10, 200, 0, 5];
const MANAGER_LEASE: [u8; 4] = [10, 200, 0, 6];
const DEV: u16 = 1;
const MANAGER: u16 = 2;

fn g(n: u16) -> GroupId {
    GroupId::new(n).unwrap()
}

fn rule(cidr: &str, access: Access) -> AuthorizationRule {
    AuthorizationRule {
        destination: cidr.parse().unwrap(),
        access,
    }
}

/// Two sessions (dev, manager), routes to 10.0.0.0/16, 172.16.0.0/24 and 10.50.0.0/16,
/// and the rules of AWS's "more specific rule" scenario plus an all-users network.
fn loaded() -> Inner {
    let mut inner = Inner::load().expect("loading inner");
    for (lease, group) in [(DEV_LEASE, DEV), (MANAGER_LEASE, MANAGER)] {
        let info = SessionInfo {
            groups: group_set(&[g(group)]),
            peer_id: u32::from(lease[3]),
            _pad: 0,
        };
        inner.insert_session(Ipv4Addr::from(lease), info).unwrap();
    }
    for net in ["10.0.0.0/16", "172.16.0.0/24", "10.50.0.0/16"] {
        inner
            .insert_route(net.parse().unwrap(), RouteValue { target_ifindex: 7 })
            .unwrap();
    }
    let rules = [
        rule("10.0.0.0/16", Access::Group(g(DEV))),
        rule("10.0.2.119/32", Access::Group(g(MANAGER))),
        rule("172.16.0.0/24", Access::AllUsers),
    ];
    for (net, value) in compile_authorization(&rules) {
        inner.insert_authorization(net, value).unwrap();
    }
    inner
}

fn expect(inner: &Inner, name: &str, frame: &[u8], reason: InnerStat) {
    let before = inner.stats().unwrap();
    let verdict = if reason == InnerStat::Allowed {
        Verdict::Pass
    } else {
        Verdict::Drop
    };
    xdp::assert_untouched(inner.program(), frame, verdict)
        .unwrap_or_else(|e| panic!("fixture {name}: {e:#}"));
    let delta = inner.stats().unwrap().since(&before);
    for stat in InnerStat::ALL {
        let want =
            u64::from(stat == reason || (stat == InnerStat::Drop && verdict == Verdict::Drop));
        assert_eq!(
            delta.get(stat),
            want,
            "fixture {name}: counter {} (moves: {delta})",
            stat.name()
        );
    }
}

fn tcp(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    frame::tcp(src, dst, 40000, 443, b"")
}

#[test]
fn authorization_follows_the_most_specific_rule() {
    if !privilege::check("authorization_follows_the_most_specific_rule") {
        return;
    }
    let inner = loaded();
    let cases = [
        (
            "group allowed by /16",
            tcp(DEV_LEASE, [10, 0, 5, 5]),
            InnerStat::Allowed,
        ),
        (
            "denied by a more specific prefix",
            tcp(DEV_LEASE, [10, 0, 2, 119]),
            InnerStat::NotAuthorized,
        ),
        (
            "group via the more specific rule",
            tcp(MANAGER_LEASE, [10, 0, 2, 119]),
            InnerStat::Allowed,
        ),
        (
            "denied by group",
            tcp(MANAGER_LEASE, [10, 0, 5, 5]),
            InnerStat::NotAuthorized,
        ),
        (
            "all users",
            frame::udp(DEV_LEASE, [172, 16, 0, 9], 5000, 53, b"q"),
            InnerStat::Allowed,
        ),
        (
            "all users, icmp",
            frame::icmp_echo(MANAGER_LEASE, [172, 16, 0, 9], 1, 1, b""),
            InnerStat::Allowed,
        ),
        (
            "route but no rule",
            tcp(DEV_LEASE, [10, 50, 0, 1]),
            InnerStat::NotAuthorized,
        ),
        (
            "no route",
            tcp(DEV_LEASE, [192, 168, 1, 1]),
            InnerStat::NoRoute,
        ),
    ];
    for (name, f, reason) in &cases {
        expect(&inner, name, f, *reason);
    }
}

#[test]
fn sources_other_than_a_live_lease_are_dropped() {
    if !privilege::check("sources_other_than_a_live_lease_are_dropped") {
        return;
    }
    let mut inner = loaded();
    expect(
        &inner,
        "unknown source",
        &tcp([10, 200, 0, 99], [10, 0, 5, 5]),
        InnerStat::Spoofed,
    );
    expect(
        &inner,
        "target-side source",
        &tcp([10, 0, 5, 5], [10, 0, 5, 6]),
        InnerStat::Spoofed,
    );
    let f = tcp(DEV_LEASE, [10, 0, 5, 5]);
    expect(&inner, "live lease", &f, InnerStat::Allowed);
    inner.remove_session(Ipv4Addr::from(DEV_LEASE)).unwrap();
    expect(
        &inner,
        "lease after the session ended",
        &f,
        InnerStat::Spoofed,
    );
}

#[test]
fn non_ipv4_and_malformed_packets_are_dropped() {
    if !privilege::check("non_ipv4_and_malformed_packets_are_dropped") {
        return;
    }
    let inner = loaded();
    expect(
        &inner,
        "ipv6",
        &frame::ethernet(0x86dd, &[0x60; 48]),
        InnerStat::NonIpv4,
    );
    expect(
        &inner,
        "arp",
        &frame::ethernet(0x0806, &[0; 28]),
        InnerStat::NonIpv4,
    );
    let f = tcp(DEV_LEASE, [10, 0, 5, 5]);
    expect(
        &inner,
        "ip header cut short",
        &f[..14 + 16],
        InnerStat::MalformedIpv4,
    );
    let mut long = f.clone();
    long[16..18].copy_from_slice(&1400u16.to_be_bytes());
    expect(
        &inner,
        "total length beyond the frame",
        &long,
        InnerStat::MalformedIpv4,
    );
}
