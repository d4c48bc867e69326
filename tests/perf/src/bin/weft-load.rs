//! `weft-load`: the benchmark's load generator; prints one JSON object on stdout.
//!
//! `http`: open loop at `--rate` requests/s (0 = closed loop, as fast as the connections allow).
//! Each request has an intended send time on a fixed schedule and its latency is measured from
//! that time, not from when it was actually sent: a stall delays the requests queued behind it and
//! they are charged for it (coordinated omission corrected, as wrk2 does). Modes: HTTP/1.1, h2c,
//! gRPC unary over h2c, and a new TCP connection per request (prices the handshakes).
//! `tcp`: a bulk transfer of `--bytes` to a sink that answers with the count it received.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use http::{Request, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::sleep_until;

/// Latencies above this are clamped (recorded as the maximum) rather than lost.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Requests in flight at once in new-connection mode; beyond it the schedule waits (and is charged).
const MAX_NEW_CONN_IN_FLIGHT: usize = 512;

#[derive(Parser)]
#[command(
    name = "weft-load",
    about = "Open-loop load generator for Weft's benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Runtime worker threads of the generator itself.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
}

#[derive(Subcommand)]
enum Cmd {
    Http(HttpArgs),
    Tcp(TcpArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    /// HTTP/1.1, keep-alive.
    H1,
    /// HTTP/2 cleartext (prior knowledge).
    H2,
    /// gRPC unary over h2c.
    Grpc,
    /// HTTP/1.1 with a new TCP connection for every request.
    NewConn,
}

#[derive(Parser, Clone)]
struct HttpArgs {
    /// e.g. http://198.18.128.1:8080/
    #[arg(long)]
    url: Uri,
    #[arg(long, value_enum, default_value = "h1")]
    mode: Mode,
    /// Requests per second; 0 = closed loop (each connection sends back to back).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of unmeasured load first (connections, pools and caches settle).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Connections (h1, h2, grpc).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Concurrent streams per connection in the closed loop (h2, grpc).
    #[arg(long, default_value_t = 1)]
    streams: usize,
}

#[derive(Parser, Clone)]
struct TcpArgs {
    /// host:port of the sink.
    #[arg(long)]
    addr: String,
    /// Bytes to send.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
}

#[derive(Serialize)]
struct HttpReport {
    mode: Mode,
    rate: u64,
    connections: usize,
    duration_s: f64,
    /// Measured successful requests.
    requests: u64,
    /// Every request sent, warm-up and failures included (for CPU per request).
    total_requests: u64,
    errors: u64,
    first_error: Option<String>,
    rps: f64,
    latency_us: Percentiles,
    /// (percentile, microseconds) along the distribution, for charts.
    distribution: Vec<(f64, u64)>,
}

#[derive(Serialize)]
struct Percentiles {
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
}

#[derive(Serialize)]
struct TcpReport {
    bytes: u64,
    seconds: f64,
    gbit_per_s: f64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let json = match cli.command {
        Cmd::Http(args) => serde_json::to_string(&rt.block_on(http_load(args))?)?,
        Cmd::Tcp(args) => serde_json::to_string(&rt.block_on(tcp_bulk(args))?)?,
    };
    println!("{json}");
    Ok(())
}

/// What every request task records into.
struct Tally {
    hist: Histogram<u64>,
    all: u64,
    errors: u64,
    first_error: Option<String>,
}

#[derive(Clone)]
struct Run {
    tally: Arc<Mutex<Tally>>,
    /// Requests intended before this instant are warm-up: sent, not recorded.
    measure_from: Instant,
    end: Instant,
}

impl Run {
    fn record(&self, intended: Instant, outcome: Result<(), String>) {
        let Ok(mut tally) = self.tally.lock() else {
            return;
        };
        tally.all += 1;
        if intended < self.measure_from {
            return;
        }
        match outcome {
            Ok(()) => {
                let us = intended.elapsed().as_micros().min(MAX_LATENCY_US as u128) as u64;
                let _ = tally.hist.record(us.max(1));
            }
            Err(e) => {
                tally.errors += 1;
                if tally.first_error.is_none() {
                    tally.first_error = Some(e);
                }
            }
        }
    }
}

async fn http_load(args: HttpArgs) -> anyhow::Result<HttpReport> {
    let authority = args
        .url
        .authority()
        .context("--url needs host:port")?
        .to_string();
    if args.duration <= 0.0 || args.warmup < 0.0 {
        bail!("--duration must be positive and --warmup not negative");
    }
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let hist = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?;
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let run = Run {
        tally: Arc::new(Mutex::new(Tally {
            hist,
            all: 0,
            errors: 0,
            first_error: None,
        })),
        measure_from,
        end: measure_from + Duration::from_secs_f64(args.duration),
    };
    let mut tasks = Vec::new();
    if args.mode == Mode::NewConn {
        tasks.push(tokio::spawn(new_conn_loop(
            args.clone(),
            authority,
            run.clone(),
            start,
        )));
    } else {
        for lane in 0..args.connections {
            tasks.push(tokio::spawn(connection_lane(
                args.clone(),
                authority.clone(),
                run.clone(),
                start,
                lane,
            )));
        }
    }
    for task in tasks {
        task.await.context("a load task panicked")??;
    }
    let tally = run
        .tally
        .lock()
        .map_err(|_| anyhow::anyhow!("a load task panicked holding the tally"))?;
    let h = &tally.hist;
    let distribution = [
        0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
    ]
    .iter()
    .map(|q| (*q, h.value_at_quantile(q / 100.0)))
    .collect();
    Ok(HttpReport {
        mode: args.mode,
        rate: args.rate,
        connections: args.connections,
        duration_s: args.duration,
        requests: h.len(),
        total_requests: tally.all,
        errors: tally.errors,
        first_error: tally.first_error.clone(),
        rps: h.len() as f64 / args.duration,
        latency_us: Percentiles {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        },
        distribution,
    })
}

fn request(args: &HttpArgs, authority: &str) -> Request<Full<Bytes>> {
    let path = args.url.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let builder = match args.mode {
        Mode::H1 | Mode::NewConn => Request::get(path).header(header::HOST, authority),
        Mode::H2 => Request::get(format!("http://{authority}{path}")),
        Mode::Grpc => Request::post(format!("http://{authority}/bench.Echo/Unary"))
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers"),
    };
    let body = if args.mode == Mode::Grpc {
        // One 64-byte message: 1 flag byte, 4 length bytes, payload.
        let mut msg = vec![0u8, 0, 0, 0, 64];
        msg.extend_from_slice(&[b'q'; 64]);
        Bytes::from(msg)
    } else {
        Bytes::new()
    };
    let builder = if args.mode == Mode::NewConn {
        builder.header(header::CONNECTION, "close")
    } else {
        builder
    };
    builder.body(Full::new(body)).unwrap_or_default()
}

/// The i-th request of the whole run is intended at start + i/rate; lane `lane` of `n` sends
/// requests lane, lane+n, lane+2n, ...
fn intended(start: Instant, rate: u64, index: u64) -> Instant {
    start + Duration::from_secs_f64(index as f64 / rate as f64)
}

async fn check(
    resp: Result<http::Response<hyper::body::Incoming>, hyper::Error>,
    grpc: bool,
) -> Result<(), String> {
    let resp = resp.map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    let collected = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the response body: {e}"))?;
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    if grpc {
        let code = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(no grpc-status trailer)")
            .to_string();
        if code != "0" {
            return Err(format!("grpc-status {code}"));
        }
    }
    Ok(())
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

async fn connect(args: &HttpArgs, authority: &str) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect(authority)
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    tcp.set_nodelay(true)?;
    let io = TokioIo::new(tcp);
    Ok(match args.mode {
        Mode::H1 | Mode::NewConn => {
            let (send, conn) = http1::handshake(io).await?;
            tokio::spawn(conn);
            Sender::H1(send)
        }
        Mode::H2 | Mode::Grpc => {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Sender::H2(send)
        }
    })
}

/// One persistent connection and its share of the schedule (or, closed loop, back to back).
async fn connection_lane(
    args: HttpArgs,
    authority: String,
    run: Run,
    start: Instant,
    lane: usize,
) -> anyhow::Result<()> {
    let grpc = args.mode == Mode::Grpc;
    let mut sender = connect(&args, &authority).await?;
    sleep_until(start.into()).await;
    if let (Sender::H2(send), 0) = (&sender, args.rate) {
        // Closed loop over h2: `streams` workers share the connection.
        let mut workers = Vec::new();
        for _ in 0..args.streams.max(1) {
            let (mut send, args, authority, run) =
                (send.clone(), args.clone(), authority.clone(), run.clone());
            workers.push(tokio::spawn(async move {
                while Instant::now() < run.end {
                    let sent = Instant::now();
                    if send.ready().await.is_err() {
                        run.record(sent, Err("connection closed".into()));
                        break;
                    }
                    let resp = send.send_request(request(&args, &authority)).await;
                    run.record(sent, check(resp, grpc).await);
                }
            }));
        }
        for w in workers {
            let _ = w.await;
        }
        return Ok(());
    }
    let mut index = lane as u64;
    let mut streams = tokio::task::JoinSet::new();
    loop {
        let due = if args.rate == 0 {
            Instant::now()
        } else {
            intended(start, args.rate, index)
        };
        if due >= run.end {
            // Open-loop h2 streams still in flight count too.
            while streams.join_next().await.is_some() {}
            return Ok(());
        }
        sleep_until(due.into()).await;
        let outcome = match &mut sender {
            Sender::H1(send) => {
                if send.ready().await.is_err() {
                    // The server or a proxy closed it: reconnect, charging the time to this request.
                    sender = connect(&args, &authority).await?;
                    run.record(due, Err("connection closed".into()));
                    index += args.connections as u64;
                    continue;
                }
                check(send.send_request(request(&args, &authority)).await, grpc).await
            }
            Sender::H2(send) => {
                // Open loop over h2: every request its own stream, none waits for another.
                let (mut send, args2, authority2, run2) =
                    (send.clone(), args.clone(), authority.clone(), run.clone());
                streams.spawn(async move {
                    let outcome = match send.ready().await {
                        Ok(()) => {
                            check(send.send_request(request(&args2, &authority2)).await, grpc).await
                        }
                        Err(e) => Err(format!("connection: {e}")),
                    };
                    run2.record(due, outcome);
                });
                while streams.try_join_next().is_some() {}
                index += args.connections as u64;
                continue;
            }
        };
        run.record(due, outcome);
        index += args.connections as u64;
    }
}

/// New connection per request, on the schedule (or closed loop with `connections` workers).
async fn new_conn_loop(
    args: HttpArgs,
    authority: String,
    run: Run,
    start: Instant,
) -> anyhow::Result<()> {
    let limit = Arc::new(tokio::sync::Semaphore::new(if args.rate == 0 {
        args.connections
    } else {
        MAX_NEW_CONN_IN_FLIGHT
    }));
    sleep_until(start.into()).await;
    let mut index = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let due = if args.rate == 0 {
            Instant::now()
        } else {
            intended(start, args.rate, index)
        };
        if due >= run.end {
            break;
        }
        sleep_until(due.into()).await;
        let permit = limit.clone().acquire_owned().await?;
        let (args, authority, run) = (args.clone(), authority.clone(), run.clone());
        let due = if args.rate == 0 { Instant::now() } else { due };
        tasks.spawn(async move {
            let outcome = match connect(&args, &authority).await {
                Ok(Sender::H1(mut send)) => match send.ready().await {
                    Ok(()) => {
                        check(send.send_request(request(&args, &authority)).await, false).await
                    }
                    Err(e) => Err(format!("connection: {e}")),
                },
                Ok(Sender::H2(_)) => Err("new-conn mode speaks HTTP/1.1".into()),
                Err(e) => Err(format!("{e:#}")),
            };
            run.record(due, outcome);
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
        index += 1;
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn tcp_bulk(args: TcpArgs) -> anyhow::Result<TcpReport> {
    let mut stream = TcpStream::connect(&args.addr)
        .await
        .with_context(|| format!("connecting to {}", args.addr))?;
    let chunk = vec![0x5au8; 256 * 1024];
    let started = Instant::now();
    let mut left = args.bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream
            .write_all(&chunk[..n])
            .await
            .context("sending bulk data")?;
        left -= n as u64;
    }
    stream.shutdown().await.context("half-closing")?;
    let mut count = [0u8; 8];
    stream
        .read_exact(&mut count)
        .await
        .context("reading the sink's byte count")?;
    let seconds = started.elapsed().as_secs_f64();
    let got = u64::from_be_bytes(count);
    if got != args.bytes {
        bail!("the sink received {got} of {} bytes", args.bytes);
    }
    Ok(TcpReport {
        bytes: args.bytes,
        seconds,
        gbit_per_s: args.bytes as f64 * 8.0 / seconds / 1e9,
    })
}
