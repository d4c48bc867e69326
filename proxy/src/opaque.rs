//! Opaque TCP: connect to the destination and copy bytes both ways. When one side finishes
//! sending, the other side's write half is shut down (half-close), so protocols that signal the
//! end of a request with EOF keep working.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::connect::{ConnectError, connect};

#[derive(Debug, thiserror::Error)]
pub enum OpaqueError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// mTLS to a meshed endpoint's proxy could not be set up.
    #[error("{0}")]
    Mtls(String),
    #[error("copying between the client and {target} failed: {source}")]
    Copy {
        target: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Per-direction copy buffer. tokio's default (8 KiB) costs a read and a write syscall per 8 KiB,
/// which capped bulk transfers well below a direct connection (docs/benchmark.md, opaque_copy).
const COPY_BUF: usize = 64 * 1024;

/// Bytes copied by a finished opaque connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copied {
    pub to_upstream: u64,
    pub to_client: u64,
}

/// Connects to `target` (telling `connected` whether that worked) and copies until both sides
/// are done.
pub async fn forward<I>(
    client: &mut I,
    target: SocketAddr,
    connect_timeout: Duration,
    connected: impl FnOnce(bool),
) -> Result<Copied, OpaqueError>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let upstream = connect(target, connect_timeout).await;
    connected(upstream.is_ok());
    let mut upstream = upstream?;
    let (to_upstream, to_client) =
        tokio::io::copy_bidirectional_with_sizes(client, &mut upstream, COPY_BUF, COPY_BUF)
            .await
            .map_err(|source| OpaqueError::Copy { target, source })?;
    Ok(Copied {
        to_upstream,
        to_client,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn copies_both_ways_with_half_close() {
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = backend.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = backend.accept().await.unwrap();
            let mut request = Vec::new();
            // Reads to EOF: only works if the proxy forwards the client's half-close.
            sock.read_to_end(&mut request).await.unwrap();
            sock.write_all(b"reply:").await.unwrap();
            sock.write_all(&request).await.unwrap();
        });
        let (mut client, mut proxy_side) = tokio::io::duplex(1024);
        let proxy = tokio::spawn(async move {
            forward(&mut proxy_side, target, Duration::from_secs(5), |_| ()).await
        });
        client.write_all(b"ping").await.unwrap();
        client.shutdown().await.unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut reply))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply, b"reply:ping");
        let copied = proxy.await.unwrap().unwrap();
        assert_eq!(
            copied,
            Copied {
                to_upstream: 4,
                to_client: 10
            }
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn refused_upstream_is_a_connect_error() {
        let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = gone.local_addr().unwrap();
        drop(gone);
        let (_client, mut proxy_side) = tokio::io::duplex(64);
        let err = forward(&mut proxy_side, target, Duration::from_secs(5), |_| ())
            .await
            .unwrap_err();
        assert!(
            matches!(err, OpaqueError::Connect(ConnectError::Failed { .. })),
            "{err}"
        );
    }
}
