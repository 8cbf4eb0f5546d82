//! `cargo xtask demo`: build, bring up the lab, attach the XDP programs on the gateway's
//! public interface and show their counters moving while real traffic flows.

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use gateway_tests::lab::{Topology, read_log};

use crate::{lab, run::run, setup, test::section};

const WATCH_SECONDS: u64 = 8;

pub fn demo(keep: bool) -> Result<()> {
    setup::setup()?;
    section("build");
    run(Command::new("cargo").args(["build", "--quiet", "-p", "gateway"]))?;
    let gateway_bin = workspace_root().join("target/debug/gateway");

    section("lab");
    let (mut lab, topo) = lab::build()?;
    if keep {
        lab.keep();
    }
    println!(
        "client {} <-> gateway {} | gateway {} <-> target {}",
        Topology::CLIENT_ADDR,
        Topology::GATEWAY_PUBLIC_ADDR,
        Topology::GATEWAY_TARGET_ADDR,
        Topology::TARGET_ADDR
    );

    section("edge XDP program on the gateway's public interface (native mode)");
    let log_dir = workspace_root().join("target/demo");
    std::fs::create_dir_all(&log_dir)?;
    let watch_log = log_dir.join("xdp-watch.log");
    let bin = gateway_bin.to_string_lossy().into_owned();
    let secs = WATCH_SECONDS.to_string();
    let watch = lab.spawn(
        &topo.gateway,
        &[
            &bin,
            "xdp-watch",
            "--interface",
            Topology::PUBLIC_IF,
            "--mode",
            "native",
            "--seconds",
            &secs,
            "--interval-ms",
            "1000",
        ],
        Some(&watch_log),
    )?;
    let mut shown = 0;
    let attached = Instant::now();
    while !read_log(&watch_log).contains("attached") {
        if !lab.is_running(watch) || attached.elapsed() > Duration::from_secs(10) {
            bail!(
                "gateway xdp-watch did not attach:\n{}",
                read_log(&watch_log)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }

    let iperf = lab.spawn(
        &topo.gateway,
        &["iperf3", "-s", "-1", "-B", Topology::GATEWAY_PUBLIC_ADDR],
        Some(&log_dir.join("iperf3-server.log")),
    )?;
    thread::sleep(Duration::from_millis(300));
    println!("traffic: ping, then a 3-second iperf3 UDP stream, client -> gateway");
    topo.client.exec(&[
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        Topology::GATEWAY_PUBLIC_ADDR,
    ])?;
    let client_log = log_dir.join("iperf3-client.log");
    let client = lab.spawn(
        &topo.client,
        &[
            "iperf3",
            "-c",
            Topology::GATEWAY_PUBLIC_ADDR,
            "-u",
            "-b",
            "20M",
            "-t",
            "3",
            "--connect-timeout",
            "2000",
        ],
        Some(&client_log),
    )?;
    let deadline = Instant::now() + Duration::from_secs(WATCH_SECONDS + 5);
    while lab.is_running(watch) && Instant::now() < deadline {
        shown = print_new_lines(&watch_log, shown);
        thread::sleep(Duration::from_millis(100));
    }
    print_new_lines(&watch_log, shown);
    let client_status = lab.stop(client)?;
    let _ = lab.stop(iperf);
    let summary = read_log(&client_log);
    if !client_status.success() {
        bail!("iperf3 client failed ({client_status}):\n{summary}");
    }
    if let Some(line) = summary.lines().rev().find(|l| l.contains("receiver")) {
        println!("iperf3: {}", line.trim());
    }
    let log = read_log(&watch_log);
    if !log.lines().any(|l| l.contains("udp=")) {
        bail!("the edge counters never showed UDP traffic:\n{log}");
    }
    if keep {
        println!("\nlab kept up: `cargo xtask lab status`, `cargo xtask lab down`");
    } else {
        println!("\ndemo done; lab removed (keep it with `cargo xtask demo --keep`)");
    }
    Ok(())
}

fn print_new_lines(path: &Path, shown: usize) -> usize {
    let log = read_log(path);
    let lines: Vec<&str> = log.lines().collect();
    for l in lines.iter().skip(shown) {
        println!("  {l}");
    }
    lines.len().max(shown)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
