//! `weft-bench-server`: the one fixed upstream every benchmark contender talks to.
//!
//! HTTP (HTTP/1.1 and h2c on one port): every request gets the same 1 KiB body; a gRPC request
//! (`content-type: application/grpc...`) gets one 1 KiB gRPC message and `grpc-status: 0`.
//! TCP sink (bulk): reads until end of input, then answers with the byte count (8 bytes, big
//! endian) and closes, so the client knows every byte crossed.
//! One thread: the same cost for every contender, and it leaves the cores to what is measured.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const BODY_LEN: usize = 1024;

#[derive(Parser)]
#[command(
    name = "weft-bench-server",
    about = "Fixed fast upstream for Weft's benchmark"
)]
struct Args {
    /// HTTP/1.1 + h2c listen address.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http: SocketAddr,
    /// Bulk TCP sink listen address.
    #[arg(long, default_value = "0.0.0.0:9000")]
    tcp: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let http = TcpListener::bind(args.http)
        .await
        .with_context(|| format!("binding --http {}", args.http))?;
    let tcp = TcpListener::bind(args.tcp)
        .await
        .with_context(|| format!("binding --tcp {}", args.tcp))?;
    tokio::spawn(async move {
        loop {
            match tcp.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(sink(stream));
                }
                Err(e) => eprintln!("weft-bench-server: accept on the TCP sink: {e}"),
            }
        }
    });
    let body = Bytes::from(vec![b'x'; BODY_LEN]);
    loop {
        let (stream, _) = match http.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("weft-bench-server: accept on the HTTP port: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| respond(req, body.clone()));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    body: Bytes,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    // Read the request body so the client's send completes as a real server would let it.
    let _ = req.into_body().collect().await;
    if !grpc {
        let resp = Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(body).map_err(|never| match never {}).boxed());
        return Ok(resp.unwrap_or_default());
    }
    let mut message = Vec::with_capacity(5 + body.len());
    message.push(0); // not compressed
    message.extend_from_slice(&(body.len() as u32).to_be_bytes());
    message.extend_from_slice(&body);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = futures_util::stream::iter([
        Ok::<_, Infallible>(Frame::data(Bytes::from(message))),
        Ok(Frame::trailers(trailers)),
    ]);
    let resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/grpc")
        .body(BodyExt::boxed(StreamBody::new(frames)));
    Ok(resp.unwrap_or_default())
}

async fn sink(mut stream: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total: u64 = 0;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(_) => return,
        }
    }
    let _ = stream.write_all(&total.to_be_bytes()).await;
    let _ = stream.shutdown().await;
}
