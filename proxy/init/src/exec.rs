//! Running an iptables tool and turning its failures into one-line errors.

use std::io::{ErrorKind, Write};
use std::process::{Command, Stdio};

use crate::error::InitError;

/// How long iptables-restore may wait for the xtables lock, which is host-wide
/// for the legacy backend and so shared with every other pod's init.
pub const LOCK_WAIT_SECS: u32 = 10;

/// Runs `tool args...`, feeding `stdin` when given, and returns its stdout.
pub fn run_tool(tool: &str, args: &[&str], stdin: Option<&str>) -> Result<String, InitError> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| spawn_error(tool, source))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A tool that dies early closes the pipe; its exit status explains why,
        // so a write error here is left for the status check below.
        let _ = pipe.write_all(input.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|source| spawn_error(tool, source))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let status = match output.status.code() {
        Some(code) => format!("exit status {code}"),
        None => "a signal".to_string(),
    };
    Err(failure(&command_line(tool, args), tool, &status, &stderr))
}

fn spawn_error(tool: &str, source: std::io::Error) -> InitError {
    match source.kind() {
        ErrorKind::NotFound => InitError::ToolMissing {
            tool: tool.to_string(),
        },
        ErrorKind::PermissionDenied => InitError::NotPermitted {
            tool: tool.to_string(),
            detail: source.to_string(),
        },
        _ => InitError::Spawn {
            tool: tool.to_string(),
            source,
        },
    }
}

/// Classifies a failed run from its stderr: iptables reports a missing
/// capability as "Permission denied (you must be root)" or, for the lock file,
/// "Permission denied"; the nft backend may say "Operation not permitted".
fn failure(command: &str, tool: &str, status: &str, stderr: &str) -> InitError {
    let first = stderr
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("(no error output)")
        .to_string();
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("permission denied") || lower.contains("operation not permitted") {
        return InitError::NotPermitted {
            tool: tool.to_string(),
            detail: first,
        };
    }
    InitError::ToolFailed {
        command: command.to_string(),
        status: status.to_string(),
        stderr: first,
    }
}

fn command_line(tool: &str, args: &[&str]) -> String {
    std::iter::once(tool)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_the_tool_and_the_package() {
        let err = run_tool("weft-no-such-iptables-restore", &[], None).unwrap_err();
        assert!(matches!(err, InitError::ToolMissing { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("weft-no-such-iptables-restore not found on PATH"),
            "{msg}"
        );
        assert!(msg.contains("apt-get install iptables"), "{msg}");
    }

    #[test]
    fn permission_denied_names_the_capabilities() {
        let err = failure(
            "iptables-nft-save -t nat",
            "iptables-nft-save",
            "exit status 4",
            "iptables-nft-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)\n",
        );
        let msg = err.to_string();
        assert!(matches!(err, InitError::NotPermitted { .. }));
        assert!(
            msg.contains("CAP_NET_ADMIN") && msg.contains("NET_RAW"),
            "{msg}"
        );
        assert!(msg.contains("you must be root"), "{msg}");
        assert_eq!(msg.lines().count(), 1);
    }

    #[test]
    fn other_failures_give_command_status_and_first_stderr_line() {
        let err = failure(
            "iptables-legacy-restore --noflush",
            "iptables-legacy-restore",
            "exit status 2",
            "\niptables-restore v1.8.9 (legacy): line 3 failed\nError occurred at line: 3\n",
        );
        assert_eq!(
            err.to_string(),
            "`iptables-legacy-restore --noflush` failed with exit status 2: iptables-restore v1.8.9 (legacy): line 3 failed"
        );
    }

    #[test]
    fn runs_a_tool_with_stdin_and_reports_its_exit() {
        assert_eq!(run_tool("cat", &[], Some("*nat\n")).unwrap(), "*nat\n");
        let err = run_tool("sh", &["-c", "echo boom >&2; exit 3"], None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`sh -c echo boom >&2; exit 3` failed with exit status 3: boom"
        );
    }
}
