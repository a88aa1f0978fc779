//! Processes, one way: the clock the store and the wire use, a child started in a session of
//! its own, and a signal to a whole process group. The agent (workers), the CLI (the local
//! daemon) and the tests all start and stop processes through here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Makes `cmd` start its child in a new session (`setsid`): the child leads its own process
/// group, so a signal to the group reaches everything it starts and nothing of ours, and it
/// holds no terminal and outlives its parent. For a `tokio::process::Command`, pass
/// `cmd.as_std_mut()`.
pub fn in_new_session(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec, and calls only setsid,
    // which is async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
}

/// Sends `sig` to the process group led by `pid` (a child started [`in_new_session`]); false
/// when there is no such group any more.
pub fn signal_group(pid: u32, sig: nix::sys::signal::Signal) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // pid 0 and 1 would name our own group and init's: never a worker's.
    if pid <= 1 {
        return false;
    }
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_in_a_new_session_leads_its_group_and_the_group_is_signalled_whole() {
        let mut cmd = std::process::Command::new("sh");
        // A grandchild in the same group.
        cmd.args(["-c", "sleep 30 & wait"]);
        in_new_session(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let pid = child.id();
        let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32))).unwrap();
        assert_eq!(pgid.as_raw() as u32, pid, "it leads its own group");
        assert_ne!(pgid, nix::unistd::getpgrp(), "not ours");
        assert!(signal_group(pid, nix::sys::signal::Signal::SIGKILL));
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(!signal_group(0, nix::sys::signal::Signal::SIGKILL));
        assert!(!signal_group(1, nix::sys::signal::Signal::SIGKILL));
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_ms() > 1_577_836_800_000);
    }
}
