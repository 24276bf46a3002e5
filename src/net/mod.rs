//! The transport: request/response RPC over madsim's `Endpoint` (the simulated network in
//! simulation, TCP in real mode). Every message is serialized to bytes in both modes, so the
//! wire format is exercised in simulation too. Each message is one frame of at most
//! [`MAX_MESSAGE_BYTES`]; a larger one is refused before it is sent.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::Endpoint;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::coverage::{self, Corner};

/// Largest frame the transport sends or accepts.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
const TAG_REQUEST: u64 = 1;
const TAG_RESPONSE: u64 = 2;

/// Why a call failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NetError {
    /// The network or the peer failed.
    #[error("network: {0}")]
    Io(String),
    /// No reply in time (the request may or may not have been processed).
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A message did not encode or decode.
    #[error("codec: {0}")]
    Codec(String),
    /// A message over the frame limit.
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
}

fn encode<T: Serialize>(id: u64, msg: &T) -> Result<Vec<u8>, NetError> {
    // Most messages fit; a larger one grows from there instead of from 8 bytes.
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&id.to_le_bytes());
    bincode::serialize_into(&mut out, msg).map_err(|e| NetError::Codec(e.to_string()))?;
    if out.len() > MAX_MESSAGE_BYTES {
        return Err(NetError::TooLarge(out.len()));
    }
    Ok(out)
}

fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<(u64, T), NetError> {
    use bincode::Options;
    if frame.len() < 8 {
        return Err(NetError::Codec(format!(
            "frame of {} bytes has no id",
            frame.len()
        )));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&frame[..8]);
    let msg = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(MAX_MESSAGE_BYTES as u64)
        .deserialize(&frame[8..])
        .map_err(|e| NetError::Codec(e.to_string()))?;
    Ok((u64::from_le_bytes(id), msg))
}

type Pending = Mutex<BTreeMap<u64, tokio::sync::oneshot::Sender<Vec<u8>>>>;

/// Sends one frame. In simulation the frame's buffer itself travels (madsim's raw payload),
/// so a message is not copied on its way; in real mode it is written to the socket.
async fn send_frame(
    ep: &Endpoint,
    dst: SocketAddr,
    tag: u64,
    frame: Vec<u8>,
) -> std::io::Result<()> {
    #[cfg(madsim)]
    {
        ep.send_to_raw(dst, tag, Box::new(frame)).await
    }
    #[cfg(not(madsim))]
    {
        ep.send_to(dst, tag, &frame).await
    }
}

/// Receives frames with one tag.
struct FrameReceiver {
    ep: Arc<Endpoint>,
    tag: u64,
    #[cfg(not(madsim))]
    buf: Vec<u8>,
}

impl FrameReceiver {
    fn new(ep: Arc<Endpoint>, tag: u64) -> Self {
        Self {
            ep,
            tag,
            #[cfg(not(madsim))]
            buf: vec![0u8; MAX_MESSAGE_BYTES],
        }
    }

    /// The next frame and its sender; `None` once the endpoint is closed. A payload that is
    /// not a frame of bytes (nothing of ours sends one) is skipped.
    async fn next(&mut self) -> Option<(Vec<u8>, SocketAddr)> {
        #[cfg(madsim)]
        loop {
            let (payload, from) = self.ep.recv_from_raw(self.tag).await.ok()?;
            if let Ok(frame) = payload.downcast::<Vec<u8>>() {
                return Some((*frame, from));
            }
        }
        #[cfg(not(madsim))]
        {
            let (n, from) = self.ep.recv_from(self.tag, &mut self.buf).await.ok()?;
            Some((self.buf[..n].to_vec(), from))
        }
    }
}

/// One node's endpoint: serves requests with a handler and makes calls to peers.
#[derive(Clone)]
pub struct Transport {
    endpoint: Arc<Endpoint>,
    pending: Arc<Pending>,
    next_id: Arc<AtomicU64>,
}

