//! `cargo xtask setup`: installs what the project needs and is missing, idempotently,
//! and says what it checked. Each failure names the step that failed.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::run::{capture, run};

/// Debian packages the build and the tests need.
///
/// LLVM 22 is what bpf-linker links against; the rest are the real peers and tools
/// that the lab, the end-to-end tests, the demo and the benchmarks drive.
const DEBIAN_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    "iputils-ping",
    "tcpdump",
    "bpftool",
    "nftables",
    "ethtool",
    "openvpn",
    "iperf3",
    // The text of the benchmark plots.
    "fonts-dejavu-core",
];

/// The bpf-linker release that builds with rustc 1.95 against Debian's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_TOOLCHAIN: &str = "nightly";

pub fn setup() -> Result<()> {
    let started = Instant::now();
    println!("setup: checking what this machine has");
    step("Debian packages", debian_packages)?;
    step("nightly toolchain with rust-src (BPF target)", rust_src)?;
    step("bpf-linker", bpf_linker)?;
    step("cargo-nextest", nextest)?;
    step("cargo-fuzz", cargo_fuzz)?;
    step("bpffs at /sys/fs/bpf", bpffs)?;
    step("leftover test namespaces", leftover_namespaces)?;
    println!("setup: ready in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn step(name: &str, f: fn() -> Result<String>) -> Result<()> {
    let started = Instant::now();
    let what = f().with_context(|| format!("setup step '{name}' failed"))?;
    println!(
        "  [ok] {name}: {what} ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn debian_packages() -> Result<String> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(format!("all {} present", DEBIAN_PACKAGES.len()));
    }
    if !is_root() {
        bail!(
            "missing {}; installing them needs root (run as root, or `sudo apt-get install {}`)",
            missing.join(" "),
            missing.join(" ")
        );
    }
    run(Command::new("apt-get").arg("update").arg("-q")).context("apt-get update")?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))
    .with_context(|| format!("apt-get install {}", missing.join(" ")))?;
    let still: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if !still.is_empty() {
        bail!(
            "apt-get finished but {} are still not installed",
            still.join(" ")
        );
    }
    Ok(format!("installed {}", missing.join(" ")))
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "install ok installed")
        .unwrap_or(false)
}

fn rust_src() -> Result<String> {
    let toolchains = capture(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup toolchain list (is rustup installed?)")?;
    let mut did = Vec::new();
    if !toolchains.lines().any(|l| l.starts_with(BPF_TOOLCHAIN)) {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            BPF_TOOLCHAIN,
            "--profile",
            "minimal",
        ]))?;
        did.push("installed nightly");
    }
    let components = capture(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        BPF_TOOLCHAIN,
    ]))?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            BPF_TOOLCHAIN,
        ]))?;
        did.push("added rust-src");
    }
    Ok(if did.is_empty() {
        "present".into()
    } else {
        did.join(", ")
    })
}

fn bpf_linker() -> Result<String> {
    if let Some(found) = bpf_linker_ok() {
        return Ok(found);
    }
    if !Path::new(LLVM_PREFIX).join("bin/llvm-config").exists() {
        bail!("{LLVM_PREFIX}/bin/llvm-config missing: the llvm-22-dev package did not install");
    }
    println!("  building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    run(Command::new("cargo").env("LLVM_PREFIX", LLVM_PREFIX).args([
        "install",
        "--locked",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--no-default-features",
        "--features",
        "llvm-22",
    ]))?;
    bpf_linker_ok().context("bpf-linker installed but its version or LLVM link is wrong")
}

/// `Some(description)` when the right bpf-linker is on PATH and linked to LLVM 22.
fn bpf_linker_ok() -> Option<String> {
    let version = capture(Command::new("bpf-linker").arg("--version")).ok()?;
    if !version.contains(BPF_LINKER_VERSION) {
        return None;
    }
    let path = capture(Command::new("sh").args(["-c", "command -v bpf-linker"])).ok()?;
    let libs = capture(Command::new("ldd").arg(path.trim())).ok()?;
    libs.contains("libLLVM.so.22")
        .then(|| format!("{} (LLVM 22)", version.trim()))
}

fn nextest() -> Result<String> {
    if let Ok(v) = capture(Command::new("cargo").args(["nextest", "--version"])) {
        return Ok(v.lines().next().unwrap_or("").trim().to_string());
    }
    run(Command::new("cargo").args(["install", "--locked", "cargo-nextest"]))?;
    Ok("installed".into())
}

/// The cargo-fuzz release the fuzz targets are run with.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

fn cargo_fuzz() -> Result<String> {
    if let Ok(v) = capture(Command::new("cargo").args(["fuzz", "--version"]))
        && v.contains(CARGO_FUZZ_VERSION)
    {
        return Ok(v.trim().to_string());
    }
    println!("  installing cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute)");
    run(Command::new("cargo").args([
        "install",
        "--locked",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))?;
    Ok(format!("installed {CARGO_FUZZ_VERSION}"))
}

fn bpffs() -> Result<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        return Ok("mounted".into());
    }
    if !is_root() {
        return Ok("not mounted (not root; only needed to pin maps)".into());
    }
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    Ok("mounted now".into())
}

fn leftover_namespaces() -> Result<String> {
    let removed = gateway_tests::lab::remove_stale_namespaces()?;
    Ok(if removed.is_empty() {
        "none".into()
    } else {
        format!(
            "removed {} of dead test runs: {}",
            removed.len(),
            removed.join(" ")
        )
    })
}
