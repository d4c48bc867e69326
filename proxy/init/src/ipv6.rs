//! Whether to program IPv6 rules.
//!
//! `auto` programs them whenever this namespace's kernel has IPv6 enabled and
//! ip6tables can read the nat table there, rather than only when a global IPv6
//! address is present: addresses can appear after the init container ran
//! (SLAAC, a late CNI), and an app reaching IPv6 without rules would bypass the
//! proxy. Unused rules cost nothing. When IPv6 is off, or ip6tables or the
//! kernel's IPv6 nat support is missing, `auto` skips IPv6 and says why.

use std::path::Path;

/// `/proc/sys/net` shows the sysctls of the reading process's network namespace.
const DISABLE_IPV6: &str = "/proc/sys/net/ipv6/conf/all/disable_ipv6";

/// Whether the kernel offers IPv6 in this namespace; `Err` says why not.
pub fn kernel_support() -> Result<(), String> {
    kernel_support_from(Path::new(DISABLE_IPV6))
}

fn kernel_support_from(sysctl: &Path) -> Result<(), String> {
    match std::fs::read_to_string(sysctl) {
        Ok(value) if value.trim() == "0" => Ok(()),
        Ok(value) => Err(format!(
            "IPv6 is disabled in this network namespace (net.ipv6.conf.all.disable_ipv6={})",
            value.trim()
        )),
        Err(err) => Err(format!(
            "the kernel offers no IPv6 here ({}: {err})",
            sysctl.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempFile(std::path::PathBuf);
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn sysctl(value: &str, name: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("weft-ipv6-{}-{name}", std::process::id()));
        std::fs::write(&path, value).unwrap();
        TempFile(path)
    }

    #[test]
    fn enabled_when_the_sysctl_is_zero() {
        let file = sysctl("0\n", "on");
        assert_eq!(kernel_support_from(&file.0), Ok(()));
    }

    #[test]
    fn disabled_sysctl_is_named() {
        let file = sysctl("1\n", "off");
        let reason = kernel_support_from(&file.0).unwrap_err();
        assert!(reason.contains("disable_ipv6=1"), "{reason}");
    }

    #[test]
    fn missing_ipv6_is_named() {
        let reason = kernel_support_from(Path::new("/nonexistent/weft/disable_ipv6")).unwrap_err();
        assert!(reason.contains("no IPv6"), "{reason}");
    }
}
