//! The snapshot stream wire format: how a snapshot's pairs cross the network in chunks.
//!
//! ```text
//! magic "ODGMSNAP" (8) | version u16 LE | header_len u32 LE | header (bincode SnapshotHeader)
//! record*:  0x01 | key_len u32 LE | value_len u32 LE | key | value
//! trailer:  0x00 | record_count u64 LE | crc32 u32 LE (over every byte before it)
//! ```
//!
//! The encoder reads pairs a page at a time and emits chunks of a fixed size: it holds at most
//! one chunk plus one record. The decoder accepts chunks of any size and split (short reads
//! are normal), buffers at most one frame, checks every length against a fixed limit *before*
//! allocating, and reports truncation, corruption, unknown versions and trailing bytes as a
//! [`StreamError`] with the byte offset where it noticed. Empty keys and values are legal.
//!
//! Encoder and decoder stay in one file (about 650 lines) on purpose: every field of the
//! format is written and read within a screen of each other, so a change to one side shows
//! the other. The tests are in `stream/tests.rs`.

use std::collections::VecDeque;

use bincode::Options as _;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{KvStream, Pair, StorageError, MAX_KEY_BYTES, MAX_VALUE_BYTES};

/// First bytes of every snapshot stream.
pub const MAGIC: [u8; 8] = *b"ODGMSNAP";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 2;
/// Largest encoded header the decoder accepts.
pub const MAX_HEADER_BYTES: usize = 1024 * 1024;
/// Default size of the chunks the encoder emits.
pub const DEFAULT_CHUNK_BYTES: usize = 64 * 1024;
/// The decoder consumes input in slices of at most this many bytes.
const FEED_SLICE_BYTES: usize = 64 * 1024;

const TAG_END: u8 = 0x00;
const TAG_RECORD: u8 = 0x01;
const PREAMBLE_BYTES: usize = 8 + 2 + 4;
const RECORD_HEAD_BYTES: usize = 1 + 4 + 4;
const TRAILER_BYTES: usize = 1 + 8 + 4;

/// Raft's part of a snapshot header: which log entry the data includes, and the membership
/// (openraft's `StoredMembership`, bincode-encoded by the Raft layer).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RaftSnapshotMeta {
    /// Last included log id as (term, index), if any entry is included. A term has at most
    /// one leader, so the term names the leader.
    pub last_log_id: Option<(u64, u64)>,
    /// Encoded membership as of that entry.
    pub membership: Vec<u8>,
}

/// The metadata at the front of a snapshot stream.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The snapshot's id on the sender.
    pub snapshot_id: String,
    /// Raft's metadata, when Raft sends the snapshot.
    pub raft: Option<RaftSnapshotMeta>,
    /// Meta pairs to install with the data (e.g. the applied index).
    pub meta: Vec<Pair>,
}

/// What can be wrong with a snapshot stream.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// The stream does not start with [`MAGIC`].
    #[error("not a snapshot stream: magic bytes {found:02x?} at offset 0")]
    BadMagic {
        /// The bytes found.
        found: Vec<u8>,
    },
    /// Written by a format version this build cannot read.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// Version in the stream.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// A length field above its limit (checked before any allocation).
    #[error("{what} length {len} at offset {offset} exceeds the limit of {limit} bytes")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// The length read.
        len: u64,
        /// The limit.
        limit: usize,
        /// Offset of the length field.
        offset: u64,
    },
    /// The header did not decode.
    #[error("header at offset {offset} does not decode: {reason}")]
    BadHeader {
        /// Why.
        reason: String,
        /// Offset of the header.
        offset: u64,
    },
    /// A frame tag that is neither a record nor the trailer.
    #[error("unknown frame tag 0x{tag:02x} at offset {offset}")]
    UnknownTag {
        /// The tag byte.
        tag: u8,
        /// Its offset.
        offset: u64,
    },
    /// The input ended before the trailer.
    #[error("stream truncated at offset {offset}: expected {expected}")]
    Truncated {
        /// Bytes received.
        offset: u64,
        /// What was being read.
        expected: &'static str,
    },
    /// The trailer's checksum does not match the bytes received.
    #[error("checksum mismatch: trailer says {expected:08x}, stream hashes to {actual:08x}")]
    ChecksumMismatch {
        /// From the trailer.
        expected: u32,
        /// Computed.
        actual: u32,
    },
    /// The trailer's record count does not match the records received.
    #[error("trailer counts {trailer} records but {received} were received")]
    CountMismatch {
        /// From the trailer.
        trailer: u64,
        /// Received.
        received: u64,
    },
    /// Bytes after the trailer.
    #[error("{bytes} bytes of trailing data after the trailer at offset {offset}")]
    TrailingData {
        /// Offset just past the trailer.
        offset: u64,
        /// How many bytes followed (at least).
        bytes: u64,
    },
    /// A pair too large for the format (encoder side).
    #[error("{what} of {len} bytes exceeds the format limit of {limit}")]
    PairTooLarge {
        /// Key or value.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The source of chunks or pairs failed.
    #[error("stream source failed: {0}")]
    Source(String),
}

