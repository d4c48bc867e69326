//! Removing what instances made: processes, namespaces, /etc/netns files, state. Used by a
//! testbed's own teardown and by `down` for instances whose owner is gone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::TestbedError;
use crate::naming::{self, instance_of_netns};
use crate::netns;
use crate::process::stop_pids;
use crate::state::{InstanceState, STATE_ROOT};

/// Directory `ip netns exec` bind-mounts files from, for one namespace.
pub fn etc_netns_dir(netns: &str) -> PathBuf {
    Path::new("/etc/netns").join(netns)
}

/// Kills whatever still runs in the namespaces, then deletes them and their /etc/netns dirs.
/// Carries on past failures so one stuck namespace does not leave the rest; returns the failures.
pub fn remove_namespaces(namespaces: &[String], grace: Duration) -> Vec<TestbedError> {
    let pids: Vec<i32> = namespaces.iter().flat_map(|ns| netns::pids(ns)).collect();
    if !pids.is_empty() {
        stop_pids(&pids, grace);
    }
    let mut errors = Vec::new();
    for ns in namespaces {
        if let Err(e) = netns::delete(ns) {
            errors.push(e);
        }
        let dir = etc_netns_dir(ns);
        if dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            errors.push(TestbedError::io("removing", dir, e));
        }
    }
    errors
}

/// Which instances `down` removes.
#[derive(Debug, Clone)]
pub enum DownTarget {
    /// One instance, whatever its owner's state.
    Instance(String),
    /// Instances whose owner died without tearing down (detached ones are kept).
    Crashed,
    /// Every `wt*` instance.
    All,
}

/// Removes the targeted instances; returns their names.
pub fn down(target: &DownTarget, state_root: &Path) -> Result<Vec<String>, TestbedError> {
    let mut instances: BTreeSet<String> = netns::list()
        .iter()
        .filter_map(|ns| instance_of_netns(ns).map(str::to_string))
        .collect();
    if let Ok(dir) = std::fs::read_dir(state_root) {
        instances.extend(
            dir.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("wt")),
        );
    }
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for instance in instances {
        let state = InstanceState::load(&state_root.join(&instance)).ok();
        let wanted = match target {
            DownTarget::Instance(name) => *name == instance,
            DownTarget::All => true,
            DownTarget::Crashed => match &state {
                Some(s) => !s.detached && !s.owner.is_alive(),
                // No state yet: either its owner is starting right now (the state directory
                // exists a moment before the file) or died before writing it.
                None => !naming::pid_of_fresh_instance(&instance).is_some_and(pid_alive),
            },
        };
        if !wanted {
            continue;
        }
        errors.extend(remove_instance(&instance, state_root));
        removed.push(instance);
    }
    match errors.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(removed),
    }
}

fn remove_instance(instance: &str, state_root: &Path) -> Vec<TestbedError> {
    let mut namespaces: Vec<String> = netns::list()
        .into_iter()
        .filter(|ns| instance_of_netns(ns) == Some(instance))
        .collect();
    // Pods before the node, so the bridge goes last.
    namespaces.sort_by_key(|ns| ns.ends_with("-node"));
    let mut errors = remove_namespaces(&namespaces, Duration::from_secs(2));
    let dir = state_root.join(instance);
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        errors.push(TestbedError::io("removing", dir, e));
    }
    errors
}

fn pid_alive(pid: i32) -> bool {
    crate::process::start_ticks(pid).is_some()
}

/// The default state root, overridable for tests of this module.
pub fn default_state_root() -> PathBuf {
    PathBuf::from(STATE_ROOT)
}
