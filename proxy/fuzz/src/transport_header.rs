//! The `weft.tcp/1` transport header (`weft_proxy::tls::transport::TransportHeader`): the 8 bytes
//! a peer proxy sends first, naming the app port and what follows.
//!
//! Holds for any bytes: a header that decodes encodes back to the same 8 bytes; reading it from a
//! connection (in any segments) gives what decoding the first 8 bytes gives, and fails cleanly
//! when fewer arrive; a header built from any port but 0 and either payload round-trips.

use std::time::Duration;

use weft_proxy::tls::transport::{HeaderError, Payload, TransportHeader};

use crate::runtime::block_on;
use crate::scripted_io::ScriptedIo;

/// Never reached: the scripted peer's reads are always ready.
const TIMEOUT: Duration = Duration::from_secs(3600);

pub fn check(data: &[u8]) {
    let decoded = data
        .first_chunk::<8>()
        .map(|bytes| (bytes, TransportHeader::decode(bytes)));
    if let Some((bytes, Ok(header))) = &decoded {
        assert_eq!(
            &header.encode(),
            *bytes,
            "a decoded header re-encodes differently"
        );
    }
    for mut io in [ScriptedIo::whole(data), ScriptedIo::hashed(data)] {
        let read = block_on(TransportHeader::read(&mut io, TIMEOUT));
        match (&decoded, read) {
            (Some((_, Ok(expected))), Ok(header)) => assert_eq!(header, *expected),
            (Some((_, Err(HeaderError::Malformed(a)))), Err(HeaderError::Malformed(b))) => {
                assert_eq!(*a, b)
            }
            (None, Err(HeaderError::Io(err))) => {
                assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof)
            }
            (expected, read) => panic!(
                "reading gave {read:?} where decoding gave {:?}",
                expected.as_ref().map(|(_, d)| d)
            ),
        }
    }
    // Any header the proxy can send, from the input's bytes.
    if let [a, b, kind, ..] = *data {
        let port = u16::from_be_bytes([a, b]);
        let payload = if kind & 1 == 0 {
            Payload::Opaque
        } else {
            Payload::Http1
        };
        let header = TransportHeader { port, payload };
        match TransportHeader::decode(&header.encode()) {
            Ok(back) => assert_eq!(back, header),
            Err(err) => assert_eq!(port, 0, "header {header:?} does not round-trip: {err}"),
        }
    }
}