fn hash_update(h: &mut crc32fast::Hasher, bytes: &[u8]) {
    h.update(bytes);
}

// ---------------------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------------------

struct EncodeState {
    pairs: Option<KvStream>,
    out: VecDeque<u8>,
    hasher: crc32fast::Hasher,
    count: u64,
    chunk_bytes: usize,
    failed: bool,
}

impl EncodeState {
    fn push(&mut self, bytes: &[u8]) {
        hash_update(&mut self.hasher, bytes);
        self.out.extend(bytes);
    }

    fn take_chunk(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.out.len());
        self.out.drain(..n).collect()
    }
}

/// Encodes a header and a stream of pairs into chunks of `chunk_bytes` (the last may be
/// shorter). Memory: one chunk plus one record.
pub fn encode(
    header: &SnapshotHeader,
    pairs: KvStream,
    chunk_bytes: usize,
) -> Result<BoxStream<'static, Result<Vec<u8>, StorageError>>, StorageError> {
    let header_bytes = bincode_limited()
        .serialize(header)
        .map_err(|e| StorageError::Engine(format!("snapshot header does not encode: {e}")))?;
    if header_bytes.len() > MAX_HEADER_BYTES {
        return Err(StreamError::PairTooLarge {
            what: "header",
            len: header_bytes.len(),
            limit: MAX_HEADER_BYTES,
        }
        .into());
    }
    let chunk_bytes = chunk_bytes.max(1);
    let mut st = EncodeState {
        pairs: Some(pairs),
        out: VecDeque::with_capacity(chunk_bytes + RECORD_HEAD_BYTES),
        hasher: crc32fast::Hasher::new(),
        count: 0,
        chunk_bytes,
        failed: false,
    };
    st.push(&MAGIC);
    st.push(&FORMAT_VERSION.to_le_bytes());
    st.push(&(header_bytes.len() as u32).to_le_bytes());
    st.push(&header_bytes);
    Ok(futures::stream::unfold(st, |mut st| async move {
        if st.failed {
            return None;
        }
        while st.out.len() < st.chunk_bytes {
            let Some(pairs) = st.pairs.as_mut() else {
                break;
            };
            match pairs.next().await {
                Some(Ok((k, v))) => {
                    for (what, len, limit) in [
                        ("key", k.len(), MAX_KEY_BYTES),
                        ("value", v.len(), MAX_VALUE_BYTES),
                    ] {
                        if len > limit {
                            st.failed = true;
                            let e = StreamError::PairTooLarge { what, len, limit };
                            return Some((Err(e.into()), st));
                        }
                    }
                    st.push(&[TAG_RECORD]);
                    st.push(&(k.len() as u32).to_le_bytes());
                    st.push(&(v.len() as u32).to_le_bytes());
                    st.push(&k);
                    st.push(&v);
                    st.count += 1;
                }
                Some(Err(e)) => {
                    st.failed = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.pairs = None;
                    let count = st.count;
                    st.push(&[TAG_END]);
                    st.push(&count.to_le_bytes());
                    let crc = st.hasher.clone().finalize();
                    st.out.extend(crc.to_le_bytes());
                }
            }
        }
        if st.out.is_empty() {
            return None;
        }
        let chunk = st.take_chunk(st.chunk_bytes);
        Some((Ok(chunk), st))
    })
    .boxed())
}

// ---------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------

/// What the decoder produced from the bytes fed so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The header (always first).
    Header(SnapshotHeader),
    /// One pair.
    Pair(Pair),
    /// The trailer was read and verified.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Preamble,
    Header(usize),
    Records,
    Done,
}

