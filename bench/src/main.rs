//! Benchmarks of the gateway (need root). `xdp`: nanoseconds per frame of the XDP
//! programs through `BPF_PROG_TEST_RUN`. `iperf`: the stock OpenVPN client and iperf3
//! through our gateway and through the stock OpenVPN server, side by side. The load
//! generator and the other scenarios of the benchmarks issue come next.

mod iperf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use gateway::xdp::Edge;
use gateway_tests::{privilege, xdp};

#[derive(Parser)]
#[command(about = "Gateway benchmarks")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// ns/frame of the `edge` program for each kind of frame.
    Xdp {
        /// Runs per frame kind inside the kernel.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
    },
    /// iperf3 TCP through our gateway and through stock OpenVPN, same lab and client.
    Iperf {
        /// Seconds of transfer per side.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The gateway binary (a release build).
        #[arg(long, default_value = "target/release/gateway")]
        gateway: std::path::PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().scenario {
        Scenario::Xdp { repeat } => xdp_edge(repeat),
        Scenario::Iperf { seconds, gateway } => iperf_side_by_side(&gateway, seconds),
    }
}

fn xdp_edge(repeat: u32) -> Result<()> {
    if let Some(reason) = privilege::missing() {
        bail!("the xdp benchmark needs root with BPF: {reason}");
    }
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
    println!("edge via BPF_PROG_TEST_RUN, {repeat} runs each (mean per frame):");
    for (name, frame) in &frames {
        let per_run = xdp::time_per_run(edge.program(), frame, repeat)?;
        println!("  {name:<12} {:>6} ns", per_run.as_nanos());
    }
    Ok(())
}

fn iperf_side_by_side(gateway_bin: &std::path::Path, seconds: u64) -> Result<()> {
    if let Some(reason) = privilege::missing() {
        bail!("the iperf benchmark needs root with BPF and namespaces: {reason}");
    }
    let gateway_bin = gateway_bin.canonicalize().with_context(|| {
        format!(
            "{} (build it with cargo build --release -p gateway)",
            gateway_bin.display()
        )
    })?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_string();
    let dir = std::path::PathBuf::from("target/bench");
    let results = iperf::run(&gateway_bin, seconds, &dir.join("iperf"))?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "iperf3 TCP through the tunnel, stock OpenVPN 2.6 client, {seconds} s per direction and side ({cores} cores, load {load} before)"
    );
    println!("{:<34}{:>10}{:>10}{:>8}", "", "ours", "stock", "ratio");
    let mut rows = Vec::new();
    for (direction, ours, stock) in &results {
        let d = direction.name();
        rows.push((
            format!("{d} throughput"),
            "Mbit/s",
            ours.mbit_per_s,
            stock.mbit_per_s,
        ));
        rows.push((
            format!("{d} server CPU per GB"),
            "s/GB",
            ours.cpu_s_per_gb,
            stock.cpu_s_per_gb,
        ));
        rows.push((
            format!("{d} machine busy"),
            "fraction",
            ours.machine_busy,
            stock.machine_busy,
        ));
    }
    let mut json = Vec::new();
    for (name, unit, o, s) in rows {
        let ratio = if s > 0.0 { o / s } else { f64::NAN };
        println!(
            "{:<34}{:>10.2}{:>10.2}{:>8.2}",
            format!("{name} ({unit})"),
            o,
            s,
            ratio
        );
        json.push(format!(
            "{{\"scenario\":\"iperf\",\"name\":\"{name}\",\"unit\":\"{unit}\",\"ours\":{o:.4},\"stock\":{s:.4},\"ratio\":{ratio:.4},\"machine\":{{\"cores\":{cores},\"load_before\":\"{load}\"}}}}"
        ));
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("latest.json"),
        format!("[\n{}\n]\n", json.join(",\n")),
    )?;
    println!("written to {}", dir.join("latest.json").display());
    Ok(())
}
