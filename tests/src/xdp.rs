//! XDP fixture harness: build a frame, run it through a loaded program with
//! `BPF_PROG_TEST_RUN`, and check the verdict and the bytes that come out, checksums
//! included (verified by the RFC 1071 sum here, independent of the BPF code).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use etherparse::{IpHeaders, Ipv4Header, PacketBuilder};

/// Room for programs that grow the frame (`bpf_xdp_adjust_head/tail`).
const OUT_HEADROOM: usize = 512;

/// An XDP verdict as the program returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
}

impl Verdict {
    fn from_action(action: u32) -> Result<Self> {
        Ok(match action {
            0 => Verdict::Aborted,
            1 => Verdict::Drop,
            2 => Verdict::Pass,
            3 => Verdict::Tx,
            4 => Verdict::Redirect,
            other => bail!("program returned {other}, not an XDP action"),
        })
    }
}

/// What one run produced.
#[derive(Debug)]
pub struct RunOutput {
    pub verdict: Verdict,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
}

/// Runs `frame` through `program` once and returns the verdict and the output frame.
pub fn run(program: &Xdp, frame: &[u8]) -> Result<RunOutput> {
    let mut out = vec![0u8; frame.len() + OUT_HEADROOM];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    out.truncate(result.data_size_out as usize);
    Ok(RunOutput {
        verdict: Verdict::from_action(result.return_value)?,
        frame: out,
    })
}

/// Runs `frame` once as if it arrived on rx queue `rx_queue` of interface `ifindex` (in
/// the calling thread's namespace). Returns the run and the XDP metadata the program
/// left in front of the frame.
pub fn run_on(
    program: &Xdp,
    frame: &[u8],
    ifindex: u32,
    rx_queue: u32,
) -> Result<(RunOutput, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + OUT_HEADROOM];
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex; the kernel wants data 0 and data_end the frame's length.
    let words = [0, frame.len() as u32, 0, ifindex, rx_queue, 0];
    let ctx_in: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let mut ctx_out = vec![0u8; ctx_in.len()];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            repeat: 1,
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN with a context")?;
    out.truncate(result.data_size_out as usize);
    // The output starts at data_meta; ctx_out.data is the metadata's length.
    let meta_len = u32::from_ne_bytes(ctx_out[0..4].try_into().expect("4 bytes")) as usize;
    if meta_len > out.len() {
        bail!(
            "metadata of {meta_len} bytes in {} bytes of output",
            out.len()
        );
    }
    let frame = out.split_off(meta_len);
    Ok((
        RunOutput {
            verdict: Verdict::from_action(result.return_value)?,
            frame,
        },
        out,
    ))
}

/// Mean time per run of `frame` over `repeat` runs in the kernel. The kernel reruns the
/// program on the same buffer, so use it for timing only, never to check rewrites.
pub fn time_per_run(program: &Xdp, frame: &[u8], repeat: u32) -> Result<Duration> {
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN (timing)")?;
    Ok(result.duration)
}

