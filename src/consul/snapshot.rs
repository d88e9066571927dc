//! `/v1/snapshot`: save and restore the whole Raft state, streamed.
//!
//! Snapshots can be hundreds of megabytes; neither direction ever holds one in memory:
//! saving hands out the body chunk by chunk as it arrives, restoring sends the caller's
//! stream as the request body.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::Method;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::error::{Error, Result};
use super::{Client, ConsulIndex, QueryOptions, QueryResponse};

/// A snapshot's bytes as they arrive from Consul.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// What [`Client::snapshot_save_to`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The Raft index the snapshot was taken at.
    pub index: ConsulIndex,
    pub size: u64,
}

impl Client {
    /// `GET /v1/snapshot`: the snapshot as a stream of chunks. The request is retried
    /// until Consul starts answering; a failure while the stream is read is returned
    /// from the stream, and the caller starts over.
    pub async fn snapshot_save(&self, opts: &QueryOptions) -> Result<QueryResponse<ByteStream>> {
        let mut req = self.read(["v1", "snapshot"], opts);
        req.timeout = Some(self.snapshot_timeout());
        let resp = self.send(&req).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            return Err(Error::from_status(req.method.clone(), &req.path(), status, &body));
        }
        let url = resp.url().to_string();
        let headers = resp.headers().clone();
        let stream = resp.bytes_stream().map_err(move |source| Error::Transport { url: url.clone(), source });
        Ok(QueryResponse::from_headers(&headers, Box::pin(stream) as ByteStream))
    }

    /// Saves a snapshot into `writer` (a file, an upload, a hasher), chunk by chunk.
    pub async fn snapshot_save_to<W>(&self, opts: &QueryOptions, writer: &mut W) -> Result<SnapshotInfo>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let resp = self.snapshot_save(opts).await?;
        let mut stream = resp.value;
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            writer.write_all(&chunk).await.map_err(Error::Io)?;
        }
        writer.flush().await.map_err(Error::Io)?;
        Ok(SnapshotInfo { index: resp.index, size })
    }

    /// `PUT /v1/snapshot`: replaces the cluster's whole state with the snapshot read from
    /// `body`. Sent once: a stream cannot be replayed, and a restore is not something to
    /// repeat on a guess. Connection failover happens before sending: the client first
    /// finds a server that answers.
    pub async fn snapshot_restore<S, E>(&self, body: S) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        // Cheap, retried request that settles `preferred` on a live server.
        self.status_leader().await?;
        let mut req = self.request(Method::PUT, ["v1", "snapshot"]).not_idempotent();
        req.timeout = Some(self.snapshot_timeout());
        self.send_once_with_body(&req, reqwest::Body::wrap_stream(body)).await?.success(&req).map(drop)
    }

    /// [`Client::snapshot_restore`] from a reader (a file, a download).
    pub async fn snapshot_restore_from<R>(&self, reader: R) -> Result<()>
    where
        R: AsyncRead + Send + 'static,
    {
        self.snapshot_restore(tokio_util::io::ReaderStream::new(reader)).await
    }
}
