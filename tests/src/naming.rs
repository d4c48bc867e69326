//! Names of instances and of what they create. Every namespace of an instance starts with the
//! instance name, and every instance name starts with `wt`, so `down` can find leftovers.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::TestbedError;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique among concurrently running processes: `wt<pid in hex>-<counter>`.
pub fn fresh_instance() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("wt{:x}-{n}", std::process::id())
}

/// The pid embedded in a name made by [`fresh_instance`].
pub fn pid_of_fresh_instance(instance: &str) -> Option<i32> {
    let (pid, n) = instance.strip_prefix("wt")?.split_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    i32::from_str_radix(pid, 16).ok()
}

/// A user-chosen name (CLI `--name`), prefixed with `wt-` unless it already starts with `wt`.
pub fn named_instance(name: &str) -> Result<String, TestbedError> {
    let valid = (1..=40).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return Err(TestbedError::InstanceName(name.to_string()));
    }
    Ok(if name.starts_with("wt") {
        name.to_string()
    } else {
        format!("wt-{name}")
    })
}

pub fn node_netns(instance: &str) -> String {
    format!("{instance}-node")
}

pub fn pod_netns(instance: &str, seq: u32) -> String {
    format!("{instance}-p{seq}")
}

/// The node end of a pod's veth pair; it lives only in the node namespace, so it is short and
/// unique per instance, well under the 15-byte interface-name limit.
pub fn node_link(seq: u32) -> String {
    format!("v{seq}")
}

/// The instance a namespace belongs to, if it is one of ours.
pub fn instance_of_netns(netns: &str) -> Option<&str> {
    if !netns.starts_with("wt") {
        return None;
    }
    if let Some(instance) = netns.strip_suffix("-node") {
        return Some(instance);
    }
    let (instance, seq) = netns.rsplit_once("-p")?;
    (!seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit())).then_some(instance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_names_are_unique_and_prefixed() {
        let (a, b) = (fresh_instance(), fresh_instance());
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("wt{:x}-", std::process::id())));
        assert_eq!(pid_of_fresh_instance(&a), Some(std::process::id() as i32));
        assert_eq!(pid_of_fresh_instance("wt-demo"), None);
        assert_eq!(pid_of_fresh_instance("wt1f-x"), None);
    }

    #[test]
    fn user_names_are_validated_and_prefixed() {
        assert_eq!(named_instance("demo").unwrap(), "wt-demo");
        assert_eq!(named_instance("wtx").unwrap(), "wtx");
        assert!(named_instance("Demo").is_err());
        assert!(named_instance("").is_err());
        assert!(named_instance("a/b").is_err());
    }

    #[test]
    fn netns_names_map_back_to_instances() {
        let instance = "wt1f-3";
        assert_eq!(instance_of_netns(&node_netns(instance)), Some(instance));
        assert_eq!(instance_of_netns(&pod_netns(instance, 12)), Some(instance));
        assert_eq!(instance_of_netns("wt-demo-p0"), Some("wt-demo"));
        assert_eq!(instance_of_netns("other-node"), None);
        assert_eq!(instance_of_netns("wt1f-3-px"), None);
        assert!(node_link(99999).len() <= 15);
    }
}
