//! The few Ethernet, IPv4 and UDP fields the workers read and write, by name: what a
//! frame from the TAP or an AF_XDP socket carries, where a tunnelled packet's addresses
//! lie, and the metadata `target` puts in front of a steered frame.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;

use gateway_ebpf_common::XskMeta;

/// Ethernet header: destination MAC, source MAC, EtherType.
pub const ETH_LEN: usize = 14;
const ETH_DST: Range<usize> = 0..6;
const ETH_SRC: Range<usize> = 6..12;
const ETH_TYPE: Range<usize> = 12..14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];

/// Shortest IPv4 header.
pub const IPV4_MIN_HEADER: usize = 20;
// Offsets inside an IPv4 header.
const IP_TOTAL_LEN: Range<usize> = 2..4;
const IP_FRAGMENT: Range<usize> = 6..8;
const IP_PROTOCOL: usize = 9;
const IP_SRC: Range<usize> = 12..16;
const IP_DST: Range<usize> = 16..20;
const IPPROTO_UDP: u8 = 17;
/// Offset and more-fragments bits of the fragment field.
const FRAGMENT_MASK: u16 = 0x3fff;

const UDP_HEADER: usize = 8;
const UDP_SRC_PORT: Range<usize> = 0..2;
const UDP_LEN: Range<usize> = 4..6;

