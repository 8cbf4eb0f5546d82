//! `inner` and `target` through BPF_PROG_TEST_RUN: anti-spoof, routes and authorization
//! with AWS Client VPN's rule semantics, SNAT out and reverse NAT back with checksums,
//! port collisions, fragments, a full table, and forwarding through the FIB.
//!
//! Every run happens on a thread inside a namespace of the test's own, so the FIB
//! lookup sees a known routing table (empty unless the test adds to it).

use std::net::Ipv4Addr;

use gateway::{
    policy::{Access, AuthorizationRule, GroupId, compile_authorization, group_set},
    xdp::Policy,
};
use gateway_ebpf_common::{InnerStat, RouteValue, SessionInfo, TargetStat};
use gateway_tests::{
    lab::{Lab, Netns},
    privilege,
    xdp::{self, RunOutput, Verdict, checksum, frame},
};

const DEV_LEASE: [u8; 4] = [10, 200, 0, 5];
const MANAGER_LEASE: [u8; 4] = [10, 200, 0, 6];
const SNAT: [u8; 4] = [10, 0, 0, 9];
const HOST: [u8; 4] = [10, 0, 5, 5];
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

/// Two sessions (dev, manager), routes to 10.0.0.0/16, 172.16.0.0/24 and 10.50.0.0/16
/// (all via one target ENI translating to 10.0.0.9), and the rules of AWS's "more
/// specific rule" scenario plus an all-users network.
fn loaded(nat_capacity: u32) -> Policy {
    let mut policy = Policy::load_with_nat_capacity(nat_capacity).expect("loading the policy");
    for (lease, group) in [(DEV_LEASE, DEV), (MANAGER_LEASE, MANAGER)] {
        let info = SessionInfo {
            groups: group_set(&[g(group)]),
            peer_id: u32::from(lease[3]),
            _pad: 0,
        };
        policy.insert_session(Ipv4Addr::from(lease), info).unwrap();
    }
    for net in ["10.0.0.0/16", "172.16.0.0/24", "10.50.0.0/16"] {
        let route = RouteValue {
            target_ifindex: 7,
            snat_addr: SNAT,
        };
        policy.insert_route(net.parse().unwrap(), route).unwrap();
    }
    let rules = [
        rule("10.0.0.0/16", Access::Group(g(DEV))),
        rule("10.0.2.119/32", Access::Group(g(MANAGER))),
        rule("172.16.0.0/24", Access::AllUsers),
        rule("10.50.0.0/16", Access::AllUsers),
    ];
    for (net, value) in compile_authorization(&rules) {
        policy.insert_authorization(net, value).unwrap();
    }
    policy
}

/// A test's own namespace, and the policy to run in it.
struct Fixture {
    _lab: Lab,
    ns: Netns,
    policy: Policy,
}

impl Fixture {
    fn new(nat_capacity: u32) -> Self {
        let mut lab = Lab::new();
        let ns = lab.add_namespace("xdp").unwrap();
        Self {
            _lab: lab,
            ns,
            policy: loaded(nat_capacity),
        }
    }

    fn inner(&self, f: &[u8]) -> RunOutput {
        let program = self.policy.inner();
        self.ns.run_in(|| xdp::run(program, f)).unwrap().unwrap()
    }

    fn target(&self, f: &[u8]) -> RunOutput {
        let program = self.policy.target();
        self.ns.run_in(|| xdp::run(program, f)).unwrap().unwrap()
    }

    /// Runs `f` through `inner`, expects a drop for `reason` and nothing else counted.
    fn expect_drop(&self, name: &str, f: &[u8], reason: InnerStat) {
        let before = self.policy.inner_stats().unwrap();
        let out = self.inner(f);
        assert_eq!(out.verdict, Verdict::Drop, "{name}");
        let delta = self.policy.inner_stats().unwrap().since(&before);
        // A packet that got as far as NAT was authorized first.
        let authorized = matches!(
            reason,
            InnerStat::Fragment
                | InnerStat::Untranslatable
                | InnerStat::NatExhausted
                | InnerStat::MalformedL4
        );
        for stat in InnerStat::ALL {
            let want = u64::from(
                stat == reason
                    || stat == InnerStat::Drop
                    || (authorized && stat == InnerStat::Allowed),
            );
            assert_eq!(
                delta.get(stat),
                want,
                "{name}: counter {} (moves: {delta})",
                stat.name()
            );
        }
    }

