//! `edge` through BPF_PROG_TEST_RUN: one fixture per kind of frame, asserting the verdict,
//! that the frame leaves unchanged, and which counters moved.

use gateway::{dataplane::xsk::Xsk, xdp::Edge};
use gateway_ebpf_common::EdgeStat;
use gateway_tests::{
    lab::Lab,
    privilege,
    xdp::{self, Verdict, frame},
};

const CLIENT: [u8; 4] = [198, 51, 100, 2];
const GATEWAY: [u8; 4] = [198, 51, 100, 1];

struct Fixture {
    name: &'static str,
    frame: Vec<u8>,
    verdict: Verdict,
    /// Counters this frame must raise by one (besides pass/drop).
    counts: &'static [EdgeStat],
}

fn fixture(
    name: &'static str,
    frame: Vec<u8>,
    verdict: Verdict,
    counts: &'static [EdgeStat],
) -> Fixture {
    Fixture {
        name,
        frame,
        verdict,
        counts,
    }
}

fn check(edge: &Edge, f: &Fixture) {
    let before = edge.stats().unwrap();
    xdp::assert_untouched(edge.program(), &f.frame, f.verdict)
        .unwrap_or_else(|e| panic!("fixture {}: {e:#}", f.name));
    let delta = edge.stats().unwrap().since(&before);
    let verdict_stat = match f.verdict {
        Verdict::Pass => EdgeStat::Pass,
        Verdict::Drop => EdgeStat::Drop,
        other => panic!("fixture {}: edge never returns {other:?}", f.name),
    };
    for stat in EdgeStat::ALL {
        let want = u64::from(stat == verdict_stat || f.counts.contains(&stat));
        assert_eq!(
            delta.get(stat),
            want,
            "fixture {}: counter {} moved by {} (all moves: {delta})",
            f.name,
            stat.name(),
            delta.get(stat)
        );
    }
}

fn load() -> Option<Edge> {
    Some(Edge::load().expect("loading edge"))
}

#[test]
fn well_formed_frames_pass_untouched_and_are_counted() {
    if !privilege::check("well_formed_frames_pass_untouched_and_are_counted") {
        return;
    }
    let edge = load().unwrap();
    let mut padded = frame::udp(CLIENT, GATEWAY, 50000, 1194, b"\x48");
    padded.extend_from_slice(&[0; 12]); // Ethernet padding after the IP packet
    let fixtures = [
        fixture(
            "udp",
            frame::udp(CLIENT, GATEWAY, 50000, 1194, b"\x48abc"),
            Verdict::Pass,
            &[EdgeStat::Udp],
        ),
        fixture(
            "udp empty payload",
            frame::udp(CLIENT, GATEWAY, 50000, 443, b""),
            Verdict::Pass,
            &[EdgeStat::Udp],
        ),
        fixture(
            "tcp syn",
            frame::tcp(CLIENT, GATEWAY, 50000, 443, b""),
            Verdict::Pass,
            &[EdgeStat::Tcp],
        ),
        fixture(
            "tcp data",
            frame::tcp(CLIENT, GATEWAY, 50000, 443, &[7; 100]),
            Verdict::Pass,
            &[EdgeStat::Tcp],
        ),
        fixture(
            "icmp echo",
            frame::icmp_echo(CLIENT, GATEWAY, 9, 1, b"ping"),
            Verdict::Pass,
            &[EdgeStat::Icmp],
        ),
        fixture(
            "udp with ethernet padding",
            padded,
            Verdict::Pass,
            &[EdgeStat::Udp],
        ),
        fixture(
            "udp after ip options",
            frame::udp_with_ip_options(
                CLIENT,
                GATEWAY,
                1,
                1194,
                &[0x94, 0x04, 0, 0, 1, 1, 1, 0],
                b"x",
            ),
            Verdict::Pass,
            &[EdgeStat::Udp, EdgeStat::Ipv4Options],
        ),
        fixture(
            "gre is another protocol",
            {
                let mut f = frame::udp(CLIENT, GATEWAY, 1, 2, b"abcd");
                f[23] = 47;
                xdp::checksum::fix_ipv4_header(&mut f);
                f
            },
            Verdict::Pass,
            &[EdgeStat::OtherProtocol],
        ),
        fixture(
            "arp",
            frame::ethernet(0x0806, &[0; 28]),
            Verdict::Pass,
            &[EdgeStat::NonIpv4],
        ),
        fixture(
            "ipv6",
            frame::ethernet(0x86dd, &[0x60; 48]),
            Verdict::Pass,
            &[EdgeStat::NonIpv4],
        ),
        fixture(
            "vlan tagged",
            frame::ethernet(0x8100, &[0; 46]),
            Verdict::Pass,
            &[EdgeStat::NonIpv4],
        ),
    ];
    for f in &fixtures {
        check(&edge, f);
    }
}

