//! `gateway`: the VPN gateway binary.

use std::{
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use gateway::{
    admin::{Request, Response, Selector},
    config::Config,
    pki::Pki,
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
    /// Run the gateway (until SIGTERM or SIGINT; SIGHUP reloads routes and rules).
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Only check the configuration and the machine, as `gateway check` does.
        #[arg(long)]
        check: bool,
    },
    /// Write the .ovpn profile stock OpenVPN clients import to reach this gateway.
    ExportClient {
        #[arg(long)]
        config: PathBuf,
        /// Client certificate to inline (with --key): a ready-to-use profile.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// Client key to inline (with --cert).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// CA that signed the server certificate [default: tls.client_ca].
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Host clients connect to; repeat for several [default: endpoint.remote_hosts].
        #[arg(long)]
        remote: Vec<String>,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// A small PKI for people without their own: CA, server and client certificates,
    /// CRL and tls-crypt key in one directory.
    Pki {
        #[command(subcommand)]
        action: PkiAction,
    },
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
    /// List the running gateway's connections: active ones and those that ended in the
    /// last 60 minutes (asks `gateway serve` on its admin socket).
    Connections {
        #[arg(long)]
        config: PathBuf,
        /// Print JSON (AWS DescribeClientVpnConnections fields in snake case).
        #[arg(long)]
        json: bool,
    },
    /// Show the running gateway's data plane: its mode (afxdp or sockets), the AF_XDP
    /// sockets and which worker reads each, and the workers' counters.
    Dataplane {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// End connections of the running gateway: the client is told to stop (HALT), its
    /// lease, XDP and NAT state are released.
    Terminate {
        #[arg(long)]
        config: PathBuf,
        /// The connection id, as `gateway connections` lists it.
        #[arg(
            long,
            required_unless_present = "username",
            conflicts_with = "username"
        )]
        connection_id: Option<String>,
        /// Every connection of this user (certificate common name); at most 5.
        #[arg(long)]
        username: Option<String>,
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

#[derive(Subcommand)]
enum PkiAction {
    /// Create the CA, the server certificate, the tls-crypt key and an empty CRL.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// The server's name: its certificate's common name and DNS name, which
        /// exported profiles check with verify-x509-name.
        #[arg(long)]
        server_name: String,
        #[arg(long, default_value = "gateway CA")]
        ca_name: String,
    },
    /// Issue a client certificate (common name NAME, optional group as its OU).
    Client {
        #[arg(long)]
        dir: PathBuf,
        name: String,
        #[arg(long)]
        group: Option<String>,
    },
    /// Revoke a certificate and write a new CRL.
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        name: String,
    },
    /// Write a fresh CRL (do this before the current one expires).
    Crl {
        #[arg(long)]
        dir: PathBuf,
    },
    /// List the certificates issued.
    List {
        #[arg(long)]
        dir: PathBuf,
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
        Command::Serve {
            config,
            check: true,
        } => check(&config, false),
        Command::Serve {
            config,
            check: false,
        } => gateway::serve::run(&config),
        Command::Pki { action } => pki(action),
        Command::ExportClient {
            config,
            cert,
            key,
            ca,
            remote,
            output,
        } => export_client(&config, cert.zip(key), ca, remote, output),
        Command::XdpWatch {
            interface,
            mode,
            seconds,
            interval_ms,
        } => xdp_watch(&interface, mode, seconds, interval_ms),
        Command::Connections { config, json } => {
            match admin_call(&config, &Request::Connections)? {
                Response::Connections { connections } if json => {
                    println!("{}", serde_json::to_string_pretty(&connections)?);
                    Ok(())
                }
                Response::Connections { connections } => {
                    print!("{}", gateway::admin::connections_table(&connections));
                    Ok(())
                }
                other => unexpected(other),
            }
        }
        Command::Dataplane { config, json } => match admin_call(&config, &Request::Dataplane)? {
            Response::Dataplane(status) if json => {
                println!("{}", serde_json::to_string_pretty(&status)?);
                Ok(())
            }
            Response::Dataplane(status) => {
                print!("{}", gateway::admin::dataplane_text(&status));
                Ok(())
            }
            other => unexpected(other),
        },
        Command::Terminate {
            config,
            connection_id,
            username,
        } => {
            let selector = match (connection_id, username) {
                (Some(id), _) => Selector::ConnectionId(id),
                (None, Some(name)) => Selector::Username(name),
                (None, None) => bail!("give --connection-id or --username"),
            };
            match admin_call(&config, &Request::Terminate(selector))? {
                Response::Terminated { statuses } => {
                    for s in statuses {
                        println!(
                            "{} {} -> {}",
                            s.connection_id, s.previous_status, s.current_status
                        );
                    }
                    Ok(())
                }
                other => unexpected(other),
            }
        }
    }
}

