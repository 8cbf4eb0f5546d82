//! Project tasks: `cargo xtask setup | build | test | lab | demo | bench`.

mod demo;
mod fuzz;
mod lab;
mod run;
mod setup;
mod test;

use std::process::Command;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Set-up, build, test, lab, demo and bench tasks for the gateway")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the project needs and is missing (idempotent).
    Setup,
    /// Set up, then build the workspace (the XDP programs included).
    Build {
        /// Optimised build.
        #[arg(long)]
        release: bool,
    },
    /// Set up, then run fmt, clippy and every test (privileged ones when root).
    Test,
    /// The network-namespace lab for people (client, gateway, target host).
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
    /// Build, bring up the lab and show the gateway working in it.
    Demo {
        /// Leave the lab up afterwards (`cargo xtask lab down` removes it).
        #[arg(long)]
        keep: bool,
    },
    /// Run the gateway-proto fuzz targets (all, or those named) for a bounded time each.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        targets: Vec<String>,
    },
    /// Run the benchmarks (`bench` crate) in release mode.
    Bench {
        /// Arguments for the bench binary, e.g. `xdp --repeat 100000`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum LabAction {
    Up,
    Down,
    Status,
}

fn main() -> std::process::ExitCode {
    match run_task(Cli::parse().task) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_task(task: Task) -> Result<()> {
    match task {
        Task::Setup => setup::setup(),
        Task::Build { release } => {
            setup::setup()?;
            let mut cmd = Command::new("cargo");
            cmd.args(["build", "--workspace"]);
            if release {
                cmd.arg("--release");
            }
            run::run(&mut cmd)
        }
        Task::Test => test::test(),
        Task::Lab { action } => match action {
            LabAction::Up => lab::up(),
            LabAction::Down => lab::down(),
            LabAction::Status => lab::status(),
        },
        Task::Demo { keep } => demo::demo(keep),
        Task::Fuzz { seconds, targets } => {
            setup::setup()?;
            fuzz::fuzz(&targets, seconds)
        }
        Task::Bench { args } => {
            setup::setup()?;
            bench(&args)
        }
    }
}

/// Builds the release gateway and runs the bench binary with `args`.
pub fn bench(args: &[String]) -> Result<()> {
    run::run(Command::new("cargo").args(["build", "--quiet", "--release", "-p", "gateway"]))?;
    run::run(
        Command::new("cargo")
            .args(["run", "--quiet", "--release", "-p", "bench", "--"])
            .args(args),
    )
}
