//! Least privilege: once `serve` has set everything up as root (XDP programs attached,
//! BPF maps made, the TAP device, AF_XDP and listening sockets, the forwarding guard),
//! it continues as `process.user` with only the capabilities the running gateway
//! still needs, and `PR_SET_NO_NEW_PRIVS`, so a flaw in the TLS or protocol code that
//! runs from then on has no root to use.
//!
//! Capabilities are per thread in Linux. The user change (glibc applies it to every
//! thread) clears every capability of the threads already running — the data-plane
//! workers — since only this thread keeps them across it (`PR_SET_KEEPCAPS`); this
//! thread, which runs the control plane, then keeps [`KEPT`] and nothing else.

use anyhow::{Context, Result, bail};
use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid, User, setgroups, setresgid, setresuid};
use tracing::info;

/// What the running gateway still needs, and why:
/// - `CAP_NET_ADMIN`: removing its nftables table at exit (the `nft` child gets it as an
///   ambient capability) and detaching XDP programs where the kernel attached them
///   without a BPF link;
/// - `CAP_BPF`: writing its BPF maps (sessions, rules, NAT upkeep) through the
///   descriptors it holds, which kernels that restrict unprivileged BPF check.
pub const KEPT: [Capability; 2] = [Capability::CAP_NET_ADMIN, Capability::CAP_BPF];

/// Who the gateway now runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
}

/// Continues as `name` (and its primary group, with no supplementary groups) with only
/// [`KEPT`]; the bounding set of this thread is cut to them, so nothing it starts can
/// get more back. Fails, changing nothing it cannot undo, when the user does not exist
/// or is root.
pub fn drop_to(name: &str) -> Result<Dropped> {
    let user = User::from_name(name)
        .with_context(|| format!("looking up process.user {name:?}"))?
        .with_context(|| format!("process.user: no user named {name:?} on this host"))?;
    if user.uid.is_root() {
        bail!("process.user {name:?} is root: name an unprivileged user");
    }
    let kept: CapsHashSet = KEPT.into_iter().collect();
    for cap in caps::all() {
        if !kept.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    caps::securebits::set_keepcaps(true).context("PR_SET_KEEPCAPS")?;
    setgroups(&[user.gid]).context("setgroups")?;
    setresgid(user.gid, user.gid, user.gid).context("setresgid")?;
    setresuid(user.uid, user.uid, user.uid).context("setresuid")?;
    caps::securebits::set_keepcaps(false).context("PR_SET_KEEPCAPS")?;
    caps::set(None, CapSet::Effective, &kept).context("setting the effective capabilities")?;
    caps::set(None, CapSet::Permitted, &kept).context("setting the permitted capabilities")?;
    let ambient: CapsHashSet = [Capability::CAP_NET_ADMIN].into_iter().collect();
    caps::set(None, CapSet::Inheritable, &ambient)
        .context("setting the inheritable capabilities")?;
    caps::raise(None, CapSet::Ambient, Capability::CAP_NET_ADMIN)
        .context("raising CAP_NET_ADMIN as ambient")?;
    nix::sys::prctl::set_no_new_privs().context("PR_SET_NO_NEW_PRIVS")?;
    // What the kernel now says, not what was asked.
    let effective = caps::read(None, CapSet::Effective).context("reading capabilities")?;
    if effective != kept || Uid::current() != user.uid || Gid::current() != user.gid {
        bail!(
            "the privilege drop did not take: uid {}, capabilities {effective:?}",
            Uid::current()
        );
    }
    let dropped = Dropped {
        user: name.to_string(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    };
    info!(
        user = name,
        uid = dropped.uid,
        gid = dropped.gid,
        capabilities = "CAP_NET_ADMIN CAP_BPF",
        "running unprivileged from now on"
    );
    Ok(dropped)
}
