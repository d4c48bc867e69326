//! Running programs: bounded one-shot commands, and long-lived container processes each in its
//! own process group so a whole tree can be stopped.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::error::TestbedError;

const POLL: Duration = Duration::from_millis(10);

/// A command line as text, for error messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn describe_status(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

/// Runs `cmd` to completion within `timeout`, capturing stdout and stderr. On timeout the
/// command's whole process group is killed.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Result<Output, TestbedError> {
    cmd.stdin(Stdio::null());
    run_with_stdin(cmd, timeout)
}

/// As [`run_bounded`], keeping whatever stdin the caller gave the command.
pub fn run_with_stdin(mut cmd: Command, timeout: Duration) -> Result<Output, TestbedError> {
    let command = describe(&cmd);
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|source| TestbedError::Spawn {
        command: command.clone(),
        source,
    })?;
    // Drain both pipes concurrently so a chatty command cannot block on a full pipe.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let status = match wait_until(&mut child, Instant::now() + timeout) {
        Some(status) => status,
        None => {
            stop_group(&mut child, Duration::ZERO);
            return Err(TestbedError::Timeout { command, timeout });
        }
    };
    // The group may keep the pipes open after the leader exits; do not wait on them forever.
    let _ = killpg(Pid::from_raw(child_pid(&child)), Signal::SIGKILL);
    Ok(Output {
        status,
        stdout: stdout.map(join_drain).unwrap_or_default(),
        stderr: stderr.map(join_drain).unwrap_or_default(),
    })
}

/// As [`run_bounded`], and a non-zero exit is an error carrying stderr.
pub fn run_checked(cmd: Command, timeout: Duration) -> Result<Output, TestbedError> {
    let command = describe(&cmd);
    let output = run_bounded(cmd, timeout)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(TestbedError::CommandFailed {
            command,
            status: describe_status(&output.status),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

fn drain<R: Read + Send + 'static>(mut reader: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf);
        buf
    })
}

fn join_drain(handle: thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    handle.join().unwrap_or_default()
}

pub fn child_pid(child: &Child) -> i32 {
    i32::try_from(child.id()).unwrap_or(i32::MAX)
}

/// Polls until the child exits or the deadline passes.
pub fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            // The child was already reaped elsewhere; nothing more to wait for.
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL);
    }
}

/// SIGTERM to the child's process group, up to `grace` for the leader to exit, then SIGKILL to
/// the group. Returns the leader's exit status when it was reaped here.
pub fn stop_group(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let pgid = Pid::from_raw(child_pid(child));
    if let Ok(Some(status)) = child.try_wait() {
        let _ = killpg(pgid, Signal::SIGKILL);
        return Some(status);
    }
    if !grace.is_zero() {
        let _ = killpg(pgid, Signal::SIGTERM);
        if let Some(status) = wait_until(child, Instant::now() + grace) {
            let _ = killpg(pgid, Signal::SIGKILL);
            return Some(status);
        }
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    wait_until(child, Instant::now() + Duration::from_secs(5))
}

/// Stops processes we do not hold a handle for (another invocation's, or strays in a netns):
/// SIGTERM, up to `grace` for them to go, then SIGKILL.
pub fn stop_pids(pids: &[i32], grace: Duration) {
    let alive = |pid: i32| kill(Pid::from_raw(pid), None).is_ok() && !is_zombie(pid);
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        thread::sleep(POLL);
    }
    for &pid in pids {
        if alive(pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat): with the pid,
/// it identifies a process even after pid reuse.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_run_captures_output_and_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let out = run_bounded(cmd, Duration::from_secs(10)).unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn bounded_run_times_out_and_kills_the_group() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30"]);
        let started = Instant::now();
        let err = run_bounded(cmd, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, TestbedError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn checked_run_reports_stderr() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo broken >&2; exit 1"]);
        let err = run_checked(cmd, Duration::from_secs(10))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("broken") && err.contains("exit code 1"),
            "{err}"
        );
    }

    #[test]
    fn own_start_ticks_are_readable() {
        assert!(start_ticks(std::process::id() as i32).is_some());
        assert!(start_ticks(-5).is_none());
    }
}
