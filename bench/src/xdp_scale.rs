//! `xdp`, the policy programs at scale: ns per packet of `inner` and `target` through
//! `BPF_PROG_TEST_RUN` with 1, 1,000 and 100,000 routes and authorization rules, and
//! 100,000 NAT mappings in place. Every figure is the kernel's own timing of single
//! runs averaged over many different packets (`repeat` 1: a repeated run would
//! see its own rewrite and measure another path), less the fixed cost of a single timed
//! run: the untouched miss path timed both ways (once per call, and repeated 100,000
//! times in the kernel, where that cost spreads out) gives it.

use std::net::Ipv4Addr;

use anyhow::{Result, bail};
use gateway::{
    dataplane::frame::finish_partial_checksum,
    policy::{Access, AuthorizationRule, CompiledRules, compile_authorization, group_set},
    xdp::Policy,
};
use gateway_ebpf_common::{RouteValue, SessionInfo};
use gateway_tests::{
    lab::Lab,
    xdp::{self, Verdict, frame},
};
use ipnet::Ipv4Net;

use crate::report::Report;

const LEASE: [u8; 4] = [10, 200, 0, 5];
const SNAT: [u8; 4] = [10, 0, 0, 9];
/// Packets timed per figure.
const SAMPLES: u32 = 5_000;

/// `n` routes and all-users rules: 10.0.0.0/24, 10.0.1.0/24, … (the first routes
/// 10.0.0.0/24, where the timed packets go).
fn rules(n: u32) -> (Vec<(Ipv4Net, RouteValue)>, Vec<AuthorizationRule>) {
    let route = RouteValue {
        target_ifindex: 7,
        snat_addr: SNAT,
    };
    let nets: Vec<Ipv4Net> = (0..n)
        .map(|i| {
            let base = u32::from(Ipv4Addr::new(10, 0, 0, 0)) + (i << 8);
            Ipv4Net::new(Ipv4Addr::from(base), 24).expect("a /24")
        })
        .collect();
    let routes = nets.iter().map(|n| (*n, route)).collect();
    let authz = nets
        .iter()
        .map(|n| AuthorizationRule {
            destination: *n,
            access: Access::AllUsers,
        })
        .collect();
    (routes, authz)
}

/// The client's UDP packet of flow `i` (distinct source port and destination host).
fn outbound(i: u32) -> Vec<u8> {
    let host = [10, 0, 0, 1 + (i % 250) as u8];
    frame::udp(LEASE, host, 1024 + (i / 250) as u16, 53, &[0u8; 18])
}

/// Mean kernel ns of single runs of `program` over `frames`.
fn mean_ns(program: &aya::programs::Xdp, frames: impl Iterator<Item = Vec<u8>>) -> Result<f64> {
    let mut total = 0u128;
    let mut count = 0u32;
    for f in frames {
        total += xdp::time_per_run(program, &f, 1)?.as_nanos();
        count += 1;
    }
    Ok(total as f64 / f64::from(count.max(1)))
}

/// The reply of flow `i` from its host to the translated source (the port was free, so
/// it was kept).
fn reply(i: u32) -> Vec<u8> {
    let host = [10, 0, 0, 1 + (i % 250) as u8];
    frame::udp(host, SNAT, 53, 1024 + (i / 250) as u16, &[0u8; 18])
}

/// Source (12..16 of the IP header) and destination of a frame.
fn addrs(frame: &[u8]) -> ([u8; 4], [u8; 4]) {
    let ip = &frame[14..];
    (
        [ip[12], ip[13], ip[14], ip[15]],
        [ip[16], ip[17], ip[18], ip[19]],
    )
}

/// A TCP reply of `payload` bytes from the host of flow 0 to the translated source,
/// its checksum complete or, `partial`, in the form a local sender's kernel leaves it
/// for offload (the folded pseudo-header sum).
fn tcp_reply(payload: usize, partial: bool) -> Vec<u8> {
    let mut f = frame::tcp([10, 0, 0, 1], SNAT, 443, 1024, &vec![0x5a; payload]);
    if partial {
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&f[26..34]);
        pseudo[9] = 6;
        pseudo[10..].copy_from_slice(&((f.len() - 34) as u16).to_be_bytes());
        let sum = gateway_tests::xdp::checksum::ones_complement_sum(&pseudo, 0);
        f[50..52].copy_from_slice(&sum.to_be_bytes());
    }
    f
}

/// Mean ns of the worker finishing the partial checksum of `packet` (an IPv4 packet,
/// restored to its partial form before every call), and of the same call on the
/// complete packet (the compare that every reply costs).
fn finish_ns(packet: &[u8]) -> (f64, f64) {
    const CALLS: u32 = 200_000;
    let field = packet[36..38].to_vec();
    let mut work = packet.to_vec();
    let started = std::time::Instant::now();
    for _ in 0..CALLS {
        work[36..38].copy_from_slice(&field);
        std::hint::black_box(finish_partial_checksum(std::hint::black_box(&mut work)));
    }
    let partial = started.elapsed().as_nanos() as f64 / f64::from(CALLS);
    let started = std::time::Instant::now();
    for _ in 0..CALLS {
        std::hint::black_box(finish_partial_checksum(std::hint::black_box(&mut work)));
    }
    let complete = started.elapsed().as_nanos() as f64 / f64::from(CALLS);
    (partial, complete)
}

