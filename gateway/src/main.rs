//! `gateway`: the VPN gateway binary.

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use gateway::xdp::{AttachMode, Edge};

#[derive(Parser)]
#[command(
    version,
    about = "OpenVPN-compatible client VPN gateway with an XDP data plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach the `edge` XDP program to an interface and print its counters every
    /// interval until the duration ends (a diagnostic for the public ENI).
    XdpWatch {
        /// Interface to attach to, e.g. eth0.
        #[arg(long)]
        interface: String,
        /// XDP attach mode.
        #[arg(long, value_enum, default_value = "native")]
        mode: AttachMode,
        /// How long to stay attached, in seconds (the program detaches on exit).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Interval between counter lines, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::XdpWatch {
            interface,
            mode,
            seconds,
            interval_ms,
        } => xdp_watch(&interface, mode, seconds, interval_ms),
    }
}

fn xdp_watch(interface: &str, mode: AttachMode, seconds: u64, interval_ms: u64) -> Result<()> {
    let mut edge = Edge::load().context("loading the edge XDP program")?;
    edge.attach(interface, mode)?;
    println!("edge attached to {interface} ({mode:?} mode) for {seconds} s");
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let interval = Duration::from_millis(interval_ms.max(10));
    while Instant::now() < end {
        thread::sleep(interval.min(end.saturating_duration_since(Instant::now())));
        let stats = edge.stats()?;
        println!("t={:>5.1}s {stats}", started.elapsed().as_secs_f64());
    }
    Ok(())
}
