//! The data-plane workers with real sockets and a real TAP: a session established in
//! memory (`gateway::serve::testing`) is handed to two pinned workers in a gateway
//! namespace; its client, in another namespace, pings the TAP's address through them.
//! Also: spoofed sources are dropped and counted, a datagram the workers cannot open goes
//! up to the control plane, a new client address is followed (and reported), OCC_EXIT is
//! reported, and a burst the kernel coalesces (UDP GRO) is split back into its
//! datagrams. All of it once in socket mode (no XDP) and once in AF_XDP mode (`edge`
//! steering into the workers' AF_XDP socket); and how AF_XDP sockets spread over the
//! workers.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    sync::Arc,
    time::{Duration, Instant},
};

use gateway::{
    dataplane::{
        afxdp::{AfXdp, XskRole},
        backend::BATCH,
        batch::Batch,
        carry::{Carried, Peer, Report},
        counters::Counter,
        frame::udp_payload,
        tap::Tap,
        worker::{Settings, Workers},
        xsk::Xsk,
    },
    serve::testing::{Harness, addr, established},
    xdp::{AttachMode, Edge},
};
use gateway_proto::{
    data::{OCC_EXIT, OCC_MAGIC},
    session::{Event, Session},
};
use gateway_tests::{
    lab::{Lab, Netns, wait_until},
    privilege,
    xdp::frame,
};

const PORT: u16 = 1194;
const GW: [u8; 4] = [10, 1, 0, 1];
const CLIENT: [u8; 4] = [10, 1, 0, 2];
const TAP_ADDR: [u8; 4] = [10, 200, 0, 1];

/// An ICMP echo request as an IPv4 packet (no Ethernet header).
fn ping(src: Ipv4Addr, dst: [u8; 4], seq: u16) -> Vec<u8> {
    frame::icmp_echo(src.octets(), dst, 0x77, seq, b"through the workers")[14..].to_vec()
}

/// Seals `packet` in `client` and sends it from `socket` to the workers.
fn send(client: &mut Session, socket: &UdpSocket, packet: &[u8]) {
    client.send_data(Instant::now(), packet).unwrap();
    while let Some(t) = client.poll_transmit(Instant::now()) {
        socket
            .send_to(&t.contents, SocketAddr::from((GW, PORT)))
            .unwrap();
    }
}

