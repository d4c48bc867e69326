//! Test support: a throwaway network namespace with REDIRECT rules, the real `weft-proxy` binary
//! running in it as UID 2102, and small backends and clients. Everything is removed by guards that
//! run on drop, also when a test panics.

#![allow(dead_code)]

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");
pub const PROXY_UID: &str = "2102";
pub const ADMIN: &str = "127.0.0.1:4191";
/// Connections to this address are redirected to the outbound listener.
pub const OUTBOUND_VIA: &str = "127.0.0.2";
/// Connections to this address are redirected to the inbound listener.
pub const INBOUND_VIA: &str = "127.0.0.3";
/// Bound on every wait in these tests.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A network namespace with loopback up and the proxy's REDIRECT rules; deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("weft-px-{}-{n}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.exec_ok("ip", &["link", "set", "lo", "up"]);
        for (dst, port) in [(OUTBOUND_VIA, "4140"), (INBOUND_VIA, "4143")] {
            ns.exec_ok(
                "iptables",
                &[
                    "-t",
                    "nat",
                    "-A",
                    "OUTPUT",
                    "-p",
                    "tcp",
                    "-d",
                    dst,
                    "-m",
                    "owner",
                    "!",
                    "--uid-owner",
                    PROXY_UID,
                    "-j",
                    "REDIRECT",
                    "--to-ports",
                    port,
                ],
            );
        }
        ns
    }

    pub fn exec_ok(&self, program: &str, args: &[&str]) {
        run_ok(
            Command::new("ip")
                .args(["netns", "exec", &self.name, program])
                .args(args),
        );
    }

    /// Runs `body` on a thread inside the namespace (so every socket it creates lives there), on
    /// a single-threaded runtime, and re-raises its panic after the thread ends.
    pub fn run<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let path = format!("/run/netns/{}", self.name);
        let result = std::thread::spawn(move || {
            let ns = File::open(&path).unwrap();
            // SAFETY: setns with a valid namespace fd affects only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(body());
        })
        .join();
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The proxy process (as UID 2102, in the namespace); killed on drop.
pub struct Proxy {
    child: Child,
}

impl Proxy {
    /// Starts the proxy with extra `WEFT_*` settings and waits until `/ready` answers 200.
    /// Must be called from inside `Netns::run`.
    pub async fn start(ns_name: &str, env: &[(&str, &str)]) -> Proxy {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns", "exec", ns_name, "setpriv", "--reuid", PROXY_UID, "--regid", PROXY_UID,
        ])
        .args(["--clear-groups", BIN])
        .env("WEFT_LOG", "weft=debug")
        .env("WEFT_SHUTDOWN_GRACE", "10s")
        .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let mut proxy = Proxy { child };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok((200, _)) = admin_get("/ready").await {
                return proxy;
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("weft-proxy exited during start-up: {status}");
            }
            assert!(Instant::now() < deadline, "weft-proxy not ready in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn sigterm(&self) {
        // SAFETY: plain kill(2) on our own child.
        let rc = unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        assert_eq!(rc, 0);
    }

    /// Waits (bounded) for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "weft-proxy did not exit in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET on the admin server: (status, body).
pub async fn admin_get(path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(ADMIN).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let raw = read_to_end(&mut stream).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub async fn metrics() -> String {
    let (status, body) = admin_get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    body
}

/// The value of the sample whose line starts with `series` (name and labels), if present.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

pub async fn read_to_end(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("read timed out"))??;
    Ok(out)
}

pub async fn listen(addr: &str) -> TcpListener {
    TcpListener::bind(addr).await.unwrap()
}

/// An HTTP/1 or HTTP/2 (prior knowledge) backend that answers each request with
/// `<METHOD> <path>` followed by the request body, and trailers `x-trailer: done`, after `delay`.
pub fn spawn_echo(listener: TcpListener, h2: bool, delay: Duration) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: hyper::Request<Incoming>| async move {
                        tokio::time::sleep(delay).await;
                        let head = format!("{} {}\n", req.method(), req.uri().path());
                        let body = req.into_body().collect().await?.to_bytes();
                        let mut out = head.into_bytes();
                        out.extend_from_slice(&body);
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("x-trailer", http::HeaderValue::from_static("done"));
                        let body = Full::new(Bytes::from(out))
                            .with_trailers(async move { Some(Ok(trailers)) });
                        Ok::<_, hyper::Error>(hyper::Response::new(body))
                    });
                let io = TokioIo::new(stream);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(io, service)
                    .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            });
        }
    });
}

/// An HTTP/1 client connection to `addr` (which the rules redirect through the proxy).
pub async fn h1_client(addr: &str) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

pub async fn h2_client(addr: &str) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

/// A bounded wait for a future.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in time"))
}

pub fn addr(ip: &str, port: u16) -> String {
    SocketAddr::new(ip.parse().unwrap(), port).to_string()
}

/// A request body fed frame by frame from the test, for streaming in both directions at once.
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

pub fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, ChannelBody) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    (tx, ChannelBody { rx })
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|data| data.map(|data| Ok(http_body::Frame::data(data))))
    }
}
