//! Why `weft-proxy init` failed, each as one line naming the cause.

/// A failure of `weft-proxy init`.
#[derive(thiserror::Error, Debug)]
pub enum InitError {
    /// The iptables tool is not installed or not on PATH.
    #[error("{tool} not found on PATH: install iptables (Debian: apt-get install iptables)")]
    ToolMissing { tool: String },

    /// The kernel refused: the process lacks the capabilities to program netfilter.
    #[error(
        "{tool} was denied permission ({detail}): weft-proxy init needs CAP_NET_ADMIN and CAP_NET_RAW (run it as root or grant NET_ADMIN and NET_RAW to the init container)"
    )]
    NotPermitted { tool: String, detail: String },

    /// The tool could not be started for another reason.
    #[error("could not run {tool}: {source}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },

    /// The tool ran and failed.
    #[error("`{command}` failed with {status}: {stderr}")]
    ToolFailed {
        command: String,
        status: String,
        stderr: String,
    },

    /// `auto` found neither backend usable; both reasons are given.
    #[error("no usable iptables backend: nft: {nft}; legacy: {legacy}")]
    NoBackend {
        nft: Box<InitError>,
        legacy: Box<InitError>,
    },

    /// `--ipv6 on` but this namespace cannot take IPv6 rules.
    #[error("--ipv6 on, but {reason}")]
    Ipv6Unavailable { reason: String },
}