#[test]
fn fragments_are_never_read_as_ports() {
    if !privilege::check("fragments_are_never_read_as_ports") {
        return;
    }
    let edge = load().unwrap();
    // First fragment: the UDP length covers the whole datagram, more than this piece.
    let mut first = frame::udp(CLIENT, GATEWAY, 50000, 1194, &[1; 64]);
    first[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&2000u16.to_be_bytes());
    frame::set_fragment(&mut first, true, 0);
    // A later fragment: its first bytes are payload, which here look like a too-short
    // UDP header; the program must not read them as one.
    let mut later = frame::udp(CLIENT, GATEWAY, 0, 0, &[0; 16]);
    frame::set_fragment(&mut later, false, 185);
    let mut later_mf = frame::tcp(CLIENT, GATEWAY, 0, 0, &[]);
    frame::set_fragment(&mut later_mf, true, 1);
    for f in [
        fixture("first fragment", first, Verdict::Pass, &[EdgeStat::Udp]),
        fixture("last fragment", later, Verdict::Pass, &[EdgeStat::Fragment]),
        fixture(
            "middle fragment",
            later_mf,
            Verdict::Pass,
            &[EdgeStat::Fragment],
        ),
    ] {
        check(&edge, &f);
    }
}

#[test]
fn malformed_ipv4_is_dropped() {
    if !privilege::check("malformed_ipv4_is_dropped") {
        return;
    }
    let edge = load().unwrap();
    let good = frame::udp(CLIENT, GATEWAY, 50000, 1194, b"\x48abc");
    let with = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut f = good.clone();
        edit(&mut f);
        f
    };
    let fixtures = [
        fixture(
            "ip header cut short",
            good[..14 + 12].to_vec(),
            Verdict::Drop,
            &[EdgeStat::MalformedIpv4],
        ),
        fixture(
            "version 6 in an ipv4 frame",
            with(&|f| f[14] = 0x65),
            Verdict::Drop,
            &[EdgeStat::MalformedIpv4],
        ),
        fixture(
            "ihl below 5",
            with(&|f| f[14] = 0x44),
            Verdict::Drop,
            &[EdgeStat::MalformedIpv4],
        ),
        fixture(
            "ihl beyond the frame",
            with(&|f| f[14] = 0x4f),
            Verdict::Drop,
            &[EdgeStat::MalformedIpv4],
        ),
        fixture(
            "total length beyond the frame",
            with(&|f| f[16..18].copy_from_slice(&1500u16.to_be_bytes())),
            Verdict::Drop,
            &[EdgeStat::MalformedIpv4],
        ),
        fixture(
            "total length below the header",
            with(&|f| f[16..18].copy_from_slice(&12u16.to_be_bytes())),
            Verdict::Drop,
            &[EdgeStat::MalformedIpv4],
        ),
    ];
    for f in &fixtures {
        check(&edge, f);
    }
}

