//! The opaque TCP data path: bytes from a client through `opaque::forward` to a loopback sink.
//! Throughput here bounds what the mesh can do for databases, brokers and bulk transfers.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::opaque::forward;

const LEN: usize = 16 << 20;

async fn one_transfer(sink: std::net::SocketAddr, proxy: &TcpListener, chunk: &[u8]) {
    let client = tokio::spawn({
        let chunk = chunk.to_vec();
        let addr = proxy.local_addr().expect("proxy address");
        async move {
            let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
            let mut left = LEN;
            while left > 0 {
                let n = left.min(chunk.len());
                s.write_all(&chunk[..n]).await.expect("send");
                left -= n;
            }
            s.shutdown().await.expect("half-close");
            let mut count = [0u8; 8];
            s.read_exact(&mut count).await.expect("count");
            assert_eq!(u64::from_be_bytes(count), LEN as u64);
        }
    });
    let (mut inbound, _) = proxy.accept().await.expect("accept");
    forward(
        &mut inbound,
        sink,
        Duration::from_secs(5),
        Duration::from_secs(3600),
        |_| (),
    )
    .await
    .expect("forward");
    client.await.expect("client task");
}

fn bench_forward(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (sink, proxy) = rt.block_on(async {
        let sink = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let addr = sink.local_addr().expect("sink address");
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = sink.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut total = 0u64;
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => total += n as u64,
                        }
                    }
                    let _ = s.write_all(&total.to_be_bytes()).await;
                });
            }
        });
        let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        (addr, proxy)
    });
    let chunk = vec![0x5au8; 256 * 1024];
    let mut group = c.benchmark_group("opaque/forward");
    group.throughput(Throughput::Bytes(LEN as u64));
    group.sample_size(10);
    group.bench_function("16MiB_loopback", |b| {
        b.iter(|| rt.block_on(one_transfer(sink, &proxy, &chunk)))
    });
    group.finish();
}

criterion_group!(benches, bench_forward);
criterion_main!(benches);
