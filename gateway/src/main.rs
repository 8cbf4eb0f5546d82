//! `gateway`: the VPN gateway binary.

use std::{
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use gateway::{
    config::Config,
    xdp::{AttachMode, Edge},
};

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
    /// Validate a configuration file, and the files and interfaces it names; print a
    /// summary, or every problem with its key. Exits non-zero on any problem.
    Check {
        /// The TOML configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Only validate the file itself (not the PKI files and interfaces it names).
        #[arg(long)]
        file_only: bool,
    },
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

fn main() -> std::process::ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Check { config, file_only } => check(&config, file_only),
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

fn check(path: &Path, file_only: bool) -> Result<()> {
    let config = Config::load(path)?;
    if !file_only && let Err(problems) = config.check_system() {
        let mut msg = format!(
            "{}: {} problem(s) on this machine",
            path.display(),
            problems.len()
        );
        for p in problems {
            msg.push_str(&format!("\n  {p}"));
        }
        bail!(msg);
    }
    let e = &config.endpoint;
    let listen: Vec<String> = e.listen.iter().map(ToString::to_string).collect();
    println!("{}: valid", path.display());
    println!(
        "  endpoint {:?} on {} ({})",
        e.name,
        e.public_interface,
        listen.join(", ")
    );
    println!(
        "  client CIDR {} ({} tunnel), session timeout {} h",
        e.client_cidr,
        if e.split_tunnel { "split" } else { "full" },
        e.session_timeout.as_secs() / 3600
    );
    println!(
        "  {} target(s), {} route(s), {} authorization rule(s), {} group(s)",
        config.targets.len(),
        config.routes.len(),
        config.authorization.len(),
        config.groups.len()
    );
    Ok(())
}
