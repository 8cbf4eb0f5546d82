//! `inner` and `target` through BPF_PROG_TEST_RUN: anti-spoof, routes and authorization
//! with AWS Client VPN's rule semantics, SNAT out and reverse NAT back with checksums,
//! port collisions, fragments, a full table, and forwarding through the FIB.
//!
//! Every run happens on a thread inside a namespace of the test's own, so the FIB
//! lookup sees a known routing table (empty unless the test adds to it).

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use gateway::{
    dataplane::xsk::Xsk,
    nat::{NatTimeouts, monotonic_now_ns},
    policy::{Access, AuthorizationRule, CompiledRules, GroupId, compile_authorization, group_set},
    xdp::{Policy, XdpError},
};
use gateway_ebpf_common::{
    AuthzValue, FlowKey, InnerStat, MAX_ROUTES, NatIn, RouteValue, SessionInfo, TargetStat,
    XSK_META_MAGIC,
};
use gateway_tests::{
    lab::{Lab, Netns},
    privilege,
    xdp::{self, RunOutput, Verdict, checksum, frame},
};
use ipnet::Ipv4Net;

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
    policy
        .replace_rules(&CompiledRules::new(routes(&[]), rules()))
        .unwrap();
    policy
}

/// Replaces the rules once the generation to refill is out of use, as `serve`'s reload
/// does (blocking here: the tests are synchronous).
fn replace_when_ready(policy: &mut Policy, rules: CompiledRules) -> Result<(), XdpError> {
    if let Some(ready) = policy.rules_ready_at() {
        std::thread::sleep(ready.saturating_duration_since(Instant::now()));
    }
    policy.replace_rules(&rules)
}

/// Routes to 10.0.0.0/16, 172.16.0.0/24, 10.50.0.0/16 and `extra`, all via one target
/// ENI translating to 10.0.0.9.
fn routes(extra: &[&str]) -> Vec<(Ipv4Net, RouteValue)> {
    let route = RouteValue {
        target_ifindex: 7,
        snat_addr: SNAT,
    };
    ["10.0.0.0/16", "172.16.0.0/24", "10.50.0.0/16"]
        .iter()
        .chain(extra)
        .map(|net| (net.parse().unwrap(), route))
        .collect()
}