/// Sends `request` to the gateway serving `config`.
fn admin_call(config: &Path, request: &Request) -> Result<Response> {
    let config = Config::load(config)?;
    gateway::admin::call(&config.admin.socket, request)
}

fn unexpected(response: Response) -> Result<()> {
    match response {
        Response::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from the gateway: {other:?}"),
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
    let problems = if file_only {
        Vec::new()
    } else {
        let mut problems = config.check_system().err().unwrap_or_default();
        // Files that do not open are reported once, not again as unparsable.
        if problems.iter().all(|p| !p.key.starts_with("tls.")) {
            problems.extend(
                gateway::control::tls::load(&config.tls)
                    .err()
                    .unwrap_or_default(),
            );
        }
        problems
    };
    if !problems.is_empty() {
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

fn pki(action: PkiAction) -> Result<()> {
    match action {
        PkiAction::Init {
            dir,
            server_name,
            ca_name,
        } => {
            let pki = Pki::init(&dir, &ca_name, &server_name)?;
            println!("created in {}:", dir.display());
            for (what, path) in [
                ("CA certificate", pki.ca_cert()),
                ("CA key", pki.ca_key()),
                ("server certificate", pki.server_cert()),
                ("server key", pki.server_key()),
                ("CRL", pki.crl()),
                ("tls-crypt key", pki.tls_crypt_key()),
            ] {
                println!("  {what:<19} {}", path.display());
            }
        }
        PkiAction::Client { dir, name, group } => {
            let pki = Pki::open(&dir)?;
            let issued = pki.issue_client(&name, group.as_deref())?;
            println!(
                "issued {} (serial {}): {} {}",
                issued.name,
                issued.serial,
                pki.client_cert(&name).display(),
                pki.client_key(&name).display()
            );
        }
        PkiAction::Revoke { dir, name } => {
            let pki = Pki::open(&dir)?;
            pki.revoke(&name)?;
            println!("revoked {name}; new CRL at {}", pki.crl().display());
        }
        PkiAction::Crl { dir } => {
            let pki = Pki::open(&dir)?;
            pki.refresh_crl()?;
            println!("new CRL at {}", pki.crl().display());
        }
        PkiAction::List { dir } => {
            for c in Pki::open(&dir)?.list()? {
                println!(
                    "{:<24} {:<6} {} {}{}",
                    c.name,
                    format!("{:?}", c.kind).to_lowercase(),
                    c.serial,
                    c.group
                        .as_deref()
                        .map(|g| format!("group={g} "))
                        .unwrap_or_default(),
                    if c.revoked { "REVOKED" } else { "" }
                );
            }
        }
    }
    Ok(())
}

fn read(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {what} {}", path.display()))
}

fn export_client(
    config_path: &Path,
    client: Option<(PathBuf, PathBuf)>,
    ca: Option<PathBuf>,
    remote: Vec<String>,
    output: Option<PathBuf>,
) -> Result<()> {
    let config = Config::load(config_path)?;
    let ca_pem = read(ca.as_deref().unwrap_or(&config.tls.client_ca), "the CA")?;
    let server_pem = read(&config.tls.server_cert, "tls.server_cert")?;
    let server_name = gateway::pki::common_name(&server_pem).map_err(|e| {
        anyhow::anyhow!("tls.server_cert {}: {e}", config.tls.server_cert.display())
    })?;
    let tls_crypt = match &config.tls.tls_crypt_key {
        Some(p) => Some(read(p, "tls.tls_crypt_key")?),
        None => None,
    };
    let tls_auth = match &config.tls.tls_auth {
        Some((p, digest)) => Some((read(p, "tls.tls_auth_key")?, *digest)),
        None => None,
    };
    let client = match &client {
        Some((cert, key)) => Some((read(cert, "--cert")?, read(key, "--key")?)),
        None => None,
    };
    let remote_hosts = if remote.is_empty() {
        config.endpoint.remote_hosts.clone()
    } else {
        remote
    };
    let profile = gateway::export::client_profile(
        &config,
        &gateway::export::ProfileInputs {
            remote_hosts: &remote_hosts,
            ca_pem: &ca_pem,
            server_name: &server_name,
            tls_crypt_key: tls_crypt.as_deref(),
            tls_auth: tls_auth
                .as_ref()
                .map(|(key, digest)| (key.as_str(), *digest)),
            client: client.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
        },
    )?;
    match output {
        Some(path) => {
            // The profile carries the tls-crypt key and often the client's private key.
            gateway::pki::write_secret(&path, profile.as_bytes())?;
            eprintln!("wrote {} (mode 0600)", path.display());
        }
        None => print!("{profile}"),
    }
    Ok(())
}
