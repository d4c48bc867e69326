//! Where the built binaries (`weft-proxy`, the control plane's) are: an explicit path, an
//! environment variable (`WEFT_PROXY_BIN`, `WEFT_DISCOVERY_BIN`, ...), or beside the running
//! executable (test binaries live one level down, in target/<profile>/deps).

use std::path::{Path, PathBuf};

use crate::error::TestbedError;

pub const ENV: &str = "WEFT_PROXY_BIN";

/// A binary the testbed runs in place of an image: the image's repository basename is the
/// binary's name and its package's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltBinary {
    pub name: &'static str,
    /// Environment variable that overrides where it is.
    pub env: &'static str,
}

pub const PROXY: BuiltBinary = BuiltBinary {
    name: "weft-proxy",
    env: ENV,
};
pub const DISCOVERY: BuiltBinary = BuiltBinary {
    name: "weft-discovery",
    env: "WEFT_DISCOVERY_BIN",
};
pub const IDENTITY: BuiltBinary = BuiltBinary {
    name: "weft-identity",
    env: "WEFT_IDENTITY_BIN",
};
pub const INJECTOR: BuiltBinary = BuiltBinary {
    name: "weft-injector",
    env: "WEFT_INJECTOR_BIN",
};
/// Every image the testbed maps to a binary of this build.
pub const BUILT: [BuiltBinary; 4] = [PROXY, DISCOVERY, IDENTITY, INJECTOR];

pub fn locate_binary(bin: BuiltBinary, explicit: Option<&Path>) -> Result<PathBuf, TestbedError> {
    if let Some(path) = explicit {
        return check(
            path.to_path_buf(),
            "TestbedOptions::proxy_bin or --proxy-bin",
        );
    }
    if let Some(path) = std::env::var_os(bin.env) {
        return check(PathBuf::from(path), bin.env);
    }
    let exe = std::env::current_exe()
        .map_err(|e| TestbedError::ProxyBinary(format!("finding the running executable: {e}")))?;
    next_to(&exe, bin.name).ok_or_else(|| {
        TestbedError::ProxyBinary(format!(
            "no {name} beside {} or its parent directories; build it (cargo build -p {name}) or set {}",
            exe.display(),
            bin.env,
            name = bin.name,
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

/// Whether a user other than root can run `path`: every directory above it searchable by others
/// and the file executable by others. The proxy runs as UID 2102, and a checkout under a private
/// home directory (/root is 0700) would otherwise fail only when the sidecar starts.
pub fn runnable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let others_x = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    };
    others_x(path)
        && path
            .ancestors()
            .skip(1)
            .filter(|d| !d.as_os_str().is_empty())
            .all(others_x)
}

/// A copy of the binary in `dir` (created 0755) that any user can run.
pub fn runnable_copy(path: &Path, dir: &Path) -> Result<PathBuf, TestbedError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| TestbedError::io("creating", dir, e))?;
    let copy = dir.join(
        path.file_name()
            .unwrap_or(std::ffi::OsStr::new("weft-proxy")),
    );
    std::fs::copy(path, &copy).map_err(|e| TestbedError::io("copying the binary to", &copy, e))?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| TestbedError::io("making runnable", &copy, e))?;
    Ok(copy)
}

/// The first `name` in the executable's directory or up to two levels above it.
fn next_to(exe: &Path, name: &str) -> Option<PathBuf> {
    exe.ancestors()
        .skip(1)
        .take(3)
        .map(|dir| dir.join(name))
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
        let found = next_to(&deps.join("e2e-0123"), "weft-proxy");
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(found, Some(root.join("debug/weft-proxy")));
    }

    #[test]
    fn private_directories_make_a_binary_unreachable() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("weft-proxy-perm-{}", std::process::id()));
        let private = root.join("private");
        std::fs::create_dir_all(&private).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = private.join("weft-proxy");
        std::fs::write(&bin, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
        let open = runnable_by_others(&bin);
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let closed = runnable_by_others(&bin);
        let copy = runnable_copy(&bin, &root.join("bin")).unwrap();
        let copy_ok = runnable_by_others(&copy);
        std::fs::remove_dir_all(&root).unwrap();
        assert!(
            open && !closed && copy_ok,
            "open {open}, closed {closed}, copy {copy_ok}"
        );
    }

    #[test]
    fn explicit_path_must_exist() {
        let err = locate_binary(PROXY, Some(Path::new("/nonexistent/weft-proxy")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/weft-proxy"), "{err}");
    }
}
