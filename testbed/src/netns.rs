//! Running code inside a named network namespace, in-process.
//!
//! `setns(CLONE_NEWNET)` switches only the calling thread, so each helper runs its closure on a
//! fresh thread that enters the namespace first; sockets that closure creates live in that
//! namespace for their whole life, even when used later from other threads.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::thread::JoinHandle;

/// Path of the bind mount `ip netns add NAME` creates.
pub fn netns_path(ns: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(ns)
}

/// Moves the calling thread into network namespace `ns`.
fn enter(ns: &str) -> io::Result<()> {
    let path = netns_path(ns);
    let f = File::open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
    // SAFETY: `f` is an open file descriptor for the duration of the call; setns only reads it
    // and changes this thread's network namespace, which is what the caller asked for.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("setns({}): {e}", path.display()),
        ));
    }
    Ok(())
}

/// Runs `f` on a new thread that lives in network namespace `ns`, and returns its result.
///
/// Errors only if the namespace cannot be entered; a panic in `f` is propagated to the caller.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        let h = s.spawn(move || {
            enter(ns)?;
            Ok(f())
        });
        match h.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Like [`in_netns`] but in the background: returns at once with the thread's handle.
pub fn spawn_in_netns<T, F>(ns: &str, f: F) -> io::Result<JoinHandle<io::Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = ns.to_string();
    std::thread::Builder::new()
        .name(format!("netns-{ns}"))
        .spawn(move || {
            enter(&ns)?;
            Ok(f())
        })
}
