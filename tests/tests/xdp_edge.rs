//! `edge` through BPF_PROG_TEST_RUN: one fixture per kind of frame, asserting the verdict,
//! that the frame leaves unchanged, and which counters moved.

use gateway::xdp::Edge;
use gateway_ebpf_common::EdgeStat;
use gateway_tests::{
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