impl Transport {
    /// Binds `addr` and starts receiving replies.
    pub async fn bind(addr: SocketAddr) -> Result<Self, NetError> {
        let endpoint = Endpoint::bind(addr)
            .await
            .map_err(|e| NetError::Io(e.to_string()))?;
        let t = Transport {
            endpoint: Arc::new(endpoint),
            pending: Arc::new(Mutex::new(BTreeMap::new())),
            next_id: Arc::new(AtomicU64::new(1)),
        };
        let pending = t.pending.clone();
        let mut replies = FrameReceiver::new(t.endpoint.clone(), TAG_RESPONSE);
        tokio::spawn(async move {
            while let Some((frame, _from)) = replies.next().await {
                let Some(id) = frame.first_chunk::<8>() else {
                    continue;
                };
                let waiter = pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&u64::from_le_bytes(*id));
                if let Some(w) = waiter {
                    let _ = w.send(frame);
                }
            }
        });
        Ok(t)
    }

    /// This endpoint's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves requests: each one is handled in its own task and answered.
    pub fn serve<Req, Resp, H, Fut>(&self, handler: H)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        H: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Resp> + Send + 'static,
    {
        let ep = self.endpoint.clone();
        let handler = Arc::new(handler);
        let mut requests = FrameReceiver::new(ep.clone(), TAG_REQUEST);
        tokio::spawn(async move {
            while let Some((frame, from)) = requests.next().await {
                let Ok((id, req)) = decode::<Req>(&frame) else {
                    tracing::warn!(%from, "dropping an undecodable request");
                    continue;
                };
                let (ep, handler) = (ep.clone(), handler.clone());
                tokio::spawn(async move {
                    // Boxed: a handler's future can be large, and the spawn moves it by value.
                    let resp = Box::pin(handler(req)).await;
                    if let Ok(frame) = encode(id, &resp) {
                        let _ = send_frame(&ep, from, TAG_RESPONSE, frame).await;
                    }
                });
            }
        });
    }

    /// Sends `req` to `dst` and waits up to `timeout` for the reply. The request is
    /// delivered at most once (client sessions: a repeated write would be a second write).
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        dst: SocketAddr,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, NetError> {
        self.call_inner(dst, req, Some(timeout), false).await
    }

    /// Like [`Transport::call`], for protocol messages that are idempotent by design (Raft
    /// appends and votes, anti-entropy, replication pushes): a simulated network may deliver
    /// them twice (the scenario's `network.duplicate`).
    pub async fn call_idempotent<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        dst: SocketAddr,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, NetError> {
        self.call_inner(dst, req, Some(timeout), true).await
    }

    /// Like [`Transport::call_idempotent`], with no timer of its own: for a caller that
    /// bounds the call itself (openraft runs every append and vote under its own timeout of
    /// the RPC's length, started before this call's would be) and drops it when that fires.
    pub async fn call_idempotent_bounded_by_caller<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        dst: SocketAddr,
        req: &Req,
    ) -> Result<Resp, NetError> {
        self.call_inner(dst, req, None, true).await
    }

    async fn call_inner<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        dst: SocketAddr,
        req: &Req,
        timeout: Option<Duration>,
        idempotent: bool,
    ) -> Result<Resp, NetError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode(id, req)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        // The waiter leaves the table however the call ends, dropped by its caller too.
        let _waiting = Waiting {
            pending: &self.pending,
            id,
        };
        // The frame moves into the network; keep a copy only if the network may repeat it.
        let copy = (idempotent && crate::rt::duplicates_possible()).then(|| frame.clone());
        send_frame(&self.endpoint, dst, TAG_REQUEST, frame)
            .await
            .map_err(|e| NetError::Io(e.to_string()))?;
        if let Some(copy) = copy.filter(|_| crate::rt::duplicate_message()) {
            coverage::hit(Corner::NetDuplicated);
            // The copy's reply finds no waiter and is dropped.
            let _ = send_frame(&self.endpoint, dst, TAG_REQUEST, copy).await;
        }
        let reply = match timeout {
            Some(t) => crate::rt::timers::timeout(t, rx).await.map_err(|_| {
                coverage::hit(Corner::NetCallTimedOut);
                NetError::Timeout(t)
            })?,
            None => rx.await,
        };
        match reply {
            Ok(bytes) => decode::<Resp>(&bytes).map(|(_, r)| r),
            Err(_) => Err(NetError::Io("reply channel closed".into())),
        }
    }
}

/// A call's entry in the table of calls waiting for replies; removed on drop.
struct Waiting<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}