    /// Runs `f` through `inner`, expects it passed to the kernel as `expected`.
    fn expect_translated(&self, name: &str, f: &[u8], expected: &[u8]) {
        let out = self.inner(f);
        assert_eq!(out.verdict, Verdict::Pass, "{name}");
        assert_frame(name, &out.frame, expected);
    }
}

fn assert_frame(name: &str, got: &[u8], expected: &[u8]) {
    assert!(
        checksum::ipv4_header_ok(got),
        "{name}: IP checksum of {}",
        xdp::hex(got)
    );
    assert!(
        checksum::l4_ok(got),
        "{name}: L4 checksum of {}",
        xdp::hex(got)
    );
    assert_eq!(xdp::hex(got), xdp::hex(expected), "{name}: output frame");
}

fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16) -> Vec<u8> {
    frame::tcp(src, dst, sport, 443, b"GET /")
}

/// The source port (or ICMP identifier) of an IPv4 frame without options.
fn src_port(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[34], f[35]])
}

#[test]
fn authorization_follows_the_most_specific_rule() {
    if !privilege::check("authorization_follows_the_most_specific_rule") {
        return;
    }
    let fx = Fixture::new(1024);
    fx.expect_translated(
        "group allowed by /16",
        &tcp(DEV_LEASE, HOST, 40000),
        &tcp(SNAT, HOST, 40000),
    );
    fx.expect_drop(
        "denied by a more specific prefix",
        &tcp(DEV_LEASE, [10, 0, 2, 119], 40000),
        InnerStat::NotAuthorized,
    );
    fx.expect_translated(
        "group via the more specific rule",
        &tcp(MANAGER_LEASE, [10, 0, 2, 119], 40000),
        &tcp(SNAT, [10, 0, 2, 119], 40000),
    );
    fx.expect_drop(
        "denied by group",
        &tcp(MANAGER_LEASE, HOST, 40001),
        InnerStat::NotAuthorized,
    );
    fx.expect_translated(
        "all users",
        &frame::udp(DEV_LEASE, [172, 16, 0, 9], 5353, 53, b"q"),
        &frame::udp(SNAT, [172, 16, 0, 9], 5353, 53, b"q"),
    );
    fx.expect_drop(
        "no route",
        &tcp(DEV_LEASE, [192, 168, 1, 1], 40000),
        InnerStat::NoRoute,
    );
    let mut policy = fx.policy;
    policy
        .insert_route(
            "192.168.0.0/16".parse().unwrap(),
            RouteValue {
                target_ifindex: 7,
                snat_addr: SNAT,
            },
        )
        .unwrap();
    let fx = Fixture {
        policy,
        ..Fixture::new(16)
    };
    fx.expect_drop(
        "route but no rule",
        &tcp(DEV_LEASE, [192, 168, 1, 1], 40000),
        InnerStat::NotAuthorized,
    );
}

#[test]
fn sources_other_than_a_live_lease_are_dropped() {
    if !privilege::check("sources_other_than_a_live_lease_are_dropped") {
        return;
    }
    let mut fx = Fixture::new(1024);
    fx.expect_drop(
        "unknown source",
        &tcp([10, 200, 0, 99], HOST, 1),
        InnerStat::Spoofed,
    );
    fx.expect_drop(
        "target-side source",
        &tcp(HOST, [10, 0, 5, 6], 1),
        InnerStat::Spoofed,
    );
    let f = tcp(DEV_LEASE, HOST, 40000);
    fx.expect_translated("live lease", &f, &tcp(SNAT, HOST, 40000));
    fx.policy.remove_session(Ipv4Addr::from(DEV_LEASE)).unwrap();
    fx.expect_drop("lease after the session ended", &f, InnerStat::Spoofed);
}

