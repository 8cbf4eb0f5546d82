//! The socket-mode seam with real packets: a decrypted client packet written into the
//! TAP device passes `inner` (native XDP on the TAP), reaches the target host translated
//! to the gateway's address, and the host's reply comes back out of the TAP rewritten
//! to the client's lease — what a data-plane worker will write and read. The target host
//! is left as Debian makes it (no XDP, GRO off, transmit checksums left partial).

use std::{
    net::{Ipv4Addr, UdpSocket},
    time::Duration,
};

use gateway::{
    dataplane::{frame::finish_partial_checksum, tap::Tap},
    policy::{Access, AuthorizationRule, CompiledRules, compile_authorization},
    xdp::{AttachMode, Forwarding, Policy},
};
use gateway_ebpf_common::{InnerStat, RouteValue, SessionInfo, TargetStat};
use gateway_tests::{
    lab::{Lab, wait_until},
    privilege,
    xdp::{checksum, frame},
};

const LEASE: [u8; 4] = [10, 200, 0, 5];
const HOST: [u8; 4] = [10, 10, 0, 10];
const GW_TARGET: [u8; 4] = [10, 10, 0, 1];

#[test]
fn packets_written_to_the_tap_reach_the_target_and_replies_come_back_out_of_it() {
    if !privilege::check(
        "packets_written_to_the_tap_reach_the_target_and_replies_come_back_out_of_it",
    ) {
        return;
    }
    let mut lab = Lab::new();
    let gw = lab.add_namespace("gw").unwrap();
    let target = lab.add_namespace("target").unwrap();
    lab.veth(
        (&gw, "eth1", Some("10.10.0.1/24")),
        (&target, "eth0", Some("10.10.0.10/24")),
    )
    .unwrap();
    gw.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    let target_mac = target
        .exec(&["cat", "/sys/class/net/eth0/address"])
        .unwrap();
    gw.exec(&[
        "ip",
        "neigh",
        "add",
        "10.10.0.10",
        "lladdr",
        target_mac.trim(),
        "dev",
        "eth1",
        "nud",
        "permanent",
    ])
    .unwrap();
    let tap = gw
        .run_in(|| Tap::create("tap0", 2, Ipv4Addr::new(10, 200, 0, 1), 22))
        .unwrap()
        .unwrap();
    // As `gateway serve` sets its TAP: the kernel forwards translated packets, whose
    // source is the gateway's own address.
    for knob in ["accept_local=1", "rp_filter=0"] {
        gw.exec(&["sysctl", "-qw", &format!("net.ipv4.conf.tap0.{knob}")])
            .unwrap();
    }
    assert_eq!(tap.queues(), 2);
    tap.set_nonblocking(0).unwrap();
    tap.set_nonblocking(1).unwrap();
    let eth1: u32 = gw
        .exec(&["cat", "/sys/class/net/eth1/ifindex"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let mut policy = Policy::load().unwrap();
    policy
        .insert_session(
            Ipv4Addr::from(LEASE),
            SessionInfo {
                peer_id: 5,
                ..Default::default()
            },
        )
        .unwrap();
    let rules = [AuthorizationRule {
        destination: "10.10.0.0/24".parse().unwrap(),
        access: Access::AllUsers,
    }];
    policy
        .replace_rules(&CompiledRules::new(
            vec![(
                "10.10.0.0/24".parse().unwrap(),
                RouteValue {
                    target_ifindex: eth1,
                    snat_addr: GW_TARGET,
                },
            )],
            compile_authorization(&rules),
        ))
        .unwrap();
    let setup = gw
        .run_in(|| {
            policy.insert_dataplane_device(tap.ifindex()).unwrap();
            policy.attach_inner("tap0", AttachMode::Native).unwrap();
            policy.set_up_target("eth1", eth1).unwrap()
        })
        .unwrap();
    assert_eq!(setup.forwarding, Forwarding::Kernel, "{setup:?}");

    let host = target
        .run_in(|| UdpSocket::bind("10.10.0.10:7000"))
        .unwrap()
        .unwrap();
    host.set_read_timeout(Some(Duration::from_secs(3))).unwrap();

    let mut finished = 0;
    for round in 0..3u8 {
        // What a worker writes after decrypting: the client's IP packet behind an
        // Ethernet header addressed to the TAP.
        let mut out = frame::udp(LEASE, HOST, 40000, 7000, &[b'q', round]);
        out[0..6].copy_from_slice(&tap.mac());
        tap.write_frame(usize::from(round % 2), &out).unwrap();

        let mut buf = [0u8; 64];
        let (n, from) = host.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[b'q', round]);
        assert_eq!(
            from.to_string(),
            "10.10.0.1:40000",
            "SNAT keeps the client's port"
        );
        host.send_to(&[b'r', round], from).unwrap();

        // The reply comes out of the TAP addressed to the lease.
        let mut reply = Vec::new();
        wait_until("the reply out of the TAP", Duration::from_secs(3), || {
            let mut frame_buf = [0u8; 2048];
            for q in 0..2 {
                if let Ok(n) = tap.read_frame(q, &mut frame_buf) {
                    let f = &frame_buf[..n];
                    if f.len() > 42
                        && f[12..14] == [8, 0]
                        && f[23] == 17
                        && f[36..38] == 40000u16.to_be_bytes()
                    {
                        reply = f.to_vec();
                        return true;
                    }
                }
            }
            false
        })
        .unwrap();
        assert_eq!(&reply[26..30], &HOST, "source stays the host");
        assert_eq!(
            &reply[30..34],
            &LEASE,
            "destination is the client's lease again"
        );
        assert_eq!(&reply[42..44], &[b'r', round]);
        // The host's UDP checksum was left partial. Redirected into the TAP, it stays
        // so (for the new destination), and the worker finishes it before sealing;
        // passed to the kernel (no neighbour yet), the kernel finishes it.
        assert!(checksum::ipv4_header_ok(&reply), "IP checksum of the reply");
        let partial = !checksum::l4_ok(&reply);
        assert_eq!(finish_partial_checksum(&mut reply[14..]), partial);
        assert!(checksum::l4_ok(&reply), "the finished UDP checksum");
        finished += u64::from(partial);
    }
    let inner = policy.inner_stats().unwrap();
    let target_stats = policy.target_stats().unwrap();
    assert_eq!(inner.get(InnerStat::PassedToKernel), 3, "{inner}");
    assert_eq!(
        target_stats.get(TargetStat::Translated),
        3,
        "{target_stats}"
    );
    assert_eq!(
        target_stats.get(TargetStat::Redirected),
        finished,
        "{target_stats}"
    );
    assert!(finished >= 2, "{target_stats}");
    assert_eq!(
        target_stats.get(TargetStat::PartialChecksum),
        3,
        "{target_stats}"
    );
}
