//! Protocol detection (`weft_proxy::detect`): the classifier over a connection's first bytes and
//! the bounded read that feeds it, with the bytes handed on through `PrefixedIo`.
//!
//! Holds for any bytes, however they are split into reads:
//! - the classifier answers `NeedMore` only below `DETECT_BUFFER` bytes;
//! - detection keeps every byte it read, and a `PrefixedIo` replays them before the rest, so the
//!   handler sees exactly what the client sent;
//! - a verdict, once reached, does not change as more bytes arrive (up to `DETECT_BUFFER`), so
//!   how TCP happened to segment the stream cannot change the protocol.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use weft_proxy::detect::{DETECT_BUFFER, DetectOutcome, PrefixedIo, Verdict, classify, detect};

use crate::runtime::block_on;
use crate::scripted_io::ScriptedIo;

/// Never reached: the scripted peer's reads are always ready.
const WINDOW: Duration = Duration::from_secs(3600);

pub fn check(data: &[u8]) {
    let head = &data[..data.len().min(DETECT_BUFFER)];
    let verdict = classify(head);
    if head.len() == DETECT_BUFFER {
        assert_ne!(
            verdict,
            Verdict::NeedMore,
            "a full detection buffer must decide"
        );
    }
    for io in [ScriptedIo::whole(data), ScriptedIo::hashed(data)] {
        check_detection(data, verdict, io);
    }
}

fn check_detection(data: &[u8], full_verdict: Verdict, mut io: ScriptedIo) {
    let detection = block_on(detect(&mut io, WINDOW)).expect("a scripted peer never fails a read");
    let prefix = detection.prefix.clone();
    assert!(
        data.starts_with(&prefix),
        "detection must keep the bytes it read, in order"
    );
    assert_eq!(prefix.len(), io.consumed());
    match detection.outcome {
        DetectOutcome::Detected => {
            assert_eq!(classify(&prefix), Verdict::Found(detection.protocol));
            // The verdict on the first segments is the verdict on everything detection could
            // have read: segmentation does not matter.
            assert_eq!(
                full_verdict,
                Verdict::Found(detection.protocol),
                "the verdict after {} bytes changed with more bytes",
                prefix.len()
            );
        }
        DetectOutcome::Eof => {
            assert_eq!(prefix.len(), data.len(), "EOF only once all bytes are read");
            assert_eq!(classify(&prefix), Verdict::NeedMore);
        }
        DetectOutcome::Timeout | DetectOutcome::OpaquePort => {
            panic!("unexpected outcome {:?}", detection.outcome)
        }
    }
    // What the handler reads: the prefix, then the rest of the stream, nothing lost or doubled.
    let mut replay = PrefixedIo::new(Bytes::clone(&prefix), io);
    let mut seen = Vec::with_capacity(data.len());
    block_on(replay.read_to_end(&mut seen)).expect("replaying never fails");
    assert_eq!(
        seen, data,
        "PrefixedIo must replay exactly what the client sent"
    );
}
