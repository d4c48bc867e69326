//! Listening sockets and the accept loop: every accepted connection gets TCP_NODELAY and its own
//! task, and the loop stops accepting when the drain starts.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use std::sync::Arc;

use crate::connection_limit::ConnectionLimit;
use crate::drain::{Drain, Watch};

/// A listener that could not be bound; names the setting that chose its address.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {setting}={addr}: {source}")]
pub struct BindError {
    pub setting: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

pub async fn bind(setting: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError {
        setting,
        addr,
        source,
    })
}

/// The IPv6 address that catches what ip6tables redirects to the same port as `addr`:
/// 0.0.0.0 -> [::] and 127.0.0.1 -> [::1]. Any other address was chosen deliberately: no twin.
pub fn ipv6_twin(addr: SocketAddr) -> Option<SocketAddr> {
    let SocketAddr::V4(v4) = addr else {
        return None;
    };
    let ip = match *v4.ip() {
        Ipv4Addr::UNSPECIFIED => Ipv6Addr::UNSPECIFIED,
        Ipv4Addr::LOCALHOST => Ipv6Addr::LOCALHOST,
        _ => return None,
    };
    Some(SocketAddr::new(ip.into(), v4.port()))
}

/// Binds the IPv6 twin of `addr` (IPv6-only, so it never competes with the IPv4 listener).
/// `None` when the pod has no IPv6 or no twin applies.
pub fn bind_ipv6_twin(
    setting: &'static str,
    addr: SocketAddr,
) -> Result<Option<TcpListener>, BindError> {
    let Some(twin) = ipv6_twin(addr) else {
        return Ok(None);
    };
    let error = |source| BindError {
        setting,
        addr: twin,
        source,
    };
    let socket = match Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)) {
        Ok(socket) => socket,
        Err(err) if no_ipv6(&err) => {
            info!(%twin, error = %err, "no IPv6 listener: IPv6 is unavailable");
            return Ok(None);
        }
        Err(err) => return Err(error(err)),
    };
    socket.set_only_v6(true).map_err(error)?;
    socket.set_reuse_address(true).map_err(error)?;
    socket.set_nonblocking(true).map_err(error)?;
    if let Err(err) = socket.bind(&twin.into()) {
        if no_ipv6(&err) {
            info!(%twin, error = %err, "no IPv6 listener: IPv6 is unavailable");
            return Ok(None);
        }
        return Err(error(err));
    }
    socket.listen(1024).map_err(error)?;
    TcpListener::from_std(socket.into())
        .map(Some)
        .map_err(error)
}

fn no_ipv6(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
    )
}

/// Accepts until the drain starts, spawning `handle` for each connection with a drain watch the
/// connection holds until it ends. Connections over `limit` are reset at once.
pub async fn accept_loop<H, F>(
    listener: TcpListener,
    drain: Drain,
    limit: Arc<ConnectionLimit>,
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr, Watch) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut watch = drain.watch();
    loop {
        let accepted = tokio::select! {
            biased;
            () = watch.signaled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(admitted) = limit.try_admit() else {
                    // A reset, not a FIN: the client learns at once, and no TIME_WAIT is left.
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    debug!(%peer, max = limit.max(), "refused a connection over the connection limit");
                    continue;
                };
                if let Err(err) = stream.set_nodelay(true) {
                    warn!(%peer, error = %err, "cannot set TCP_NODELAY");
                }
                let connection = handle(stream, peer, drain.watch());
                tokio::spawn(async move {
                    let _admitted = admitted;
                    connection.await
                });
            }
            Err(err) => {
                limit.accept_failed();
                warn!(error = %err, "accept failed");
                // Out of file descriptors or memory: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepts_with_nodelay_and_stops_on_drain() {
        let listener = bind("TEST_ADDR", "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let drain = Drain::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let limit = ConnectionLimit::new(8, Default::default(), Default::default());
        let accepting = tokio::spawn(accept_loop(
            listener,
            drain.clone(),
            limit,
            move |stream, _, _watch| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(stream.nodelay().unwrap()).await;
                }
            },
        ));
        let _client = TcpStream::connect(addr).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap()
        );
        drain.start();
        tokio::time::timeout(Duration::from_secs(5), accepting)
            .await
            .unwrap()
            .unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener still open after drain"
        );
    }

    #[test]
    fn ipv6_twins() {
        let twin = |s: &str| ipv6_twin(s.parse().unwrap()).map(|a| a.to_string());
        assert_eq!(twin("0.0.0.0:4143").as_deref(), Some("[::]:4143"));
        assert_eq!(twin("127.0.0.1:4140").as_deref(), Some("[::1]:4140"));
        assert_eq!(twin("198.18.0.5:4143"), None);
        assert_eq!(twin("[::]:4143"), None);
    }

    #[tokio::test]
    async fn twin_listens_on_ipv6_loopback_when_available() {
        // Port 0 twins are independent ports; this checks the socket setup, not the pairing.
        match bind_ipv6_twin("TEST_ADDR", "127.0.0.1:0".parse().unwrap()) {
            Ok(Some(listener)) => {
                let addr = listener.local_addr().unwrap();
                assert_eq!(addr.ip(), Ipv6Addr::LOCALHOST);
                TcpStream::connect(addr).await.unwrap();
            }
            Ok(None) => {} // no IPv6 on this machine
            Err(err) => panic!("{err}"),
        }
    }

    #[tokio::test]
    async fn bind_error_names_the_setting() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind("WEFT_OUTBOUND_ADDR", addr).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot listen on WEFT_OUTBOUND_ADDR={addr}: ")),
            "{err}"
        );
    }
}
