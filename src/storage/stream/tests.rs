use super::*;

fn pairs(n: usize) -> Vec<Pair> {
    (0..n)
        .map(|i| (format!("k{i:05}").into_bytes(), vec![i as u8; i % 7]))
        .collect()
}

fn encode_all(h: &SnapshotHeader, p: &[Pair], chunk: usize) -> Vec<Vec<u8>> {
    let src = futures::stream::iter(p.iter().cloned().map(Ok).collect::<Vec<_>>()).boxed();
    futures::executor::block_on(encode(h, src, chunk).unwrap().collect::<Vec<_>>())
        .into_iter()
        .map(|c| c.unwrap())
        .collect()
}

fn decode_all(chunks: Vec<Vec<u8>>) -> Result<(SnapshotHeader, Vec<Pair>), StorageError> {
    futures::executor::block_on(async {
        let src = futures::stream::iter(chunks.into_iter().map(Ok)).boxed();
        let (h, mut s) = decode(src).await?;
        let mut out = Vec::new();
        while let Some(p) = s.next().await {
            out.push(p?);
        }
        Ok((h, out))
    })
}

#[test]
fn round_trip_with_any_chunking() {
    let h = SnapshotHeader {
        snapshot_id: "s1".into(),
        raft: Some(RaftSnapshotMeta {
            last_log_id: Some((3, 42)),
            membership: vec![1, 2, 3],
        }),
        meta: vec![(b"m".to_vec(), b"v".to_vec())],
    };
    let p = pairs(300);
    for chunk in [1, 7, 64, 4096, 1 << 20] {
        let chunks = encode_all(&h, &p, chunk);
        assert!(chunks.iter().all(|c| c.len() <= chunk));
        let (h2, p2) = decode_all(chunks).unwrap();
        assert_eq!(h2, h);
        assert_eq!(p2, p);
    }
}

#[test]
fn empty_keys_and_values_are_records() {
    let p = vec![
        (vec![], vec![]),
        (vec![], b"x".to_vec()),
        (b"k".to_vec(), vec![]),
    ];
    let (_, p2) = decode_all(encode_all(&SnapshotHeader::default(), &p, 3)).unwrap();
    assert_eq!(p2, p);
}

fn flat(h: &SnapshotHeader, p: &[Pair]) -> Vec<u8> {
    encode_all(h, p, 1 << 20).concat()
}

fn err_of(bytes: Vec<u8>) -> StorageError {
    decode_all(vec![bytes]).expect_err("decoding must fail")
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = flat(&SnapshotHeader::default(), &pairs(5));
    for cut in 0..bytes.len() {
        let e = err_of(bytes[..cut].to_vec());
        assert!(
            matches!(e, StorageError::Stream(StreamError::Truncated { .. })),
            "cut {cut}: {e}"
        );
    }
}

#[test]
fn corruption_is_named() {
    let good = flat(&SnapshotHeader::default(), &pairs(5));
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(matches!(
        err_of(bad),
        StorageError::Stream(StreamError::BadMagic { .. })
    ));
    let mut bad = good.clone();
    bad[8] = 9;
    assert!(matches!(
        err_of(bad),
        StorageError::Stream(StreamError::UnsupportedVersion { found: 9, .. })
    ));
    let mut bad = good.clone();
    bad.extend_from_slice(b"junk");
    assert!(matches!(
        err_of(bad),
        StorageError::Stream(StreamError::TrailingData { .. })
    ));
    // A 4 GiB key length right after the header.
    let header_len = u32::from_le_bytes(good[10..14].try_into().unwrap()) as usize;
    let rec = PREAMBLE_BYTES + header_len;
    let mut bad = good.clone();
    bad[rec + 1..rec + 5].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        err_of(bad),
        StorageError::Stream(StreamError::TooLong { what: "key", .. })
    ));
    // A flipped bit in a value is caught by the checksum.
    let mut bad = good.clone();
    let last_value_byte = good.len() - TRAILER_BYTES - 1;
    bad[last_value_byte] ^= 0x10;
    assert!(matches!(
        err_of(bad),
        StorageError::Stream(StreamError::ChecksumMismatch { .. })
    ));
}

#[test]
fn trailing_chunk_after_end_is_an_error() {
    let mut chunks = encode_all(&SnapshotHeader::default(), &pairs(3), 16);
    chunks.push(b"x".to_vec());
    assert!(matches!(
        decode_all(chunks),
        Err(StorageError::Stream(StreamError::TrailingData { .. }))
    ));
}
