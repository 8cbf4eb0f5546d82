//! `cargo xtask test`: set-up, formatting, lints, every test (privileged ones included
//! wherever the machine allows them), then a check that no test left a namespace behind.

use std::{process::Command, time::Instant};

use anyhow::{Context, Result, bail};
use gateway_tests::{lab, privilege};

use crate::{run::run, setup};

/// nextest filter for the tests that need root, BPF and namespaces: every integration
/// test of the `gateway-tests` package.
const PRIVILEGED_TESTS: &str = "package(gateway-tests) & kind(test)";

pub fn test() -> Result<()> {
    let started = Instant::now();
    setup::setup()?;
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");

    section("cargo fmt --check");
    run(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))?;

    section("cargo clippy -D warnings");
    run(Command::new("cargo").args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ]))?;

    section("tests");
    let mut nextest = Command::new("cargo");
    nextest.args([
        "nextest",
        "run",
        "--workspace",
        "--no-fail-fast",
        "--status-level",
        "fail",
        "--final-status-level",
        "skip",
    ]);
    match privilege::missing() {
        None => {
            println!("privileged tests (XDP, namespaces) run and must pass");
            nextest.env(privilege::REQUIRE_ENV, "1");
        }
        Some(reason) if ci => bail!("CI must run the privileged tests, but {reason}"),
        Some(reason) => {
            println!(
                "WARNING: privileged tests (XDP, namespaces) are SKIPPED: {reason}; \
                 run as root to include them"
            );
            nextest.args(["-E", &format!("not ({PRIVILEGED_TESTS})")]);
        }
    }
    let tests = run_tests(&mut nextest);

    section("fuzz smoke");
    let fuzzing = crate::fuzz::fuzz(&[], crate::fuzz::SMOKE_SECONDS);

    section("benchmark smoke (cargo xtask bench --quick; figures only, no thresholds)");
    let benchmark = match privilege::missing() {
        None => crate::bench(&["--quick".to_string()]),
        Some(reason) if ci => Err(anyhow::anyhow!(
            "CI must run the benchmark smoke, but {reason}"
        )),
        Some(reason) => {
            println!("WARNING: benchmark smoke SKIPPED: {reason}; run as root to include it");
            Ok(())
        }
    };

    section("leftovers");
    // Every test process has ended, so any test namespace whose owner is gone leaked.
    let leaked = lab::remove_stale_namespaces()?;
    if !leaked.is_empty() {
        bail!("tests left namespaces behind (now removed): {leaked:?}");
    }
    println!("no test namespace left behind");
    let counts = tests?;
    fuzzing?;
    benchmark.context("the benchmark smoke")?;
    println!(
        "all checks passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // The closing line, in the plain form CI reads.
    println!("xtask: {counts}");
    Ok(())
}

pub fn section(name: &str) {
    println!("\n=== {name} ===");
}

/// nextest's closing counts.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    passed: u64,
    failed: u64,
    skipped: u64,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// Reads "Summary [ 0.9s] 14 tests run: 13 passed, 1 failed, 2 skipped" (any subset of
/// the counts; "timed out" and "leaky fail" count as failed).
fn parse_summary(line: &str) -> Option<Counts> {
    let rest = line.trim_start().strip_prefix("Summary")?;
    let (_, counts) = rest.split_once("run:")?;
    let mut c = Counts::default();
    for part in counts.split(',') {
        let mut words = part.split_whitespace();
        let n: u64 = words.next()?.parse().ok()?;
        match words.collect::<Vec<_>>().join(" ").as_str() {
            "passed" => c.passed += n,
            "skipped" => c.skipped += n,
            w if w.contains("fail") || w.contains("timed out") => c.failed += n,
            _ => {}
        }
    }
    Some(c)
}

/// Runs nextest, echoing its stderr, and returns its counts; an error if it failed.
fn run_tests(cmd: &mut Command) -> Result<Counts> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("could not start cargo nextest")?;
    let mut counts = None;
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line?;
            eprintln!("{line}");
            if let Some(c) = parse_summary(&line) {
                counts = Some(c);
            }
        }
    }
    let status = child.wait()?;
    let counts = counts.context("nextest printed no summary line")?;
    if !status.success() || counts.failed > 0 {
        println!("xtask: {counts}");
        bail!("tests failed ({status})");
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nextest_summaries() {
        assert_eq!(
            parse_summary("     Summary [   0.928s] 14 tests run: 14 passed, 0 skipped"),
            Some(Counts {
                passed: 14,
                failed: 0,
                skipped: 0
            })
        );
        assert_eq!(
            parse_summary(
                "     Summary [   0.1s] 9/9 tests run: 4 passed, 1 failed, 2 timed out, 3 skipped"
            ),
            Some(Counts {
                passed: 4,
                failed: 3,
                skipped: 3
            })
        );
        assert_eq!(parse_summary("        PASS [   0.004s] x"), None);
    }
}
