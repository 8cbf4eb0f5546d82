//! Scenario `iperf`: the stock OpenVPN 2.6 client and iperf3 TCP through our gateway and
//! through the stock OpenVPN server, one after the other in the same lab, in both
//! directions (upload: client → target; download: target → client), with the server
//! process's CPU time per byte and the machine's load; the ratio is the headline.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use gateway::{
    config::Config,
    export::{ProfileInputs, client_profile},
    pki::Pki,
};
use gateway_tests::{
    lab::{Lab, Netns, ProcessId, Topology, read_log, wait_until},
    openvpn::{ServerFiles, spawn_stock_server},
};

/// One side's result.
#[derive(Debug, Clone, Copy)]
pub struct Side {
    pub mbit_per_s: f64,
    pub cpu_s_per_gb: f64,
    pub machine_busy: f64,
}

/// Which way the bulk data flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → target host (the client sends).
    Upload,
    /// Target host → client (`iperf3 -R`).
    Download,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Upload, Direction::Download];

    pub fn name(self) -> &'static str {
        match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
        }
    }
}

/// Ours and stock OpenVPN's result, per direction (in [`Direction::BOTH`] order).
pub type Results = Vec<(Direction, Side, Side)>;

/// Runs both sides for `seconds` per direction; `gateway_bin` is the release `gateway`
/// binary.
pub fn run(gateway_bin: &Path, seconds: u64, dir: &Path) -> Result<Results> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let pki = Pki::init(&dir.join("pki"), "Bench CA", "vpn.bench.test")?;
    pki.issue_client("alice", None)?;
    let mut lab = Lab::new();
    let topo = Topology::build(&mut lab)?;
    topo.gateway
        .exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    topo.target
        .exec(&["ethtool", "-K", "eth0", "tx", "off", "gro", "on"])?;
    let config_path = dir.join("gateway.toml");
    std::fs::write(&config_path, config_text(&pki))?;
    let config = Config::load(&config_path)?;
    let profile = dir.join("alice.ovpn");
    std::fs::write(&profile, profile_text(&config, &pki)?)?;
    let p = |path: &Path| path.to_string_lossy().into_owned();

    // Ours.
    let gw_log = dir.join("gateway.log");
    let bin = p(gateway_bin);
    let server = lab.spawn(
        &topo.gateway,
        &[&bin, "serve", "--config", &p(&config_path)],
        Some(&gw_log),
    )?;
    wait_until("the gateway", Duration::from_secs(10), || {
        read_log(&gw_log).contains("serving")
    })
    .with_context(|| read_log(&gw_log))?;
    let ours = measure(&mut lab, &topo, server, &profile, dir, "ours", seconds)?;
    lab.stop(server)?;

    // Stock OpenVPN, with the target routing the tunnel network back through the gateway.
    topo.target.exec(&[
        "ip",
        "route",
        "add",
        "10.8.0.0/24",
        "via",
        Topology::GATEWAY_TARGET_ADDR,
    ])?;
    let stock_log = dir.join("stock-server.log");
    let stock = spawn_stock_server(
        &mut lab,
        &topo.gateway,
        &ServerFiles {
            ca_cert: &pki.ca_cert(),
            server_cert: &pki.server_cert(),
            server_key: &pki.server_key(),
            tls_crypt_key: &pki.tls_crypt_key(),
        },
        Topology::GATEWAY_PUBLIC_ADDR,
        &[
            "--push",
            "route 10.10.0.0 255.255.255.0",
            "--keepalive",
            "10",
            "60",
        ],
        &stock_log,
    )?;
    let theirs = measure(&mut lab, &topo, stock, &profile, dir, "stock", seconds)?;
    lab.stop(stock)?;
    Ok(Direction::BOTH
        .iter()
        .zip(ours.into_iter().zip(theirs))
        .map(|(d, (o, s))| (*d, o, s))
        .collect())
}

fn measure(
    lab: &mut Lab,
    topo: &Topology,
    server: ProcessId,
    profile: &Path,
    dir: &Path,
    name: &str,
    seconds: u64,
) -> Result<Vec<Side>> {
    let client_log = dir.join(format!("client-{name}.log"));
    let client = lab.spawn(
        &topo.client,
        &["openvpn", "--config", &profile.to_string_lossy()],
        Some(&client_log),
    )?;
    wait_until("the client", Duration::from_secs(30), || {
        read_log(&client_log).contains("Initialization Sequence Completed")
    })
    .with_context(|| read_log(&client_log))?;
    let mut sides = Vec::new();
    for direction in Direction::BOTH {
        let iperf_log = dir.join(format!("iperf3-{name}-{}.log", direction.name()));
        let iperf = lab.spawn(
            &topo.target,
            &["iperf3", "-s", "-1", "-B", "10.10.0.10", "--forceflush"],
            Some(&iperf_log),
        )?;
        wait_until("iperf3", Duration::from_secs(5), || {
            read_log(&iperf_log).contains("listening")
        })?;
        let (busy0, total0) = machine_ticks()?;
        let cpu0 = process_ticks(server.0)?;
        let out = iperf_client(&topo.client, seconds, direction)?;
        let (busy1, total1) = machine_ticks()?;
        let cpu1 = process_ticks(server.0)?;
        let _ = lab.stop(iperf);
        let (bits_per_s, bytes) = iperf_summary(&out)?;
        // USER_HZ is 100 on Linux.
        let cpu_s = (cpu1 - cpu0) as f64 / 100.0;
        sides.push(Side {
            mbit_per_s: bits_per_s / 1e6,
            cpu_s_per_gb: cpu_s / (bytes / 1e9),
            machine_busy: (busy1 - busy0) as f64 / ((total1 - total0).max(1)) as f64,
        });
    }
    lab.stop(client)?;
    Ok(sides)
}

