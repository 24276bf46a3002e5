//! `odgm-sim bench snapshot`: the engines' snapshot paths on real files, timed with the real
//! clock outside any simulation: bulk load, zero-copy snapshot cost, snapshot stream build
//! and install throughput, peak RSS.

use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;

use super::{mib, open_bench_engine, peak_rss_bytes, rss_bytes, Scratch, SnapshotBenchArgs};
use crate::rt::Stopwatch;
use crate::storage::stream::{self, SnapshotHeader, DEFAULT_CHUNK_BYTES};

/// `odgm-sim bench snapshot`.
pub fn snapshot(args: &SnapshotBenchArgs) -> Result<ExitCode, String> {
    futures::executor::block_on(snapshot_async(args))
}

async fn snapshot_async(args: &SnapshotBenchArgs) -> Result<ExitCode, String> {
    let scratch = Scratch::new(args.data.engine.name()).map_err(|e| e.to_string())?;
    let cache = args.data.cache_bytes();
    let source = open_bench_engine(args.data.engine, &scratch, "source", cache)?;
    println!(
        "bench snapshot: engine={} keys={} value_bytes={} cache_mib={}",
        args.data.engine, args.data.keys, args.data.value_bytes, args.data.cache_mib
    );
    let rss_start = rss_bytes().unwrap_or(0);

    // Load through the engine's bulk path (what a snapshot install uses): sorted pairs,
    // generated as they are written, so the bench itself holds no copy of the data.
    let t = Stopwatch::start();
    let value_bytes = args.data.value_bytes;
    let generated = futures::stream::iter((0..args.data.keys).map(move |k| {
        let mut v = vec![0xA5u8; value_bytes];
        if let Some(first) = v.first_mut() {
            *first = k as u8;
        }
        Ok((k.to_be_bytes().to_vec(), v))
    }))
    .boxed();
    source
        .install_kv_snapshot_from_stream(generated, Vec::new())
        .await
        .map_err(|e| e.to_string())?;
    let load = t.elapsed();
    let data_bytes = args.data.keys * (8 + args.data.value_bytes as u64);
    println!(
        "load (bulk):     {:>10.1} ms  ({:.1} MB/s, {:.1} MiB of pairs)",
        load.as_secs_f64() * 1e3,
        data_bytes as f64 / 1e6 / load.as_secs_f64().max(1e-9),
        mib(data_bytes)
    );

    // Zero-copy snapshot cost.
    let mut samples: Vec<Duration> = Vec::with_capacity(args.snapshot_samples);
    for _ in 0..args.snapshot_samples.max(1) {
        let t = Stopwatch::start();
        let s = source
            .create_zero_copy_snapshot()
            .await
            .map_err(|e| e.to_string())?;
        samples.push(t.elapsed());
        source
            .release_snapshot(&s.snapshot_id)
            .await
            .map_err(|e| e.to_string())?;
        // Interleave a write so each snapshot sees a new version.
        source
            .put(b"bench-marker", b"x")
            .await
            .map_err(|e| e.to_string())?;
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    let max = *samples.last().unwrap_or(&Duration::ZERO);
    println!(
        "zero-copy snap:  {:>10.3} ms median, {:.3} ms max over {} samples",
        median.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        samples.len()
    );

    // Stream build: snapshot -> pairs -> wire chunks, spooled to a file as a network would
    // carry them to another machine.
    let rss_loaded = rss_bytes().unwrap_or(0);
    let snap = source
        .create_zero_copy_snapshot()
        .await
        .map_err(|e| e.to_string())?;
    let spool_path = scratch.0.join("snapshot.stream");
    let t = Stopwatch::start();
    let pairs = source
        .create_kv_snapshot_stream(&snap)
        .await
        .map_err(|e| e.to_string())?;
    let mut chunks = stream::encode(&SnapshotHeader::default(), pairs, DEFAULT_CHUNK_BYTES)
        .map_err(|e| e.to_string())?;
    let mut wire_bytes = 0u64;
    {
        use std::io::Write;
        let file = std::fs::File::create(&spool_path).map_err(|e| e.to_string())?;
        let mut spool = std::io::BufWriter::new(file);
        while let Some(c) = chunks.next().await {
            let c = c.map_err(|e| e.to_string())?;
            wire_bytes += c.len() as u64;
            spool.write_all(&c).map_err(|e| e.to_string())?;
        }
        spool.flush().map_err(|e| e.to_string())?;
    }
    let build = t.elapsed();
    println!(
        "stream build:    {:>10.1} ms  ({:.1} MB/s, {:.1} MiB on the wire)",
        build.as_secs_f64() * 1e3,
        wire_bytes as f64 / 1e6 / build.as_secs_f64().max(1e-9),
        mib(wire_bytes)
    );
    // The sender is done: its memory goes back before the receiver starts, as on two hosts.
    drop(chunks);
    drop(source);

    // Install: wire chunks read back from the spool -> decode -> a fresh storage.
    let target = open_bench_engine(args.data.engine, &scratch, "target", cache)?;
    let t = Stopwatch::start();
    let file = std::fs::File::open(&spool_path).map_err(|e| e.to_string())?;
    let reader = std::io::BufReader::new(file);
    let chunks = futures::stream::unfold(reader, |mut r| async move {
        use std::io::Read;
        let mut buf = vec![0u8; DEFAULT_CHUNK_BYTES];
        match r.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), r))
            }
            Err(e) => Some((Err(crate::storage::StorageError::from(e)), r)),
        }
    })
    .boxed();
    let (header, decoded) = stream::decode(chunks).await.map_err(|e| e.to_string())?;
    let installed = target
        .install_kv_snapshot_from_stream(decoded, header.meta)
        .await
        .map_err(|e| e.to_string())?;
    let install = t.elapsed();
    println!(
        "stream install:  {:>10.1} ms  ({:.1} MB/s, {} pairs)",
        install.as_secs_f64() * 1e3,
        wire_bytes as f64 / 1e6 / install.as_secs_f64().max(1e-9),
        installed
    );
    let expected = args.data.keys + 1; // the loaded keys plus the marker
    if installed != expected {
        return Err(format!("installed {installed} pairs, expected {expected}"));
    }
    let peak = peak_rss_bytes().unwrap_or(0);
    println!(
        "peak RSS:        {:>10.1} MiB  (at start {:.1} MiB, after load {:.1} MiB)",
        mib(peak),
        mib(rss_start),
        mib(rss_loaded)
    );
    Ok(ExitCode::SUCCESS)
}