#[test]
fn snat_rewrites_tcp_udp_and_icmp_with_valid_checksums() {
    if !privilege::check("snat_rewrites_tcp_udp_and_icmp_with_valid_checksums") {
        return;
    }
    let fx = Fixture::new(1024);
    let payload = [0x5au8; 301]; // odd length: the checksum's trailing byte
    fx.expect_translated(
        "tcp",
        &frame::tcp(DEV_LEASE, HOST, 40000, 443, &payload),
        &frame::tcp(SNAT, HOST, 40000, 443, &payload),
    );
    fx.expect_translated(
        "udp",
        &frame::udp(DEV_LEASE, HOST, 40000, 53, &payload),
        &frame::udp(SNAT, HOST, 40000, 53, &payload),
    );
    fx.expect_translated(
        "icmp echo request",
        &frame::icmp_echo(DEV_LEASE, HOST, 0x1234, 7, &payload),
        &frame::icmp_echo(SNAT, HOST, 0x1234, 7, &payload),
    );
    // A UDP checksum of zero means "none" and must stay zero.
    let mut no_sum = frame::udp(DEV_LEASE, HOST, 40001, 53, b"x");
    no_sum[40..42].fill(0);
    let mut expected = frame::udp(SNAT, HOST, 40001, 53, b"x");
    expected[40..42].fill(0);
    let out = fx.inner(&no_sum);
    assert_eq!(out.verdict, Verdict::Pass);
    assert_eq!(xdp::hex(&out.frame), xdp::hex(&expected));
    assert!(checksum::ipv4_header_ok(&out.frame));

    let stats = fx.policy.inner_stats().unwrap();
    assert_eq!(stats.get(InnerStat::NatCreated), 4, "{stats}");
    assert_eq!(stats.get(InnerStat::PassedToKernel), 4, "{stats}");
    assert_eq!(stats.get(InnerStat::NatPortChanged), 0, "{stats}");
}

#[test]
fn mappings_are_reused_and_ports_kept_unless_taken() {
    if !privilege::check("mappings_are_reused_and_ports_kept_unless_taken") {
        return;
    }
    let mut fx = Fixture::new(1024);
    let first = fx.inner(&tcp(DEV_LEASE, HOST, 40000));
    let again = fx.inner(&tcp(DEV_LEASE, HOST, 40000));
    assert_eq!(first.frame, again.frame, "one flow, one mapping");
    // Same client port towards another endpoint: endpoint-dependent, so kept.
    let other_host = fx.inner(&tcp(MANAGER_LEASE, [10, 0, 2, 119], 40000));
    assert_eq!(src_port(&other_host.frame), 40000);
    // Another client, same port, same endpoint: the port is taken, another is chosen.
    let mut rules_policy = fx.policy;
    rules_policy
        .insert_authorization("10.0.0.0/16".parse().unwrap(), {
            compile_authorization(&[
                rule("10.0.0.0/16", Access::Group(g(DEV))),
                rule("10.0.0.0/16", Access::Group(g(MANAGER))),
            ])[0]
                .1
        })
        .unwrap();
    fx.policy = rules_policy;
    let collided = fx.inner(&tcp(MANAGER_LEASE, HOST, 40000));
    assert_eq!(collided.verdict, Verdict::Pass);
    let port = src_port(&collided.frame);
    assert_ne!(port, 40000, "collision must move the port");
    assert!(port >= 1024, "port {port} is privileged");
    assert_frame("collided", &collided.frame, &tcp(SNAT, HOST, port));
    let stats = fx.policy.inner_stats().unwrap();
    assert_eq!(stats.get(InnerStat::NatCreated), 3, "{stats}");
    assert_eq!(stats.get(InnerStat::NatPortChanged), 1, "{stats}");
    let mappings = fx.policy.nat_mappings().unwrap();
    assert_eq!(mappings.len(), 3);
    assert_eq!(fx.policy.nat_reverse().unwrap().len(), 3);
}

