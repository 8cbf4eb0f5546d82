//! Tests of the batched UDP I/O, most over real loopback sockets.

use super::*;
use std::os::fd::AsRawFd;

#[test]
fn addresses_round_trip() {
    for addr in [
        "192.0.2.7:51000".parse::<SocketAddr>().unwrap(),
        "[2001:db8::1]:443".parse().unwrap(),
    ] {
        assert_eq!(from_storage(&to_storage(addr)), Some(addr));
    }
}

#[test]
fn a_batch_goes_out_and_comes_back_over_loopback() {
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    b.set_nonblocking(true).unwrap();
    let to = b.local_addr().unwrap();
    let mut out = Batch::new(8);
    for i in 0..5u8 {
        let slot = out.next_free().unwrap();
        slot[100..100 + usize::from(i) + 1].fill(i);
        assert!(out.push(to, 100, usize::from(i) + 1));
    }
    assert_eq!(out.send(a.as_raw_fd(), &mut false).datagrams, 5);
    assert!(out.is_empty());
    let mut got = Batch::new(8);
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while seen.len() < 5 && std::time::Instant::now() < deadline {
        match got.recv(b.as_raw_fd(), 24) {
            Ok(n) => {
                for i in 0..n {
                    let (from, slot, start, len) = got.datagram_mut(i).unwrap();
                    assert_eq!(from, a.local_addr().unwrap());
                    assert_eq!(start, 24);
                    seen.push(slot[start..start + len].to_vec());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("recvmmsg: {e}"),
        }
    }
    let expected: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; usize::from(i) + 1]).collect();
    assert_eq!(seen, expected);
}

