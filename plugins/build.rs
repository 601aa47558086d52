//! Marks a build made by root with `cfg(dnet_plugins_root)`, which only the tests use.
//!
//! The Docker and CNI tests (`tests/docker.rs`, `tests/cni.rs`) build network namespaces and
//! start dockerd, and so need root. A test that returned early without root would be counted
//! as passed; instead each one carries
//! `#[cfg_attr(not(dnet_plugins_root), ignore = "needs root: ...")]`, so a build by another
//! user lists it as ignored, with the reason, and a build by root runs it. Cargo reruns this
//! script when the user's environment changes (`su`, `sudo`), so switching between root and a
//! user rebuilds with the right marking. (Built by root and run by a user, the tests fail
//! on their first namespace; they cannot pass.)

use std::fs;

/// Effective user id of this process, from the second field of `Uid:` in /proc/self/status.
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(dnet_plugins_root)");
    println!("cargo::rerun-if-changed=build.rs");
    for var in ["USER", "LOGNAME", "HOME", "SUDO_USER", "SUDO_UID"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    match effective_uid() {
        Some(0) => println!("cargo::rustc-cfg=dnet_plugins_root"),
        Some(_) => {}
        None => println!(
            "cargo::warning=cannot read the effective uid from /proc/self/status: \
             the Docker and CNI tests are marked ignored (they need root)"
        ),
    }
}
