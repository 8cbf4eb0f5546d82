//! Network-namespace lab: uniquely named namespaces, veth links, commands and processes
//! inside them, bounded waits, and cleanup of all of it on drop, even when a test panics.

use std::{
    fs::File,
    io::Read,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{
    sched::{CloneFlags, setns},
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// Prefix of namespaces made by tests: `gwt-<pid>-<seq>-<role>`. The pid lets a later run
/// remove what a killed run left behind, and only that.
pub const TEST_PREFIX: &str = "gwt";
/// Prefix of the long-lived lab that `cargo xtask lab up` makes for people.
pub const HUMAN_LAB_PREFIX: &str = "gwlab";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// How long a stopped process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A network namespace made by a [`Lab`]. Cheap to clone; the lab owns its lifetime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` that runs `program` inside this namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `args` inside the namespace to completion and returns its stdout; a failure
    /// names the namespace, the command and what it printed on stderr.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let (program, rest) = args.split_first().context("exec: empty command")?;
        let out = self
            .command(program)
            .args(rest)
            .stdin(Stdio::null())
            .output()
            .with_context(|| {
                format!(
                    "could not run `ip netns exec {} {}`",
                    self.name,
                    args.join(" ")
                )
            })?;
        if !out.status.success() {
            bail!(
                "`{}` in namespace {} failed with {}: {}",
                args.join(" "),
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `f` on a thread that has joined this namespace and returns its result.
    ///
    /// Interface names and indexes (XDP attach, AF_XDP bind, sockets) resolve in the
    /// namespace of the calling thread, so such calls go through here; the test's own
    /// thread never changes namespace.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        thread::scope(|s| {
            s.spawn(|| {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns into {}", self.name))?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread inside namespace {} panicked", self.name))?
        })
    }

    /// Disables IPv6 so that neighbour discovery and MLD frames do not appear on the
    /// test's links, and brings loopback up.
    fn quiet(&self) -> Result<()> {
        self.exec(&["ip", "link", "set", "lo", "up"])?;
        self.exec(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ])?;
        Ok(())
    }
}

/// A process started inside a namespace; stop it with [`Lab::stop`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessId(pub u32);

/// Owns namespaces and processes and removes them all when dropped.
pub struct Lab {
    prefix: String,
    namespaces: Vec<Netns>,
    processes: Vec<Child>,
    keep: bool,
}

impl Lab {
    /// A lab for a test: names carry this process's pid so parallel tests never clash
    /// and a later run can clean up after a killed one.
    pub fn new() -> Self {
        Self::with_prefix(format!("{TEST_PREFIX}-{}", std::process::id()))
    }

    /// A lab whose namespaces are named `<prefix>-<role>` plus a sequence number when
    /// the prefix is a test prefix.
    pub fn with_prefix(prefix: String) -> Self {
        Self {
            prefix,
            namespaces: Vec::new(),
            processes: Vec::new(),
            keep: false,
        }
    }

    /// Leaves the namespaces in place on drop (for `cargo xtask lab up`); processes are
    /// still stopped.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Lets the processes started so far outlive the lab (with [`Lab::keep`], for a lab
    /// people keep using; `cargo xtask lab down` kills what runs in its namespaces).
    pub fn keep_processes(&mut self) {
        self.processes.clear();
    }

    pub fn namespaces(&self) -> &[Netns] {
        &self.namespaces
    }

    /// Creates a namespace for `role` (e.g. "client", "gw"), with IPv6 off and lo up.
    pub fn add_namespace(&mut self, role: &str) -> Result<Netns> {
        let name = if self.prefix.starts_with(TEST_PREFIX) {
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            format!("{}-{seq}-{role}", self.prefix)
        } else {
            format!("{}-{role}", self.prefix)
        };
        run_ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        self.namespaces.push(ns.clone());
        ns.quiet()?;
        Ok(ns)
    }

    /// Creates a veth pair `a_if` in `a` ↔ `b_if` in `b` and brings both ends up. Each end
    /// gets its address (`"198.51.100.1/24"`) when one is given.
    pub fn veth(
        &mut self,
        (a, a_if, a_addr): (&Netns, &str, Option<&str>),
        (b, b_if, b_addr): (&Netns, &str, Option<&str>),
    ) -> Result<()> {
        run_ip(&[
            "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
            &b.name,
        ])?;
        for (ns, ifname, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
            if let Some(addr) = addr {
                ns.exec(&["ip", "addr", "add", addr, "dev", ifname])?;
            }
            ns.exec(&["ip", "link", "set", ifname, "up"])?;
        }
        Ok(())
    }

