//! Benchmarks of the gateway. `xdp`: nanoseconds per frame of the XDP programs through
//! `BPF_PROG_TEST_RUN` (needs root). The OpenVPN load generator and the side-by-side
//! report against stock OpenVPN land with the benchmarks issue.

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
}

fn main() -> Result<()> {
    match Cli::parse().scenario {
        Scenario::Xdp { repeat } => xdp_edge(repeat),
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