#[test]
fn fragments_untranslatable_and_malformed_packets_are_dropped() {
    if !privilege::check("fragments_untranslatable_and_malformed_packets_are_dropped") {
        return;
    }
    let fx = Fixture::new(1024);
    let mut later = frame::udp(DEV_LEASE, HOST, 0, 0, &[0; 16]);
    frame::set_fragment(&mut later, false, 185);
    fx.expect_drop("later fragment", &later, InnerStat::Fragment);
    let mut first = frame::udp(DEV_LEASE, HOST, 40000, 53, &[1; 64]);
    first[38..40].copy_from_slice(&2000u16.to_be_bytes());
    frame::set_fragment(&mut first, true, 0);
    let out = fx.inner(&first);
    assert_eq!(
        out.verdict,
        Verdict::Pass,
        "a first fragment is translated by its ports"
    );
    assert_eq!(&out.frame[26..30], &SNAT);
    assert!(checksum::ipv4_header_ok(&out.frame));

    let mut unreachable = frame::icmp_echo(DEV_LEASE, HOST, 1, 1, &[0; 28]);
    unreachable[34] = 3; // destination unreachable: not an echo request
    checksum::fix_ipv4_header(&mut unreachable);
    fx.expect_drop(
        "icmp error from a client",
        &unreachable,
        InnerStat::Untranslatable,
    );
    let mut gre = frame::udp(DEV_LEASE, HOST, 1, 2, b"abcd");
    gre[23] = 47;
    checksum::fix_ipv4_header(&mut gre);
    fx.expect_drop("gre", &gre, InnerStat::Untranslatable);
    fx.expect_drop(
        "ipv6",
        &frame::ethernet(0x86dd, &[0x60; 48]),
        InnerStat::NonIpv4,
    );
    fx.expect_drop(
        "arp",
        &frame::ethernet(0x0806, &[0; 28]),
        InnerStat::NonIpv4,
    );
    let f = tcp(DEV_LEASE, HOST, 40000);
    fx.expect_drop(
        "ip header cut short",
        &f[..14 + 16],
        InnerStat::MalformedIpv4,
    );
    let mut cut = f[..14 + 20 + 12].to_vec();
    cut[16..18].copy_from_slice(&32u16.to_be_bytes());
    checksum::fix_ipv4_header(&mut cut);
    fx.expect_drop("tcp header cut short", &cut, InnerStat::MalformedL4);
}

#[test]
fn a_full_nat_table_drops_new_flows_only() {
    if !privilege::check("a_full_nat_table_drops_new_flows_only") {
        return;
    }
    let fx = Fixture::new(2);
    fx.expect_translated("first", &tcp(DEV_LEASE, HOST, 1001), &tcp(SNAT, HOST, 1001));
    fx.expect_translated(
        "second",
        &tcp(DEV_LEASE, HOST, 1002),
        &tcp(SNAT, HOST, 1002),
    );
    fx.expect_drop(
        "third",
        &tcp(DEV_LEASE, HOST, 1003),
        InnerStat::NatExhausted,
    );
    fx.expect_translated(
        "existing flow",
        &tcp(DEV_LEASE, HOST, 1001),
        &tcp(SNAT, HOST, 1001),
    );
}

#[test]
fn replies_are_translated_back_and_others_pass_untouched() {
    if !privilege::check("replies_are_translated_back_and_others_pass_untouched") {
        return;
    }
    let fx = Fixture::new(1024);
    fx.inner(&tcp(DEV_LEASE, HOST, 40000));
    fx.inner(&frame::udp(DEV_LEASE, HOST, 40000, 53, b"q"));
    fx.inner(&frame::icmp_echo(DEV_LEASE, HOST, 0x77, 1, b"ping"));

    let cases = [
        (
            "tcp reply",
            frame::tcp(HOST, SNAT, 443, 40000, b"200 OK"),
            frame::tcp(HOST, DEV_LEASE, 443, 40000, b"200 OK"),
        ),
        (
            "udp reply",
            frame::udp(HOST, SNAT, 53, 40000, b"a"),
            frame::udp(HOST, DEV_LEASE, 53, 40000, b"a"),
        ),
        (
            "icmp echo reply",
            echo_reply(HOST, SNAT, 0x77),
            echo_reply(HOST, DEV_LEASE, 0x77),
        ),
    ];
    for (name, reply, expected) in &cases {
        let out = fx.target(reply);
        assert_eq!(out.verdict, Verdict::Pass, "{name}");
        assert_frame(name, &out.frame, expected);
    }
    let misses = [
        ("another port", frame::tcp(HOST, SNAT, 443, 40001, b"x")),
        (
            "another remote",
            frame::tcp([10, 0, 5, 6], SNAT, 443, 40000, b"x"),
        ),
        ("another protocol", frame::udp(HOST, SNAT, 443, 40000, b"x")),
        (
            "echo request, not reply",
            frame::icmp_echo(HOST, SNAT, 0x77, 1, b"ping"),
        ),
        ("arp", frame::ethernet(0x0806, &[0; 28])),
    ];
    for (name, f) in &misses {
        let out = fx.target(f);
        assert_eq!(out.verdict, Verdict::Pass, "{name}");
        assert_eq!(out.frame, *f, "{name}: a miss must pass untouched");
    }
    let stats = fx.policy.target_stats().unwrap();
    assert_eq!(stats.get(TargetStat::Translated), 3, "{stats}");
    assert_eq!(stats.get(TargetStat::Miss), 5, "{stats}");
    assert_eq!(stats.get(TargetStat::Drop), 0, "{stats}");
}

