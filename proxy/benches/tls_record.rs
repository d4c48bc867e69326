//! The TLS record path between proxies, with the proxy's own mTLS configurations (weft-tls,
//! TLS 1.3, ring): what every byte of meshed traffic pays on top of a plain connection.
//! - `memory`: record encryption and decryption alone, a rustls client and server connection
//!   passing records through memory (no syscalls): the crypto floor per byte.
//! - `loopback`: an established mTLS connection as the proxy makes one (PeerConnector to
//!   accept::terminate over loopback TCP, tokio-rustls), written in the chunk sizes the opaque
//!   copy loop uses: crypto plus the syscalls and flushes of the async path.
//! - `handshake`: one full mTLS handshake in memory (certificate chains and SPIFFE checks on both
//!   sides), the price of a new meshed connection.

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use weft_proxy::identity::LocalIdentity;
use weft_proxy::peer::MeshedPeer;
use weft_proxy::tls::accept::terminate;
use weft_proxy::tls::connect::PeerConnector;
use weft_proxy::tls::transport::Transport;
use weft_tls::rustls::{ClientConnection, ServerConnection};
use weft_tls::test_ca::TestCa;
use weft_tls::{CertificateSlot, SpiffeId, WorkloadKey};

const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/web";
const SERVER: &str = "spiffe://cluster.local/ns/default/sa/api";

fn identity(ca: &TestCa, id: &str) -> Arc<LocalIdentity> {
    let id = SpiffeId::parse(id).expect("SPIFFE id");
    let key = WorkloadKey::generate().expect("key");
    let leaf = ca.issue_for_csr(&key.csr_der(&id).expect("CSR"), 3600);
    let slot = CertificateSlot::with(key.certified_key(vec![leaf]).expect("certified key"));
    Arc::new(LocalIdentity::new(id, ca.anchors(), slot).expect("identity"))
}

/// Moves every pending record from one side to the other.
fn pump(from: &mut dyn TlsSide, to: &mut dyn TlsSide) {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).expect("write records");
    }
    let mut rd = &wire[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).expect("read records");
        to.process().expect("valid records");
    }
}

/// The bits of a rustls connection `pump` needs, for client and server alike.
trait TlsSide {
    fn wants_write(&self) -> bool;
    fn write_tls(&mut self, wr: &mut dyn Write) -> std::io::Result<usize>;
    fn read_tls(&mut self, rd: &mut dyn Read) -> std::io::Result<usize>;
    fn process(&mut self) -> Result<(), weft_tls::rustls::Error>;
}

macro_rules! tls_side {
    ($t:ty) => {
        impl TlsSide for $t {
            fn wants_write(&self) -> bool {
                (**self).wants_write()
            }
            fn write_tls(&mut self, wr: &mut dyn Write) -> std::io::Result<usize> {
                (**self).write_tls(wr)
            }
            fn read_tls(&mut self, rd: &mut dyn Read) -> std::io::Result<usize> {
                (**self).read_tls(rd)
            }
            fn process(&mut self) -> Result<(), weft_tls::rustls::Error> {
                (**self).process_new_packets().map(|_| ())
            }
        }
    };
}
tls_side!(ClientConnection);
tls_side!(ServerConnection);

/// A client and server connection with the proxies' configs, handshake done in memory.
fn handshake(
    client: &LocalIdentity,
    server: &LocalIdentity,
) -> (ClientConnection, ServerConnection) {
    let name = SpiffeId::parse(SERVER)
        .expect("SPIFFE id")
        .server_name()
        .expect("server name");
    let mut c = ClientConnection::new(client.client_config(Transport::Tcp), name).expect("client");
    let mut s = ServerConnection::new(server.server_config()).expect("server");
    while c.is_handshaking() || s.is_handshaking() {
        pump(&mut c, &mut s);
        pump(&mut s, &mut c);
    }
    // TLS 1.3 tickets and the like: drain whatever is still queued.
    pump(&mut s, &mut c);
    pump(&mut c, &mut s);
    (c, s)
}

