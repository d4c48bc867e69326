//! A background helper process started in a pod (`Testbed::spawn`): a server or a load loop a
//! test needs while it does other things. Its whole process group is killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use crate::error::TestbedError;
use crate::process::{child_pid, stop_group, wait_until};

#[derive(Debug)]
pub struct SpawnedProcess {
    child: Child,
    command: String,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl SpawnedProcess {
    pub(crate) fn new(child: Child, command: String, log: PathBuf) -> Self {
        SpawnedProcess {
            child,
            command,
            log,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        child_pid(&self.child)
    }

    /// The command line, for messages.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// File receiving the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process has written so far (stdout and stderr interleaved).
    pub fn output(&self) -> Result<String, TestbedError> {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| TestbedError::io("reading output of spawned process", &self.log, e))
    }

    /// The exit status once it has exited; None while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit; None if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = wait_until(&mut self.child, Instant::now() + timeout);
        }
        self.status
    }

    /// SIGTERM to the group, a short grace, then SIGKILL.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = stop_group(&mut self.child, Duration::from_secs(2));
        }
        self.status
    }
}

impl Drop for SpawnedProcess {
    fn drop(&mut self) {
        // Also sweeps children left in the group after the leader exited.
        stop_group(&mut self.child, Duration::from_millis(500));
    }
}