fn echo_reply(src: [u8; 4], dst: [u8; 4], id: u16) -> Vec<u8> {
    let mut f = frame::icmp_echo(src, dst, id, 1, b"ping");
    f[34] = 0; // type 0: echo reply; the checksum changes by the type word only
    let sum = u16::from_be_bytes([f[36], f[37]]).wrapping_add(0x0800);
    let sum = if sum < 0x0800 {
        sum.wrapping_add(1)
    } else {
        sum
    };
    f[36..38].copy_from_slice(&sum.to_be_bytes());
    assert!(checksum::l4_ok(&f));
    f
}

#[test]
fn translated_packets_with_a_known_next_hop_are_redirected() {
    if !privilege::check("translated_packets_with_a_known_next_hop_are_redirected") {
        return;
    }
    let mut fx = Fixture::new(1024);
    // A target ENI in the test's namespace: a route to 10.0.0.0/16 and the host's MAC.
    let ns = fx.ns.clone();
    // bpf_fib_lookup answers "forwarding disabled" unless the namespace forwards.
    ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    ns.exec(&[
        "ip", "link", "add", "eni0", "type", "veth", "peer", "name", "eni0p",
    ])
    .unwrap();
    ns.exec(&["ip", "link", "set", "eni0", "address", "02:00:00:00:0e:01"])
        .unwrap();
    ns.exec(&["ip", "addr", "add", "10.0.0.9/16", "dev", "eni0"])
        .unwrap();
    ns.exec(&["ip", "link", "set", "eni0", "up"]).unwrap();
    ns.exec(&["ip", "link", "set", "eni0p", "up"]).unwrap();
    ns.exec(&[
        "ip",
        "neigh",
        "add",
        "10.0.5.5",
        "lladdr",
        "02:00:00:00:0e:02",
        "dev",
        "eni0",
        "nud",
        "permanent",
    ])
    .unwrap();
    let ifindex: u32 = ns
        .exec(&["cat", "/sys/class/net/eni0/ifindex"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // Not yet a target device: translated, then left to the kernel.
    let out = fx.inner(&tcp(DEV_LEASE, HOST, 40000));
    assert_eq!(out.verdict, Verdict::Pass);
    // Devmaps resolve ifindexes in the namespace of the thread that updates them.
    let policy = &mut fx.policy;
    ns.run_in(|| policy.insert_target_device(ifindex))
        .unwrap()
        .unwrap();
    let out = fx.inner(&tcp(DEV_LEASE, HOST, 40000));
    assert_eq!(out.verdict, Verdict::Redirect);
    let mut expected = tcp(SNAT, HOST, 40000);
    expected[0..6].copy_from_slice(&[2, 0, 0, 0, 0x0e, 0x02]);
    expected[6..12].copy_from_slice(&[2, 0, 0, 0, 0x0e, 0x01]);
    expected[22] -= 1; // TTL
    checksum::fix_ipv4_header(&mut expected);
    assert_frame("redirected", &out.frame, &expected);
    let stats = fx.policy.inner_stats().unwrap();
    assert_eq!(stats.get(InnerStat::Redirected), 1, "{stats}");

    // TTL 1 is left to the kernel, which answers with time-exceeded.
    let mut dying = tcp(DEV_LEASE, HOST, 40000);
    dying[22] = 1;
    checksum::fix_ipv4_header(&mut dying);
    assert_eq!(fx.inner(&dying).verdict, Verdict::Pass);
}
