//! Reading a TLS ClientHello without consuming it: enough bytes are read to parse the whole
//! hello (rustls' `Acceptor`), and every byte read is returned so the connection can be replayed
//! to a TLS acceptor (ours) or forwarded untouched (the app's own TLS).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use weft_tls::rustls::server::Acceptor;

/// A ClientHello is at most one handshake message; 16 KiB of record payload plus headers is
/// far more than any real one, and bounds what a client can make us buffer.
const MAX_HELLO: usize = 20 * 1024;

/// What the hello asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHelloInfo {
    pub server_name: Option<String>,
    pub alpn: Vec<Vec<u8>>,
}

/// The outcome of peeking: the hello, if the bytes were one, and everything read so far.
#[derive(Debug)]
pub struct Peeked {
    pub hello: Option<ClientHelloInfo>,
    pub bytes: Bytes,
}

/// Reads from `io` (after `prefix`, the bytes detection already read) until a full ClientHello
/// has arrived, the bytes turn out not to be one, the client stops sending, or `timeout` passes.
pub async fn peek<I: AsyncRead + Unpin>(
    io: &mut I,
    prefix: Bytes,
    timeout: Duration,
) -> std::io::Result<Peeked> {
    let mut buf = BytesMut::from(&prefix[..]);
    let mut acceptor = Acceptor::default();
    let mut fed = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Feed what the acceptor has not seen yet.
        while fed < buf.len() {
            let mut rest = &buf[fed..];
            match acceptor.read_tls(&mut rest) {
                Ok(n) => fed += n,
                Err(_) => return Ok(not_a_hello(buf)),
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                let info = ClientHelloInfo {
                    server_name: hello.server_name().map(str::to_owned),
                    alpn: hello
                        .alpn()
                        .map(|names| names.map(<[u8]>::to_vec).collect())
                        .unwrap_or_default(),
                };
                return Ok(Peeked {
                    hello: Some(info),
                    bytes: buf.freeze(),
                });
            }
            Ok(None) => {}
            Err(_) => return Ok(not_a_hello(buf)),
        }
        if buf.len() >= MAX_HELLO {
            return Ok(not_a_hello(buf));
        }
        buf.reserve(4096);
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_) | Ok(Ok(0)) => return Ok(not_a_hello(buf)),
            Ok(Err(err)) => return Err(err),
            Ok(Ok(_)) => {}
        }
    }
}

fn not_a_hello(buf: BytesMut) -> Peeked {
    Peeked {
        hello: None,
        bytes: buf.freeze(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;
    use weft_tls::rustls::ClientConfig;
    use weft_tls::rustls::pki_types::ServerName;

    /// The bytes a rustls client sends first, for `sni` and `alpn`.
    fn client_hello(sni: &str, alpn: &[&[u8]]) -> Vec<u8> {
        let ca = crate::test_support::certificates::TestCa::new("proxy");
        let mut config: ClientConfig = weft_tls::client_config(
            &ca.anchors(),
            "cluster.local",
            None,
            alpn.iter().map(|a| a.to_vec()).collect(),
        )
        .unwrap();
        config.enable_sni = true;
        let mut conn = weft_tls::rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from(sni.to_owned()).unwrap(),
        )
        .unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn reads_sni_and_alpn_across_segments_and_keeps_every_byte() {
        let hello = client_hello("web.shop.sa.cluster.local", &[b"weft.h2/1"]);
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        // Detection saw three bytes; the rest trickles in.
        let prefix = Bytes::copy_from_slice(&hello[..3]);
        let rest = hello[3..].to_vec();
        let writer = tokio::spawn(async move {
            let (a, b) = rest.split_at(rest.len() / 2);
            client.write_all(a).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.write_all(b).await.unwrap();
            client
        });
        let peeked = peek(&mut server, prefix, Duration::from_secs(5))
            .await
            .unwrap();
        let info = peeked.hello.unwrap();
        assert_eq!(
            info.server_name.as_deref(),
            Some("web.shop.sa.cluster.local")
        );
        assert_eq!(info.alpn, vec![b"weft.h2/1".to_vec()]);
        assert_eq!(&peeked.bytes[..], &hello[..]);
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn garbage_after_a_record_header_is_not_a_hello() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client
            .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff])
            .await
            .unwrap();
        drop(client);
        let peeked = peek(&mut server, Bytes::new(), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(peeked.hello.is_none());
        assert_eq!(peeked.bytes.len(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_hello_times_out_with_its_bytes() {
        let hello = client_hello("x.y.sa.cluster.local", &[]);
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(&hello[..20]).await.unwrap();
        let peeked = peek(&mut server, Bytes::new(), Duration::from_secs(1))
            .await
            .unwrap();
        assert!(peeked.hello.is_none());
        assert_eq!(&peeked.bytes[..], &hello[..20]);
    }
}