/// Runs `frame` and asserts the verdict and that the frame came out unchanged.
pub fn assert_untouched(program: &Xdp, frame: &[u8], expected: Verdict) -> Result<()> {
    let out = run(program, frame)?;
    if out.verdict != expected {
        bail!("verdict {:?}, expected {expected:?}", out.verdict);
    }
    if out.frame != frame {
        bail!(
            "frame changed:\n in: {}\nout: {}",
            hex(frame),
            hex(&out.frame)
        );
    }
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// MAC addresses used by fixtures.
pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Frames for fixtures, built with `etherparse` so that lengths and checksums are right
/// unless a test breaks them on purpose.
pub mod frame {
    use super::*;

    pub fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
            .ipv4(src, dst, 64)
            .udp(sport, dport);
        let mut v = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut v, payload).expect("writing to a Vec");
        v
    }

    pub fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 1000, 65535)
            .syn();
        let mut v = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut v, payload).expect("writing to a Vec");
        v
    }

    pub fn icmp_echo(src: [u8; 4], dst: [u8; 4], id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
            .ipv4(src, dst, 64)
            .icmpv4_echo_request(id, seq);
        let mut v = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut v, payload).expect("writing to a Vec");
        v
    }

    /// An ICMP error (`kind`/`code`, e.g. 3/4 fragmentation needed with `rest` = next-hop
    /// MTU) quoting `quoted` (the IP packet it is about, often cut after 8 bytes of L4).
    pub fn icmp_error(
        src: [u8; 4],
        dst: [u8; 4],
        kind: u8,
        code: u8,
        rest: [u8; 4],
        quoted: &[u8],
    ) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
            .ipv4(src, dst, 64)
            .icmpv4(etherparse::Icmpv4Type::Unknown {
                type_u8: kind,
                code_u8: code,
                bytes5to8: rest,
            });
        let mut v = Vec::with_capacity(b.size(quoted.len()));
        b.write(&mut v, quoted).expect("writing to a Vec");
        v
    }

    /// UDP in an IPv4 header that carries `options` (a multiple of 4 bytes, ≤ 40).
    pub fn udp_with_ip_options(
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        options: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let mut ip = Ipv4Header::new(0, 64, etherparse::IpNumber::UDP, src, dst)
            .expect("zero payload length fits");
        ip.options = options
            .try_into()
            .expect("options length is a multiple of 4, ≤ 40");
        let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
            .ip(IpHeaders::Ipv4(ip, Default::default()))
            .udp(sport, dport);
        let mut v = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut v, payload).expect("writing to a Vec");
        v
    }

    /// A frame with EtherType `ether_type` and `body` after the Ethernet header.
    pub fn ethernet(ether_type: u16, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(14 + body.len());
        v.extend_from_slice(&DST_MAC);
        v.extend_from_slice(&SRC_MAC);
        v.extend_from_slice(&ether_type.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// Sets the IPv4 flags/fragment-offset field (offset in 8-byte units) and fixes the
    /// header checksum.
    pub fn set_fragment(frame: &mut [u8], more_fragments: bool, offset_units: u16) {
        let v = (u16::from(more_fragments) << 13) | (offset_units & 0x1fff);
        frame[14 + 6..14 + 8].copy_from_slice(&v.to_be_bytes());
        super::checksum::fix_ipv4_header(frame);
    }
}

/// Internet checksums (RFC 1071) computed from scratch, to check what programs emit.
pub mod checksum {
    /// One's-complement sum of `data` folded to 16 bits (not inverted).
    pub fn ones_complement_sum(data: &[u8], initial: u32) -> u16 {
        let mut sum = initial;
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    fn ipv4_header(frame: &[u8]) -> Option<&[u8]> {
        let ihl = usize::from(*frame.get(14)? & 0x0f) * 4;
        frame.get(14..14 + ihl)
    }

    /// Whether the IPv4 header checksum of an Ethernet frame is right.
    pub fn ipv4_header_ok(frame: &[u8]) -> bool {
        ipv4_header(frame).is_some_and(|h| ones_complement_sum(h, 0) == 0xffff)
    }

    /// Recomputes the IPv4 header checksum in place.
    pub fn fix_ipv4_header(frame: &mut [u8]) {
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        frame[24..26].fill(0);
        let sum = !ones_complement_sum(&frame[14..14 + ihl], 0);
        frame[24..26].copy_from_slice(&sum.to_be_bytes());
    }

    /// Whether the TCP, UDP or ICMP checksum of an unfragmented IPv4 frame is right (a
    /// UDP checksum of zero means "none" and is accepted).
    pub fn l4_ok(frame: &[u8]) -> bool {
        let Some(header) = ipv4_header(frame) else {
            return false;
        };
        let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
        let Some(l4) = frame.get(14 + header.len()..14 + total) else {
            return false;
        };
        let protocol = frame[23];
        if protocol == 1 {
            return ones_complement_sum(l4, 0) == 0xffff;
        }
        if protocol == 17 && l4.get(6..8) == Some(&[0, 0]) {
            return true;
        }
        let mut pseudo = 0u32;
        for c in frame[26..34].chunks_exact(2) {
            pseudo += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        pseudo += u32::from(protocol) + l4.len() as u32;
        ones_complement_sum(l4, pseudo) == 0xffff
    }
}

#[cfg(test)]
mod tests {
    use super::{checksum::*, frame};

    #[test]
    fn builders_make_frames_with_valid_checksums() {
        let frames = [
            frame::udp([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"hello"),
            frame::tcp([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"hello!"),
            frame::icmp_echo([10, 0, 0, 1], [10, 0, 0, 2], 7, 1, b"ping"),
            frame::udp_with_ip_options([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, &[1, 1, 1, 0], b"x"),
        ];
        for f in frames {
            assert!(ipv4_header_ok(&f), "ip checksum of {}", super::hex(&f));
            assert!(l4_ok(&f), "l4 checksum of {}", super::hex(&f));
        }
    }

    #[test]
    fn checksum_checker_catches_one_flipped_bit() {
        // (frame, whether the L4 checksum covers the addresses: not for ICMP)
        for (mut f, pseudo_header) in [
            (
                frame::udp([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"hello"),
                true,
            ),
            (
                frame::tcp([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"hello!"),
                true,
            ),
            (
                frame::icmp_echo([10, 0, 0, 1], [10, 0, 0, 2], 7, 1, b"ping"),
                false,
            ),
        ] {
            let last = f.len() - 1;
            f[last] ^= 0x01;
            assert!(!l4_ok(&f));
            f[last] ^= 0x01;
            f[26] ^= 0x80; // source address
            assert!(!ipv4_header_ok(&f));
            assert_eq!(l4_ok(&f), !pseudo_header);
        }
    }

    #[test]
    fn fragment_setter_keeps_header_checksum_valid() {
        let mut f = frame::udp([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"hello");
        frame::set_fragment(&mut f, true, 0);
        assert!(ipv4_header_ok(&f));
        assert_eq!(f[20], 0x20);
    }
}