fn bench_memory(c: &mut Criterion, client: &LocalIdentity, server: &LocalIdentity) {
    const LEN: usize = 1 << 20;
    let mut group = c.benchmark_group("tls_record/memory");
    group.throughput(Throughput::Bytes(LEN as u64));
    for chunk in [1024usize, 16 * 1024, 64 * 1024] {
        let (mut tx, mut rx) = handshake(client, server);
        let data = vec![0x5au8; chunk];
        let mut sink = vec![0u8; 64 * 1024];
        let mut wire = Vec::with_capacity(2 * chunk + 1024);
        group.bench_with_input(BenchmarkId::from_parameter(chunk), &chunk, |b, &chunk| {
            b.iter(|| {
                let mut left = LEN;
                while left > 0 {
                    let n = left.min(chunk);
                    tx.writer().write_all(&data[..n]).expect("plaintext in");
                    wire.clear();
                    while tx.wants_write() {
                        tx.write_tls(&mut wire).expect("records out");
                    }
                    // Plaintext is taken out as records are opened: rustls holds only so much.
                    let mut rd = &wire[..];
                    let mut got = 0;
                    while !rd.is_empty() {
                        rx.read_tls(&mut rd).expect("records in");
                        let state = rx.process_new_packets().expect("valid records");
                        let mut ready = state.plaintext_bytes_to_read();
                        while ready > 0 {
                            let read = rx.reader().read(&mut sink).expect("plaintext out");
                            ready -= read;
                            got += read;
                        }
                    }
                    assert_eq!(got, n, "every byte came through");
                    left -= n;
                }
                black_box(&sink);
            })
        });
    }
    group.finish();
}

fn bench_loopback(c: &mut Criterion, client: &Arc<LocalIdentity>, server: &Arc<LocalIdentity>) {
    const LEN: usize = 8 << 20;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut tx, mut rx) = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let peer = MeshedPeer {
            proxy: listener.local_addr().expect("address"),
            identity: std::sync::Arc::new(SpiffeId::parse(SERVER).expect("SPIFFE id")),
        };
        let connector = PeerConnector::new(client.clone(), Duration::from_secs(5));
        let server = server.clone();
        let accepted = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            terminate(tcp, &server, Duration::from_secs(5))
                .await
                .expect("terminate")
                .stream
        });
        let tx = connector
            .connect(&peer, Transport::Tcp)
            .await
            .expect("connect");
        (tx, accepted.await.expect("accept task"))
    });
    let mut group = c.benchmark_group("tls_record/loopback");
    group.throughput(Throughput::Bytes(LEN as u64));
    // 8 KiB: tokio's default copy buffer; 16 KiB: one full TLS record (and the opaque copy's
    // stack read); 64 KiB: the copy buffer before it followed the traffic.
    for chunk in [8 * 1024usize, 16 * 1024, 64 * 1024] {
        let data = vec![0xa5u8; chunk];
        group.bench_with_input(BenchmarkId::from_parameter(chunk), &chunk, |b, &chunk| {
            b.iter(|| {
                rt.block_on(async {
                    let send = async {
                        let mut left = LEN;
                        while left > 0 {
                            let n = left.min(chunk);
                            tx.write_all(&data[..n]).await.expect("send");
                            left -= n;
                        }
                        tx.flush().await.expect("flush");
                    };
                    let receive = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        let mut got = 0;
                        while got < LEN {
                            let n = rx.read(&mut buf).await.expect("receive");
                            assert!(n > 0, "the connection closed mid-transfer");
                            got += n;
                        }
                    };
                    tokio::join!(send, receive);
                })
            })
        });
    }
    group.finish();
}

fn bench_handshake(c: &mut Criterion, client: &LocalIdentity, server: &LocalIdentity) {
    c.bench_function("tls_record/handshake", |b| {
        b.iter(|| black_box(handshake(client, server)))
    });
}

fn benches(c: &mut Criterion) {
    let ca = TestCa::new("bench");
    let client = identity(&ca, CLIENT);
    let server = identity(&ca, SERVER);
    bench_memory(c, &client, &server);
    bench_loopback(c, &client, &server);
    bench_handshake(c, &client, &server);
}

criterion_group!(tls_record, benches);
criterion_main!(tls_record);
