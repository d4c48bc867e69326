//! End-to-end tests: real pods (network namespaces), real iptables, real clients.
