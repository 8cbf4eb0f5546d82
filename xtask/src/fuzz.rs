//! `cargo xtask fuzz`: the cargo-fuzz targets of `gateway-proto` (every entry point that
//! reads network bytes), on the nightly toolchain, each for a bounded time.

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::run::{capture, run};

/// Seconds per target in the smoke run of `cargo xtask test`.
pub const SMOKE_SECONDS: u64 = 3;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../gateway-proto")
}

fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz")
}

fn cargo_fuzz(args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly")
        .arg("fuzz")
        .args(args)
        .current_dir(fuzz_dir())
        // Sanitizer flags would otherwise rebuild the workspace's target directory.
        .env("CARGO_TARGET_DIR", target_dir());
    cmd
}

/// Every fuzz target, as `cargo fuzz list` names them.
pub fn targets() -> Result<Vec<String>> {
    let out = capture(&mut cargo_fuzz(&["list"])).context("listing fuzz targets")?;
    let targets: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if targets.is_empty() {
        bail!("cargo fuzz list found no targets in gateway-proto/fuzz");
    }
    Ok(targets)
}

/// Runs `names` (all targets when empty) for `seconds` each; a crash fails the run and
/// leaves its input under gateway-proto/fuzz/artifacts/.
pub fn fuzz(names: &[String], seconds: u64) -> Result<()> {
    let all = targets()?;
    let chosen: Vec<String> = if names.is_empty() {
        all.clone()
    } else {
        names.to_vec()
    };
    for name in &chosen {
        if !all.contains(name) {
            bail!("no fuzz target {name:?}; there are: {}", all.join(", "));
        }
    }
    run(&mut cargo_fuzz(&["build"])).context("building the fuzz targets")?;
    let logs = target_dir().join("logs");
    std::fs::create_dir_all(&logs)?;
    for name in &chosen {
        let log = logs.join(format!("{name}.log"));
        // The working corpus (not checked in) first, where libFuzzer adds what it
        // finds; then the checked-in seeds, read only.
        let corpus = format!("fuzz/corpus/{name}");
        std::fs::create_dir_all(fuzz_dir().join(&corpus))?;
        let seeds = format!("fuzz/seeds/{name}");
        let mut args = vec!["run", name.as_str(), corpus.as_str()];
        if fuzz_dir().join(&seeds).is_dir() {
            args.push(&seeds);
        }
        let limit = format!("-max_total_time={seconds}");
        args.extend(["--", limit.as_str()]);
        let out = cargo_fuzz(&args)
            .output()
            .with_context(|| format!("running fuzz target {name}"))?;
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        std::fs::write(&log, &text)?;
        if !out.status.success() {
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "fuzz target {name} failed ({}); input under gateway-proto/fuzz/artifacts/{name}/, full log {}:\n{}",
                out.status,
                log.display(),
                tail.join("\n")
            );
        }
        let runs = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("Done ")
                    .and_then(|r| r.split_whitespace().next())
            })
            .unwrap_or("?");
        println!("  fuzz {name:<16} {runs:>10} runs in {seconds} s, no crash");
    }
    Ok(())
}