fn iperf_client(client: &Netns, seconds: u64, direction: Direction) -> Result<String> {
    let seconds = seconds.to_string();
    let mut args = vec![
        "iperf3",
        "-c",
        "10.10.0.10",
        "-t",
        &seconds,
        "-J",
        "--connect-timeout",
        "3000",
    ];
    if direction == Direction::Download {
        args.push("-R");
    }
    client.exec(&args)
}

/// Receiver bits per second and bytes from iperf3's JSON (its `end.sum_received`).
fn iperf_summary(json: &str) -> Result<(f64, f64)> {
    let at = json
        .find("\"sum_received\"")
        .context("iperf3 printed no sum_received")?;
    let section = &json[at..];
    let number = |key: &str| -> Result<f64> {
        let k = section
            .find(key)
            .with_context(|| format!("no {key} in sum_received"))?
            + key.len();
        let rest = section[k..].trim_start_matches([':', ' ', '\t']);
        let end = rest.find([',', '\n', '}']).unwrap_or(rest.len());
        rest[..end]
            .trim()
            .parse()
            .with_context(|| format!("{key} is not a number"))
    };
    Ok((number("\"bits_per_second\"")?, number("\"bytes\"")?))
}

/// (busy, total) jiffies of all CPUs from /proc/stat.
fn machine_ticks() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 7 {
        bail!("unexpected /proc/stat: {line}");
    }
    // user nice system idle iowait irq softirq
    let busy = v[0] + v[1] + v[2] + v[5] + v[6];
    Ok((busy, busy + v[3] + v[4]))
}

/// utime + stime of a process, in jiffies.
fn process_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces: fields start after the closing parenthesis.
    let rest = &stat[stat.rfind(')').context("unexpected /proc/pid/stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0))
}

fn config_text(pki: &Pki) -> String {
    let p = |path: PathBuf| path.to_string_lossy().into_owned();
    format!(
        r#"[endpoint]
name = "bench"
listen = ["udp/1194"]
split_tunnel = true
remote_hosts = ["{}"]
[tls]
server_cert = "{}"
server_key = "{}"
client_ca = "{}"
tls_crypt_key = "{}"
[[target]]
interface = "eth1"
[[route]]
destination = "10.10.0.0/24"
target = "eth1"
[[authorize]]
destination = "10.10.0.0/24"
all_users = true
"#,
        Topology::GATEWAY_PUBLIC_ADDR,
        p(pki.server_cert()),
        p(pki.server_key()),
        p(pki.ca_cert()),
        p(pki.tls_crypt_key()),
    )
}

/// One profile for both servers: same CA, server name and tls-crypt key.
fn profile_text(config: &Config, pki: &Pki) -> Result<String> {
    let read = |p: PathBuf| std::fs::read_to_string(p);
    let (ca, tc) = (read(pki.ca_cert())?, read(pki.tls_crypt_key())?);
    let (cert, key) = (
        read(pki.client_cert("alice"))?,
        read(pki.client_key("alice"))?,
    );
    Ok(client_profile(
        config,
        &ProfileInputs {
            remote_hosts: &config.endpoint.remote_hosts,
            ca_pem: &ca,
            server_name: "vpn.bench.test",
            tls_crypt_key: Some(&tc),
            tls_auth: None,
            client: Some((&cert, &key)),
        },
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_iperf3_json_and_proc_stat() {
        let json = "{\"end\":{\"sum_sent\":{\"bytes\":\t5},\"sum_received\":{\n\"start\":\t0,\n\"bytes\":\t1250000000,\n\"bits_per_second\":\t1000000000.5\n}}}";
        assert_eq!(
            iperf_summary(json).unwrap(),
            (1_000_000_000.5, 1_250_000_000.0)
        );
        assert!(iperf_summary("{}").is_err());
        let (busy, total) = machine_ticks().unwrap();
        assert!(total >= busy && total > 0);
        assert!(process_ticks(std::process::id()).is_ok());
    }
}
