//! Network namespaces and links, made with iproute2: the node namespace with its bridge, and
//! one namespace per pod joined to the bridge by a veth pair. Nothing here touches the host's
//! own namespace: links are created inside the node namespace and moved straight into the pod.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

use crate::address::{BRIDGE_IP, POD_PREFIX_LEN, SERVICE_CIDR};
use crate::error::TestbedError;
use crate::process::run_checked;

const IP_TIMEOUT: Duration = Duration::from_secs(10);
pub const BRIDGE: &str = "br0";

fn ip(args: &[&str]) -> Result<(), TestbedError> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run_checked(cmd, IP_TIMEOUT).map(|_| ())
}

/// How replies to DNAT'd connections find their way back through the node's conntrack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnPath {
    /// br_netfilter shows bridged frames to iptables: a server's reply to a client on the same
    /// bridge is un-NATed on the way, and servers see the client's own address.
    BridgeNetfilter,
    /// Without br_netfilter (module not loaded, and loading it would change the host's bridges
    /// too), DNAT'd connections are masqueraded so replies come back through the node.
    Masquerade,
}

/// The node namespace: loopback, a bridge holding the pods' gateway address, forwarding on.
pub fn create_node(netns: &str) -> Result<ReturnPath, TestbedError> {
    ip(&["netns", "add", netns])?;
    ip(&["-n", netns, "link", "set", "lo", "up"])?;
    ip(&["-n", netns, "link", "add", BRIDGE, "type", "bridge"])?;
    let gateway = format!("{BRIDGE_IP}/{POD_PREFIX_LEN}");
    ip(&["-n", netns, "addr", "add", &gateway, "dev", BRIDGE])?;
    ip(&["-n", netns, "link", "set", BRIDGE, "up"])?;
    // ClusterIPs are reachable from the node itself (the webhook's caller, exec_node), as on a
    // Kubernetes node: the route gets the connection to the nat OUTPUT chain, which DNATs it.
    ip(&["-n", netns, "route", "add", SERVICE_CIDR, "dev", BRIDGE])?;
    in_netns(netns, || {
        write_sysctl("/proc/sys/net/ipv4/ip_forward")?;
        let bridge_nf = "/proc/sys/net/bridge/bridge-nf-call-iptables";
        if !Path::new(bridge_nf).exists() {
            return Ok(ReturnPath::Masquerade);
        }
        write_sysctl(bridge_nf)?;
        Ok(ReturnPath::BridgeNetfilter)
    })
    .and_then(|r| {
        r.map_err(|reason| TestbedError::Netns {
            netns: netns.to_string(),
            reason,
        })
    })
}

fn write_sysctl(path: &str) -> Result<(), String> {
    std::fs::write(path, "1").map_err(|e| format!("setting {path}: {e}"))
}

/// A pod namespace with `lo` up and `eth0` at `ip`, its peer `node_link` on the node's bridge.
pub fn create_pod(
    node: &str,
    netns: &str,
    node_link: &str,
    addr: Ipv4Addr,
) -> Result<(), TestbedError> {
    ip(&["netns", "add", netns])?;
    ip(&["-n", netns, "link", "set", "lo", "up"])?;
    ip(&[
        "-n", node, "link", "add", node_link, "type", "veth", "peer", "name", "eth0", "netns",
        netns,
    ])?;
    ip(&["-n", node, "link", "set", node_link, "master", BRIDGE])?;
    // Hairpin: a pod calling its own Service may be DNAT'd back to itself, and the bridge must
    // then send the frame out of the port it came in on.
    ip(&[
        "-n",
        node,
        "link",
        "set",
        node_link,
        "type",
        "bridge_slave",
        "hairpin",
        "on",
    ])?;
    ip(&["-n", node, "link", "set", node_link, "up"])?;
    // The MAC follows the address: a pod that takes over a released address keeps the node's
    // neighbour entry valid. With a fresh random MAC the node kept sending to the old one until
    // its entry expired (~30 s), and probes from the node to the new pod timed out meanwhile.
    let [a, b, c, d] = addr.octets();
    let mac = format!("02:57:{a:02x}:{b:02x}:{c:02x}:{d:02x}");
    ip(&["-n", netns, "link", "set", "eth0", "address", &mac])?;
    let cidr = format!("{addr}/{POD_PREFIX_LEN}");
    ip(&["-n", netns, "addr", "add", &cidr, "dev", "eth0"])?;
    ip(&["-n", netns, "link", "set", "eth0", "up"])?;
    ip(&[
        "-n",
        netns,
        "route",
        "add",
        "default",
        "via",
        &BRIDGE_IP.to_string(),
    ])
}

/// Deletes a namespace; its veth pair goes with it. Absent namespaces are not an error.
pub fn delete(netns: &str) -> Result<(), TestbedError> {
    if !exists(netns) {
        return Ok(());
    }
    ip(&["netns", "delete", netns])
}

pub fn exists(netns: &str) -> bool {
    Path::new("/run/netns").join(netns).exists()
}

/// Names of all named network namespaces.
pub fn list() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Pids of the processes living in a namespace (`ip netns pids`).
pub fn pids(netns: &str) -> Vec<i32> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "pids", netns]);
    run_checked(cmd, IP_TIMEOUT)
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `f` on a fresh thread that has joined the namespace, so sockets it opens live there;
/// the calling thread's namespace is left alone.
pub fn in_netns<T, F>(netns: &str, f: F) -> Result<T, TestbedError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = Path::new("/run/netns").join(netns);
    let file = File::open(&path).map_err(|e| TestbedError::Netns {
        netns: netns.to_string(),
        reason: format!("opening {}: {e}", path.display()),
    })?;
    let name = netns.to_string();
    thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| TestbedError::Netns {
            netns: name,
            reason: format!("setns: {e}"),
        })?;
        Ok(f())
    })
    .join()
    .map_err(|_| TestbedError::Netns {
        netns: netns.to_string(),
        reason: "the thread working inside it panicked".into(),
    })?
}