fn be16(bytes: &[u8], at: Range<usize>) -> Option<u16> {
    let b = bytes.get(at)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn ipv4_at(bytes: &[u8], at: Range<usize>) -> Option<Ipv4Addr> {
    let b: [u8; 4] = bytes.get(at)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

/// An Ethernet frame carrying (at least a header's worth of) IPv4.
pub fn is_ipv4_frame(frame: &[u8]) -> bool {
    frame.len() > ETH_LEN + IPV4_MIN_HEADER && frame.get(ETH_TYPE) == Some(&ETHERTYPE_IPV4[..])
}

/// An IPv4 packet (no Ethernet header) whose source is `lease`: what a session may send.
pub fn is_from(packet: &[u8], lease: Ipv4Addr) -> bool {
    packet.first().is_some_and(|b| b >> 4 == 4) && ipv4_at(packet, IP_SRC) == Some(lease)
}

/// Where the IPv4 packet of an Ethernet frame `frame_len` bytes long goes, and how long it
/// is without the Ethernet padding a short frame may carry. `None` unless
/// [`is_ipv4_frame`].
pub fn ipv4_destination(frame: &[u8]) -> Option<(Ipv4Addr, usize)> {
    if !is_ipv4_frame(frame) {
        return None;
    }
    let ip = &frame[ETH_LEN..];
    let total = usize::from(be16(ip, IP_TOTAL_LEN)?);
    Some((ipv4_at(ip, IP_DST)?, total.clamp(IPV4_MIN_HEADER, ip.len())))
}

/// Writes an IPv4 Ethernet header from `src` to `dst` into `header` (14 bytes).
pub fn write_eth_header(header: &mut [u8], dst: [u8; 6], src: [u8; 6]) {
    header[ETH_DST].copy_from_slice(&dst);
    header[ETH_SRC].copy_from_slice(&src);
    header[ETH_TYPE].copy_from_slice(&ETHERTYPE_IPV4);
}

/// The sender and the payload's range of an Ethernet/IPv4/UDP frame, or `None` when the
/// frame is not one (or is a fragment).
pub fn udp_payload(frame: &[u8]) -> Option<(SocketAddr, Range<usize>)> {
    let ip = frame.get(ETH_LEN..)?;
    if frame.get(ETH_TYPE) != Some(&ETHERTYPE_IPV4[..])
        || ip.len() < IPV4_MIN_HEADER
        || ip[0] >> 4 != 4
        || ip[IP_PROTOCOL] != IPPROTO_UDP
    {
        return None;
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let total_len = usize::from(be16(ip, IP_TOTAL_LEN)?);
    let fragment = be16(ip, IP_FRAGMENT)? & FRAGMENT_MASK;
    if header_len < IPV4_MIN_HEADER
        || total_len < header_len + UDP_HEADER
        || total_len > ip.len()
        || fragment != 0
    {
        return None;
    }
    let udp = &ip[header_len..total_len];
    let udp_len = usize::from(be16(udp, UDP_LEN)?);
    if udp_len < UDP_HEADER || udp_len > udp.len() {
        return None;
    }
    let src = ipv4_at(ip, IP_SRC)?;
    let port = be16(udp, UDP_SRC_PORT)?;
    let payload = ETH_LEN + header_len + UDP_HEADER;
    Some((
        SocketAddr::from((src, port)),
        payload..ETH_LEN + header_len + udp_len,
    ))
}

const IPPROTO_TCP: u8 = 6;
const TCP_CHECK: usize = 16;
const UDP_CHECK: usize = 6;

/// The one's-complement sum of `data` as big-endian 16-bit words (an odd last byte is a
/// high byte), folded to 16 bits, not inverted.
fn ones_complement_sum(data: &[u8], initial: u64) -> u16 {
    let mut sum = initial;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        sum += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    sum += u64::from(u32::from_be_bytes(tail));
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Finishes the TCP or UDP checksum of an IPv4 `packet` (no Ethernet header) when a
/// local sender left it partial: the field holds only the folded pseudo-header sum, as
/// a kernel leaves it for checksum offload (veth and bridge peers send it so, and
/// `target` keeps that form across its rewrite, since XDP cannot see the state). Returns
/// whether it wrote the complete checksum. A field that is already the segment's valid
/// checksum, any other field, fragments and other protocols are left alone; so is a
/// corrupted complete checksum, unless it happens to equal the partial form (one in
/// 65,536).
pub fn finish_partial_checksum(packet: &mut [u8]) -> bool {
    let Some(&first) = packet.first() else {
        return false;
    };
    let header_len = usize::from(first & 0x0f) * 4;
    let (Some(total), Some(fragment)) = (be16(packet, IP_TOTAL_LEN), be16(packet, IP_FRAGMENT))
    else {
        return false;
    };
    let total = usize::from(total);
    if first >> 4 != 4
        || header_len < IPV4_MIN_HEADER
        || total < header_len
        || total > packet.len()
        || fragment & FRAGMENT_MASK != 0
    {
        return false;
    }
    let protocol = packet[IP_PROTOCOL];
    let check_at = match protocol {
        IPPROTO_TCP => TCP_CHECK,
        IPPROTO_UDP => UDP_CHECK,
        _ => return false,
    };
    let (Some(src), Some(dst)) = (ipv4_at(packet, IP_SRC), ipv4_at(packet, IP_DST)) else {
        return false;
    };
    let l4_len = total - header_len;
    let segment = &mut packet[header_len..total];
    let Some(field) = be16(segment, check_at..check_at + 2) else {
        return false;
    };
    let mut pseudo = u64::from(u32::from(src)) + u64::from(u32::from(dst));
    pseudo += u64::from(protocol) + l4_len as u64;
    let pseudo_sum = ones_complement_sum(&[], pseudo);
    if field != pseudo_sum || (protocol == IPPROTO_UDP && field == 0) {
        return false;
    }
    // The segment's sum with the field counted as zero.
    segment[check_at..check_at + 2].fill(0);
    let mut check = !ones_complement_sum(segment, pseudo);
    if protocol == IPPROTO_UDP && check == 0 {
        check = 0xffff;
    }
    segment[check_at..check_at + 2].copy_from_slice(&check.to_be_bytes());
    check != field
}

/// The metadata `target` wrote in front of a steered frame (8 bytes, native order):
/// the bytes just before `start` in the AF_XDP chunk.
pub fn xsk_meta(chunk: &[u8], start: usize) -> Option<XskMeta> {
    let at = start.checked_sub(size_of::<XskMeta>())?;
    let bytes = chunk.get(at..start)?;
    let word = |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    Some(XskMeta {
        magic: word(0),
        peer_id: word(4),
    })
}

#[cfg(test)]
/// The partial form of an IPv4 TCP/UDP packet's checksum: the folded pseudo-header
/// sum, as a sender's kernel leaves it for checksum offload.
pub(crate) fn make_partial(packet: &mut [u8]) {
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let protocol = packet[9];
    let mut pseudo = [0u8; 12];
    pseudo[..8].copy_from_slice(&packet[12..20]);
    pseudo[9] = protocol;
    pseudo[10..].copy_from_slice(&((total - header_len) as u16).to_be_bytes());
    let sum = gateway_tests::xdp::checksum::ones_complement_sum(&pseudo, 0);
    let at = header_len + if protocol == 6 { 16 } else { 6 };
    packet[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet/IPv4/UDP frame from 192.0.2.7:51000 with `payload`.
    pub(crate) fn udp_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0]);
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[192, 0, 2, 7, 198, 51, 100, 1]);
        f.extend_from_slice(&51000u16.to_be_bytes());
        f.extend_from_slice(&1194u16.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    proptest::proptest! {
        #[test]
        fn partial_checksums_are_finished_to_the_sender_s_complete_one(
            src: [u8; 4],
            dst: [u8; 4],
            ports: (u16, u16),
            tcp: bool,
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1500),
        ) {
            use gateway_tests::xdp::{checksum::l4_ok, frame};
            let complete = if tcp {
                frame::tcp(src, dst, ports.0, ports.1, &payload)
            } else {
                frame::udp(src, dst, ports.0, ports.1, &payload)
            };
            let mut partial = complete.clone();
            make_partial(&mut partial[ETH_LEN..]);
            let finished = finish_partial_checksum(&mut partial[ETH_LEN..]);
            proptest::prop_assert!(l4_ok(&partial));
            proptest::prop_assert_eq!(&partial, &complete);
            // Only a checksum that equals its own partial form by chance is left as is.
            proptest::prop_assert_eq!(finished, partial != {
                let mut p = complete.clone();
                make_partial(&mut p[ETH_LEN..]);
                p
            });
            // A complete checksum is never touched.
            let mut again = complete.clone();
            proptest::prop_assert!(!finish_partial_checksum(&mut again[ETH_LEN..]));
            proptest::prop_assert_eq!(again, complete);
        }
    }

    #[test]
    fn only_partial_tcp_and_udp_checksums_of_whole_packets_are_finished() {
        use gateway_tests::xdp::{checksum::l4_ok, frame};
        let (src, dst) = ([10, 10, 0, 10], [10, 200, 0, 2]);
        let mut tcp = frame::tcp(src, dst, 8080, 40000, b"hello, partial world");
        make_partial(&mut tcp[ETH_LEN..]);
        assert!(!l4_ok(&tcp));
        type Change = fn(&mut Vec<u8>);
        let left: [(&str, Change); 5] = [
            ("a corrupted complete checksum", |f| f[14 + 20 + 16] ^= 0x40),
            ("a first fragment", |f| f[14 + 6] |= 0x20),
            ("a later fragment", |f| f[14 + 7] = 1),
            ("another protocol", |f| f[14 + 9] = 47),
            ("total length past the packet", |f| f[14 + 3] = 0xff),
        ];
        for (what, change) in left {
            let mut f = tcp.clone();
            change(&mut f);
            let before = f.clone();
            assert!(!finish_partial_checksum(&mut f[ETH_LEN..]), "{what}");
            assert_eq!(f, before, "{what}");
        }
        // A UDP checksum of zero means none.
        let mut udp = frame::udp(src, dst, 53, 40000, b"answer");
        udp[14 + 20 + 6..14 + 20 + 8].fill(0);
        let before = udp.clone();
        assert!(!finish_partial_checksum(&mut udp[ETH_LEN..]));
        assert_eq!(udp, before);
        // Truncated input of every length never panics.
        for len in 0..tcp.len() - ETH_LEN {
            let mut cut = tcp[ETH_LEN..ETH_LEN + len].to_vec();
            finish_partial_checksum(&mut cut);
        }
        assert!(finish_partial_checksum(&mut tcp[ETH_LEN..]));
        assert!(l4_ok(&tcp));
    }

    #[test]
    fn udp_payload_finds_sender_and_payload() {
        let mut f = udp_frame(b"openvpn");
        // Ethernet padding after the datagram is not payload.
        f.extend_from_slice(&[0; 6]);
        let (from, range) = udp_payload(&f).unwrap();
        assert_eq!(from, "192.0.2.7:51000".parse().unwrap());
        assert_eq!(&f[range], b"openvpn");
    }

    #[test]
    fn udp_payload_refuses_what_is_not_a_whole_udp_datagram() {
        let good = udp_frame(b"openvpn");
        type Breakage = fn(&mut Vec<u8>);
        let cases: [(&str, Breakage); 8] = [
            ("not IPv4 ethertype", |f| f[12] = 0x86),
            ("IPv6 version", |f| f[14] = 0x65),
            ("TCP", |f| f[23] = 6),
            ("header length 16", |f| f[14] = 0x44),
            ("total length past the frame", |f| f[17] += 1),
            ("more fragments", |f| f[20] = 0x20),
            ("fragment offset", |f| f[21] = 1),
            ("UDP length past the IP packet", |f| f[39] += 1),
        ];
        for (what, break_it) in cases {
            let mut f = good.clone();
            break_it(&mut f);
            assert_eq!(udp_payload(&f), None, "{what}");
        }
        for len in 0..good.len() {
            assert_eq!(udp_payload(&good[..len]), None, "truncated to {len}");
        }
    }

    #[test]
    fn destinations_ignore_ethernet_padding_and_sources_are_checked() {
        let mut f = udp_frame(b"x");
        let packet_len = f.len() - ETH_LEN;
        f.extend_from_slice(&[0; 10]);
        assert_eq!(
            ipv4_destination(&f),
            Some((Ipv4Addr::new(198, 51, 100, 1), packet_len))
        );
        assert!(is_from(&f[ETH_LEN..], Ipv4Addr::new(192, 0, 2, 7)));
        assert!(!is_from(&f[ETH_LEN..], Ipv4Addr::new(192, 0, 2, 8)));
        f[12] = 0x86;
        assert_eq!(ipv4_destination(&f), None);
    }

    proptest::proptest! {
        #[test]
        fn udp_payload_never_panics_and_stays_inside(frame in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            if let Some((_, range)) = udp_payload(&frame) {
                proptest::prop_assert!(range.start <= range.end && range.end <= frame.len());
            }
            let _ = ipv4_destination(&frame);
            let _ = xsk_meta(&frame, frame.len() / 2);
        }
    }
}
