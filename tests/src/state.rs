//! What an instance records about itself in /run/weft-testbed/<instance>/state.json, so other
//! invocations (`exec`, `logs`, `down`) can find its pods, and `down` can tell a live owner
//! from a crashed one.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::TestbedError;
use crate::lookup::{PodKey, find_pod};
use crate::process::start_ticks;

pub const STATE_ROOT: &str = "/run/weft-testbed";
pub const STATE_FILE: &str = "state.json";

/// The process that owns an instance; pid plus start time, so a reused pid is not mistaken for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Owner {
    pub pid: i32,
    pub start_ticks: Option<u64>,
}

impl Owner {
    pub fn current() -> Owner {
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        Owner {
            pid,
            start_ticks: start_ticks(pid),
        }
    }

    pub fn is_alive(&self) -> bool {
        match start_ticks(self.pid) {
            Some(ticks) => self.start_ticks.is_none_or(|recorded| recorded == ticks),
            None => false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceState {
    pub instance: String,
    pub owner: Owner,
    /// Left up on purpose by `up --detach`: not a crash leftover.
    pub detached: bool,
    pub node_netns: String,
    pub pods: Vec<PodState>,
    pub services: Vec<ServiceState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodState {
    pub name: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    pub netns: String,
    pub labels: BTreeMap<String, String>,
    pub owner: Option<String>,
    pub ready: bool,
    pub containers: Vec<ContainerState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub name: String,
    pub init: bool,
    pub pid: Option<i32>,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceState {
    pub name: String,
    pub namespace: String,
    /// None for headless services.
    pub cluster_ip: Option<Ipv4Addr>,
    pub ports: Vec<u16>,
}

impl PodKey for PodState {
    fn pod_name(&self) -> &str {
        &self.name
    }
    fn pod_namespace(&self) -> &str {
        &self.namespace
    }
    fn pod_owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }
}

impl InstanceState {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_FILE)
    }

    /// Written to a temporary file and renamed, so readers never see half a file.
    pub fn save(&self, state_dir: &Path) -> Result<(), TestbedError> {
        let path = Self::path(state_dir);
        let text = serde_json::to_string_pretty(self).map_err(|e| TestbedError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let tmp = state_dir.join(".state.json.tmp");
        std::fs::write(&tmp, text).map_err(|e| TestbedError::io("writing", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| TestbedError::io("renaming into place", &path, e))
    }

    /// A pod of this instance, looked up as `Testbed::pod` does.
    pub fn pod(&self, query: &str) -> Result<&PodState, TestbedError> {
        find_pod(&self.pods, query)
    }

    pub fn load(state_dir: &Path) -> Result<InstanceState, TestbedError> {
        let path = Self::path(state_dir);
        let text =
            std::fs::read_to_string(&path).map_err(|e| TestbedError::io("reading", &path, e))?;
        serde_json::from_str(&text).map_err(|e| TestbedError::State {
            path,
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_liveness() {
        assert!(Owner::current().is_alive());
        let mut reused = Owner::current();
        reused.start_ticks = reused.start_ticks.map(|t| t + 1);
        assert!(!reused.is_alive());
        assert!(
            !Owner {
                pid: i32::MAX,
                start_ticks: None
            }
            .is_alive()
        );
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = std::env::temp_dir().join(format!("weft-testbed-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let state = InstanceState {
            instance: "wt1-0".into(),
            owner: Owner::current(),
            detached: false,
            node_netns: "wt1-0-node".into(),
            pods: vec![PodState {
                name: "a".into(),
                namespace: "default".into(),
                ip: Ipv4Addr::new(198, 18, 0, 2),
                netns: "wt1-0-p0".into(),
                labels: BTreeMap::new(),
                owner: None,
                ready: true,
                containers: vec![],
            }],
            services: vec![],
        };
        state.save(&dir).unwrap();
        let loaded = InstanceState::load(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(loaded.pods[0].ip, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(loaded.owner, state.owner);
    }
}
