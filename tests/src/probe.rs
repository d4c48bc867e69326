//! HTTP GET and TCP connect from inside a pod's network namespace: readiness probes and
//! `/metrics` scrapes, without spawning a client program.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::TestbedError;
use crate::netns::in_netns;

/// Status code and body of a response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// GET `path` from `addr`, inside `netns`, bounded by `timeout` per socket operation.
/// The outer error is about the namespace; the inner one says why the request failed.
pub fn http_get(
    netns: &str,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<Result<HttpResponse, String>, TestbedError> {
    let path = path.to_string();
    in_netns(netns, move || get(addr, &path, timeout))
}

/// Whether a TCP connection to `addr` opens inside `netns`.
pub fn tcp_connect(
    netns: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Result<(), String>, TestbedError> {
    in_netns(netns, move || {
        TcpStream::connect_timeout(&addr, timeout)
            .map(|_| ())
            .map_err(|e| format!("connect {addr}: {e}"))
    })
}

fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<HttpResponse, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket options: {e}"))?;
    // HTTP/1.0 with close: the body ends at EOF, never chunked.
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: weft-testbed\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending request to {addr}: {e}"))?;
    let mut raw = Vec::new();
    // Bounded: at most 64 MiB, and each read is under the socket timeout.
    stream
        .take(64 << 20)
        .read_to_end(&mut raw)
        .map_err(|e| format!("reading response from {addr}: {e}"))?;
    parse_response(&raw).ok_or_else(|| format!("malformed HTTP response from {addr}"))
}

fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    Some(HttpResponse {
        status,
        body: body.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let r = parse_response(b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_str()), (204, ""));
        let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\nweft_up 1\n").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "weft_up 1\n"));
        assert!(parse_response(b"SSH-2.0-x\r\n\r\n").is_none());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_none());
    }

    #[test]
    fn get_against_a_local_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /ready HTTP/1.0\r\n"));
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nready")
                .unwrap();
        });
        let r = get(addr, "/ready", Duration::from_secs(5)).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ready"));
        server.join().unwrap();
    }
}