#[test]
fn malformed_l4_headers_are_dropped() {
    if !privilege::check("malformed_l4_headers_are_dropped") {
        return;
    }
    let edge = load().unwrap();
    let udp = frame::udp(CLIENT, GATEWAY, 50000, 1194, b"\x48abc");
    let tcp = frame::tcp(CLIENT, GATEWAY, 50000, 443, b"data");
    let icmp = frame::icmp_echo(CLIENT, GATEWAY, 1, 1, b"");
    // Cuts the IP packet to `keep` bytes of L4 and fixes total length and checksum.
    let cut = |f: &[u8], keep: usize| {
        let mut f = f[..14 + 20 + keep].to_vec();
        f[16..18].copy_from_slice(&((20 + keep) as u16).to_be_bytes());
        xdp::checksum::fix_ipv4_header(&mut f);
        f
    };
    let edit = |f: &[u8], e: &dyn Fn(&mut Vec<u8>)| {
        let mut f = f.to_vec();
        e(&mut f);
        f
    };
    let fixtures = [
        fixture(
            "udp header cut short",
            cut(&udp, 6),
            Verdict::Drop,
            &[EdgeStat::MalformedL4],
        ),
        fixture(
            "udp length beyond the ip packet",
            edit(&udp, &|f| f[38..40].copy_from_slice(&200u16.to_be_bytes())),
            Verdict::Drop,
            &[EdgeStat::MalformedL4],
        ),
        fixture(
            "udp length below 8",
            edit(&udp, &|f| f[38..40].copy_from_slice(&7u16.to_be_bytes())),
            Verdict::Drop,
            &[EdgeStat::MalformedL4],
        ),
        fixture(
            "tcp header cut short",
            cut(&tcp, 19),
            Verdict::Drop,
            &[EdgeStat::MalformedL4],
        ),
        fixture(
            "tcp data offset below 5",
            edit(&tcp, &|f| f[46] = 0x40),
            Verdict::Drop,
            &[EdgeStat::MalformedL4],
        ),
        fixture(
            "tcp data offset beyond the packet",
            edit(&tcp, &|f| f[46] = 0xf0),
            Verdict::Drop,
            &[EdgeStat::MalformedL4],
        ),
        fixture(
            "icmp header cut short",
            cut(&icmp, 4),
            Verdict::Drop,
            &[EdgeStat::MalformedL4],
        ),
    ];
    for f in &fixtures {
        check(&edge, f);
    }
}

#[test]
fn frames_shorter_than_ethernet_are_refused() {
    if !privilege::check("frames_shorter_than_ethernet_are_refused") {
        return;
    }
    let edge = load().unwrap();
    // The kernel refuses test input shorter than an Ethernet header (EINVAL) and never
    // hands such frames to XDP; the program's own check is defence in depth.
    assert!(xdp::run(edge.program(), &[0u8; 10]).is_err());
}

/// UDP from `src` to a listen port carrying `payload` (the OpenVPN packet).
fn openvpn(src: [u8; 4], payload: &[u8]) -> Vec<u8> {
    frame::udp(src, GATEWAY, 50000, 1194, payload)
}

fn configured() -> Edge {
    let mut edge = load().unwrap();
    edge.configure(&[1194, 443], 1, 3).unwrap();
    edge
}

