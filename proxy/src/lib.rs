//! weft-proxy: Weft's per-pod sidecar proxy.

pub mod init;