/// AWS's "more specific rule" scenario plus two all-users networks.
fn rules() -> Vec<(Ipv4Net, AuthzValue)> {
    compile_authorization(&[
        rule("10.0.0.0/16", Access::Group(g(DEV))),
        rule("10.0.2.119/32", Access::Group(g(MANAGER))),
        rule("172.16.0.0/24", Access::AllUsers),
        rule("10.50.0.0/16", Access::AllUsers),
    ])
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
    let mut fx = fx;
    replace_when_ready(
        &mut fx.policy,
        CompiledRules::new(routes(&["192.168.0.0/16"]), rules()),
    )
    .unwrap();
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
    fx.policy.end_session(Ipv4Addr::from(DEV_LEASE)).unwrap();
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
    let shared = compile_authorization(&[
        rule("10.0.0.0/16", Access::Group(g(DEV))),
        rule("10.0.0.0/16", Access::Group(g(MANAGER))),
    ]);
    replace_when_ready(
        &mut fx.policy,
        CompiledRules::new(routes(&[]), shared.clone()),
    )
    .unwrap();
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

#[test]
fn translated_replies_go_to_the_af_xdp_socket_of_their_queue_with_the_peer_id() {
    if !privilege::check(
        "translated_replies_go_to_the_af_xdp_socket_of_their_queue_with_the_peer_id",
    ) {
        return;
    }
    let mut fx = Fixture::new(1024);
    fx._lab
        .veth((&fx.ns, "eth0", None), (&fx.ns, "eth1", None))
        .unwrap();
    fx.inner(&tcp(DEV_LEASE, HOST, 40000));
    let reply = frame::tcp(HOST, SNAT, 443, 40000, b"200 OK");
    let expected = frame::tcp(HOST, DEV_LEASE, 443, 40000, b"200 OK");
    let (eth0, eth1) = fx
        .ns
        .run_in(|| {
            (
                nix::net::if_::if_nametoindex("eth0").unwrap(),
                nix::net::if_::if_nametoindex("eth1").unwrap(),
            )
        })
        .unwrap();
    let socket = fx.ns.run_in(|| Xsk::bind(eth0, 0)).unwrap().unwrap();
    fx.policy.insert_target_xsk(eth0, 0, &socket).unwrap();
    let on = |fx: &Fixture, ifindex| {
        let program = fx.policy.target();
        fx.ns
            .run_in(|| xdp::run_on(program, &reply, ifindex, 0))
            .unwrap()
            .unwrap()
    };

    // Arriving on eth0's queue 0: to the socket, the session's peer-id in front, one hop
    // less (forwarded, as a router does).
    let (out, meta) = on(&fx, eth0);
    assert_eq!(out.verdict, Verdict::Redirect);
    assert_frame("steered reply", &out.frame, &with_ttl(expected.clone(), 63));
    let word = |at: usize| u32::from_ne_bytes(meta[at..at + 4].try_into().unwrap());
    assert_eq!(meta.len(), 8, "metadata: {}", xdp::hex(&meta));
    assert_eq!(word(0), XSK_META_MAGIC);
    assert_eq!(word(4), u32::from(DEV_LEASE[3]), "the session's peer-id");

    // eth1 has no socket: forwarded as in socket mode, no metadata.
    let (out, meta) = on(&fx, eth1);
    assert_eq!(out.verdict, Verdict::Pass);
    assert!(meta.is_empty());
    assert_frame("reply on eth1", &out.frame, &expected);

    // A closed socket leaves the map: eth0 forwards again.
    drop(socket);
    let (out, meta) = on(&fx, eth0);
    assert_eq!(out.verdict, Verdict::Pass);
    assert!(meta.is_empty());
    let stats = fx.policy.target_stats().unwrap();
    assert_eq!(stats.get(TargetStat::Translated), 3, "{stats}");
    assert_eq!(stats.get(TargetStat::Steered), 1, "{stats}");
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
    // The first packet went to the kernel by the interface's path, which is no failure.
    assert_eq!(stats.get(InnerStat::NoNeighbour), 0, "{stats}");
    assert_eq!(stats.get(InnerStat::NoFibRoute), 0, "{stats}");

    // On the target device, but no neighbour entry for this host yet: the kernel
    // resolves it, and says why.
    let out = fx.inner(&tcp(DEV_LEASE, [10, 0, 7, 7], 40000));
    assert_eq!(out.verdict, Verdict::Pass);
    let stats = fx.policy.inner_stats().unwrap();
    assert_eq!(stats.get(InnerStat::NoNeighbour), 1, "{stats}");
    // Routed and allowed by the policy, but the namespace has no route there.
    let out = fx.inner(&tcp(DEV_LEASE, [10, 50, 0, 1], 40000));
    assert_eq!(out.verdict, Verdict::Pass);
    let stats = fx.policy.inner_stats().unwrap();
    assert_eq!(stats.get(InnerStat::NoFibRoute), 1, "{stats}");
    assert_eq!(stats.get(InnerStat::PassedToKernel), 3, "{stats}");

    // TTL 1 is left to the kernel untranslated, which answers the client with time
    // exceeded.
    let dying = with_ttl(tcp(DEV_LEASE, HOST, 40000), 1);
    xdp::assert_untouched(fx.policy.inner(), &dying, Verdict::Pass).unwrap();
    let stats = fx.policy.inner_stats().unwrap();
    assert_eq!(stats.get(InnerStat::TtlExpired), 1, "{stats}");
    assert_eq!(stats.get(InnerStat::Redirected), 1, "{stats}");
}

/// Two swaps in quick succession: the second would refill the generation `inner` read
/// until the first, so it is refused and changes nothing until the grace has passed.
#[test]
fn a_second_swap_within_the_grace_is_refused_and_changes_nothing() {
    if !privilege::check("a_second_swap_within_the_grace_is_refused_and_changes_nothing") {
        return;
    }
    let mut fx = Fixture::new(1024);
    let to_host = tcp(MANAGER_LEASE, HOST, 40000);
    let managers = CompiledRules::new(
        routes(&[]),
        compile_authorization(&[rule("10.0.0.0/16", Access::Group(g(MANAGER)))]),
    );
    replace_when_ready(&mut fx.policy, CompiledRules::new(routes(&[]), rules())).unwrap();
    let ready = fx.policy.rules_ready_at().expect("a swap just happened");
    match fx.policy.replace_rules(&managers) {
        Err(XdpError::RulesBusy { wait }) => assert!(wait <= Duration::from_millis(50)),
        other => panic!("second swap at once: {other:?}"),
    }
    fx.expect_drop(
        "rules in force after a refused swap",
        &to_host,
        InnerStat::NotAuthorized,
    );
    std::thread::sleep(ready.saturating_duration_since(Instant::now()));
    assert_eq!(fx.policy.rules_ready_at(), None);
    fx.policy.replace_rules(&managers).unwrap();
    assert_eq!(fx.inner(&to_host).verdict, Verdict::Pass);
    assert!(fx.policy.rules_ready_at().is_some());
}

#[test]
fn rule_sets_are_replaced_whole_and_a_failed_replace_changes_nothing() {
    if !privilege::check("rule_sets_are_replaced_whole_and_a_failed_replace_changes_nothing") {
        return;
    }
    let mut fx = Fixture::new(1024);
    let to_host = tcp(MANAGER_LEASE, HOST, 40000);
    let managers = compile_authorization(&[rule("10.0.0.0/16", Access::Group(g(MANAGER)))]);
    for round in 0..20 {
        let allowed = round % 2 == 0;
        let set = if allowed { &managers } else { &rules() };
        replace_when_ready(&mut fx.policy, CompiledRules::new(routes(&[]), set.clone())).unwrap();
        let out = fx.inner(&to_host);
        let want = if allowed {
            Verdict::Pass
        } else {
            Verdict::Drop
        };
        assert_eq!(out.verdict, want, "round {round}");
    }
    // Round 19 left the original rules in force; a set too large for the maps fails
    // and leaves them in force.
    let too_many: Vec<(Ipv4Net, RouteValue)> = (0..=MAX_ROUTES)
        .map(|i| {
            let net = Ipv4Net::new(Ipv4Addr::from(0x0b00_0000 + (i << 8)), 24).unwrap();
            (
                net,
                RouteValue {
                    target_ifindex: 7,
                    snat_addr: SNAT,
                },
            )
        })
        .collect();
    assert!(
        replace_when_ready(
            &mut fx.policy,
            CompiledRules::new(too_many, managers.clone())
        )
        .is_err()
    );
    fx.expect_drop(
        "rules in force after a failed replace",
        &to_host,
        InnerStat::NotAuthorized,
    );
    fx.expect_translated(
        "still routed",
        &tcp(DEV_LEASE, HOST, 40001),
        &tcp(SNAT, HOST, 40001),
    );
}

#[test]
fn ending_a_session_removes_its_nat_state_and_only_its() {
    if !privilege::check("ending_a_session_removes_its_nat_state_and_only_its") {
        return;
    }
    let mut fx = Fixture::new(1024);
    fx.inner(&tcp(DEV_LEASE, HOST, 40000));
    fx.inner(&frame::udp(DEV_LEASE, HOST, 40000, 53, b"q"));
    fx.inner(&frame::icmp_echo(DEV_LEASE, HOST, 9, 1, b""));
    fx.inner(&tcp(MANAGER_LEASE, [10, 0, 2, 119], 40000));
    assert_eq!(fx.policy.nat_mappings().unwrap().len(), 4);

    assert_eq!(fx.policy.end_session(Ipv4Addr::from(DEV_LEASE)).unwrap(), 3);
    let left = fx.policy.nat_mappings().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0.src_addr, MANAGER_LEASE);
    assert_eq!(fx.policy.nat_reverse().unwrap().len(), 1);
    // A reply to the ended session misses and passes untouched; the other still maps.
    let stale = frame::tcp(HOST, SNAT, 443, 40000, b"late");
    assert_eq!(fx.target(&stale).frame, stale);
    let live = frame::tcp([10, 0, 2, 119], SNAT, 443, 40000, b"ok");
    assert_eq!(
        fx.target(&live).frame,
        frame::tcp([10, 0, 2, 119], MANAGER_LEASE, 443, 40000, b"ok")
    );
    fx.expect_drop(
        "packet of the ended session",
        &tcp(DEV_LEASE, HOST, 40000),
        InnerStat::Spoofed,
    );
    // Ending it again is harmless.
    assert_eq!(fx.policy.end_session(Ipv4Addr::from(DEV_LEASE)).unwrap(), 0);
}

