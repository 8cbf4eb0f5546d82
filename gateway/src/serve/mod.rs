//! `gateway serve`: `setup` brings up the TAP seam, the XDP programs and the
//! data-plane workers (`dataplane::worker`); `driver` then runs the control plane in one
//! tokio task — control packets the workers pass up, TCP connections (`tcp`), session
//! timers, the NAT sweep, admin requests, SIGHUP (reload routes and rules) and SIGTERM
//! (close every session) — around `server::Server`, which decides and returns what to
//! do.
//!
//! The workers carry the data packets of established UDP sessions in both directions;
//! the control plane hands each session's keys to them when it is established and after
//! every rekey or float. One UDP and one TCP listen entry are served.

mod driver;
mod guard;
mod privilege;
mod server;
mod setup;
mod tcp;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::{future::Future, path::Path};

use anyhow::{Context, Result};

pub use self::driver::Xdp;
pub use self::server::{
    CarryRequest, Now, Output, Regroup, Server, ServerError, TerminateError, banner, session_info,
};
pub use self::setup::{
    REKEY_PACKETS, SessionPolicy, check_crls, raise_open_files, reload_crl, renegotiation,
    session_config,
};

/// Name of the TAP device of the socket-mode seam.
pub const TAP_NAME: &str = "gw-tap0";
/// MAC the gateway writes as the source of frames it puts into the TAP.
const TAP_PEER_MAC: [u8; 6] = [0x02, 0x67, 0x77, 0x00, 0x00, 0x01];

/// Runs the gateway until SIGTERM or SIGINT.
pub fn run(config_path: &Path) -> Result<()> {
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        serve(config_path, stop).await
    })
}

/// Serves `config_path` until `shutdown` completes; then closes every session.
pub async fn serve(config_path: &Path, shutdown: impl Future<Output = ()>) -> Result<()> {
    let running = setup::start(config_path)?;
    driver::run(config_path, running, shutdown).await
}
