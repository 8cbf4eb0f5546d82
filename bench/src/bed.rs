//! The test bed every server-against-server scenario uses: the three-namespace lab
//! (client, gateway, target), one PKI, our gateway's configuration and the stock
//! OpenVPN server's arguments, both serving the same client profile; and the CPU
//! counters the figures are computed from.

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
    config::LabConfig,
    lab::{Lab, ProcessId, Topology, read_log, wait_until},
    openvpn::{ServerFiles, spawn_stock_server_with_netmask},
};

pub struct Bed {
    pub lab: Lab,
    pub topo: Topology,
    pub pki: Pki,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub config: Config,
    /// Whether the target routes the stock server's tunnel network back (added once).
    stock_route: bool,
    /// Start both servers rekeying every [`REKEY_SECS`] (the `rekey` scenario).
    pub rekey: bool,
}

/// The data-key lifetime of the `rekey` scenario, for both servers.
pub const REKEY_SECS: u32 = 4;

/// The server of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// Our gateway in its default mode, which is AF_XDP on the lab's veths.
    Ours,
    /// Our gateway with `dataplane.mode = "sockets"`.
    OursSockets,
    Stock,
}

impl Server {
    pub const BOTH: [Server; 2] = [Server::Ours, Server::Stock];
    /// Ours in each data-plane mode, then stock.
    pub const EVERY_MODE: [Server; 3] = [Server::Ours, Server::OursSockets, Server::Stock];

    pub fn name(self) -> &'static str {
        match self {
            Server::Ours => "ours",
            Server::OursSockets => "ours (sockets)",
            Server::Stock => "stock",
        }
    }

    /// The data-plane mode our gateway must report running in.
    fn mode(self) -> &'static str {
        match self {
            Server::OursSockets => "sockets",
            _ => "afxdp",
        }
    }
}

impl Bed {
    /// A fresh lab and PKI under `dir` (emptied first).
    pub fn new(dir: &Path) -> Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let pki = Pki::init(&dir.join("pki"), "Bench CA", "vpn.bench.test")?;
        pki.issue_client("alice", None)?;
        let mut lab = Lab::new();
        let topo = Topology::build(&mut lab)?;
        topo.gateway
            .exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        // The target host is left as Debian makes it (no XDP, GRO off, partial transmit
        // checksums), as a customer's host is.
        // Tens of thousands of generated sessions, each on its own port.
        topo.client
            .exec(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000"])?;
        let config_path = dir.join("gateway.toml");
        let lab_config = lab_config(dir);
        lab_config.write(&config_path)?;
        lab_config
            .clone()
            .dataplane_mode("sockets")
            .write(&dir.join("gateway-sockets.toml"))?;
        lab_config
            .rekey_interval_secs(REKEY_SECS)
            .write(&dir.join("gateway-rekey.toml"))?;
        let config = Config::load(&config_path)?;
        Ok(Self {
            lab,
            topo,
            pki,
            dir: dir.to_path_buf(),
            config_path,
            config,
            stock_route: false,
            rekey: false,
        })
    }

    /// The profile stock clients use with either server.
    pub fn profile(&self) -> Result<String> {
        profile_text(&self.config, &self.pki)
    }

    /// Starts `server` in the gateway namespace; our gateway is the release binary
    /// `gateway_bin`. Returns its pid.
    pub fn start(&mut self, server: Server, gateway_bin: &Path) -> Result<ProcessId> {
        match server {
            Server::Ours | Server::OursSockets => {
                let (config, log) = match server {
                    Server::Ours if self.rekey => (
                        self.dir.join("gateway-rekey.toml"),
                        self.dir.join("gateway-rekey.log"),
                    ),
                    Server::Ours => (self.config_path.clone(), self.dir.join("gateway.log")),
                    _ => (
                        self.dir.join("gateway-sockets.toml"),
                        self.dir.join("gateway-sockets.log"),
                    ),
                };
                let p = |path: &Path| path.to_string_lossy().into_owned();
                let pid = self.lab.spawn(
                    &self.topo.gateway,
                    &[&p(gateway_bin), "serve", "--config", &p(&config)],
                    Some(&log),
                )?;
                wait_until("the gateway", Duration::from_secs(10), || {
                    read_log(&log).contains("serving")
                })
                .with_context(|| read_log(&log))?;
                let mode = format!("mode=\"{}\"", server.mode());
                if !read_log(&log).contains(&mode) {
                    bail!(
                        "our gateway did not start in {mode}; its log:\n{}",
                        read_log(&log)
                    );
                }
                Ok(pid)
            }
            Server::Stock => {
                if !self.stock_route {
                    // The target routes the stock server's tunnel network back through
                    // the gateway host.
                    self.topo.target.exec(&[
                        "ip",
                        "route",
                        "add",
                        "10.8.0.0/16",
                        "via",
                        Topology::GATEWAY_TARGET_ADDR,
                    ])?;
                    self.stock_route = true;
                }
                let log = self.dir.join("stock-server.log");
                let reneg = REKEY_SECS.to_string();
                let rekey: &[&str] = if self.rekey {
                    &["--reneg-sec", &reneg]
                } else {
                    // OpenVPN's default.
                    &["--reneg-sec", "3600"]
                };
                // A /16 pool, as ours: room for the biggest connect storm.
                spawn_stock_server_with_netmask(
                    &mut self.lab,
                    &self.topo.gateway,
                    &ServerFiles {
                        ca_cert: &self.pki.ca_cert(),
                        server_cert: &self.pki.server_cert(),
                        server_key: &self.pki.server_key(),
                        tls_crypt_key: &self.pki.tls_crypt_key(),
                    },
                    Topology::GATEWAY_PUBLIC_ADDR,
                    "255.255.0.0",
                    &[
                        "--push",
                        "route 10.10.0.0 255.255.255.0",
                        "--keepalive",
                        "10",
                        "60",
                        // Many sessions with one certificate, and no connect-rate cap.
                        "--duplicate-cn",
                        "--max-clients",
                        "60000",
                        "--connect-freq-initial",
                        "1000000",
                        "1",
                        rekey[0],
                        rekey[1],
                    ],
                    &log,
                )
            }
        }
    }
}

/// CPU jiffies from /proc/stat: (busy, total, softirq) over all CPUs.
pub fn machine_ticks() -> Result<(u64, u64, u64)> {
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
    Ok((busy, busy + v[3] + v[4], v[6]))
}

/// utime + stime of a process (all its threads), in jiffies.
pub fn process_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces: fields start after the closing parenthesis.
    let rest = &stat[stat.rfind(')').context("unexpected /proc/pid/stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0))
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

/// Our gateway's configuration: the lab's, for the bench endpoint (alongside it, the
/// same in socket mode).
fn lab_config(dir: &Path) -> LabConfig {
    LabConfig::new("bench", &dir.join("pki"))
        // Room for the biggest connect storm (the stock server gets a /16 too).
        .client_cidr("10.200.0.0/16")
        // Connect storms come from one address, as fast as the server takes them (the
        // stock server gets the same: --connect-freq-initial 1000000 1).
        .hard_reset_rate(0)
        .reset_replies(0)
        // Every generated session uses alice's certificate.
        .max_sessions_per_identity(0)
        .without_crl()
        .authorize_all_users("10.10.0.0/24")
        .admin_socket(dir.join("admin.sock"))
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