/// A push decoder: feed bytes in any split, pull frames. Buffers at most one frame.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    pos: usize,
    /// Stream offset of `buf[pos]`.
    offset: u64,
    phase: Phase,
    hasher: crc32fast::Hasher,
    count: u64,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            offset: 0,
            phase: Phase::Preamble,
            hasher: crc32fast::Hasher::new(),
            count: 0,
        }
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Adds input. After the trailer, any non-empty input is an error.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.phase == Phase::Done {
            return Err(StreamError::TrailingData {
                offset: self.offset,
                bytes: bytes.len() as u64,
            });
        }
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn avail(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize, hash: bool) -> &[u8] {
        let start = self.pos;
        self.pos += n;
        self.offset += n as u64;
        let bytes = &self.buf[start..start + n];
        if hash {
            self.hasher.update(bytes);
        }
        bytes
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[at..at + 4]);
        u32::from_le_bytes(b)
    }

    /// The next complete frame, or `None` if more input is needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, StreamError> {
        match self.phase {
            Phase::Preamble => {
                let a = self.avail();
                if a.len() < 8 && a[..] != MAGIC[..a.len()] {
                    return Err(StreamError::BadMagic { found: a.to_vec() });
                }
                if a.len() < PREAMBLE_BYTES {
                    return Ok(None);
                }
                if a[..8] != MAGIC {
                    return Err(StreamError::BadMagic {
                        found: a[..8].to_vec(),
                    });
                }
                let version = u16::from_le_bytes([a[8], a[9]]);
                if version != FORMAT_VERSION {
                    return Err(StreamError::UnsupportedVersion {
                        found: version,
                        supported: FORMAT_VERSION,
                    });
                }
                let len = Self::u32_at(a, 10) as usize;
                if len > MAX_HEADER_BYTES {
                    return Err(StreamError::TooLong {
                        what: "header",
                        len: len as u64,
                        limit: MAX_HEADER_BYTES,
                        offset: self.offset + 10,
                    });
                }
                self.consume(PREAMBLE_BYTES, true);
                self.phase = Phase::Header(len);
                self.next_frame()
            }
            Phase::Header(len) => {
                if self.avail().len() < len {
                    return Ok(None);
                }
                let offset = self.offset;
                let bytes = self.consume(len, true);
                let header: SnapshotHeader =
                    bincode_limited()
                        .deserialize(bytes)
                        .map_err(|e| StreamError::BadHeader {
                            reason: e.to_string(),
                            offset,
                        })?;
                self.phase = Phase::Records;
                Ok(Some(Frame::Header(header)))
            }
            Phase::Records => {
                let a = self.avail();
                let Some(&tag) = a.first() else {
                    return Ok(None);
                };
                match tag {
                    TAG_RECORD => {
                        if a.len() < RECORD_HEAD_BYTES {
                            return Ok(None);
                        }
                        let klen = Self::u32_at(a, 1) as usize;
                        let vlen = Self::u32_at(a, 5) as usize;
                        if klen > MAX_KEY_BYTES {
                            return Err(StreamError::TooLong {
                                what: "key",
                                len: klen as u64,
                                limit: MAX_KEY_BYTES,
                                offset: self.offset + 1,
                            });
                        }
                        if vlen > MAX_VALUE_BYTES {
                            return Err(StreamError::TooLong {
                                what: "value",
                                len: vlen as u64,
                                limit: MAX_VALUE_BYTES,
                                offset: self.offset + 5,
                            });
                        }
                        if a.len() < RECORD_HEAD_BYTES + klen + vlen {
                            return Ok(None);
                        }
                        let bytes = self.consume(RECORD_HEAD_BYTES + klen + vlen, true);
                        let key = bytes[RECORD_HEAD_BYTES..RECORD_HEAD_BYTES + klen].to_vec();
                        let value = bytes[RECORD_HEAD_BYTES + klen..].to_vec();
                        self.count += 1;
                        Ok(Some(Frame::Pair((key, value))))
                    }
                    TAG_END => {
                        if a.len() < TRAILER_BYTES {
                            return Ok(None);
                        }
                        let mut c = [0u8; 8];
                        c.copy_from_slice(&a[1..9]);
                        let trailer_count = u64::from_le_bytes(c);
                        let expected = Self::u32_at(a, 9);
                        self.consume(9, true);
                        let actual = self.hasher.clone().finalize();
                        self.consume(4, false);
                        if expected != actual {
                            return Err(StreamError::ChecksumMismatch { expected, actual });
                        }
                        if trailer_count != self.count {
                            return Err(StreamError::CountMismatch {
                                trailer: trailer_count,
                                received: self.count,
                            });
                        }
                        self.phase = Phase::Done;
                        if self.buffered() > 0 {
                            return Err(StreamError::TrailingData {
                                offset: self.offset,
                                bytes: self.buffered() as u64,
                            });
                        }
                        Ok(Some(Frame::End))
                    }
                    other => Err(StreamError::UnknownTag {
                        tag: other,
                        offset: self.offset,
                    }),
                }
            }
            Phase::Done => {
                if self.buffered() > 0 {
                    return Err(StreamError::TrailingData {
                        offset: self.offset,
                        bytes: self.buffered() as u64,
                    });
                }
                Ok(None)
            }
        }
    }

    /// Called at end of input: an error unless the trailer was read.
    pub fn finish(&self) -> Result<(), StreamError> {
        let expected = match self.phase {
            Phase::Done => return Ok(()),
            Phase::Preamble => "the magic, version and header length",
            Phase::Header(_) => "the header",
            Phase::Records => "a record or the trailer",
        };
        Err(StreamError::Truncated {
            offset: self.offset + self.buffered() as u64,
            expected,
        })
    }
}

