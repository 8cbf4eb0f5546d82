//! `cargo xtask demo`: the product at work in the network-namespace lab. A PKI and a
//! configuration are made, `gateway serve` starts in the gateway namespace, the stock
//! OpenVPN 2.6 client connects with the exported profile, and traffic shows what the
//! gateway allows, translates and refuses.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use gateway_tests::{
    config::LabConfig,
    lab::{Topology, read_log, wait_until},
};

use crate::{lab, run::run, setup, test::section};

const ALLOWED: &str = "10.10.0.10";
const DENIED: &str = "10.10.0.20";

pub fn demo(keep: bool) -> Result<()> {
    setup::setup()?;
    section("build");
    run(Command::new("cargo").args(["build", "--quiet", "-p", "gateway"]))?;
    let gateway_bin = workspace_root().join("target/debug/gateway");
    let bin = gateway_bin.to_string_lossy().into_owned();
    let dir = workspace_root().join("target/demo");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;

    section("lab");
    let (mut lab, topo) = lab::build()?;
    if keep {
        lab.keep();
    }
    topo.gateway
        .exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    topo.target
        .exec(&["ip", "addr", "add", "10.10.0.20/24", "dev", "eth0"])?;
    println!(
        "client {} ── gateway {} (public) | gateway {} (target ENI) ── hosts {ALLOWED} (allowed), {DENIED} (no rule)",
        Topology::CLIENT_ADDR,
        Topology::GATEWAY_PUBLIC_ADDR,
        Topology::GATEWAY_TARGET_ADDR,
    );

    section("PKI and configuration");
    let pki = dir.join("pki");
    let p = |path: &Path| path.to_string_lossy().into_owned();
    let gw = |args: &[&str]| run(Command::new(&gateway_bin).args(args));
    gw(&[
        "pki",
        "init",
        "--dir",
        &p(&pki),
        "--server-name",
        "vpn.demo.test",
    ])?;
    gw(&[
        "pki",
        "client",
        "--dir",
        &p(&pki),
        "alice",
        "--group",
        "engineering",
    ])?;
    let config = dir.join("gateway.toml");
    lab_config(&pki, &dir.join("admin.sock")).write(&config)?;
    println!("{}", std::fs::read_to_string(&config)?.trim_end());
    topo.gateway
        .exec(&[&bin, "check", "--config", &p(&config)])
        .map(|out| print!("{out}"))?;

    section("gateway serve");
    let gateway_log = dir.join("gateway.log");
    let server = lab.spawn(
        &topo.gateway,
        &[&bin, "serve", "--config", &p(&config)],
        Some(&gateway_log),
    )?;
    wait_until("the gateway to serve", Duration::from_secs(10), || {
        read_log(&gateway_log).contains("serving") || !lab.is_running(server)
    })?;
    if !lab.is_running(server) {
        bail!("gateway serve stopped:\n{}", read_log(&gateway_log));
    }
    let profile = dir.join("alice.ovpn");
    gw(&[
        "export-client",
        "--config",
        &p(&config),
        "--cert",
        &p(&pki.join("clients/alice.pem")),
        "--key",
        &p(&pki.join("clients/alice.key")),
        "-o",
        &p(&profile),
    ])?;

    section("stock OpenVPN 2.6 client");
    let client_log = dir.join("openvpn-client.log");
    let client = lab.spawn(
        &topo.client,
        &["openvpn", "--config", &p(&profile)],
        Some(&client_log),
    )?;
    wait_until("the client to connect", Duration::from_secs(30), || {
        read_log(&client_log).contains("Initialization Sequence Completed")
    })
    .with_context(|| {
        format!(
            "client log:\n{}\ngateway log:\n{}",
            read_log(&client_log),
            read_log(&gateway_log)
        )
    })?;
    for line in read_log(&client_log).lines().filter(|l| {
        l.contains("Peer Connection Initiated")
            || l.contains("Data Channel: cipher")
            || l.contains("PUSH: Received")
    }) {
        println!("  client: {}", line.get(20..).unwrap_or(line));
    }
    for line in read_log(&gateway_log)
        .lines()
        .filter(|l| l.contains("connected"))
    {
        println!("  gateway: {}", line);
    }

    section("traffic through the tunnel");
    let ping = topo
        .client
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "3", ALLOWED])?;
    if let Some(summary) = ping.lines().find(|l| l.contains("packets transmitted")) {
        println!("ping {ALLOWED}: {summary}");
    }
    let iperf_log = dir.join("iperf3-server.log");
    let iperf = lab.spawn(
        &topo.target,
        &["iperf3", "-s", "-1", "-B", ALLOWED, "--forceflush"],
        Some(&iperf_log),
    )?;
    wait_until("iperf3 to listen", Duration::from_secs(5), || {
        read_log(&iperf_log).contains("listening")
    })?;
    let transfer = topo.client.exec(&[
        "iperf3",
        "-c",
        ALLOWED,
        "-t",
        "3",
        "--connect-timeout",
        "3000",
    ])?;
    if let Some(line) = transfer.lines().rev().find(|l| l.contains("receiver")) {
        println!("iperf3 TCP through the gateway: {}", line.trim());
    }
    let _ = lab.stop(iperf);
    if let Some(line) = read_log(&iperf_log)
        .lines()
        .find(|l| l.contains("Accepted connection"))
    {
        println!(
            "the target host saw: {} (the gateway's target ENI address, not the client's)",
            line.trim()
        );
    }
    match topo.client.exec(&["ping", "-c", "2", "-W", "1", DENIED]) {
        Ok(_) => bail!("{DENIED} answered although no authorization rule allows it"),
        Err(_) => {
            println!("ping {DENIED}: no answer — routed, but no authorization rule allows it")
        }
    }

    section("the connection, as `gateway connections` lists it");
    let ask = |command: &str, when: &str| match Command::new(&gateway_bin)
        .args([command, "--config", &p(&config)])
        .output()
    {
        Ok(out) if out.status.success() => {
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
        Ok(out) => println!(
            "gateway {command} ({when}) failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => println!("gateway {command} ({when}): {e}"),
    };
    let list = |when: &str| ask("connections", when);
    list("connected");

    section("the data plane, as `gateway dataplane` shows it (AF_XDP sockets, counters)");
    ask("dataplane", "connected");

    section("disconnect");
    let _ = lab.stop(client);
    wait_until(
        "the gateway to see the exit",
        Duration::from_secs(10),
        || read_log(&gateway_log).contains("disconnected"),
    )
    .ok();
    for line in read_log(&gateway_log)
        .lines()
        .filter(|l| l.contains("disconnected"))
    {
        println!("  gateway: {}", line);
    }
    list("after the exit");
    if keep {
        println!(
            "\nlab and gateway kept up: `cargo xtask lab status`; logs in {}",
            dir.display()
        );
        lab.keep_processes();
    } else {
        let _ = lab.stop(server);
        println!(
            "\ndemo done; lab removed (keep it with `cargo xtask demo --keep`); logs in {}",
            dir.display()
        );
    }
    Ok(())
}

/// The lab's configuration for the demo endpoint: alice's group "engineering" may reach
/// the allowed host only.
fn lab_config(pki: &Path, admin_socket: &Path) -> LabConfig {
    LabConfig::new("demo", pki)
        .authorize_groups(&format!("{ALLOWED}/32"), ["engineering"])
        .group("engineering", ["alice"])
        .admin_socket(admin_socket)
}

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}