#[test]
fn data_packets_need_a_live_peer_id() {
    if !privilege::check("data_packets_need_a_live_peer_id") {
        return;
    }
    let mut edge = configured();
    edge.insert_peer(0x000abc, "10.200.0.5".parse().unwrap())
        .unwrap();
    edge.insert_peer(0xffffff, "10.200.0.6".parse().unwrap())
        .unwrap();
    let data =
        |peer: [u8; 3]| openvpn(CLIENT, &[0x48, peer[0], peer[1], peer[2], 0, 0, 0, 1, 0xee]);
    let fixtures = [
        // No AF_XDP socket on the queue: passed on to the socket-mode data plane.
        fixture(
            "live peer",
            data([0x00, 0x0a, 0xbc]),
            Verdict::Pass,
            &[EdgeStat::DataPassed],
        ),
        fixture(
            "live peer, key id 3",
            {
                let mut f = data([0x00, 0x0a, 0xbc]);
                f[42] = 0x4b;
                f
            },
            Verdict::Pass,
            &[EdgeStat::DataPassed],
        ),
        fixture(
            "unknown peer",
            data([0x00, 0x0a, 0xbd]),
            Verdict::Drop,
            &[EdgeStat::UnknownPeer],
        ),
        fixture(
            "undefined peer id",
            data([0xff, 0xff, 0xff]),
            Verdict::Drop,
            &[EdgeStat::UnknownPeer],
        ),
        fixture(
            "data to another port",
            frame::udp(CLIENT, GATEWAY, 50000, 1195, &[0x48, 0, 0x0a, 0xbd]),
            Verdict::Pass,
            &[EdgeStat::Udp],
        ),
        fixture(
            "data over tcp",
            frame::tcp(CLIENT, GATEWAY, 50000, 443, &[0, 9, 0x48, 0, 0x0a, 0xbd]),
            Verdict::Pass,
            &[EdgeStat::Tcp],
        ),
    ];
    for f in &fixtures {
        check(&edge, f);
    }
    edge.remove_peer(0x000abc).unwrap();
    check(
        &edge,
        &fixture(
            "terminated peer",
            data([0x00, 0x0a, 0xbc]),
            Verdict::Drop,
            &[EdgeStat::UnknownPeer],
        ),
    );
}

#[test]
fn data_packets_of_live_peers_go_to_the_af_xdp_socket_of_their_queue() {
    if !privilege::check("data_packets_of_live_peers_go_to_the_af_xdp_socket_of_their_queue") {
        return;
    }
    let mut lab = Lab::new();
    let ns = lab.add_namespace("edge-xsk").unwrap();
    lab.veth((&ns, "eth0", None), (&ns, "eth1", None)).unwrap();
    let eth0 = ns
        .run_in(|| nix::net::if_::if_nametoindex("eth0").unwrap())
        .unwrap();
    let socket = ns.run_in(|| Xsk::bind(eth0, 0)).unwrap().unwrap();
    let mut edge = configured();
    edge.insert_peer(0x000abc, "10.200.0.5".parse().unwrap())
        .unwrap();
    edge.insert_xsk(0, &socket).unwrap();
    let data = openvpn(CLIENT, &[0x48, 0x00, 0x0a, 0xbc, 0, 0, 0, 1, 0xee]);
    let run = |edge: &Edge, f: &[u8]| {
        let before = edge.stats().unwrap();
        let (out, _) = ns
            .run_in(|| xdp::run_on(edge.program(), f, eth0, 0))
            .unwrap()
            .unwrap();
        assert_eq!(out.frame, f, "edge never rewrites");
        (out.verdict, edge.stats().unwrap().since(&before))
    };
    let (verdict, delta) = run(&edge, &data);
    assert_eq!(verdict, Verdict::Redirect);
    assert_eq!(delta.get(EdgeStat::DataSteered), 1, "{delta}");
    // Only data packets go there: a control packet still passes to the control plane.
    let control = openvpn(CLIENT, &[0x20, 0, 0, 0, 0, 0, 0, 0, 1]);
    let (verdict, delta) = run(&edge, &control);
    assert_eq!(verdict, Verdict::Pass);
    assert_eq!(delta.get(EdgeStat::ControlPassed), 1, "{delta}");
    // A closed socket leaves the map: data passes to the UDP sockets again.
    drop(socket);
    let (verdict, delta) = run(&edge, &data);
    assert_eq!(verdict, Verdict::Pass);
    assert_eq!(delta.get(EdgeStat::DataPassed), 1, "{delta}");
    assert!(
        edge.insert_xsk(64, &std::io::stdin()).is_err(),
        "queue 64 is past the map"
    );
}