fn bincode_limited() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(MAX_HEADER_BYTES as u64)
}

/// Decodes a stream of chunks: returns the header once it has arrived, and the pairs as a
/// stream that ends with an error unless the trailer verifies.
pub async fn decode(
    chunks: BoxStream<'static, Result<Vec<u8>, StorageError>>,
) -> Result<(SnapshotHeader, KvStream), StorageError> {
    let mut st = DecodeState {
        chunks,
        pending: Vec::new(),
        pending_pos: 0,
        decoder: FrameDecoder::new(),
        done: false,
    };
    let header = match st.next().await {
        Some(Ok(Frame::Header(h))) => h,
        Some(Ok(other)) => {
            return Err(StorageError::Engine(format!(
                "decoder produced {other:?} before the header"
            )))
        }
        Some(Err(e)) => return Err(e),
        // `next` reports a truncated stream as an error, so the end comes only after a header.
        None => {
            return Err(StreamError::Truncated {
                offset: 0,
                expected: "the header",
            }
            .into())
        }
    };
    let pairs = futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        match st.next().await {
            Some(Ok(Frame::Pair(p))) => Some((Ok(p), st)),
            Some(Ok(Frame::End)) | None => None,
            Some(Ok(Frame::Header(_))) => {
                st.done = true;
                Some((
                    Err(StorageError::Engine("second header in stream".into())),
                    st,
                ))
            }
            Some(Err(e)) => {
                st.done = true;
                Some((Err(e), st))
            }
        }
    })
    .boxed();
    Ok((header, pairs))
}

struct DecodeState {
    chunks: BoxStream<'static, Result<Vec<u8>, StorageError>>,
    pending: Vec<u8>,
    pending_pos: usize,
    decoder: FrameDecoder,
    done: bool,
}

impl DecodeState {
    /// The next frame; `None` after `End`. Errors are terminal.
    async fn next(&mut self) -> Option<Result<Frame, StorageError>> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(Frame::End)) => {
                    // Anything after the trailer is an error, even in later chunks.
                    loop {
                        if self.pending_pos < self.pending.len() {
                            let extra = (self.pending.len() - self.pending_pos) as u64;
                            self.done = true;
                            return Some(Err(StreamError::TrailingData {
                                offset: self.decoder.offset,
                                bytes: extra,
                            }
                            .into()));
                        }
                        match self.chunks.next().await {
                            Some(Ok(c)) => {
                                self.pending = c;
                                self.pending_pos = 0;
                            }
                            Some(Err(e)) => {
                                self.done = true;
                                return Some(Err(e));
                            }
                            None => break,
                        }
                    }
                    self.done = true;
                    return Some(Ok(Frame::End));
                }
                Ok(Some(frame)) => return Some(Ok(frame)),
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e.into()));
                }
            }
            // Need more input: feed the next slice of the pending chunk, or the next chunk.
            if self.pending_pos >= self.pending.len() {
                match self.chunks.next().await {
                    Some(Ok(c)) => {
                        self.pending = c;
                        self.pending_pos = 0;
                        continue;
                    }
                    Some(Err(e)) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                    None => {
                        self.done = true;
                        return match self.decoder.finish() {
                            Ok(()) => None,
                            Err(e) => Some(Err(e.into())),
                        };
                    }
                }
            }
            let end = (self.pending_pos + FEED_SLICE_BYTES).min(self.pending.len());
            let r = self.decoder.feed(&self.pending[self.pending_pos..end]);
            self.pending_pos = end;
            if let Err(e) = r {
                self.done = true;
                return Some(Err(e.into()));
            }
        }
    }
}

#[cfg(test)]
mod tests;
