//! `edge` attached in native (driver) mode to a veth inside a lab namespace counts real
//! traffic sent from the client namespace.

use std::{net::UdpSocket, time::Duration};

use gateway::xdp::{AttachMode, Edge};
use gateway_ebpf_common::EdgeStat;
use gateway_tests::{
    lab::{Lab, Topology, wait_until},
    privilege,
};

#[test]
fn edge_attaches_natively_and_counts_real_traffic() {
    if !privilege::check("edge_attaches_natively_and_counts_real_traffic") {
        return;
    }
    let mut lab = Lab::new();
    let topo = Topology::build(&mut lab).unwrap();
    let mut edge = Edge::load().unwrap();
    topo.gateway
        .run_in(|| edge.attach(Topology::PUBLIC_IF, AttachMode::Native))
        .unwrap()
        .unwrap();

    let link = topo
        .gateway
        .exec(&["ip", "-d", "link", "show", Topology::PUBLIC_IF])
        .unwrap();
    assert!(link.contains("xdp"), "no XDP on the link: {link}");
    assert!(
        !link.contains("xdpgeneric"),
        "attached in generic mode: {link}"
    );

    let before = edge.stats().unwrap();
    topo.client
        .exec(&[
            "ping",
            "-c",
            "5",
            "-i",
            "0.05",
            "-W",
            "2",
            Topology::GATEWAY_PUBLIC_ADDR,
        ])
        .unwrap();
    const DATAGRAMS: u64 = 20;
    topo.client
        .run_in(|| -> std::io::Result<()> {
            let s = UdpSocket::bind((Topology::CLIENT_ADDR, 0))?;
            for _ in 0..DATAGRAMS {
                s.send_to(
                    b"\x48\0\0\x01payload",
                    (Topology::GATEWAY_PUBLIC_ADDR, 1194),
                )?;
            }
            Ok(())
        })
        .unwrap()
        .unwrap();
    wait_until(
        "edge to count the UDP datagrams",
        Duration::from_secs(5),
        || edge.stats().unwrap().since(&before).get(EdgeStat::Udp) >= DATAGRAMS,
    )
    .unwrap();
    let seen = edge.stats().unwrap().since(&before);
    assert!(seen.get(EdgeStat::Icmp) >= 5, "{seen}");
    assert_eq!(seen.get(EdgeStat::Drop), 0, "{seen}");
    assert!(seen.get(EdgeStat::Pass) >= 5 + DATAGRAMS, "{seen}");

    // Dropping the program detaches it.
    drop(edge);
    let link = topo
        .gateway
        .exec(&["ip", "-d", "link", "show", Topology::PUBLIC_IF])
        .unwrap();
    assert!(
        !link.contains("prog/xdp"),
        "still attached after drop: {link}"
    );
}