/// The IP packet inside an Ethernet frame.
fn ip_packet(f: &[u8]) -> &[u8] {
    &f[14..]
}

#[test]
fn icmp_errors_about_translated_flows_go_back_to_the_client() {
    if !privilege::check("icmp_errors_about_translated_flows_go_back_to_the_client") {
        return;
    }
    let mut fx = Fixture::new(1024);
    let shared = compile_authorization(&[
        rule("10.0.0.0/16", Access::Group(g(DEV))),
        rule("10.0.0.0/16", Access::Group(g(MANAGER))),
    ]);
    replace_when_ready(
        &mut fx.policy,
        CompiledRules::new(routes(&[]), shared.clone()),
    )
    .unwrap();
    // The manager's UDP flow collides with the dev's and gets another port.
    let dev_udp = frame::udp(DEV_LEASE, HOST, 40000, 53, b"query");
    let manager_udp = frame::udp(MANAGER_LEASE, HOST, 40000, 53, b"query");
    let dev_out = fx.inner(&dev_udp).frame;
    let manager_out = fx.inner(&manager_udp).frame;
    let manager_port = src_port(&manager_out);
    assert_ne!(manager_port, 40000);
    let tcp_out = fx
        .inner(&frame::tcp(DEV_LEASE, HOST, 40001, 443, &[1; 40]))
        .frame;
    let echo_out = fx
        .inner(&frame::icmp_echo(DEV_LEASE, HOST, 0x55, 3, b"ping"))
        .frame;

    let unreachable =
        |dst: [u8; 4], quoted: &[u8]| frame::icmp_error(HOST, dst, 3, 3, [0; 4], quoted);
    let frag_needed = |dst: [u8; 4], quoted: &[u8]| {
        frame::icmp_error(HOST, dst, 3, 4, [0, 0, 0x05, 0x78], quoted)
    };
    let expired = |dst: [u8; 4], quoted: &[u8]| frame::icmp_error(HOST, dst, 11, 0, [0; 4], quoted);
    let client_tcp = frame::tcp(DEV_LEASE, HOST, 40001, 443, &[1; 40]);
    let client_echo = frame::icmp_echo(DEV_LEASE, HOST, 0x55, 3, b"ping");
    let cases = [
        (
            "port unreachable, whole datagram",
            unreachable(SNAT, ip_packet(&dev_out)),
            unreachable(DEV_LEASE, ip_packet(&dev_udp)),
        ),
        (
            "port unreachable, moved port",
            unreachable(SNAT, ip_packet(&manager_out)),
            unreachable(MANAGER_LEASE, ip_packet(&manager_udp)),
        ),
        (
            "fragmentation needed, 8 bytes of tcp",
            frag_needed(SNAT, &ip_packet(&tcp_out)[..28]),
            frag_needed(DEV_LEASE, &ip_packet(&client_tcp)[..28]),
        ),
        (
            "fragmentation needed, tcp with checksum",
            frag_needed(SNAT, &ip_packet(&tcp_out)[..40]),
            frag_needed(DEV_LEASE, &ip_packet(&client_tcp)[..40]),
        ),
        (
            "time exceeded for an echo",
            expired(SNAT, ip_packet(&echo_out)),
            expired(DEV_LEASE, ip_packet(&client_echo)),
        ),
    ];
    for (name, error, expected) in &cases {
        let out = fx.target(error);
        assert_eq!(out.verdict, Verdict::Pass, "{name}");
        assert!(
            checksum::ipv4_header_ok(&out.frame),
            "{name}: outer IP checksum"
        );
        assert!(checksum::l4_ok(&out.frame), "{name}: ICMP checksum");
        assert!(
            checksum::ipv4_header_ok(&out.frame[28..]),
            "{name}: quoted IP checksum"
        );
        assert_eq!(xdp::hex(&out.frame), xdp::hex(expected), "{name}");
    }
    // About a flow we never translated, or with a quote too short to hold ports: the
    // host gets it untouched.
    let stranger = frame::udp(SNAT, HOST, 40999, 53, b"x");
    for (name, f) in [
        ("unknown flow", unreachable(SNAT, ip_packet(&stranger))),
        (
            "quote without ports",
            unreachable(SNAT, &ip_packet(&dev_out)[..24]),
        ),
    ] {
        let out = fx.target(&f);
        assert_eq!(out.verdict, Verdict::Pass, "{name}");
        assert_eq!(out.frame, f, "{name}");
    }
    let stats = fx.policy.target_stats().unwrap();
    assert_eq!(stats.get(TargetStat::IcmpError), 5, "{stats}");
    assert_eq!(stats.get(TargetStat::Miss), 2, "{stats}");
}

