//! Processes, one way: the clock the store and the wire use, a child started in a session of
//! its own, a signal to a whole process group, whether a process lives, and a wait for the end
//! of a process that is not our child (a pidfd). The agent (workers), the CLI (the local
//! daemon) and the tests all start, stop and wait for processes through here.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// True while `pid` is a live process (not a zombie: one that ended and awaits its reaper
/// counts as gone).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Field 3, after the parenthesised command name (which may itself hold a ')').
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().next())
        .unwrap_or("");
    state != "Z" && state != "X"
}

/// Waits for a process that is not our child to end (a worker of an earlier agent run, the
/// local daemon): a pidfd becomes readable when it exits (Linux ≥ 5.3); where pidfds are
/// unavailable, /proc is checked every 200 ms. Needs a Tokio runtime.
pub struct ProcessExit {
    pid: u32,
    fd: Option<tokio::io::unix::AsyncFd<OwnedFd>>,
}

impl ProcessExit {
    /// Watches `pid`.
    pub fn new(pid: u32) -> ProcessExit {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        let fd = if raw >= 0 {
            // SAFETY: the syscall returned a fresh fd that nothing else owns.
            let owned = unsafe { OwnedFd::from_raw_fd(raw as i32) };
            // SAFETY: the AsyncFd owns `owned`, which stays open and unchanged until it is dropped.
            unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    owned,
                    tokio::io::Interest::READABLE,
                )
            }
            .ok()
        } else {
            None
        };
        ProcessExit { pid, fd }
    }

    /// Resolves once the process has exited.
    pub async fn wait(&mut self) {
        if let Some(fd) = &self.fd
            && let Ok(mut guard) = fd.readable().await
        {
            guard.retain_ready();
            return;
        }
        while alive(self.pid) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notices_a_foreign_process_exit() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(alive(pid));
        let mut exit = ProcessExit::new(pid);
        let reaper = std::thread::spawn(move || child.wait());
        tokio::time::timeout(Duration::from_secs(10), exit.wait())
            .await
            .expect("the exit was noticed");
        reaper.join().unwrap().unwrap();
        assert!(!alive(pid));
    }

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