#[test]
fn control_packets_pass_and_garbage_is_dropped() {
    if !privilege::check("control_packets_pass_and_garbage_is_dropped") {
        return;
    }
    let edge = configured();
    let packet = |first: u8| openvpn(CLIENT, &[first, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0]);
    let mut fixtures = vec![
        fixture(
            "soft reset",
            packet(0x19),
            Verdict::Pass,
            &[EdgeStat::ControlPassed],
        ),
        fixture(
            "control",
            packet(0x20),
            Verdict::Pass,
            &[EdgeStat::ControlPassed],
        ),
        fixture(
            "ack",
            packet(0x28),
            Verdict::Pass,
            &[EdgeStat::ControlPassed],
        ),
        fixture(
            "data v1 (no peer-id)",
            packet(0x30),
            Verdict::Pass,
            &[EdgeStat::ControlPassed],
        ),
        fixture(
            "control with wrapped key",
            packet(0x58),
            Verdict::Pass,
            &[EdgeStat::ControlPassed],
        ),
        fixture(
            "server reset from a client",
            packet(0x40),
            Verdict::Drop,
            &[EdgeStat::NotOpenVpn],
        ),
        fixture(
            "empty datagram",
            openvpn(CLIENT, b""),
            Verdict::Drop,
            &[EdgeStat::NotOpenVpn],
        ),
        fixture(
            "three bytes",
            openvpn(CLIENT, &[0x20, 1, 2]),
            Verdict::Drop,
            &[EdgeStat::NotOpenVpn],
        ),
    ];
    for opcode in [0u8, 1, 2, 12, 31] {
        fixtures.push(fixture(
            "illegal opcode",
            packet(opcode << 3),
            Verdict::Drop,
            &[EdgeStat::NotOpenVpn],
        ));
    }
    for f in &fixtures {
        check(&edge, f);
    }
}

#[test]
fn hard_resets_are_rate_limited_per_source() {
    if !privilege::check("hard_resets_are_rate_limited_per_source") {
        return;
    }
    let edge = configured(); // 1 per second, bursts of 3
    let reset =
        |src: [u8; 4], first: u8| openvpn(src, &[first, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0]);
    let other = [203, 0, 113, 7];
    for (name, src, first) in [
        ("v2 #1", CLIENT, 0x38),
        ("v2 #2", CLIENT, 0x38),
        ("v3 #3", CLIENT, 0x50),
    ] {
        check(
            &edge,
            &fixture(
                name,
                reset(src, first),
                Verdict::Pass,
                &[EdgeStat::ControlPassed],
            ),
        );
    }
    check(
        &edge,
        &fixture(
            "over the burst",
            reset(CLIENT, 0x38),
            Verdict::Drop,
            &[EdgeStat::ResetRateLimited],
        ),
    );
    check(
        &edge,
        &fixture(
            "v3 over the burst",
            reset(CLIENT, 0x50),
            Verdict::Drop,
            &[EdgeStat::ResetRateLimited],
        ),
    );
    check(
        &edge,
        &fixture(
            "another source",
            reset(other, 0x38),
            Verdict::Pass,
            &[EdgeStat::ControlPassed],
        ),
    );
    // Other control packets of the limited source still pass.
    check(
        &edge,
        &fixture(
            "control",
            reset(CLIENT, 0x20),
            Verdict::Pass,
            &[EdgeStat::ControlPassed],
        ),
    );
}

#[test]
fn configuration_is_checked() {
    if !privilege::check("configuration_is_checked") {
        return;
    }
    let mut edge = load().unwrap();
    let err = edge.configure(&[1, 2, 3, 4, 5], 0, 0).unwrap_err();
    assert!(err.to_string().contains("5 UDP listen ports"), "{err}");
    // Without a limit, resets are never dropped.
    edge.configure(&[1194], 0, 0).unwrap();
    for _ in 0..20 {
        check(
            &edge,
            &fixture(
                "unlimited reset",
                openvpn(CLIENT, &[0x38, 1, 2, 3, 4, 5, 6, 7, 8]),
                Verdict::Pass,
                &[EdgeStat::ControlPassed],
            ),
        );
    }
}

