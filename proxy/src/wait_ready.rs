//! `weft-proxy wait-ready`: blocks until the proxy's `/ready` answers 200, bounded. A classic
//! sidecar runs it as the proxy container's postStart hook: the kubelet starts the next container
//! only when the hook returns, so the app starts with its proxy ready (native sidecars get the
//! same from their startupProbe).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct WaitReadyArgs {
    /// The proxy's admin address.
    #[arg(long, default_value = "127.0.0.1:4191")]
    pub admin_addr: SocketAddr,
    /// How long to wait before giving up.
    #[arg(long, default_value = "120s", value_parser = weft_settings::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WaitReadyError {
    #[error("{addr}/ready did not answer 200 within {timeout:?} (last: {last})")]
    Timeout {
        addr: SocketAddr,
        timeout: Duration,
        last: String,
    },
}

/// Polls `/ready` every 100 ms; returns how long it took.
pub fn wait(args: &WaitReadyArgs) -> Result<Duration, WaitReadyError> {
    let started = Instant::now();
    let deadline = started + args.timeout;
    loop {
        let last = match ready(args.admin_addr) {
            Ok(true) => return Ok(started.elapsed()),
            Ok(false) => "not ready".to_owned(),
            Err(err) => err.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(WaitReadyError::Timeout {
                addr: args.admin_addr,
                timeout: args.timeout,
                last,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ready(addr: SocketAddr) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(b"GET /ready HTTP/1.0\r\nHost: weft-proxy\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    Ok(head.starts_with(b"HTTP/1.") && &head[9..12] == b"200")
}
