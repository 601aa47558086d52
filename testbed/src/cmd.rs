//! Running external commands (`ip` from iproute2) with errors that name the command.

use crate::error::{Error, Result};
use std::process::Command;

/// Runs `program args...`, waits for it, and returns its stdout.
///
/// On failure the error carries the full command line and its stderr, because "RTNETLINK
/// answers: File exists" alone does not say which of thirty `ip` calls failed.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let cmd = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip args...` (see [`run`]).
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Runs `ip -n NS args...`: an `ip` command inside the named network namespace.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Runs `ip -n NS <line>` where `line` is split on whitespace: for the many fixed-shape
/// commands that build a topology (none of their arguments contain spaces).
pub fn ipn(ns: &str, line: &str) -> Result<String> {
    let args: Vec<&str> = line.split_whitespace().collect();
    ip_in(ns, &args)
}