/// Partial checksums (docs/xdp.md, "Checksums"): what `target` spends keeping a
/// partial checksum partial across its rewrite, against a complete one, and what the
/// worker spends finishing it, for a 1,400-byte TCP segment.
fn checksums(report: &mut Report, ns: &gateway_tests::lab::Netns) -> Result<()> {
    let [complete, partial] = ns.run_in(|| -> Result<[f64; 2]> {
        let mut policy = Policy::load_with_nat_capacity(1024)?;
        policy.insert_session(
            Ipv4Addr::from(LEASE),
            SessionInfo {
                groups: group_set(&[]),
                peer_id: 5,
                _pad: 0,
            },
        )?;
        let (routes, authz) = rules(1);
        policy.replace_rules(&CompiledRules::new(routes, compile_authorization(&authz)))?;
        let out = frame::tcp(LEASE, [10, 0, 0, 1], 1024, 443, &[]);
        if xdp::run(policy.inner(), &out)?.verdict == Verdict::Drop {
            bail!("inner dropped the TCP flow");
        }
        let time = |partial: bool| -> Result<f64> {
            let f = tcp_reply(1400, partial);
            if addrs(&xdp::run(policy.target(), &f)?.frame).1 != LEASE {
                bail!("target did not translate the TCP reply");
            }
            mean_ns(policy.target(), (0..SAMPLES).map(|_| f.clone()))
        };
        Ok([time(false)?, time(true)?])
    })??;
    let (finish, compare) = finish_ns(&tcp_reply(1400, true)[14..]);
    for (name, value) in [
        (
            "target, 1,400-byte TCP reply, complete checksum (ns, with the fixed cost)",
            complete,
        ),
        (
            "target, 1,400-byte TCP reply, partial checksum kept partial (ns, with the fixed cost)",
            partial,
        ),
        (
            "worker, finishing a partial 1,400-byte TCP checksum (ns)",
            finish,
        ),
        ("worker, checking a complete one (ns)", compare),
    ] {
        report.row("xdp", name.to_string(), "ns", value, None);
    }
    Ok(())
}

/// Runs the scenario, adding rows to `report` (no stock counterpart). `quick`: 1 and
/// 1,000 rules with 10,000 NAT flows.
pub fn run(report: &mut Report, quick: bool) -> Result<()> {
    let mut lab = Lab::new();
    let ns = lab.add_namespace("xdpscale")?;
    checksums(report, &ns)?;
    let (sizes, nat_flows): (&[u32], u32) = if quick {
        (&[1, 1_000], 10_000)
    } else {
        (&[1, 1_000, 100_000], 100_000)
    };
    for &n in sizes {
        let result = ns.run_in(|| -> Result<[f64; 5]> {
            let mut policy = Policy::load_with_nat_capacity(nat_flows + 2 * SAMPLES)?;
            policy.insert_session(
                Ipv4Addr::from(LEASE),
                SessionInfo {
                    groups: group_set(&[]),
                    peer_id: 5,
                    _pad: 0,
                },
            )?;
            let (routes, authz) = rules(n);
            policy.replace_rules(&CompiledRules::new(routes, compile_authorization(&authz)))?;
            // NAT mappings in place: one per flow.
            for i in 0..nat_flows {
                let out = xdp::run(policy.inner(), &outbound(i))?;
                if out.verdict == Verdict::Drop {
                    bail!("inner dropped flow {i} while filling the NAT table");
                }
            }
            // The paths timed are the paths meant: a flow is translated, its reply
            // translated back, and a stranger's packet left alone.
            let out = xdp::run(policy.inner(), &outbound(0))?;
            let back = xdp::run(policy.target(), &reply(0))?;
            let stranger = frame::udp([10, 0, 0, 1], SNAT, 53, 65_000, &[0u8; 18]);
            let missed = xdp::run(policy.target(), &stranger)?;
            if addrs(&out.frame).0 != SNAT
                || addrs(&back.frame).1 != LEASE
                || missed.verdict != Verdict::Pass
                || missed.frame != stranger
            {
                bail!("the XDP programs did not translate as expected; see the fixtures");
            }
            // A new flow: the route and rule lookups plus creating a mapping.
            let new_flow = mean_ns(
                policy.inner(),
                (nat_flows..nat_flows + SAMPLES).map(outbound),
            )?;
            // An established flow: the lookups plus a NAT hit.
            let established = mean_ns(policy.inner(), (0..SAMPLES).map(outbound))?;
            // Replies: reverse NAT hits for established flows.
            let reverse_hit = mean_ns(policy.target(), (0..SAMPLES).map(reply))?;
            let misses = (0..SAMPLES).map(|i| {
                frame::udp(
                    [10, 0, 0, 1],
                    SNAT,
                    53,
                    60_000 + (i % 5000) as u16,
                    &[0u8; 18],
                )
            });
            let miss = mean_ns(policy.target(), misses)?;
            let miss_repeated =
                xdp::time_per_run(policy.target(), &stranger, 100_000)?.as_nanos() as f64;
            let overhead = (miss - miss_repeated).max(0.0);
            Ok([
                new_flow - overhead,
                established - overhead,
                reverse_hit - overhead,
                miss_repeated,
                overhead,
            ])
        })??;
        let label = format!("{n} routes and rules, {nat_flows} NAT flows");
        report.row(
            "xdp",
            format!("{label}: inner, new flow (ns)"),
            "ns",
            result[0],
            None,
        );
        report.row(
            "xdp",
            format!("{label}: inner, established (ns)"),
            "ns",
            result[1],
            None,
        );
        report.row(
            "xdp",
            format!("{label}: target, reverse NAT hit (ns)"),
            "ns",
            result[2],
            None,
        );
        report.row(
            "xdp",
            format!("{label}: target, miss (ns)"),
            "ns",
            result[3],
            None,
        );
        report.row(
            "xdp",
            format!("{label}: fixed cost of one timed run, subtracted (ns)"),
            "ns",
            result[4],
            None,
        );
    }
    Ok(())
}
