//! Benchmarks of the gateway (need root): `bench [SCENARIO] [--quick]`. Every scenario
//! but `xdp` runs our gateway and the stock OpenVPN 2.6 server one after the other in
//! the same namespace lab and reports ours, stock's and the ratio (see
//! docs/benchmarks.md). `all` runs throughput, handshakes, sessions, latency, xdp, iperf
//! and rekey; `--quick` is the few-minute smoke CI runs.

mod bed;
mod iperf;
mod loadgen;
mod plots;
mod report;
mod scenarios;
mod xdp_scale;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use gateway::xdp::Edge;
use gateway_tests::{privilege, xdp};

use crate::{
    bed::Bed,
    report::Report,
    scenarios::{Size, handshakes, latency, rekey, sessions, smoke, throughput},
};

#[derive(Parser)]
#[command(about = "Gateway benchmarks: ours against stock OpenVPN 2.6, side by side")]
struct Cli {
    /// What to run.
    #[arg(value_enum, default_value = "all")]
    scenario: Scenario,
    /// The small, fast version (CI smoke; no thresholds).
    #[arg(long)]
    quick: bool,
    /// The gateway binary (a release build).
    #[arg(long, default_value = "target/release/gateway")]
    gateway: PathBuf,
    /// `iperf`: seconds of transfer per direction and side [default: 10, quick: 3].
    #[arg(long)]
    seconds: Option<u64>,
    /// `xdp`: runs per frame kind inside the kernel.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// throughput, handshakes, sessions, latency, rekey, xdp and iperf.
    All,
    /// Echo pps, Gbit/s and server CPU per packet by packet size and sessions.
    Throughput,
    /// Connect storms: sessions/s, p50/p99 handshake time, failures.
    Handshakes,
    /// Server memory per idle session at 1k, 10k and 50k sessions.
    Sessions,
    /// Round trips at 10, 50 and 90 % of each server's capacity.
    Latency,
    /// ns/packet of the XDP programs through BPF_PROG_TEST_RUN: `edge` per frame kind,
    /// `inner` and `target` at 1, 1,000 and 100,000 routes and rules with 100,000 NAT flows.
    Xdp,
    /// iperf3 TCP with the stock client through each server, both directions.
    Iperf,
    /// Probes lost while both servers rekey every 2 s under a paced load.
    Rekey,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(reason) = privilege::missing() {
        bail!("the benchmarks need root with BPF and namespaces: {reason}");
    }
    let gateway_bin = cli.gateway.canonicalize().with_context(|| {
        format!(
            "{} (build it with cargo build --release -p gateway)",
            cli.gateway.display()
        )
    })?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_string();
    let dir = std::env::current_dir()?.join("target/bench");
    let size = Size { quick: cli.quick };
    let mut report = Report::default();
    let runs = |s: Scenario| cli.scenario == Scenario::All || cli.scenario == s;
    let started = std::time::Instant::now();
    let generated = [
        Scenario::Throughput,
        Scenario::Handshakes,
        Scenario::Sessions,
        Scenario::Latency,
        Scenario::Rekey,
    ];
    if generated.into_iter().any(runs) {
        // Each session is a socket.
        let files = gateway::serve::raise_open_files(65_536).map_or(1024, |(_, now)| now);
        let mut bed = Bed::new(&dir.join("lab"))?;
        smoke(&mut bed, &gateway_bin).context("the load generator's smoke run")?;
        let mut capacity = None;
        if runs(Scenario::Throughput) || runs(Scenario::Latency) {
            capacity = Some(throughput(&mut bed, &gateway_bin, size, &mut report)?);
        }
        if runs(Scenario::Handshakes) {
            handshakes(&mut bed, &gateway_bin, size, &mut report)?;
        }
        if runs(Scenario::Sessions) {
            sessions(&mut bed, &gateway_bin, size, files, &mut report)?;
        }
        if runs(Scenario::Latency)
            && let Some(capacity) = capacity
        {
            latency(&mut bed, &gateway_bin, size, capacity, &mut report)?;
        }
        if runs(Scenario::Rekey) {
            rekey(&mut bed, &gateway_bin, size, &mut report)?;
        }
    }
    if runs(Scenario::Xdp) {
        xdp_edge(cli.repeat, &mut report)?;
        xdp_scale::run(&mut report, cli.quick)?;
    }
    if runs(Scenario::Iperf) {
        let seconds = cli.seconds.unwrap_or(if cli.quick { 3 } else { 10 });
        iperf_side_by_side(&gateway_bin, seconds, &dir, &mut report)?;
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\n{cores} cores, load {load} before; {:.0} s in all{}",
        started.elapsed().as_secs_f64(),
        if cli.quick { " (quick)" } else { "" }
    );
    report.print();
    let path = dir.join("latest.json");
    report.write_json(&path, &load)?;
    println!("\nwritten to {}", path.display());
    for plot in plots::draw(&report, &dir)? {
        println!("plot: {}", plot.display());
    }
    Ok(())
}

fn xdp_edge(repeat: u32, report: &mut Report) -> Result<()> {
    let edge = Edge::load().context("loading edge")?;
    let (client, gateway) = ([198, 51, 100, 2], [198, 51, 100, 1]);
    let frames = [
        (
            "udp 64 B",
            xdp::frame::udp(client, gateway, 50000, 1194, &[0x48; 22]),
        ),
        (
            "udp 1400 B",
            xdp::frame::udp(client, gateway, 50000, 1194, &[0x48; 1358]),
        ),
        (
            "tcp 64 B",
            xdp::frame::tcp(client, gateway, 50000, 443, &[0; 10]),
        ),
        (
            "icmp 64 B",
            xdp::frame::icmp_echo(client, gateway, 1, 1, &[0; 22]),
        ),
        ("arp", xdp::frame::ethernet(0x0806, &[0; 28])),
    ];
    for (name, frame) in &frames {
        let per_run = xdp::time_per_run(edge.program(), frame, repeat)?;
        report.row(
            "xdp",
            format!("edge, {name}, {repeat} runs (ns)"),
            "ns",
            per_run.as_nanos() as f64,
            None,
        );
    }
    Ok(())
}

fn iperf_side_by_side(
    gateway_bin: &Path,
    seconds: u64,
    dir: &Path,
    report: &mut Report,
) -> Result<()> {
    for (direction, ours, sockets, stock) in iperf::run(gateway_bin, seconds, &dir.join("iperf"))? {
        let d = direction.name();
        report.row(
            "iperf",
            format!("{d}: throughput, {seconds} s (Mbit/s)"),
            "Mbit/s",
            ours.mbit_per_s,
            Some(stock.mbit_per_s),
        );
        report.row(
            "iperf",
            format!("{d}: server CPU per GB (s)"),
            "s/GB",
            ours.cpu_s_per_gb,
            Some(stock.cpu_s_per_gb),
        );
        report.row(
            "iperf",
            format!("{d}: machine busy"),
            "fraction",
            ours.machine_busy,
            Some(stock.machine_busy),
        );
        report.row(
            "iperf",
            format!("{d}, socket mode: throughput (Mbit/s)"),
            "Mbit/s",
            sockets.mbit_per_s,
            Some(stock.mbit_per_s),
        );
        report.row(
            "iperf",
            format!("{d}, socket mode: server CPU per GB (s)"),
            "s/GB",
            sockets.cpu_s_per_gb,
            Some(stock.cpu_s_per_gb),
        );
    }
    Ok(())
}