fn tcp_flags(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = frame::tcp(src, dst, sport, dport, b"");
    f[47] = flags;
    // Recompute the TCP checksum from scratch for the new flags.
    f[50..52].fill(0);
    let mut pseudo = 0u32;
    for c in f[26..34].chunks_exact(2) {
        pseudo += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    pseudo += 6 + 20;
    let sum = !checksum::ones_complement_sum(&f[34..54], pseudo);
    f[50..52].copy_from_slice(&sum.to_be_bytes());
    assert!(checksum::l4_ok(&f));
    f
}

#[test]
fn nat_mappings_expire_by_protocol_and_tcp_state() {
    if !privilege::check("nat_mappings_expire_by_protocol_and_tcp_state") {
        return;
    }
    let mut fx = Fixture::new(1024);
    let (syn, ack, rst, synack) = (0x02, 0x10, 0x04, 0x12);
    // Established: SYN out, SYN-ACK back, ACK out.
    fx.inner(&tcp_flags(DEV_LEASE, HOST, 41000, 443, syn));
    fx.target(&tcp_flags(HOST, SNAT, 443, 41000, synack));
    fx.inner(&tcp_flags(DEV_LEASE, HOST, 41000, 443, ack));
    // Reset by the remote end.
    fx.inner(&tcp_flags(DEV_LEASE, HOST, 41001, 443, syn));
    fx.target(&tcp_flags(HOST, SNAT, 443, 41001, rst));
    // Never answered.
    fx.inner(&tcp_flags(DEV_LEASE, HOST, 41002, 443, syn));
    fx.inner(&frame::udp(DEV_LEASE, HOST, 41003, 53, b"q"));
    fx.inner(&frame::icmp_echo(DEV_LEASE, HOST, 41004, 1, b""));
    // A reverse entry without its forward half, last seen long ago.
    let orphan = FlowKey {
        src_addr: HOST,
        dst_addr: SNAT,
        src_port: 53u16.to_be_bytes(),
        dst_port: 9u16.to_be_bytes(),
        protocol: 17,
        _pad: [0; 3],
    };
    fx.policy
        .insert_nat_reverse(
            orphan,
            NatIn {
                client_addr: DEV_LEASE,
                client_port: 9u16.to_be_bytes(),
                ..Default::default()
            },
        )
        .unwrap();

    let t = NatTimeouts::default();
    let now = monotonic_now_ns();
    let at = |d: std::time::Duration| now + d.as_nanos() as u64 + 1_000_000_000;
    let live_ports = |fx: &mut Fixture| {
        let mut p: Vec<u16> = fx
            .policy
            .nat_mappings()
            .unwrap()
            .iter()
            .map(|(f, _)| u16::from_be_bytes(f.src_port))
            .collect();
        p.sort();
        p
    };
    let sweep = fx.policy.sweep_nat(now, &t).unwrap();
    assert_eq!(
        (sweep.kept, sweep.expired, sweep.orphans),
        (5, 1, 0),
        "only the stale orphan goes at once"
    );
    assert_eq!(live_ports(&mut fx), [41000, 41001, 41002, 41003, 41004]);
    fx.policy.sweep_nat(at(t.tcp_reset), &t).unwrap();
    assert_eq!(live_ports(&mut fx), [41000, 41002, 41003, 41004], "reset");
    fx.policy.sweep_nat(at(t.icmp), &t).unwrap();
    assert_eq!(live_ports(&mut fx), [41000, 41002, 41003], "icmp");
    fx.policy.sweep_nat(at(t.tcp_transitory), &t).unwrap();
    assert_eq!(live_ports(&mut fx), [41000, 41003], "unanswered syn");
    fx.policy.sweep_nat(at(t.udp), &t).unwrap();
    assert_eq!(live_ports(&mut fx), [41000], "udp");
    let sweep = fx.policy.sweep_nat(at(t.tcp_established), &t).unwrap();
    assert_eq!(sweep.expired, 1);
    assert!(fx.policy.nat_mappings().unwrap().is_empty());
    assert!(fx.policy.nat_reverse().unwrap().is_empty());
    // The flow maps again with its next packet.
    fx.expect_translated(
        "after expiry",
        &tcp(DEV_LEASE, HOST, 41000),
        &tcp(SNAT, HOST, 41000),
    );
}

#[test]
fn clients_reach_each_other_only_when_enabled_and_authorized() {
    if !privilege::check("clients_reach_each_other_only_when_enabled_and_authorized") {
        return;
    }
    let mut fx = Fixture::new(1024);
    let client_cidr: Ipv4Net = "10.200.0.0/22".parse().unwrap();
    let to_manager = tcp(DEV_LEASE, MANAGER_LEASE, 40000);
    fx.policy.set_client_network(client_cidr, false).unwrap();
    fx.expect_drop(
        "client-to-client off",
        &to_manager,
        InnerStat::ClientToClientDisabled,
    );

    fx.policy.set_client_network(client_cidr, true).unwrap();
    fx.expect_drop(
        "no rule for the client CIDR",
        &to_manager,
        InnerStat::NotAuthorized,
    );

    let mut with_local = rules();
    with_local.extend(compile_authorization(&[rule(
        "10.200.0.0/22",
        Access::AllUsers,
    )]));
    replace_when_ready(&mut fx.policy, CompiledRules::new(routes(&[]), with_local)).unwrap();
    let before = fx.policy.inner_stats().unwrap();
    // Back to the data plane untranslated: it hands the packet to the other session.
    xdp::assert_untouched(fx.policy.inner(), &to_manager, Verdict::Tx)
        .unwrap_or_else(|e| panic!("client to client: {e:#}"));
    let moved = fx.policy.inner_stats().unwrap().since(&before);
    assert_eq!(moved.get(InnerStat::ClientToClient), 1, "{moved}");
    assert_eq!(moved.get(InnerStat::NatCreated), 0, "{moved}");
    fx.expect_drop(
        "to an address no session leases",
        &tcp(DEV_LEASE, [10, 200, 0, 99], 40000),
        InnerStat::NoSuchClient,
    );
    // Traffic to the VPC is unaffected.
    fx.expect_translated(
        "to the VPC",
        &tcp(DEV_LEASE, HOST, 40000),
        &tcp(SNAT, HOST, 40000),
    );
}

/// `f` with its IPv4 TTL set to `ttl` (header checksum fixed).
fn with_ttl(mut f: Vec<u8>, ttl: u8) -> Vec<u8> {
    f[22] = ttl;
    checksum::fix_ipv4_header(&mut f);
    f
}

/// The fixture with a full tunnel: a route to 0.0.0.0/0 and a rule admitting all users
/// there, so only the isolation rules stand between a client and any destination.
fn full_tunnel(fx: &mut Fixture) {
    let mut everything = rules();
    everything.extend(compile_authorization(&[rule(
        "0.0.0.0/0",
        Access::AllUsers,
    )]));
    replace_when_ready(
        &mut fx.policy,
        CompiledRules::new(routes(&["0.0.0.0/0"]), everything),
    )
    .unwrap();
}

#[test]
fn destinations_no_route_or_rule_opens_are_refused() {
    if !privilege::check("destinations_no_route_or_rule_opens_are_refused") {
        return;
    }
    let mut fx = Fixture::new(1024);
    full_tunnel(&mut fx);
    // The gateway's addresses: its target ENI (the SNAT address) with its directed
    // broadcast, and its public address.
    let own = [SNAT, [10, 0, 255, 255], [198, 51, 100, 1]].map(Ipv4Addr::from);
    fx.policy.set_gateway_addresses(&own).unwrap();
    let cases: [(&str, [u8; 4], InnerStat); 14] = [
        (
            "instance metadata",
            [169, 254, 169, 254],
            InnerStat::MetadataService,
        ),
        (
            "link-local",
            [169, 254, 1, 1],
            InnerStat::SpecialDestination,
        ),
        (
            "link-local, last",
            [169, 254, 255, 255],
            InnerStat::SpecialDestination,
        ),
        ("loopback", [127, 0, 0, 1], InnerStat::SpecialDestination),
        (
            "loopback, elsewhere",
            [127, 1, 2, 3],
            InnerStat::SpecialDestination,
        ),
        ("this network", [0, 0, 0, 0], InnerStat::SpecialDestination),
        (
            "this network, a host",
            [0, 1, 2, 3],
            InnerStat::SpecialDestination,
        ),
        ("reserved", [240, 0, 0, 1], InnerStat::SpecialDestination),
        (
            "limited broadcast",
            [255, 255, 255, 255],
            InnerStat::MulticastOrBroadcast,
        ),
        ("all hosts", [224, 0, 0, 1], InnerStat::MulticastOrBroadcast),
        (
            "ssdp",
            [239, 255, 255, 250],
            InnerStat::MulticastOrBroadcast,
        ),
        ("the target ENI", SNAT, InnerStat::GatewayAddress),
        (
            "its directed broadcast",
            [10, 0, 255, 255],
            InnerStat::GatewayAddress,
        ),
        (
            "the public address",
            [198, 51, 100, 1],
            InnerStat::GatewayAddress,
        ),
    ];
    for (name, dst, reason) in cases {
        fx.expect_drop(name, &tcp(DEV_LEASE, dst, 40000), reason);
        fx.expect_drop(
            name,
            &frame::udp(MANAGER_LEASE, dst, 5353, 53, b"q"),
            reason,
        );
        fx.expect_drop(
            name,
            &frame::icmp_echo(DEV_LEASE, dst, 9, 1, b"ping"),
            reason,
        );
    }
    assert!(fx.policy.nat_mappings().unwrap().is_empty());
    // The full tunnel itself works, next to the refused addresses.
    for dst in [
        [169, 253, 255, 255],
        [223, 255, 255, 255],
        [1, 0, 0, 0],
        [10, 0, 255, 254],
    ] {
        fx.expect_translated(
            "an ordinary destination",
            &tcp(DEV_LEASE, dst, 40000),
            &tcp(SNAT, dst, 40000),
        );
    }
    // A new set replaces the old one: the public address is reachable again.
    let fewer = [SNAT, [10, 0, 255, 255]].map(Ipv4Addr::from);
    fx.policy.set_gateway_addresses(&fewer).unwrap();
    assert_eq!(fx.policy.gateway_addresses().unwrap(), fewer);
    fx.expect_translated(
        "a former gateway address",
        &tcp(DEV_LEASE, [198, 51, 100, 1], 40000),
        &tcp(SNAT, [198, 51, 100, 1], 40000),
    );
    fx.expect_drop(
        "still the gateway's",
        &tcp(DEV_LEASE, SNAT, 40000),
        InnerStat::GatewayAddress,
    );
    let too_many: Vec<Ipv4Addr> = (0..=gateway_ebpf_common::MAX_GATEWAY_ADDRS)
        .map(|i| Ipv4Addr::from(0x0a00_0000 + i))
        .collect();
    assert!(fx.policy.set_gateway_addresses(&too_many).is_err());
}

#[test]
fn the_gateway_namespace_addresses_fill_the_refused_set() {
    if !privilege::check("the_gateway_namespace_addresses_fill_the_refused_set") {
        return;
    }
    let mut fx = Fixture::new(1024);
    full_tunnel(&mut fx);
    let peer = fx._lab.add_namespace("peer").unwrap();
    fx._lab
        .veth(
            (&fx.ns, "eni0", Some("10.0.0.9/16")),
            (&peer, "eni0p", None),
        )
        .unwrap();
    let own = fx
        .ns
        .run_in(gateway::net::gateway_addresses)
        .unwrap()
        .unwrap();
    let want = [
        [10, 0, 0, 9],
        [10, 0, 255, 255],
        [127, 0, 0, 1],
        [127, 255, 255, 255],
    ];
    assert_eq!(own, want.map(Ipv4Addr::from), "{own:?}");
    fx.policy.set_gateway_addresses(&own).unwrap();
    fx.expect_drop(
        "directed broadcast of the ENI",
        &frame::udp(DEV_LEASE, [10, 0, 255, 255], 5353, 53, b"q"),
        InnerStat::GatewayAddress,
    );
    fx.expect_drop(
        "the ENI",
        &tcp(DEV_LEASE, SNAT, 40000),
        InnerStat::GatewayAddress,
    );
    fx.expect_translated(
        "a host",
        &tcp(DEV_LEASE, HOST, 40000),
        &tcp(SNAT, HOST, 40000),
    );
}

#[test]
fn source_routed_packets_are_refused_and_other_options_pass() {
    if !privilege::check("source_routed_packets_are_refused_and_other_options_pass") {
        return;
    }
    let fx = Fixture::new(1024);
    let with =
        |options: &[u8]| frame::udp_with_ip_options(DEV_LEASE, HOST, 40000, 53, options, b"q");
    // 39 no-ops, then an option type with no room for its length byte.
    let longest_malformed = [[1; 39].as_slice(), &[0x44]].concat();
    let refused: [(&str, &[u8], InnerStat); 9] = [
        (
            "lsrr",
            &[0x83, 7, 4, 10, 0, 5, 5, 1],
            InnerStat::SourceRoute,
        ),
        (
            "ssrr",
            &[0x89, 7, 4, 10, 0, 5, 5, 1],
            InnerStat::SourceRoute,
        ),
        (
            "lsrr after no-ops",
            &[1, 1, 1, 0x83, 7, 4, 10, 0, 5, 5, 0, 0],
            InnerStat::SourceRoute,
        ),
        (
            "ssrr after a timestamp",
            &[0x44, 8, 5, 0, 0, 0, 0, 0, 0x89, 7, 4, 10, 0, 5, 5, 0],
            InnerStat::SourceRoute,
        ),
        (
            "length past the header",
            &[0x07, 9, 4, 0, 0, 0, 0, 0],
            InnerStat::MalformedIpv4,
        ),
        ("length below 2", &[0x44, 1, 0, 0], InnerStat::MalformedIpv4),
        ("length 0", &[1, 0x07, 0, 0], InnerStat::MalformedIpv4),
        ("no length byte", &[1, 1, 1, 0x07], InnerStat::MalformedIpv4),
        (
            "the longest list, malformed at its end",
            &longest_malformed,
            InnerStat::MalformedIpv4,
        ),
    ];
    for (name, options, reason) in refused {
        fx.expect_drop(name, &with(options), reason);
    }
    let passed: [(&str, &[u8]); 7] = [
        ("record route", &[0x07, 7, 4, 0, 0, 0, 0, 0]),
        ("timestamp", &[0x44, 8, 5, 0, 0, 0, 0, 0]),
        ("router alert", &[0x94, 4, 0, 0]),
        ("no-ops", &[1, 1, 1, 1]),
        (
            "a source-route type inside another option",
            &[0x07, 7, 4, 0x83, 7, 4, 0x89, 0],
        ),
        ("after the end of the list", &[0, 0x83, 7, 4, 10, 0, 5, 5]),
        ("the longest list of no-ops", &[1; 40]),
    ];
    for (i, (name, options)) in passed.into_iter().enumerate() {
        let port = 41000 + i as u16;
        fx.expect_translated(
            name,
            &frame::udp_with_ip_options(DEV_LEASE, HOST, port, 53, options, b"q"),
            &frame::udp_with_ip_options(SNAT, HOST, port, 53, options, b"q"),
        );
    }
}

#[test]
fn a_ttl_expiring_packet_goes_to_the_kernel_untranslated_without_nat_state() {
    if !privilege::check("a_ttl_expiring_packet_goes_to_the_kernel_untranslated_without_nat_state")
    {
        return;
    }
    let fx = Fixture::new(1024);
    for ttl in [1, 0] {
        for f in [
            tcp(DEV_LEASE, HOST, 40000),
            frame::udp(DEV_LEASE, HOST, 40000, 33434, b"traceroute"),
            frame::icmp_echo(DEV_LEASE, HOST, 7, 1, b"ping"),
        ] {
            let dying = with_ttl(f, ttl);
            let before = fx.policy.inner_stats().unwrap();
            // Untouched: the kernel's time exceeded must go to the client's lease.
            xdp::assert_untouched(fx.policy.inner(), &dying, Verdict::Pass)
                .unwrap_or_else(|e| panic!("ttl {ttl}: {e:#}"));
            let moved = fx.policy.inner_stats().unwrap().since(&before);
            for stat in InnerStat::ALL {
                let want = u64::from(matches!(stat, InnerStat::Allowed | InnerStat::TtlExpired));
                assert_eq!(
                    moved.get(stat),
                    want,
                    "ttl {ttl}: {} ({moved})",
                    stat.name()
                );
            }
        }
    }
    assert!(fx.policy.nat_mappings().unwrap().is_empty());
    assert!(fx.policy.nat_reverse().unwrap().is_empty());
    // Authorization comes first: an expiring packet the rules refuse is dropped.
    fx.expect_drop(
        "expiring, not authorized",
        &with_ttl(tcp(MANAGER_LEASE, HOST, 40000), 1),
        InnerStat::NotAuthorized,
    );
    fx.expect_drop(
        "expiring, to the metadata service",
        &with_ttl(tcp(DEV_LEASE, [169, 254, 169, 254], 80), 1),
        InnerStat::MetadataService,
    );
    // TTL 2 still leaves the gateway: translated.
    fx.expect_translated(
        "ttl 2",
        &with_ttl(tcp(DEV_LEASE, HOST, 40000), 2),
        &with_ttl(tcp(SNAT, HOST, 40000), 2),
    );
    assert_eq!(fx.policy.nat_mappings().unwrap().len(), 1);
}

#[test]
fn unsolicited_packets_to_the_client_network_are_dropped_on_the_target() {
    if !privilege::check("unsolicited_packets_to_the_client_network_are_dropped_on_the_target") {
        return;
    }
    let mut fx = Fixture::new(1024);
    fx.policy
        .set_client_network("10.200.0.0/22".parse().unwrap(), false)
        .unwrap();
    let udp_out = fx
        .inner(&frame::udp(DEV_LEASE, HOST, 40000, 53, b"q"))
        .frame;
    fx.inner(&tcp(DEV_LEASE, HOST, 40000));
    let mut later = frame::udp(HOST, DEV_LEASE, 53, 40000, &[0; 16]);
    frame::set_fragment(&mut later, false, 185);
    let mut gre = frame::udp(HOST, DEV_LEASE, 1, 2, b"abcd");
    gre[23] = 47;
    checksum::fix_ipv4_header(&mut gre);
    let stranger = frame::udp(DEV_LEASE, HOST, 40999, 53, b"x");
    let unsolicited = [
        (
            "tcp to a lease",
            frame::tcp(HOST, DEV_LEASE, 443, 40000, b"x"),
        ),
        (
            "udp to a lease",
            frame::udp(HOST, DEV_LEASE, 53, 40000, b"a"),
        ),
        (
            "ping to a lease",
            frame::icmp_echo(HOST, DEV_LEASE, 1, 1, b"ping"),
        ),
        (
            "to an unleased client address",
            frame::tcp(HOST, [10, 200, 3, 7], 1, 2, b""),
        ),
        (
            "to the client broadcast",
            frame::udp(HOST, [10, 200, 3, 255], 1, 2, b""),
        ),
        ("a later fragment", later),
        ("another protocol", gre),
        (
            "an icmp error about no flow",
            frame::icmp_error(HOST, DEV_LEASE, 3, 3, [0; 4], ip_packet(&stranger)),
        ),
    ];
    for (name, f) in &unsolicited {
        let before = fx.policy.target_stats().unwrap();
        assert_eq!(fx.target(f).verdict, Verdict::Drop, "{name}");
        let moved = fx.policy.target_stats().unwrap().since(&before);
        for stat in TargetStat::ALL {
            let want = u64::from(matches!(stat, TargetStat::Unsolicited | TargetStat::Drop));
            assert_eq!(moved.get(stat), want, "{name}: {} ({moved})", stat.name());
        }
    }
    // Replies to the client's own flows still reach it, ICMP errors about them too.
    let replies = [
        (
            "tcp reply",
            frame::tcp(HOST, SNAT, 443, 40000, b"200 OK"),
            frame::tcp(HOST, DEV_LEASE, 443, 40000, b"200 OK"),
        ),
        (
            "port unreachable",
            frame::icmp_error(HOST, SNAT, 3, 3, [0; 4], ip_packet(&udp_out)),
            frame::icmp_error(
                HOST,
                DEV_LEASE,
                3,
                3,
                [0; 4],
                ip_packet(&frame::udp(DEV_LEASE, HOST, 40000, 53, b"q")),
            ),
        ),
    ];
    for (name, reply, expected) in &replies {
        let out = fx.target(reply);
        assert_eq!(out.verdict, Verdict::Pass, "{name}");
        assert_frame(name, &out.frame, expected);
    }
    // Anything else for the host passes to it untouched, as before.
    let other = frame::tcp(HOST, [10, 0, 0, 10], 443, 40000, b"x");
    xdp::assert_untouched(fx.policy.target(), &other, Verdict::Pass).unwrap();
    let stats = fx.policy.target_stats().unwrap();
    assert_eq!(stats.get(TargetStat::Translated), 2, "{stats}");
    assert_eq!(stats.get(TargetStat::IcmpError), 1, "{stats}");
    assert_eq!(stats.get(TargetStat::Unsolicited), 8, "{stats}");
    assert_eq!(stats.get(TargetStat::Miss), 1, "{stats}");
}

#[test]
fn an_expiring_reply_is_not_steered_and_steered_replies_lose_one_ttl() {
    if !privilege::check("an_expiring_reply_is_not_steered_and_steered_replies_lose_one_ttl") {
        return;
    }
    let mut fx = Fixture::new(1024);
    fx._lab
        .veth((&fx.ns, "eth0", None), (&fx.ns, "eth1", None))
        .unwrap();
    fx.inner(&tcp(DEV_LEASE, HOST, 40000));
    let eth0 = fx
        .ns
        .run_in(|| nix::net::if_::if_nametoindex("eth0").unwrap())
        .unwrap();
    let socket = fx.ns.run_in(|| Xsk::bind(eth0, 0)).unwrap().unwrap();
    fx.policy.insert_target_xsk(eth0, 0, &socket).unwrap();
    let on_eth0 = |fx: &Fixture, f: &[u8]| {
        let program = fx.policy.target();
        let before = fx.policy.target_stats().unwrap();
        let (out, meta) = fx
            .ns
            .run_in(|| xdp::run_on(program, f, eth0, 0))
            .unwrap()
            .unwrap();
        (out, meta, fx.policy.target_stats().unwrap().since(&before))
    };
    let reply = |ttl| with_ttl(frame::tcp(HOST, SNAT, 443, 40000, b"200 OK"), ttl);
    let translated = |ttl| with_ttl(frame::tcp(HOST, DEV_LEASE, 443, 40000, b"200 OK"), ttl);

    // Steered as a router forwards: one hop less, the header checksum updated.
    for ttl in [64, 2, 255] {
        let (out, meta, moved) = on_eth0(&fx, &reply(ttl));
        assert_eq!(out.verdict, Verdict::Redirect, "ttl {ttl}");
        assert_eq!(meta.len(), 8, "ttl {ttl}");
        assert_frame("steered", &out.frame, &translated(ttl - 1));
        assert_eq!(moved.get(TargetStat::Steered), 1, "ttl {ttl}: {moved}");
        assert_eq!(moved.get(TargetStat::TtlExpired), 0, "ttl {ttl}: {moved}");
    }
    // Expiring here: to the kernel (which tells the sender), not to the worker.
    for ttl in [1, 0] {
        let (out, meta, moved) = on_eth0(&fx, &reply(ttl));
        assert_eq!(out.verdict, Verdict::Pass, "ttl {ttl}");
        assert!(meta.is_empty(), "ttl {ttl}: {}", xdp::hex(&meta));
        assert_frame("expiring", &out.frame, &translated(ttl));
        for stat in TargetStat::ALL {
            let want = u64::from(matches!(
                stat,
                TargetStat::Translated | TargetStat::TtlExpired | TargetStat::PassedToKernel
            ));
            assert_eq!(
                moved.get(stat),
                want,
                "ttl {ttl}: {} ({moved})",
                stat.name()
            );
        }
    }
    drop(socket);
}