#[test]
fn frames_to_the_client_network_are_dropped_unless_openvpn() {
    if !privilege::check("frames_to_the_client_network_are_dropped_unless_openvpn") {
        return;
    }
    let lease = [10, 200, 0, 5];
    let to_lease = frame::tcp(CLIENT, lease, 50000, 22, b"");
    let mut edge = configured();
    // Until the client network is set, nothing is refused for its destination.
    check(
        &edge,
        &fixture("before", to_lease.clone(), Verdict::Pass, &[EdgeStat::Tcp]),
    );
    edge.set_client_network("10.200.0.0/22".parse().unwrap())
        .unwrap();
    let mut later = frame::udp(CLIENT, lease, 0, 0, &[0; 16]);
    frame::set_fragment(&mut later, false, 185);
    let mut gre = frame::udp(CLIENT, lease, 1, 2, b"abcd");
    gre[23] = 47;
    xdp::checksum::fix_ipv4_header(&mut gre);
    let mut truncated = frame::tcp(CLIENT, lease, 50000, 22, b"");
    truncated.truncate(14 + 20 + 10);
    truncated[16..18].copy_from_slice(&30u16.to_be_bytes());
    xdp::checksum::fix_ipv4_header(&mut truncated);
    let fixtures = [
        fixture(
            "tcp to a lease",
            to_lease.clone(),
            Verdict::Drop,
            &[EdgeStat::ToClientNetwork],
        ),
        fixture(
            "udp to a lease",
            frame::udp(CLIENT, lease, 50000, 53, b"q"),
            Verdict::Drop,
            &[EdgeStat::ToClientNetwork],
        ),
        fixture(
            "ping to the client broadcast",
            frame::icmp_echo(CLIENT, [10, 200, 3, 255], 9, 1, b"ping"),
            Verdict::Drop,
            &[EdgeStat::ToClientNetwork],
        ),
        fixture(
            "a later fragment",
            later,
            Verdict::Drop,
            &[EdgeStat::ToClientNetwork],
        ),
        fixture(
            "another protocol",
            gre,
            Verdict::Drop,
            &[EdgeStat::ToClientNetwork],
        ),
        fixture(
            "after ip options",
            frame::udp_with_ip_options(CLIENT, lease, 1, 53, &[1, 1, 1, 0], b"x"),
            Verdict::Drop,
            &[EdgeStat::Ipv4Options, EdgeStat::ToClientNetwork],
        ),
        fixture(
            "malformed is malformed first",
            truncated,
            Verdict::Drop,
            &[EdgeStat::MalformedL4],
        ),
        // Beside the client network, all is as before.
        fixture(
            "tcp to the gateway",
            frame::tcp(CLIENT, GATEWAY, 50000, 22, b""),
            Verdict::Pass,
            &[EdgeStat::Tcp],
        ),
        fixture(
            "just past the client network",
            frame::tcp(CLIENT, [10, 200, 4, 0], 50000, 22, b""),
            Verdict::Pass,
            &[EdgeStat::Tcp],
        ),
        fixture(
            "openvpn control",
            openvpn(CLIENT, &[0x20, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0]),
            Verdict::Pass,
            &[EdgeStat::ControlPassed],
        ),
    ];
    for f in &fixtures {
        check(&edge, f);
    }
    // Reconfiguring the ports keeps the client network.
    edge.configure(&[1194], 0, 0).unwrap();
    check(
        &edge,
        &fixture(
            "after configure",
            to_lease,
            Verdict::Drop,
            &[EdgeStat::ToClientNetwork],
        ),
    );
}
