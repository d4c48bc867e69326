//! The ClientHello peek (`weft_proxy::tls::client_hello::peek`): reading enough of a TLS
//! connection to see its SNI and ALPN without consuming anything.
//!
//! Holds for any bytes, however they are split into reads: every byte read comes back, in order;
//! whether a hello was found, and what it says, does not depend on the segmentation; a hello's
//! server name is a DNS name rustls accepts, and one in the mesh's SNI form names a valid identity.

use std::time::Duration;

use bytes::Bytes;
use weft_proxy::tls::client_hello::{Peeked, peek};
use weft_proxy::tls::transport::Transport;
use weft_tls::SpiffeId;
use weft_tls::rustls::pki_types::ServerName;

use crate::runtime::block_on;
use crate::scripted_io::ScriptedIo;

/// Never reached: the scripted peer's reads are always ready.
const TIMEOUT: Duration = Duration::from_secs(3600);
/// Detection reads at least the first three bytes before the peek starts.
const DETECTED: usize = 3;

/// The peek gives up on a hello longer than this (20 KiB); around that size where the reads
/// ended decides whether the hello completed first, which is fine for a limit.
const PEEK_LIMIT: usize = 20 * 1024;

pub fn check(data: &[u8]) {
    let whole = peek_after(data, 0, ScriptedIo::whole);
    let split = peek_after(data, DETECTED, ScriptedIo::hashed);
    if data.len() < PEEK_LIMIT {
        assert_eq!(
            whole.hello, split.hello,
            "the hello seen depends on how the bytes were split"
        );
    }
    let Some(hello) = whole.hello else { return };
    if let Some(name) = &hello.server_name {
        assert!(
            ServerName::try_from(name.as_str()).is_ok(),
            "SNI {name:?} is not a server name"
        );
        if let Some(id) = SpiffeId::from_sni_name(name, "cluster.local") {
            assert_eq!(&id.sni_name(), name);
        }
    }
    for protocol in &hello.alpn {
        if let Some(transport) = Transport::from_alpn(protocol) {
            assert_eq!(transport.alpn(), protocol.as_slice());
        }
    }
}

/// Peeks as the proxy does after detection read the first `prefix` bytes; the scripted peer
/// (`io`) sends the rest.
fn peek_after(data: &[u8], prefix: usize, io: fn(&[u8]) -> ScriptedIo) -> Peeked {
    let prefix = prefix.min(data.len());
    let mut rest = io(&data[prefix..]);
    let peeked = block_on(peek(
        &mut rest,
        Bytes::copy_from_slice(&data[..prefix]),
        TIMEOUT,
    ))
    .expect("a scripted peer never fails a read");
    assert!(
        data.starts_with(&peeked.bytes),
        "the peek must return every byte it read, in order"
    );
    assert_eq!(peeked.bytes.len(), prefix + rest.consumed());
    peeked
}
