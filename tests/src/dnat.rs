//! kube-proxy-style service rules for the node namespace, rendered as one iptables-restore input
//! that replaces the node's nat and filter tables atomically (the node namespace is ours alone).

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// One service port and where it leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRule {
    /// `namespace/name:port-name`, kept as a rule comment for whoever reads `iptables-save`.
    pub label: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

/// Marks connections a pod makes to its own ClusterIP and lands on itself: those must be
/// masqueraded, because a pod drops packets that arrive with its own address as the source.
const HAIRPIN_MARK: &str = "0x4000/0x4000";

/// `masquerade_all`: masquerade every DNAT'd connection, for nodes without br_netfilter, where
/// a server would otherwise answer a same-bridge client directly and bypass the un-NAT.
pub fn render(rules: &[ServiceRule], masquerade_all: bool) -> String {
    let mut nat_chains = String::new();
    let mut nat_rules = String::new();
    let mut filter_rules = String::new();
    for (i, rule) in rules.iter().enumerate() {
        let proto = &rule.protocol;
        let matcher = format!(
            "-d {}/32 -p {proto} -m {proto} --dport {} -m comment --comment \"{}\"",
            rule.cluster_ip, rule.port, rule.label
        );
        if rule.endpoints.is_empty() {
            // As kube-proxy: refuse at once rather than let clients time out.
            let _ = writeln!(
                filter_rules,
                "-A WT-NO-ENDPOINTS {matcher} -j REJECT --reject-with icmp-port-unreachable"
            );
            continue;
        }
        let svc_chain = format!("WT-SVC-{i}");
        let _ = writeln!(nat_chains, ":{svc_chain} - [0:0]");
        let _ = writeln!(nat_rules, "-A WT-SERVICES {matcher} -j {svc_chain}");
        let n = rule.endpoints.len();
        for (j, (ip, target)) in rule.endpoints.iter().enumerate() {
            let sep_chain = format!("WT-SEP-{i}-{j}");
            let _ = writeln!(nat_chains, ":{sep_chain} - [0:0]");
            // Endpoint j of n is taken with probability 1/(n-j) among those left: an even spread.
            if j + 1 < n {
                let probability = 1.0 / (n - j) as f64;
                let _ = writeln!(
                    nat_rules,
                    "-A {svc_chain} -m statistic --mode random --probability {probability:.10} -j {sep_chain}"
                );
            } else {
                let _ = writeln!(nat_rules, "-A {svc_chain} -j {sep_chain}");
            }
            let _ = writeln!(
                nat_rules,
                "-A {sep_chain} -s {ip}/32 -j MARK --set-xmark {HAIRPIN_MARK}"
            );
            let _ = writeln!(
                nat_rules,
                "-A {sep_chain} -p {proto} -m {proto} -j DNAT --to-destination {ip}:{target}"
            );
        }
    }
    let mut out = String::new();
    out.push_str("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n");
    out.push_str(":WT-SERVICES - [0:0]\n:WT-POSTROUTING - [0:0]\n");
    out.push_str(&nat_chains);
    out.push_str("-A PREROUTING -j WT-SERVICES\n-A OUTPUT -j WT-SERVICES\n-A POSTROUTING -j WT-POSTROUTING\n");
    let _ = writeln!(
        out,
        "-A WT-POSTROUTING -m mark --mark {HAIRPIN_MARK} -j MASQUERADE"
    );
    if masquerade_all {
        out.push_str("-A WT-POSTROUTING -m conntrack --ctstate DNAT -j MASQUERADE\n");
    }
    out.push_str(&nat_rules);
    out.push_str("COMMIT\n");
    out.push_str("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:WT-NO-ENDPOINTS - [0:0]\n");
    out.push_str("-A INPUT -j WT-NO-ENDPOINTS\n-A FORWARD -j WT-NO-ENDPOINTS\n-A OUTPUT -j WT-NO-ENDPOINTS\n");
    out.push_str(&filter_rules);
    out.push_str("COMMIT\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(endpoints: Vec<(Ipv4Addr, u16)>) -> ServiceRule {
        ServiceRule {
            label: "default/catalog:http".into(),
            cluster_ip: Ipv4Addr::new(198, 19, 0, 1),
            port: 80,
            protocol: "tcp".into(),
            endpoints,
        }
    }

    #[test]
    fn three_endpoints_are_spread_evenly() {
        let eps = (2..5)
            .map(|d| (Ipv4Addr::new(198, 18, 0, d), 8080))
            .collect();
        let text = render(&[rule(eps)], false);
        assert!(text.contains(
            "-A WT-SERVICES -d 198.19.0.1/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/catalog:http\" -j WT-SVC-0\n"
        ));
        assert!(text.contains(
            "-A WT-SVC-0 -m statistic --mode random --probability 0.3333333333 -j WT-SEP-0-0\n"
        ));
        assert!(text.contains(
            "-A WT-SVC-0 -m statistic --mode random --probability 0.5000000000 -j WT-SEP-0-1\n"
        ));
        assert!(text.contains("-A WT-SVC-0 -j WT-SEP-0-2\n"));
        assert!(
            text.contains("-A WT-SEP-0-2 -p tcp -m tcp -j DNAT --to-destination 198.18.0.4:8080\n")
        );
        assert!(
            text.contains("-A WT-SEP-0-0 -s 198.18.0.2/32 -j MARK --set-xmark 0x4000/0x4000\n")
        );
        // Every chain used is declared.
        for chain in ["WT-SVC-0", "WT-SEP-0-0", "WT-SEP-0-1", "WT-SEP-0-2"] {
            assert!(text.contains(&format!(":{chain} - [0:0]\n")), "{chain}");
        }
        assert_eq!(text.matches("COMMIT\n").count(), 2);
    }

    #[test]
    fn no_endpoints_rejects_in_filter() {
        let text = render(&[rule(vec![])], false);
        assert!(!text.contains("WT-SVC-0"));
        assert!(text.contains("-A WT-NO-ENDPOINTS -d 198.19.0.1/32 -p tcp -m tcp --dport 80"));
        assert!(text.contains("-j REJECT --reject-with icmp-port-unreachable"));
    }

    #[test]
    fn empty_rule_set_still_replaces_tables() {
        let text = render(&[], false);
        assert!(text.starts_with("*nat\n"));
        assert!(text.contains("-A PREROUTING -j WT-SERVICES\n"));
        assert!(text.contains("-A WT-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE\n"));
        assert!(!text.contains("--ctstate DNAT"));
    }

    #[test]
    fn without_bridge_netfilter_every_dnat_is_masqueraded() {
        let text = render(&[], true);
        assert!(text.contains("-A WT-POSTROUTING -m conntrack --ctstate DNAT -j MASQUERADE\n"));
    }
}