/// The tunnelled packets `socket` receives within `wait`, opened by `client`.
fn receive(client: &mut Session, socket: &UdpSocket, wait: Duration) -> Vec<Vec<u8>> {
    socket.set_read_timeout(Some(wait)).unwrap();
    let mut buf = vec![0u8; 4096];
    let mut packets = Vec::new();
    while let Ok(n) = socket.recv(&mut buf) {
        let _ = client.handle_datagram(Instant::now(), &buf[..n]);
        while let Some(event) = client.poll_event() {
            if let Event::Packet(p) = event {
                packets.push(p);
            }
        }
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    packets
}

/// A gateway namespace and a client namespace, linked: `eth0` 10.1.0.1 ↔ `eth0` 10.1.0.2.
fn gateway_and_client() -> (Lab, Netns, Netns) {
    let mut lab = Lab::new();
    let gw = lab.add_namespace("gw").unwrap();
    let cl = lab.add_namespace("cl").unwrap();
    lab.veth(
        (&gw, "eth0", Some("10.1.0.1/24")),
        (&cl, "eth0", Some("10.1.0.2/24")),
    )
    .unwrap();
    (lab, gw, cl)
}

/// `edge` on the calling thread's `eth0` (call it inside the gateway namespace), for
/// the listen port, with `peer_id` live; AF_XDP sockets still to be added.
fn steering_edge(peer_id: u32, lease: Ipv4Addr) -> Edge {
    let mut edge = Edge::load().unwrap();
    edge.configure(&[PORT], 0, 0).unwrap();
    edge.attach("eth0", AttachMode::Native).unwrap();
    edge.insert_peer(peer_id, lease).unwrap();
    edge
}

fn is_echo_reply_to(packet: &[u8], lease: Ipv4Addr, seq: u16) -> bool {
    packet.len() >= 28
        && packet[9] == 1
        && packet[16..20] == lease.octets()
        && packet[20] == 0
        && packet[26..28] == seq.to_be_bytes()
}

#[test]
fn workers_carry_a_session_both_ways_and_report_what_they_cannot_decide() {
    if !privilege::check("workers_carry_a_session_both_ways_and_report_what_they_cannot_decide") {
        return;
    }
    carry_both_ways(false);
}

/// The same through AF_XDP: `edge` on the gateway's link steers the data packets to
/// the workers' AF_XDP socket instead of their UDP sockets.
#[test]
fn workers_carry_a_session_through_af_xdp_too() {
    if !privilege::check("workers_carry_a_session_through_af_xdp_too") {
        return;
    }
    carry_both_ways(true);
}

fn carry_both_ways(afxdp: bool) {
    let (_lab, gw, cl) = gateway_and_client();

    // The control plane's side, in memory: alice is established.
    let mut h = Harness::new("worker-seam", "10.200.0.0/22");
    let mut alice = h.client("alice");
    let lease = established(&h.pump(&mut alice, addr(2))).expect("alice established");
    let peer_id = h.xdp.up[0].1;
    let request = h.xdp.carried(peer_id).expect("handed to the data plane");

    let (reports_tx, mut reports) = tokio::sync::mpsc::channel::<Report>(64);
    let (tap, workers, edge) = gw
        .run_in(move || {
            let tap = Arc::new(Tap::create("gw-tap0", 2, Ipv4Addr::from(TAP_ADDR), 22).unwrap());
            let eth0 = nix::net::if_::if_nametoindex("eth0").unwrap();
            let workers = Workers::start(Settings {
                pin: true,
                udp_port: Some(PORT),
                tap: tap.clone(),
                tap_peer_mac: [0x02, 0x67, 0x77, 0, 0, 1],
                afxdp: afxdp.then(|| AfXdp {
                    edge: Some(eth0),
                    targets: Vec::new(),
                }),
                reports: reports_tx,
            })
            .unwrap();
            let edge = afxdp.then(|| {
                let mut edge = steering_edge(peer_id, lease);
                for binding in workers.xsks() {
                    edge.insert_xsk(binding.queue, &binding.fd).unwrap();
                }
                edge
            });
            (tap, workers, edge)
        })
        .unwrap();
    assert_eq!(workers.count(), 2);
    // The veth has one rx queue: one AF_XDP socket, worker 0's.
    let sockets: Vec<_> = workers
        .xsks()
        .iter()
        .map(|b| (b.role, b.queue, b.worker))
        .collect();
    let expected = if afxdp {
        vec![(XskRole::Edge, 0, 0)]
    } else {
        Vec::new()
    };
    assert_eq!(sockets, expected);
    let (socket, other) = cl
        .run_in(|| {
            (
                UdpSocket::bind(SocketAddr::from((CLIENT, 40000))).unwrap(),
                UdpSocket::bind(SocketAddr::from((CLIENT, 40001))).unwrap(),
            )
        })
        .unwrap();
    workers.carry(Carried {
        peer_id,
        lease: request.lease,
        peer: Peer::Udp(socket.local_addr().unwrap()),
        data: request.data.clone(),
        activity: request.activity.clone(),
    });

    // Client → worker → TAP → the gateway's kernel answers → TAP → worker → client.
    let mut replies = Vec::new();
    wait_until(
        "an echo reply through the workers",
        Duration::from_secs(10),
        || {
            send(&mut alice, &socket, &ping(lease, TAP_ADDR, 1));
            replies = receive(&mut alice, &socket, Duration::from_millis(500));
            replies.iter().any(|p| is_echo_reply_to(p, lease, 1))
        },
    )
    .unwrap();
    let totals = workers.totals();
    assert!(
        totals[Counter::RxPackets] >= 1 && totals[Counter::TxPackets] >= 1,
        "{totals:?}"
    );
    assert!(
        request.activity.last_received().is_some() && request.activity.last_sent().is_some(),
        "the workers stamp the session's activity"
    );

    // A bulk burst, sent as UDP GSO runs so that the workers' sockets get them coalesced
    // (UDP GRO; AF_XDP gets them one frame each): every one of 200 pings is answered.
    let before = workers.totals();
    let mut burst = Batch::new(BATCH);
    for seq in 100..300 {
        alice
            .send_data(Instant::now(), &ping(lease, TAP_ADDR, seq))
            .unwrap();
        let wire = alice.poll_transmit(Instant::now()).unwrap().contents;
        let slot = burst.next_free().unwrap();
        slot[..wire.len()].copy_from_slice(&wire);
        assert!(burst.push(SocketAddr::from((GW, PORT)), 0, wire.len()));
        if burst.is_full() || seq == 299 {
            burst.send(socket.as_raw_fd(), &mut true);
        }
    }
    let mut answered = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered.len() < 200 && Instant::now() < deadline {
        for p in receive(&mut alice, &socket, Duration::from_millis(500)) {
            if p.len() >= 28 && p[20] == 0 {
                answered.insert(u16::from_be_bytes([p[26], p[27]]));
            }
        }
    }
    assert_eq!(answered.len(), 200, "answered {} of 200", answered.len());
    let after = workers.totals();
    if afxdp {
        assert!(
            after[Counter::XskEdgeFrames] >= before[Counter::XskEdgeFrames] + 200,
            "{after:?}"
        );
    } else {
        assert!(
            after[Counter::GroReads] > before[Counter::GroReads],
            "no coalesced read: {after:?}"
        );
        assert_eq!(after[Counter::XskEdgeFrames], 0);
    }

    // Another source address than the lease: dropped, counted, unanswered.
    let spoofed_before = workers.totals()[Counter::Spoofed];
    send(
        &mut alice,
        &socket,
        &ping(Ipv4Addr::new(10, 200, 0, 77), TAP_ADDR, 2),
    );
    wait_until("the spoofed packet counted", Duration::from_secs(5), || {
        workers.totals()[Counter::Spoofed] > spoofed_before
    })
    .unwrap();
    assert!(receive(&mut alice, &socket, Duration::from_millis(300)).is_empty());

    // A data packet with a key_id the session does not have goes up to the control
    // plane untouched.
    let id = peer_id.to_be_bytes();
    let stranger = [(9 << 3) | 7, id[1], id[2], id[3], 1, 2, 3, 4, 5, 6, 7, 8];
    socket
        .send_to(&stranger, SocketAddr::from((GW, PORT)))
        .unwrap();
    let mut from_stranger = None;
    wait_until(
        "the stranger's datagram reported",
        Duration::from_secs(5),
        || {
            while let Ok(report) = reports.try_recv() {
                if let Report::Datagram { from, bytes } = report
                    && bytes == stranger
                {
                    from_stranger = Some(from);
                }
            }
            from_stranger.is_some()
        },
    )
    .unwrap();
    assert_eq!(from_stranger, Some(socket.local_addr().unwrap()));

    // alice's data from a new port: the worker answers there and reports the float.
    let mut floated = None;
    wait_until(
        "a reply at the new address",
        Duration::from_secs(10),
        || {
            send(&mut alice, &other, &ping(lease, TAP_ADDR, 3));
            let replies = receive(&mut alice, &other, Duration::from_millis(500));
            replies.iter().any(|p| is_echo_reply_to(p, lease, 3))
        },
    )
    .unwrap();
    wait_until("the float reported", Duration::from_secs(5), || {
        while let Ok(report) = reports.try_recv() {
            if let Report::Floated { peer_id: id, to } = report {
                floated = Some((id, to));
            }
        }
        floated.is_some()
    })
    .unwrap();
    assert_eq!(floated, Some((peer_id, other.local_addr().unwrap())));

    // alice's OCC_EXIT (what a client without cc-exit sends when it leaves) is reported.
    let mut exit = OCC_MAGIC.to_vec();
    exit.push(OCC_EXIT);
    send(&mut alice, &other, &exit);
    let mut exited = false;
    wait_until("OCC_EXIT reported", Duration::from_secs(5), || {
        while let Ok(report) = reports.try_recv() {
            exited |= matches!(report, Report::Exited { peer_id: id } if id == peer_id);
        }
        exited
    })
    .unwrap();

    // Forgotten: her data packets now go up to the control plane.
    workers.forget(peer_id);
    let mut reported = false;
    wait_until(
        "data of a forgotten session reported",
        Duration::from_secs(5),
        || {
            send(&mut alice, &other, &ping(lease, TAP_ADDR, 4));
            std::thread::sleep(Duration::from_millis(100));
            while let Ok(report) = reports.try_recv() {
                reported |= matches!(report, Report::Datagram { .. });
            }
            reported
        },
    )
    .unwrap();
    drop(workers);
    drop(edge);
    drop(tap);
}

/// An AF_XDP socket on its own: frames `edge` steers wait in its rx ring until read,
/// what does not fit is dropped and counted by the kernel, and read frames go back to
/// the kernel for reuse.
#[test]
fn an_af_xdp_socket_receives_recycles_and_counts_what_it_drops() {
    if !privilege::check("an_af_xdp_socket_receives_recycles_and_counts_what_it_drops") {
        return;
    }
    let (_lab, gw, cl) = gateway_and_client();
    let (mut socket, edge) = gw
        .run_in(|| {
            let eth0 = nix::net::if_::if_nametoindex("eth0").unwrap();
            let socket = Xsk::bind(eth0, 0).unwrap();
            let mut edge = steering_edge(7, Ipv4Addr::new(10, 200, 0, 7));
            edge.insert_xsk(0, &socket).unwrap();
            (socket, edge)
        })
        .unwrap();
    let sender = cl
        .run_in(|| UdpSocket::bind(SocketAddr::from((CLIENT, 40000))).unwrap())
        .unwrap();
    // P_DATA_V2 of peer-id 7, numbered.
    let send = |from: u32, count: u32| {
        for n in from..from + count {
            let mut packet = vec![9 << 3, 0, 0, 7];
            packet.extend_from_slice(&n.to_be_bytes());
            sender
                .send_to(&packet, SocketAddr::from((GW, PORT)))
                .unwrap();
        }
    };
    let drain = |socket: &mut Xsk| {
        let mut got = Vec::new();
        while socket.receive(BATCH, |chunk, start, len| {
            let (_, payload) = udp_payload(&chunk[start..start + len]).unwrap();
            let id = &chunk[start + payload.start + 4..start + payload.start + 8];
            got.push(u32::from_be_bytes(id.try_into().unwrap()));
        }) > 0
        {}
        got
    };
    // The first datagram waits for ARP: once one arrives, the path is clear.
    wait_until("a first frame", Duration::from_secs(5), || {
        send(999_999, 1);
        std::thread::sleep(Duration::from_millis(50));
        !drain(&mut socket).is_empty()
    })
    .unwrap();
    let frames = gateway::dataplane::xsk::FRAMES;
    // 200 more than the UMEM has frames: the kernel runs out of free frames (the rx ring
    // is as long as the UMEM, so it is never the first to fill) and drops the rest.
    send(0, frames + 200);
    wait_until(
        "the kernel to count the overflow",
        Duration::from_secs(5),
        || socket.stats().unwrap().rx_dropped >= 200,
    )
    .unwrap();
    let got = drain(&mut socket);
    assert_eq!(
        got,
        (0..frames).collect::<Vec<_>>(),
        "the first UMEM-full, in order"
    );
    let stats = socket.stats().unwrap();
    assert_eq!(
        (stats.rx_dropped, stats.fill_ring_empty, stats.rx_ring_full),
        (200, 200, 0)
    );
    // Every frame went back to the kernel: twice the UMEM's worth arrives again.
    for round in 0..2 {
        let from = 10_000 * (round + 1);
        send(from, frames / 2);
        let mut got = Vec::new();
        wait_until("the next frames", Duration::from_secs(5), || {
            got.extend(drain(&mut socket));
            got.len() == (frames / 2) as usize
        })
        .unwrap();
        assert_eq!(got, (from..from + frames / 2).collect::<Vec<_>>());
    }
    drop(edge);
}

/// Worker i takes rx queues i, i + n, … of each AF_XDP interface, as many as it has.
#[test]
fn af_xdp_sockets_spread_over_the_workers_one_per_queue() {
    if !privilege::check("af_xdp_sockets_spread_over_the_workers_one_per_queue") {
        return;
    }
    let mut lab = Lab::new();
    let gw = lab.add_namespace("gw").unwrap();
    gw.exec(&[
        "ip",
        "link",
        "add",
        "q3",
        "numtxqueues",
        "3",
        "numrxqueues",
        "3",
        "type",
        "veth",
        "peer",
        "name",
        "q1",
        "numtxqueues",
        "1",
        "numrxqueues",
        "1",
    ])
    .unwrap();
    for link in ["q3", "q1"] {
        gw.exec(&["ip", "link", "set", link, "up"]).unwrap();
    }
    let (reports_tx, _reports) = tokio::sync::mpsc::channel::<Report>(4);
    let bindings = gw
        .run_in(move || {
            let tap = Arc::new(Tap::create("gw-tap0", 2, Ipv4Addr::from(TAP_ADDR), 22).unwrap());
            let index = |name| nix::net::if_::if_nametoindex(name).unwrap();
            let (q3, q1) = (index("q3"), index("q1"));
            let workers = Workers::start(Settings {
                pin: false,
                udp_port: None,
                tap,
                tap_peer_mac: [0x02, 0x67, 0x77, 0, 0, 1],
                afxdp: Some(AfXdp {
                    edge: Some(q3),
                    targets: vec![q1],
                }),
                reports: reports_tx,
            })
            .unwrap();
            workers
                .xsks()
                .iter()
                .map(|b| (b.role, b.ifindex == q3, b.queue, b.worker))
                .collect::<Vec<_>>()
        })
        .unwrap();
    assert_eq!(
        bindings,
        [
            (XskRole::Edge, true, 0, 0),
            (XskRole::Edge, true, 1, 1),
            (XskRole::Edge, true, 2, 0),
            (XskRole::Target, false, 0, 0),
        ]
    );
}
