//! `--user NAME`: after setup (TAP, sockets, control socket), become an ordinary user while
//! keeping only CAP_NET_ADMIN and CAP_NET_RAW.
//!
//! glibc applies `setgroups`/`setresgid`/`setresuid` to every thread of the process. Only the
//! calling (main) thread has PR_SET_KEEPCAPS, so it keeps the two capabilities (for the
//! bridge re-attach and peers added at run time); the worker and control threads lose every
//! capability, which they do not need: their descriptors are already open.

use std::ffi::{CStr, CString};
use std::io;

/// A user to switch to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: libc::uid_t,
    /// Primary group id.
    pub gid: libc::gid_t,
}

/// Errors of `--user`.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    /// A system call failed.
    #[error("--user {user}: {what} failed")]
    Syscall {
        /// User.
        user: String,
        /// Which step.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
}

/// Does this process hold CAP_NET_ADMIN and CAP_NET_RAW (root has them)?
pub fn has_net_privileges() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let cap = s
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let want = (1u64 << CAP_NET_ADMIN) | (1u64 << CAP_NET_RAW);
    cap & want == want
}

/// Looks `name` up in the user database (`None`: no such user).
pub fn lookup_user(name: &str) -> Option<User> {
    let c = CString::new(name).ok()?;
    // SAFETY: passwd is a plain C struct of pointers and integers; all-zero is a valid
    // value, which getpwnam_r overwrites.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives the use of pw's strings.
    let r = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if r != 0 || out.is_null() {
        return None;
    }
    // SAFETY: pw_name points into buf, NUL-terminated, filled in by getpwnam_r.
    let n = unsafe { CStr::from_ptr(pw.pw_name) }
        .to_string_lossy()
        .into_owned();
    Some(User {
        name: n,
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    })
}

/// Looks group `name` up in the group database: its gid (`None`: no such group).
pub fn lookup_group(name: &str) -> Option<libc::gid_t> {
    let c = CString::new(name).ok()?;
    // SAFETY: group is a plain C struct of pointers and integers; all-zero is a valid value,
    // which getgrnam_r overwrites.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives the call (only gr_gid, a
    // plain integer, is read from the result).
    let r = unsafe { libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) };
    (r == 0 && !out.is_null()).then_some(gr.gr_gid)
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn check(user: &str, what: &'static str, r: libc::c_long) -> Result<(), PrivError> {
    if r < 0 {
        Err(PrivError::Syscall {
            user: user.to_string(),
            what,
            source: io::Error::last_os_error(),
        })
    } else {
        Ok(())
    }
}

/// Switches the process to `u` keeping CAP_NET_ADMIN and CAP_NET_RAW on the calling thread.
pub fn drop_to(u: &User) -> Result<(), PrivError> {
    let n = u.name.as_str();
    // SAFETY: plain system calls with valid arguments; the capability structs are laid out as
    // the kernel's v3 ABI (one header, two data words).
    unsafe {
        check(
            n,
            "prctl(PR_SET_KEEPCAPS)",
            libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0).into(),
        )?;
        check(n, "setgroups", libc::setgroups(1, &u.gid).into())?;
        check(n, "setresgid", libc::setresgid(u.gid, u.gid, u.gid).into())?;
        check(n, "setresuid", libc::setresuid(u.uid, u.uid, u.uid).into())?;
        let mut hdr = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let keep = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW);
        let data = [
            CapData {
                effective: keep,
                permitted: keep,
                inheritable: 0,
            },
            CapData::default(),
        ];
        check(
            n,
            "capset",
            libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()),
        )?;
        check(
            n,
            "prctl(PR_SET_KEEPCAPS, 0)",
            libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0).into(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_root_and_refuses_unknown_users() {
        let r = lookup_user("root").expect("root exists");
        assert_eq!((r.uid, r.gid), (0, 0));
        assert_eq!(lookup_user("no-such-user-dnet"), None);
        assert_eq!(lookup_user("bad\0name"), None);
        assert_eq!(lookup_group("root"), Some(0));
        assert_eq!(lookup_group("no-such-group-dnet"), None);
    }

    #[test]
    fn a_failed_call_names_user_and_step_and_prints_errno_once() {
        let e = PrivError::Syscall {
            user: "nobody".into(),
            what: "setresuid",
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        crate::error_chain::assert_causes_once(&e);
        assert_eq!(
            crate::error_chain::format(&e),
            "--user nobody: setresuid failed: Operation not permitted (os error 1)"
        );
    }
}