    /// Starts `args` inside `ns` with stdout/stderr going to `log` (or discarded) and
    /// returns its pid. The lab stops it on drop if the test does not.
    pub fn spawn(&mut self, ns: &Netns, args: &[&str], log: Option<&Path>) -> Result<ProcessId> {
        let (program, rest) = args.split_first().context("spawn: empty command")?;
        let mut cmd = ns.command(program);
        cmd.args(rest).stdin(Stdio::null());
        match log {
            Some(path) => {
                let f =
                    File::create(path).with_context(|| format!("creating {}", path.display()))?;
                cmd.stdout(f.try_clone()?).stderr(f);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting `{}` in {}", args.join(" "), ns.name))?;
        let pid = ProcessId(child.id());
        self.processes.push(child);
        Ok(pid)
    }

    /// Stops a process this lab started: SIGTERM, then SIGKILL after a grace period.
    pub fn stop(&mut self, pid: ProcessId) -> Result<ExitStatus> {
        let idx = self
            .processes
            .iter()
            .position(|c| c.id() == pid.0)
            .with_context(|| format!("pid {} was not started by this lab", pid.0))?;
        let child = self.processes.swap_remove(idx);
        stop_child(child)
    }

    /// Kills a process this lab started with SIGKILL (no chance to say goodbye, as when
    /// a laptop loses power) and reaps it.
    pub fn kill(&mut self, pid: ProcessId) -> Result<ExitStatus> {
        let idx = self
            .processes
            .iter()
            .position(|c| c.id() == pid.0)
            .with_context(|| format!("pid {} was not started by this lab", pid.0))?;
        let mut child = self.processes.swap_remove(idx);
        let _ = kill(Pid::from_raw(pid.0 as i32), Signal::SIGKILL);
        Ok(child.wait()?)
    }

    /// Whether a process this lab started is still running.
    pub fn is_running(&mut self, pid: ProcessId) -> bool {
        self.processes
            .iter_mut()
            .find(|c| c.id() == pid.0)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for child in self.processes.drain(..) {
            let id = child.id();
            if let Err(e) = stop_child(child) {
                problems.push(format!("stopping pid {id}: {e:#}"));
            }
        }
        if self.keep {
            return problems;
        }
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = remove_namespace(&ns.name) {
                problems.push(format!("{e:#}"));
            }
        }
        problems
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in self.teardown() {
            eprintln!("lab cleanup: {p}");
        }
    }
}

fn stop_child(mut child: Child) -> Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(pid, Signal::SIGKILL);
    Ok(child.wait()?)
}

/// Kills every process still inside namespace `name` and deletes it.
pub fn remove_namespace(name: &str) -> Result<()> {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    run_ip(&["netns", "del", name]).with_context(|| format!("deleting namespace {name}"))
}

/// All namespace names on this machine.
pub fn list_namespaces() -> Result<Vec<String>> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("running `ip netns list`")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

/// Pid encoded in a test namespace name (`gwt-<pid>-...`).
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(TEST_PREFIX)?
        .strip_prefix('-')?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Removes test namespaces whose creating process is gone (a killed run); never touches
/// any other namespace. Returns the names removed.
pub fn remove_stale_namespaces() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in list_namespaces()? {
        if let Some(pid) = owner_pid(&name)
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            remove_namespace(&name)?;
            removed.push(name);
        }
    }
    Ok(removed)
}

fn run_ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!(
                "could not run `ip {}` (is iproute2 installed?)",
                args.join(" ")
            )
        })?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Polls `ready` every 20 ms until it returns true or `timeout` passes; the error names
/// `what` was awaited.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a whole small file (a log) into a string, empty if it does not exist.
pub fn read_log(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// The standard three-namespace topology that tests, the demo and `xtask lab` use.
///
/// ```text
///  client                gw                               target
///  eth0 198.51.100.2 ─── eth0 198.51.100.1 (public ENI)
///                        eth1 10.10.0.1 (target ENI) ──── eth0 10.10.0.10
/// ```
pub struct Topology {
    pub client: Netns,
    pub gateway: Netns,
    /// The first target host (`hosts[0]`).
    pub target: Netns,
    /// Every target host, with its address: one on the veth, several behind a bridge,
    /// or one behind a router.
    pub hosts: Vec<(Netns, &'static str)>,
    /// What stands between the gateway and the hosts.
    pub network: TargetNetwork,
}

/// What stands behind the gateway's target interface. Every host is left as Debian
/// makes it (offloads, no XDP, GRO off), as a customer's host is: the lab gives it an
/// address and, behind a router, the default route any host there has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetNetwork {
    /// One host, 10.10.0.10, on the other end of the target veth.
    Direct,
    /// A Linux bridge in a `switch` namespace with 10.10.0.10, 10.10.0.11 and
    /// 10.10.0.12 behind it.
    Bridge,
    /// A router (10.10.0.254 towards the gateway, 10.20.0.1 towards the host) with one
    /// host, 10.20.0.10, behind it.
    Routed,
}

impl TargetNetwork {
    /// The network the gateway routes to for this lab.
    pub fn routed_cidr(self) -> &'static str {
        match self {
            TargetNetwork::Direct | TargetNetwork::Bridge => "10.10.0.0/24",
            TargetNetwork::Routed => "10.20.0.0/24",
        }
    }

    /// The next hop the gateway's own routing table needs, if any.
    pub fn gateway_route(self) -> Option<(&'static str, &'static str)> {
        match self {
            TargetNetwork::Routed => Some(("10.20.0.0/24", Topology::ROUTER_ADDR)),
            _ => None,
        }
    }
}

