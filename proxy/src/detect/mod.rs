//! Protocol detection: a pure classifier over the first bytes a client sends, and the bounded read
//! that feeds it. Bytes read here are handed back in a [`PrefixedIo`] so nothing is lost.

mod prefixed;

pub use prefixed::PrefixedIo;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The protocol a connection speaks, as far as the proxy cares.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    /// A TLS ClientHello; forwarded opaque until the proxy terminates TLS itself.
    Tls,
    Opaque,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Tls => "tls",
            Protocol::Opaque => "opaque",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the protocol was decided.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DetectOutcome {
    /// The first bytes decided it.
    Detected,
    /// The client sent too little within the detection window.
    Timeout,
    /// The client closed its side before the bytes decided anything.
    Eof,
    /// The destination port is configured opaque: no detection ran.
    OpaquePort,
}

impl DetectOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DetectOutcome::Detected => "detected",
            DetectOutcome::Timeout => "timeout",
            DetectOutcome::Eof => "eof",
            DetectOutcome::OpaquePort => "opaque_port",
        }
    }
}

/// What the classifier concluded from the bytes seen so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    NeedMore,
    Found(Protocol),
}

/// How many bytes detection reads at most. A request line longer than this that still looks like
/// HTTP/1 is taken as HTTP/1 (hyper then judges it).
pub const DETECT_BUFFER: usize = 4096;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longer than any registered method; a longer token is not HTTP.
const MAX_METHOD: usize = 24;

/// Classifies the first bytes of a connection. Never answers `NeedMore` once `buf` holds
/// [`DETECT_BUFFER`] bytes.
pub fn classify(buf: &[u8]) -> Verdict {
    let Some(&first) = buf.first() else {
        return Verdict::NeedMore;
    };
    let seen = buf.len().min(H2_PREFACE.len());
    if buf[..seen] == H2_PREFACE[..seen] {
        return if buf.len() >= H2_PREFACE.len() {
            Verdict::Found(Protocol::Http2)
        } else {
            Verdict::NeedMore
        };
    }
    if first == 0x16 {
        return tls_record(buf);
    }
    http1_request_line(buf)
}

/// A TLS handshake record: type 0x16, then major version 3 and minor 0..=4 (SSL 3.0 to TLS 1.3's
/// legacy field).
fn tls_record(buf: &[u8]) -> Verdict {
    match (buf.get(1), buf.get(2)) {
        (None, _) => Verdict::NeedMore,
        (Some(3), None) => Verdict::NeedMore,
        (Some(3), Some(0..=4)) => Verdict::Found(Protocol::Tls),
        _ => Verdict::Found(Protocol::Opaque),
    }
}

/// `METHOD SP request-target SP HTTP/1.x CRLF`, judged on the request line only.
fn http1_request_line(buf: &[u8]) -> Verdict {
    let method_len = buf.iter().take_while(|b| is_tchar(**b)).count();
    if method_len == buf.len() {
        // A method may be MAX_METHOD bytes long: until one more token byte arrives, the space
        // after it may still come (the verdict must not depend on where TCP split the bytes).
        return if method_len <= MAX_METHOD {
            Verdict::NeedMore
        } else {
            Verdict::Found(Protocol::Opaque)
        };
    }
    if method_len == 0 || method_len > MAX_METHOD || buf[method_len] != b' ' {
        return Verdict::Found(Protocol::Opaque);
    }
    let rest = &buf[method_len + 1..];
    let line_end = rest.iter().position(|b| *b == b'\r' || *b == b'\n');
    let line = &rest[..line_end.unwrap_or(rest.len())];
    // The target has no spaces or controls; one space separates it from the version.
    if line.iter().filter(|b| **b == b' ').count() > 1
        || line.iter().any(|b| *b < 0x20 || *b == 0x7f)
    {
        return Verdict::Found(Protocol::Opaque);
    }
    match line_end {
        Some(_) if ends_with_http1_version(line) => Verdict::Found(Protocol::Http1),
        Some(_) => Verdict::Found(Protocol::Opaque),
        None if buf.len() >= DETECT_BUFFER => Verdict::Found(Protocol::Http1),
        None => Verdict::NeedMore,
    }
}

