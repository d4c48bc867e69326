//! Cluster DNS without a DNS server: per-pod /etc/hosts and /etc/resolv.conf, which
//! `ip netns exec` bind-mounts from /etc/netns/<netns>/ over the host's.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// A DNS name set: a Service (ClusterIP, or every pod for a headless one) or a pod's own
/// `<hostname>.<subdomain>` record.
#[derive(Debug, Clone)]
pub struct ServiceRecord {
    pub name: String,
    pub namespace: String,
    pub addresses: Vec<Ipv4Addr>,
}

/// The pod the file is written for.
#[derive(Debug, Clone)]
pub struct PodRecord<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub ip: Ipv4Addr,
}

pub fn hosts_file(pod: &PodRecord<'_>, records: &[ServiceRecord]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# written by weft-testbed for pod {}/{}",
        pod.namespace, pod.name
    );
    out.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let _ = writeln!(out, "{}\t{}", pod.ip, pod.name);
    for record in records {
        let mut names = vec![
            format!("{}.{}.svc.cluster.local", record.name, record.namespace),
            format!("{}.{}.svc", record.name, record.namespace),
            format!("{}.{}", record.name, record.namespace),
        ];
        // Short names resolve only within the pod's own namespace, as the search path would do.
        if record.namespace == pod.namespace {
            names.push(record.name.clone());
        }
        let names = names.join(" ");
        for ip in &record.addresses {
            let _ = writeln!(out, "{ip}\t{names}");
        }
    }
    out
}

pub fn resolv_conf(namespace: &str) -> String {
    // The nameserver is loopback with nothing listening: names outside the cluster fail fast.
    format!(
        "# written by weft-testbed\nsearch {namespace}.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.0.1\noptions ndots:5 timeout:1 attempts:1\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodRecord<'static> {
        PodRecord {
            name: "web-abc-0",
            namespace: "shop",
            ip: Ipv4Addr::new(198, 18, 0, 9),
        }
    }

    #[test]
    fn same_namespace_services_get_short_names() {
        let text = hosts_file(
            &pod(),
            &[ServiceRecord {
                name: "catalog".into(),
                namespace: "shop".into(),
                addresses: vec![Ipv4Addr::new(198, 19, 0, 1)],
            }],
        );
        assert!(text.contains("198.18.0.9\tweb-abc-0\n"));
        assert!(text.contains(
            "198.19.0.1\tcatalog.shop.svc.cluster.local catalog.shop.svc catalog.shop catalog\n"
        ));
        assert!(text.contains("127.0.0.1\tlocalhost\n"));
    }

    #[test]
    fn other_namespace_services_only_get_qualified_names() {
        let text = hosts_file(
            &pod(),
            &[ServiceRecord {
                name: "pricing".into(),
                namespace: "default".into(),
                addresses: vec![Ipv4Addr::new(198, 19, 0, 2)],
            }],
        );
        assert!(text.contains(
            "198.19.0.2\tpricing.default.svc.cluster.local pricing.default.svc pricing.default\n"
        ));
    }

    #[test]
    fn headless_services_list_every_pod() {
        let addrs = vec![Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 3)];
        let text = hosts_file(
            &pod(),
            &[ServiceRecord {
                name: "db".into(),
                namespace: "shop".into(),
                addresses: addrs,
            }],
        );
        assert!(text.contains("198.18.0.2\tdb.shop.svc.cluster.local"));
        assert!(text.contains("198.18.0.3\tdb.shop.svc.cluster.local"));
    }

    #[test]
    fn resolv_conf_searches_the_pod_namespace_first() {
        let text = resolv_conf("shop");
        assert!(text.contains("search shop.svc.cluster.local svc.cluster.local cluster.local\n"));
    }
}
