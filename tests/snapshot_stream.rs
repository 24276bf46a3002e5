//! Decoder robustness: random bytes, truncations and bit flips of valid streams. Every case
//! yields the original pairs or an error, never a panic and never different pairs.

use futures::StreamExt;
use odgm_sim::storage::stream::{self, SnapshotHeader};
use odgm_sim::storage::{Pair, StorageError};
use proptest::prelude::*;

fn encode(header: &SnapshotHeader, pairs: &[Pair], chunk: usize) -> Vec<u8> {
    futures::executor::block_on(async {
        let src = futures::stream::iter(pairs.iter().cloned().map(Ok).collect::<Vec<_>>()).boxed();
        let chunks: Vec<_> = stream::encode(header, src, chunk)
            .expect("encode")
            .collect()
            .await;
        chunks
            .into_iter()
            .map(|c| c.expect("chunk"))
            .collect::<Vec<_>>()
            .concat()
    })
}

/// Decodes `bytes` delivered in chunks of `chunk` bytes.
fn decode(bytes: &[u8], chunk: usize) -> Result<(SnapshotHeader, Vec<Pair>), StorageError> {
    futures::executor::block_on(async {
        let chunks: Vec<Result<Vec<u8>, StorageError>> =
            bytes.chunks(chunk.max(1)).map(|c| Ok(c.to_vec())).collect();
        let (h, mut pairs) = stream::decode(futures::stream::iter(chunks).boxed()).await?;
        let mut out = Vec::new();
        while let Some(p) = pairs.next().await {
            out.push(p?);
        }
        Ok((h, out))
    })
}

fn pairs() -> impl Strategy<Value = Vec<Pair>> {
    prop::collection::vec(
        (
            prop::collection::vec(any::<u8>(), 0..12),
            prop::collection::vec(any::<u8>(), 0..40),
        ),
        0..30,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn round_trips(p in pairs(), chunk in 1usize..200, read in 1usize..200) {
        let header = SnapshotHeader { snapshot_id: "x".into(), raft: None, meta: vec![] };
        let bytes = encode(&header, &p, chunk);
        let (h, got) = decode(&bytes, read).expect("valid stream decodes");
        prop_assert_eq!(h, header);
        prop_assert_eq!(got, p);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), read in 1usize..64) {
        let _ = decode(&bytes, read);
    }

    #[test]
    fn random_bytes_after_magic_never_panic(tail in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = b"ODGMSNAP\x01\x00".to_vec();
        bytes.extend(tail);
        let _ = decode(&bytes, 7);
    }

    #[test]
    fn truncation_is_an_error(p in pairs(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&SnapshotHeader::default(), &p, 64);
        let cut = cut.index(bytes.len());
        prop_assert!(decode(&bytes[..cut], 13).is_err());
    }

    #[test]
    fn bit_flips_give_the_original_or_an_error(
        p in pairs(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let header = SnapshotHeader::default();
        let mut bytes = encode(&header, &p, 64);
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        // CRC32 catches every single-bit flip, so a flipped stream must never decode to
        // anything, not even the original.
        prop_assert!(decode(&bytes, 17).is_err());
    }
}
