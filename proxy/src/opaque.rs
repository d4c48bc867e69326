//! Opaque TCP: connect to the destination and copy bytes both ways. When one side finishes
//! sending, the other side's write half is shut down (half-close), so protocols that signal the
//! end of a request with EOF keep working. When no byte has moved either way for the idle
//! timeout (`WEFT_IDLE_TIMEOUT`), both sides are closed.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::adaptive_copy::copy_bidirectional;
use crate::connect::{ConnectError, connect};
use crate::idle::{ActivityIo, ConnectionActivity};

#[derive(Debug, thiserror::Error)]
pub enum OpaqueError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// mTLS to a meshed endpoint's proxy could not be set up.
    #[error("{0}")]
    Mtls(String),
    #[error("no bytes either way for {after:?} (WEFT_IDLE_TIMEOUT / weft.io/idle-timeout)")]
    IdleTimeout { after: Duration },
    #[error("copying between the client and {target} failed: {source}")]
    Copy {
        target: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Bytes copied by a finished opaque connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copied {
    pub to_upstream: u64,
    pub to_client: u64,
}

/// Connects to `target` (telling `connected` whether that worked) and copies until both sides
/// are done or nothing has moved for `idle_timeout` (zero: never).
pub async fn forward<I>(
    client: &mut I,
    target: SocketAddr,
    connect_timeout: Duration,
    idle_timeout: Duration,
    connected: impl FnOnce(bool),
) -> Result<Copied, OpaqueError>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let upstream = connect(target, connect_timeout).await;
    connected(upstream.is_ok());
    let mut upstream = upstream?;
    copy(client, &mut upstream, target, idle_timeout).await
}

/// Copies both ways until both sides are done, or until no byte has moved either way for
/// `idle_timeout` (zero: never). Returning drops the caller's hold on both: they close.
pub async fn copy<C, U>(
    client: &mut C,
    upstream: &mut U,
    target: SocketAddr,
    idle_timeout: Duration,
) -> Result<Copied, OpaqueError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    // The client side sees every byte of both directions.
    let activity = ConnectionActivity::new(idle_timeout, Duration::ZERO);
    let mut client = ActivityIo::new(client, activity.clone());
    tokio::select! {
        // Buffers sized to the traffic: nothing on the heap while idle (see adaptive_copy).
        copied = copy_bidirectional(&mut client, upstream) => {
            let (to_upstream, to_client) = copied.map_err(|source| OpaqueError::Copy { target, source })?;
            Ok(Copied { to_upstream, to_client })
        }
        _ = activity.expired() => Err(OpaqueError::IdleTimeout { after: idle_timeout }),
    }
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
            forward(
                &mut proxy_side,
                target,
                Duration::from_secs(5),
                Duration::ZERO,
                |_| (),
            )
            .await
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
        let err = forward(
            &mut proxy_side,
            target,
            Duration::from_secs(5),
            Duration::ZERO,
            |_| (),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, OpaqueError::Connect(ConnectError::Failed { .. })),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn silence_both_ways_closes_both_sides() {
        let (mut client, mut proxy_client_side) = tokio::io::duplex(1024);
        let (mut server, mut proxy_server_side) = tokio::io::duplex(1024);
        let target: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let idle = Duration::from_secs(60);
        let proxy = tokio::spawn(async move {
            copy(&mut proxy_client_side, &mut proxy_server_side, target, idle).await
        });
        let start = tokio::time::Instant::now();
        // Traffic both ways keeps it open past the timeout...
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(40)).await;
            client.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            server.read_exact(&mut buf).await.unwrap();
            server.write_all(b"pong").await.unwrap();
            client.read_exact(&mut buf).await.unwrap();
        }
        // ...then silence for the idle timeout ends it.
        let err = proxy.await.unwrap().unwrap_err();
        assert!(matches!(err, OpaqueError::IdleTimeout { .. }), "{err}");
        assert_eq!(start.elapsed(), Duration::from_secs(180));
        // Both sides see EOF.
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
        assert_eq!(server.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