impl Topology {
    pub const CLIENT_ADDR: &str = "198.51.100.2";
    pub const GATEWAY_PUBLIC_ADDR: &str = "198.51.100.1";
    pub const GATEWAY_TARGET_ADDR: &str = "10.10.0.1";
    pub const TARGET_ADDR: &str = "10.10.0.10";
    /// Interface names inside the gateway namespace, as on an EC2 instance.
    pub const PUBLIC_IF: &str = "eth0";
    pub const TARGET_IF: &str = "eth1";

    /// The router's address on the gateway's target network ([`TargetNetwork::Routed`]).
    pub const ROUTER_ADDR: &str = "10.10.0.254";

    pub fn build(lab: &mut Lab) -> Result<Self> {
        Self::build_with(lab, TargetNetwork::Direct)
    }

    pub fn build_with(lab: &mut Lab, network: TargetNetwork) -> Result<Self> {
        let client = lab.add_namespace("client")?;
        let gateway = lab.add_namespace("gw")?;
        lab.veth(
            (&client, "eth0", Some("198.51.100.2/24")),
            (&gateway, Self::PUBLIC_IF, Some("198.51.100.1/24")),
        )?;
        let gw_end = (&gateway, Self::TARGET_IF, Some("10.10.0.1/24"));
        let mut hosts = Vec::new();
        match network {
            TargetNetwork::Direct => {
                let host = lab.add_namespace("target")?;
                lab.veth(gw_end, (&host, "eth0", Some("10.10.0.10/24")))?;
                hosts.push((host, Self::TARGET_ADDR));
            }
            TargetNetwork::Bridge => {
                let switch = lab.add_namespace("switch")?;
                switch.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
                switch.exec(&["ip", "link", "set", "br0", "up"])?;
                lab.veth(gw_end, (&switch, "p0", None))?;
                switch.exec(&["ip", "link", "set", "p0", "master", "br0"])?;
                for (i, addr) in ["10.10.0.10", "10.10.0.11", "10.10.0.12"]
                    .into_iter()
                    .enumerate()
                {
                    let host = lab.add_namespace(&format!("host{i}"))?;
                    let port = format!("p{}", i + 1);
                    lab.veth(
                        (&switch, &port, None),
                        (&host, "eth0", Some(&format!("{addr}/24"))),
                    )?;
                    switch.exec(&["ip", "link", "set", &port, "master", "br0"])?;
                    hosts.push((host, addr));
                }
            }
            TargetNetwork::Routed => {
                let router = lab.add_namespace("router")?;
                let host = lab.add_namespace("target")?;
                lab.veth(gw_end, (&router, "eth0", Some("10.10.0.254/24")))?;
                lab.veth(
                    (&router, "eth1", Some("10.20.0.1/24")),
                    (&host, "eth0", Some("10.20.0.10/24")),
                )?;
                // A router forwards; a host behind it routes through it.
                router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
                host.exec(&["ip", "route", "add", "default", "via", "10.20.0.1"])?;
                hosts.push((host, "10.20.0.10"));
            }
        }
        if let Some((cidr, via)) = network.gateway_route() {
            gateway.exec(&["ip", "route", "add", cidr, "via", via])?;
        }
        Ok(Self {
            client,
            gateway,
            target: hosts[0].0.clone(),
            hosts,
            network,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_only_test_names() {
        assert_eq!(owner_pid("gwt-1234-0-client"), Some(1234));
        assert_eq!(owner_pid("gwt-77-12-gw"), Some(77));
        assert_eq!(owner_pid("gwlab-client"), None);
        assert_eq!(owner_pid("gwtx-12-0-a"), None);
        assert_eq!(owner_pid("other-1-2"), None);
        assert_eq!(owner_pid("gwt-abc-1"), None);
    }
}
