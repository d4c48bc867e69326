//! Connecting to an upstream: bounded by the connect timeout, with TCP_NODELAY.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {addr} timed out after {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("connecting to {addr} failed: {source}")]
    Failed {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

impl ConnectError {
    /// A few words for a `weft-error` header.
    pub fn short_cause(&self) -> &'static str {
        match self {
            ConnectError::Timeout { .. } => "upstream connect timeout",
            ConnectError::Failed { source, .. } => match source.kind() {
                io::ErrorKind::ConnectionRefused => "upstream refused connection",
                io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                    "upstream unreachable"
                }
                _ => "upstream connect failed",
            },
        }
    }
}

pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_elapsed) => {
            return Err(ConnectError::Timeout {
                addr,
                after: timeout,
            });
        }
        Ok(Err(source)) => return Err(ConnectError::Failed { addr, source }),
        Ok(Ok(stream)) => stream,
    };
    stream
        .set_nodelay(true)
        .map_err(|source| ConnectError::Failed { addr, source })?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connects_with_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = connect(addr, Duration::from_secs(5)).await.unwrap();
        assert!(stream.nodelay().unwrap());
    }

    #[tokio::test]
    async fn refused_names_the_upstream() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = connect(addr, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(err.short_cause(), "upstream refused connection");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