/// Receives `count` datagrams on `socket` (waiting up to 5 s), as byte vectors.
fn drain(socket: &std::net::UdpSocket, count: usize) -> Vec<Vec<u8>> {
    let mut got = Batch::new(16);
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while seen.len() < count && std::time::Instant::now() < deadline {
        match got.recv(socket.as_raw_fd(), 0) {
            Ok(n) => {
                for i in 0..n {
                    let (_, slot, start, len) = got.datagram_mut(i).unwrap();
                    seen.push(slot[start..start + len].to_vec());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("recvmmsg: {e}"),
        }
    }
    seen
}

#[test]
fn runs_to_one_address_go_out_as_gso_sends_and_arrive_as_separate_datagrams() {
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    b.set_nonblocking(true).unwrap();
    c.set_nonblocking(true).unwrap();
    let (to_b, to_c) = (b.local_addr().unwrap(), c.local_addr().unwrap());
    // Five full datagrams and a short one to b, two to c, one more to b.
    let plan: Vec<(SocketAddr, usize)> = [1000, 1000, 1000, 1000, 1000, 300]
        .into_iter()
        .map(|len| (to_b, len))
        .chain([(to_c, 700), (to_c, 700), (to_b, 50)])
        .collect();
    let mut out = Batch::new(16);
    for (i, (to, len)) in plan.iter().enumerate() {
        let slot = out.next_free().unwrap();
        slot[24..24 + len].fill(i as u8);
        assert!(out.push(*to, 24, *len));
    }
    let mut gso = true;
    let sent = out.send(a.as_raw_fd(), &mut gso);
    assert_eq!(sent.datagrams, plan.len());
    assert!(gso, "loopback does UDP GSO");
    assert_eq!(sent.gso_runs, 2, "b's six and c's two");
    let expect = |to: SocketAddr| -> Vec<Vec<u8>> {
        plan.iter()
            .enumerate()
            .filter(|(_, (t, _))| *t == to)
            .map(|(i, (_, len))| vec![i as u8; *len])
            .collect()
    };
    assert_eq!(drain(&b, 7), expect(to_b));
    assert_eq!(drain(&c, 2), expect(to_c));

    // Without GSO the same batch goes out datagram by datagram.
    for (i, (to, len)) in plan.iter().enumerate() {
        let slot = out.next_free().unwrap();
        slot[24..24 + len].fill(i as u8);
        assert!(out.push(*to, 24, *len));
    }
    let sent = out.send(a.as_raw_fd(), &mut false);
    assert_eq!((sent.datagrams, sent.gso_runs), (plan.len(), 0));
    assert_eq!(drain(&b, 7), expect(to_b));
    assert_eq!(drain(&c, 2), expect(to_c));
}

#[test]
fn a_gro_read_holds_several_datagrams_that_split_back_by_segment_size() {
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    b.set_nonblocking(true).unwrap();
    enable_gro(b.as_raw_fd()).unwrap();
    let to = b.local_addr().unwrap();
    let lens = [1200, 1200, 1200, 1200, 1200, 500];
    let mut out = Batch::new(8);
    for (i, len) in lens.iter().enumerate() {
        let slot = out.next_free().unwrap();
        slot[..*len].fill(i as u8);
        assert!(out.push(to, 0, *len));
    }
    assert_eq!(out.send(a.as_raw_fd(), &mut true).gso_runs, 1);
    let mut got = Batch::with_slot_size(4, GRO_SLOT);
    let mut datagrams = Vec::new();
    let mut coalesced = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while datagrams.len() < lens.len() && std::time::Instant::now() < deadline {
        match got.recv(b.as_raw_fd(), 0) {
            Ok(n) => {
                for i in 0..n {
                    let segment = got.segment_size(i);
                    let (_, slot, start, len) = got.datagram_mut(i).unwrap();
                    coalesced |= segment < len;
                    datagrams.extend(slot[start..start + len].chunks(segment).map(<[u8]>::to_vec));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("recvmmsg: {e}"),
        }
    }
    assert!(coalesced, "the kernel handed the run over in one read");
    let expected: Vec<Vec<u8>> = lens
        .iter()
        .enumerate()
        .map(|(i, l)| vec![i as u8; *l])
        .collect();
    assert_eq!(datagrams, expected);
}

#[test]
fn an_oversized_datagram_is_reported_as_truncated() {
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    b.set_nonblocking(true).unwrap();
    a.send_to(&vec![7u8; SLOT], b.local_addr().unwrap())
        .unwrap();
    let mut got = Batch::new(2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match got.recv(b.as_raw_fd(), 24) {
            Ok(n) => {
                assert_eq!(n, 1);
                assert!(got.datagram_mut(0).is_none());
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(std::time::Instant::now() < deadline, "nothing arrived");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("recvmmsg: {e}"),
        }
    }
}

#[test]
fn sends_and_receives_reuse_the_scratch_allocated_with_the_batch() {
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    b.set_nonblocking(true).unwrap();
    let to = b.local_addr().unwrap();
    // An IPv6 peer on an IPv4 socket: the kernel refuses that run (EAFNOSUPPORT) and
    // then each of its datagrams, which walks the single-send fallback.
    let refused: SocketAddr = "[::1]:9".parse().unwrap();
    let mut out = Batch::new(16);
    let mut got = Batch::new(16);
    let (out_scratch, got_scratch) = (out.scratch_buffers(), got.scratch_buffers());
    for (_, cap) in out_scratch {
        assert!(cap > 0);
    }
    for round in 0..4 {
        let plan = [
            (to, 900),
            (to, 900),
            (to, 400),
            (refused, 300),
            (refused, 300),
        ];
        for (i, (peer, len)) in plan.iter().enumerate() {
            let slot = out.next_free().unwrap();
            slot[24..24 + len].fill(i as u8);
            assert!(out.push(*peer, 24, *len));
        }
        let mut gso = round % 2 == 0;
        let sent = out.send(a.as_raw_fd(), &mut gso);
        assert_eq!(
            sent.datagrams, 3,
            "round {round}: b's three, not the IPv6 pair"
        );
        assert_eq!(
            gso,
            round % 2 == 0,
            "a refused address does not turn GSO off"
        );
        assert_eq!(out.scratch_buffers(), out_scratch, "round {round}: send");
        let mut seen = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while seen < 3 && std::time::Instant::now() < deadline {
            match got.recv(b.as_raw_fd(), 24) {
                Ok(n) => seen += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("recvmmsg: {e}"),
            }
            assert_eq!(got.scratch_buffers(), got_scratch, "round {round}: recv");
        }
        assert_eq!(seen, 3);
    }
}