fn ends_with_http1_version(line: &[u8]) -> bool {
    const VERSION: &[u8] = b" HTTP/1.";
    line.len() > VERSION.len() + 1
        && line[line.len() - 1].is_ascii_digit()
        && &line[line.len() - 1 - VERSION.len()..line.len() - 1] == VERSION
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The result of reading a connection's first bytes.
#[derive(Debug)]
pub struct Detection {
    pub protocol: Protocol,
    pub outcome: DetectOutcome,
    /// The bytes read while detecting; they must be replayed to whoever handles the connection.
    pub prefix: Bytes,
}

/// Reads from `io` until the bytes decide the protocol, the client closes its side, or `window`
/// passes. Silence within the window means opaque, so server-speaks-first protocols proceed.
pub async fn detect<I>(io: &mut I, window: Duration) -> std::io::Result<Detection>
where
    I: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(DETECT_BUFFER);
    let deadline = tokio::time::Instant::now() + window;
    loop {
        let read = tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await;
        let (protocol, outcome) = match read {
            Err(_elapsed) => (Protocol::Opaque, DetectOutcome::Timeout),
            Ok(Err(err)) => return Err(err),
            Ok(Ok(0)) => (Protocol::Opaque, DetectOutcome::Eof),
            Ok(Ok(_)) => match classify(&buf) {
                Verdict::Found(protocol) => (protocol, DetectOutcome::Detected),
                Verdict::NeedMore => continue,
            },
        };
        return Ok(Detection {
            protocol,
            outcome,
            prefix: buf.freeze(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn found(p: Protocol) -> Verdict {
        Verdict::Found(p)
    }

    #[test]
    fn http1_requests() {
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            found(Protocol::Http1)
        );
        assert_eq!(
            classify(b"POST /x?y=1 HTTP/1.0\r\n"),
            found(Protocol::Http1)
        );
        assert_eq!(
            classify(b"CONNECT a.example:443 HTTP/1.1\r\n"),
            found(Protocol::Http1)
        );
        assert_eq!(classify(b"OPTIONS * HTTP/1.1\n"), found(Protocol::Http1));
        assert_eq!(classify(b"M-SEARCH * HTTP/1.1\r\n"), found(Protocol::Http1));
    }

    #[test]
    fn partial_http1_needs_more() {
        for partial in [
            &b"G"[..],
            b"GE",
            b"GET",
            b"GET ",
            b"GET /index.html",
            b"GET /index.html HTTP/1.",
            b"GET /index.html HTTP/1.1",
        ] {
            assert_eq!(classify(partial), Verdict::NeedMore, "{partial:?}");
        }
    }

    #[test]
    fn empty_needs_more() {
        assert_eq!(classify(b""), Verdict::NeedMore);
    }

    #[test]
    fn http2_preface() {
        assert_eq!(classify(H2_PREFACE), found(Protocol::Http2));
        let mut with_frame = H2_PREFACE.to_vec();
        with_frame.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(classify(&with_frame), found(Protocol::Http2));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), Verdict::NeedMore);
        assert_eq!(classify(b"PRI"), Verdict::NeedMore);
    }

    #[test]
    fn tls_client_hello() {
        assert_eq!(
            classify(&[0x16, 0x03, 0x01, 0x02, 0x00]),
            found(Protocol::Tls)
        );
        assert_eq!(classify(&[0x16, 0x03, 0x03]), found(Protocol::Tls));
        assert_eq!(classify(&[0x16]), Verdict::NeedMore);
        assert_eq!(classify(&[0x16, 0x03]), Verdict::NeedMore);
        assert_eq!(classify(&[0x16, 0x03, 0x09]), found(Protocol::Opaque));
        assert_eq!(classify(&[0x16, 0x02, 0x01]), found(Protocol::Opaque));
    }

    #[test]
    fn garbage_and_other_protocols_are_opaque() {
        for bytes in [
            &b"\x00\x01\x02"[..],
            b"hello world\r\n",
            b"GARBAGE\r\n\r\n",
            b"SET key value\r\n",
            b"*1\r\n$4\r\nPING\r\n",
            b"GET /\r\n",
            b"GET / HTTP/2.0\r\n",
            b"GET / FTP/1.1\r\n",
            b"GET /a b HTTP/1.1\r\n",
            b"GET /\x01 HTTP/1.1\r\n",
            b" GET / HTTP/1.1\r\n",
            b"GET\t/ HTTP/1.1\r\n",
        ] {
            assert_eq!(classify(bytes), found(Protocol::Opaque), "{bytes:?}");
        }
    }

    #[test]
    fn overlong_method_is_opaque() {
        assert_eq!(classify(&[b'A'; MAX_METHOD + 1]), found(Protocol::Opaque));
        assert_eq!(classify(&[b'A'; MAX_METHOD]), Verdict::NeedMore);
        assert_eq!(classify(&[b'A'; MAX_METHOD - 1]), Verdict::NeedMore);
        // The same 24-byte method, whole or split before its space, is the same verdict
        // (found by fuzzing: corpus/detect/known-24-byte-method).
        let mut line = vec![b'A'; MAX_METHOD];
        line.extend_from_slice(b" / HTTP/1.1\r\n");
        assert_eq!(classify(&line), found(Protocol::Http1));
    }

    #[test]
    fn full_buffer_always_decides() {
        let mut long_target = b"GET /".to_vec();
        long_target.resize(DETECT_BUFFER, b'a');
        assert_eq!(classify(&long_target), found(Protocol::Http1));
        let mut long_h2ish = H2_PREFACE.to_vec();
        long_h2ish.resize(DETECT_BUFFER, 0);
        assert_ne!(classify(&long_h2ish), Verdict::NeedMore);
        assert_ne!(classify(&[b'x'; DETECT_BUFFER]), Verdict::NeedMore);
        assert_ne!(classify(&[0x16; DETECT_BUFFER]), Verdict::NeedMore);
    }

    #[tokio::test]
    async fn detect_reads_across_segments_and_keeps_bytes() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            client.write_all(b"GE").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.write_all(b"T / HTTP/1.1\r\n").await.unwrap();
            client
        });
        let detection = detect(&mut server, Duration::from_secs(5)).await.unwrap();
        assert_eq!(detection.protocol, Protocol::Http1);
        assert_eq!(detection.outcome, DetectOutcome::Detected);
        assert_eq!(&detection.prefix[..], b"GET / HTTP/1.1\r\n");
        drop(writer.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn silence_times_out_as_opaque() {
        let (_client, mut server) = tokio::io::duplex(64);
        let detection = detect(&mut server, Duration::from_secs(1)).await.unwrap();
        assert_eq!(detection.protocol, Protocol::Opaque);
        assert_eq!(detection.outcome, DetectOutcome::Timeout);
        assert!(detection.prefix.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn partial_then_silence_times_out_with_prefix() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GE").await.unwrap();
        let detection = detect(&mut server, Duration::from_secs(1)).await.unwrap();
        assert_eq!(detection.outcome, DetectOutcome::Timeout);
        assert_eq!(&detection.prefix[..], b"GE");
    }

    #[tokio::test]
    async fn eof_is_opaque() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GET").await.unwrap();
        drop(client);
        let detection = detect(&mut server, Duration::from_secs(5)).await.unwrap();
        assert_eq!(detection.protocol, Protocol::Opaque);
        assert_eq!(detection.outcome, DetectOutcome::Eof);
        assert_eq!(&detection.prefix[..], b"GET");
    }
}
