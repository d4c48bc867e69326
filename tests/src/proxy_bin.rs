//! Where the built `weft-proxy` binary is: an explicit path, `WEFT_PROXY_BIN`, or beside the
//! running executable (test binaries live one level down, in target/<profile>/deps).

use std::path::{Path, PathBuf};

use crate::error::TestbedError;

pub const ENV: &str = "WEFT_PROXY_BIN";

pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, TestbedError> {
    if let Some(path) = explicit {
        return check(path.to_path_buf(), "TestbedOptions::proxy_bin");
    }
    if let Some(path) = std::env::var_os(ENV) {
        return check(PathBuf::from(path), ENV);
    }
    let exe = std::env::current_exe()
        .map_err(|e| TestbedError::ProxyBinary(format!("finding the running executable: {e}")))?;
    next_to(&exe).ok_or_else(|| {
        TestbedError::ProxyBinary(format!(
            "no weft-proxy beside {} or its parent directories; build it (cargo build -p weft-proxy) or set {ENV}",
            exe.display()
        ))
    })
}

fn check(path: PathBuf, source: &str) -> Result<PathBuf, TestbedError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(TestbedError::ProxyBinary(format!(
            "{} (from {source}) is not a file",
            path.display()
        )))
    }
}

/// The first `weft-proxy` in the executable's directory or up to two levels above it.
fn next_to(exe: &Path) -> Option<PathBuf> {
    exe.ancestors()
        .skip(1)
        .take(3)
        .map(|dir| dir.join("weft-proxy"))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_binary_from_a_deps_directory() {
        let root = std::env::temp_dir().join(format!("weft-proxy-bin-{}", std::process::id()));
        let deps = root.join("debug/deps");
        std::fs::create_dir_all(&deps).unwrap();
        std::fs::write(root.join("debug/weft-proxy"), b"").unwrap();
        let found = next_to(&deps.join("e2e-0123"));
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(found, Some(root.join("debug/weft-proxy")));
    }

    #[test]
    fn explicit_path_must_exist() {
        let err = locate(Some(Path::new("/nonexistent/weft-proxy")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/weft-proxy"), "{err}");
    }
}
