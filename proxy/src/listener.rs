//! Listening sockets and the accept loop: every accepted connection gets TCP_NODELAY and its own
//! task, and the loop stops accepting when the drain starts.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

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

/// Accepts until the drain starts, spawning `handle` for each connection with a drain watch the
/// connection holds until it ends.
pub async fn accept_loop<H, F>(listener: TcpListener, drain: Drain, handle: H)
where
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
                if let Err(err) = stream.set_nodelay(true) {
                    warn!(%peer, error = %err, "cannot set TCP_NODELAY");
                }
                tokio::spawn(handle(stream, peer, drain.watch()));
            }
            Err(err) => {
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
        let accepting = tokio::spawn(accept_loop(
            listener,
            drain.clone(),
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
