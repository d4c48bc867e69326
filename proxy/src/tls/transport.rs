//! The proxy-to-proxy transport over mTLS, named by ALPN:
//! - `weft.h2/1` ([`Transport::H2`]): one HTTP/2 connection per peer proxy carrying every HTTP
//!   request to it, whatever the app port; each request names its app port in `weft-dst-port`
//!   and, when the app spoke HTTP/1, its version in `weft-orig-proto` (the far side restores it);
//! - `weft.tcp/1` ([`Transport::Tcp`]): one connection per client connection, starting with a
//!   [`TransportHeader`] (app port, and whether the bytes are opaque or HTTP/1 — used for
//!   HTTP/1 upgrades such as WebSocket, which cannot ride HTTP/2), then the client's bytes.

use std::time::Duration;

use http::HeaderName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The app port an HTTP request over the h2 transport is for.
pub static DST_PORT: HeaderName = HeaderName::from_static("weft-dst-port");
/// The HTTP version the client app spoke ("HTTP/1.1", "HTTP/1.0"), when not HTTP/2.
pub static ORIG_PROTO: HeaderName = HeaderName::from_static("weft-orig-proto");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    H2,
    Tcp,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::H2, Transport::Tcp];

    pub fn alpn(self) -> &'static [u8] {
        match self {
            Transport::H2 => b"weft.h2/1",
            Transport::Tcp => b"weft.tcp/1",
        }
    }

    pub fn from_alpn(alpn: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.alpn() == alpn)
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::H2 => "h2",
            Transport::Tcp => "tcp",
        }
    }
}

/// What the bytes after a [`TransportHeader`] are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Copied to the app port as they are.
    Opaque,
    /// An HTTP/1 connection (an upgrade or CONNECT): served as HTTP on the far side.
    Http1,
}

/// The first bytes of a `weft.tcp/1` connection: `WEFT`, version 1, payload, app port (big
/// endian) — 8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportHeader {
    pub port: u16,
    pub payload: Payload,
}

const MAGIC: &[u8; 4] = b"WEFT";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("the peer sent no transport header within {0:?}")]
    Timeout(Duration),
    #[error("reading the transport header failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the transport header is malformed: {0}")]
    Malformed(&'static str),
}

impl TransportHeader {
    pub fn encode(self) -> [u8; HEADER_LEN] {
        let port = self.port.to_be_bytes();
        let payload = match self.payload {
            Payload::Opaque => 0,
            Payload::Http1 => 1,
        };
        [
            MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], VERSION, payload, port[0], port[1],
        ]
    }

    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, HeaderError> {
        if &bytes[..4] != MAGIC {
            return Err(HeaderError::Malformed("no WEFT magic"));
        }
        if bytes[4] != VERSION {
            return Err(HeaderError::Malformed("unknown version"));
        }
        let payload = match bytes[5] {
            0 => Payload::Opaque,
            1 => Payload::Http1,
            _ => return Err(HeaderError::Malformed("unknown payload kind")),
        };
        let port = u16::from_be_bytes([bytes[6], bytes[7]]);
        if port == 0 {
            return Err(HeaderError::Malformed("port 0"));
        }
        Ok(TransportHeader { port, payload })
    }

    pub async fn write<W: AsyncWrite + Unpin>(self, io: &mut W) -> std::io::Result<()> {
        io.write_all(&self.encode()).await
    }

    /// Reads the header, waiting at most `timeout` for it.
    pub async fn read<R: AsyncRead + Unpin>(
        io: &mut R,
        timeout: Duration,
    ) -> Result<Self, HeaderError> {
        let mut bytes = [0u8; HEADER_LEN];
        tokio::time::timeout(timeout, io.read_exact(&mut bytes))
            .await
            .map_err(|_| HeaderError::Timeout(timeout))??;
        Self::decode(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_names_round_trip() {
        for t in Transport::ALL {
            assert_eq!(Transport::from_alpn(t.alpn()), Some(t));
        }
        assert_eq!(Transport::from_alpn(b"h2"), None);
    }

    #[tokio::test]
    async fn header_round_trips() {
        for header in [
            TransportHeader {
                port: 8080,
                payload: Payload::Opaque,
            },
            TransportHeader {
                port: 65535,
                payload: Payload::Http1,
            },
        ] {
            let (mut a, mut b) = tokio::io::duplex(64);
            header.write(&mut a).await.unwrap();
            let read = TransportHeader::read(&mut b, Duration::from_secs(1))
                .await
                .unwrap();
            assert_eq!(read, header);
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        let good = TransportHeader {
            port: 80,
            payload: Payload::Opaque,
        }
        .encode();
        let mut bad = good;
        bad[0] = b'X';
        assert!(TransportHeader::decode(&bad).is_err());
        let mut bad = good;
        bad[4] = 2;
        assert!(TransportHeader::decode(&bad).is_err());
        let mut bad = good;
        bad[5] = 9;
        assert!(TransportHeader::decode(&bad).is_err());
        let mut bad = good;
        bad[6] = 0;
        bad[7] = 0;
        assert!(TransportHeader::decode(&bad).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out() {
        let (_a, mut b) = tokio::io::duplex(64);
        let err = TransportHeader::read(&mut b, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, HeaderError::Timeout(_)), "{err}");
    }
}
