//! The two IP families, each programmed through its own iptables tool.

use std::fmt;

/// An IP family: IPv4 rules go through `iptables-*`, IPv6 rules through `ip6tables-*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Stem of the tool names for this family (`iptables`, `ip6tables`).
    pub fn tool_stem(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    /// The loopback network, whose traffic never leaves the pod and so is never redirected.
    pub fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}
