//! Reading and writing snapshot bytes, streamed, in a local directory or an
//! S3-compatible bucket (both through `object_store`, so one code path serves both).
//!
//! Memory stays constant whatever the snapshot's size: a save hashes each chunk as it
//! passes and uploads in parts of [`PART_SIZE`] with at most [`PART_CONCURRENCY`] in
//! flight; a restore hashes the object in one streamed pass, then streams it again to
//! Consul, pinned to the same version (`If-Match` on the ETag) so what Consul receives
//! is what was verified.
use super::location::{Location, parse_sidecar, sidecar_contents};
use crate::consul::Token;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, GetOptions, ObjectStore, PutPayload, RetryConfig};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Upload part size: S3's minimum part size, so a 200 MB snapshot needs 40 parts.
pub const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts uploaded at once; memory is bounded by `PART_SIZE * (PART_CONCURRENCY + 1)`.
pub const PART_CONCURRENCY: usize = 2;

/// Object store settings of `concord controller` (flattened into its flags). Credentials
/// also come from the usual `AWS_*` variables, web identity or instance metadata.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StoreArgs {
    /// Endpoint of an S3-compatible store (MinIO, Ceph, ...); `http://` is allowed.
    #[arg(long, env = "CONCORD_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Region of the bucket (default: `AWS_REGION`, else us-east-1).
    #[arg(long, env = "CONCORD_S3_REGION")]
    pub s3_region: Option<String>,
    /// Access key id for the store.
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// Secret access key for the store (redacted in logs).
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<Token>,
    /// How long one store operation may keep retrying before it is reported as failed.
    #[arg(long, env = "CONCORD_S3_RETRY_SECONDS", default_value_t = 20)]
    pub s3_retry_seconds: u64,
}

/// What can go wrong with snapshot storage or the bytes in it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    InvalidLocation(#[from] super::location::LocationError),
    #[error("no snapshot at {location}")]
    NotFound { location: String },
    #[error("no checksum for {location}: neither spec.sha256 nor a {sidecar} file")]
    ChecksumUnknown { location: String, sidecar: String },
    #[error("checksum mismatch for {location}: expected sha256 {expected}, the file has {actual}")]
    ChecksumMismatch { location: String, expected: String, actual: String },
    #[error("snapshot store at {location}: {message}")]
    Store { location: String, message: String },
    #[error("reading the snapshot from Consul failed: {0}")]
    Consul(#[source] crate::consul::Error),
}

impl StoreError {
    /// Bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            StoreError::InvalidLocation(_) => "invalid_location",
            StoreError::NotFound { .. } => "snapshot_not_found",
            StoreError::ChecksumUnknown { .. } => "checksum_unknown",
            StoreError::ChecksumMismatch { .. } => "checksum_mismatch",
            StoreError::Store { .. } => "store",
            StoreError::Consul(e) => e.category(),
        }
    }

    /// Condition reason a person can grep for.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::InvalidLocation(_) => "InvalidLocation",
            StoreError::NotFound { .. } => "SnapshotNotFound",
            StoreError::ChecksumUnknown { .. } => "ChecksumUnknown",
            StoreError::ChecksumMismatch { .. } => "ChecksumMismatch",
            StoreError::Store { .. } => "StoreUnreachable",
            StoreError::Consul(_) => "ConsulError",
        }
    }

    /// Whether retrying later may help without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Store { .. } => true,
            StoreError::Consul(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// Size and checksum of a saved or verified snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    pub sha256: String,
}

/// A verified snapshot, ready to be streamed to Consul.
#[derive(Debug, Clone)]
pub struct Verified {
    pub size: u64,
    pub sha256: String,
    e_tag: Option<String>,
}

/// One snapshot object and its sidecar in one store.
#[derive(Clone)]
pub struct SnapshotFile {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    sidecar: ObjectPath,
    location: Location,
}

impl std::fmt::Debug for SnapshotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotFile").field("location", &self.location.to_string()).finish()
    }
}

/// Compares a computed checksum with the expected one (pure).
pub fn verify_checksum(location: &str, expected: &str, actual: &str) -> Result<(), StoreError> {
    if expected.eq_ignore_ascii_case(actual) {
        Ok(())
    } else {
        Err(StoreError::ChecksumMismatch {
            location: location.to_string(),
            expected: expected.to_ascii_lowercase(),
            actual: actual.to_string(),
        })
    }
}

fn hex(digest: impl AsRef<[u8]>) -> String {
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl SnapshotFile {
    /// Opens (without touching it yet) the snapshot at `location`.
    pub fn open(location: &Location, args: &StoreArgs) -> Result<Self, StoreError> {
        let store_err = |message: String| StoreError::Store { location: location.to_string(), message };
        let (store, path, sidecar): (Arc<dyn ObjectStore>, _, _) = match location {
            Location::Local { path } => {
                let to_path = |p: &std::path::Path| {
                    ObjectPath::from_absolute_path(p).map_err(|e| store_err(format!("unusable path: {e}")))
                };
                (Arc::new(LocalFileSystem::new()), to_path(path)?, to_path(&local_sidecar_path(path))?)
            }
            Location::S3 { bucket, key } => {
                // Client options first: `with_client_options` replaces them whole, and
                // `with_allow_http` below is one of them (set after, it survives).
                let options = ClientOptions::new().with_connect_timeout(Duration::from_secs(5));
                let mut builder = AmazonS3Builder::from_env().with_client_options(options).with_bucket_name(bucket);
                if let Some(endpoint) = &args.s3_endpoint {
                    builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
                }
                if let Some(region) = &args.s3_region {
                    builder = builder.with_region(region);
                }
                if let Some(id) = &args.s3_access_key_id {
                    builder = builder.with_access_key_id(id);
                }
                if let Some(secret) = &args.s3_secret_access_key {
                    builder = builder.with_secret_access_key(secret.expose_secret());
                }
                let retry = RetryConfig {
                    backoff: BackoffConfig::default(),
                    max_retries: 3,
                    retry_timeout: Duration::from_secs(args.s3_retry_seconds),
                };
                let store = builder
                    .with_retry(retry)
                    .build()
                    .map_err(|e| store_err(format!("cannot configure the S3 client: {e}")))?;
                let parse = |k: &str| ObjectPath::parse(k).map_err(|e| store_err(format!("unusable object key: {e}")));
                (Arc::new(store), parse(key)?, parse(&format!("{key}{}", super::location::SIDECAR_SUFFIX))?)
            }
        };
        Ok(Self { store, path, sidecar, location: location.clone() })
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    fn store_error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Store { location: self.location.to_string(), message: e.to_string() }
    }

    fn map_get_error(&self, e: object_store::Error) -> StoreError {
        match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound { location: self.location.to_string() },
            other => self.store_error(other),
        }
    }

    /// Writes `stream` to the object chunk by chunk, hashing as it goes, then the sidecar.
    /// A failed save leaves no object behind (the multipart upload is aborted).
    pub async fn save<S>(&self, mut stream: S) -> Result<Written, StoreError>
    where
        S: Stream<Item = Result<Bytes, crate::consul::Error>> + Unpin,
    {
        let mut writer = BufWriter::with_capacity(self.store.clone(), self.path.clone(), PART_SIZE)
            .with_max_concurrency(PART_CONCURRENCY);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let copied: Result<(), StoreError> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(StoreError::Consul)?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                writer.write_all(&chunk).await.map_err(|e| self.store_error(e))?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = copied {
            // Only before shutdown: BufWriter cannot abort an upload it already finished.
            if let Err(abort) = writer.abort().await {
                tracing::debug!(error = %abort, "aborting the snapshot upload failed");
            }
            return Err(e);
        }
        writer.shutdown().await.map_err(|e| self.store_error(e))?;
        let sha256 = hex(hasher.finalize());
        let sidecar = sidecar_contents(&sha256, &self.location.file_name());
        self.store.put(&self.sidecar, PutPayload::from(Bytes::from(sidecar))).await.map_err(|e| self.store_error(e))?;
        Ok(Written { size, sha256 })
    }

    /// The checksum recorded next to the snapshot, if there is a readable one.
    pub async fn read_sidecar(&self) -> Result<Option<String>, StoreError> {
        match self.store.get(&self.sidecar).await {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(|e| self.store_error(e))?;
                Ok(parse_sidecar(&String::from_utf8_lossy(&bytes)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_error(e)),
        }
    }

    /// Checks the object against `expected` (else the sidecar) in one streamed pass,
    /// before anything is sent anywhere.
    pub async fn verify(&self, expected: Option<&str>) -> Result<Verified, StoreError> {
        let got = self.store.get(&self.path).await.map_err(|e| self.map_get_error(e))?;
        let e_tag = got.meta.e_tag.clone();
        let expected = match expected {
            Some(e) => e.to_string(),
            None => self.read_sidecar().await?.ok_or_else(|| StoreError::ChecksumUnknown {
                location: self.location.to_string(),
                sidecar: self.location.sidecar().to_string(),
            })?,
        };
        let mut stream = got.into_stream();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.store_error(e))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
        }
        let sha256 = hex(hasher.finalize());
        verify_checksum(&self.location.to_string(), &expected, &sha256)?;
        Ok(Verified { size, sha256, e_tag })
    }

    /// The verified object's bytes as a stream, pinned to the version that was verified.
    pub async fn read_verified(
        &self,
        verified: &Verified,
    ) -> Result<BoxStream<'static, Result<Bytes, object_store::Error>>, StoreError> {
        let opts = GetOptions { if_match: verified.e_tag.clone(), ..Default::default() };
        let got = self.store.get_opts(&self.path, opts).await.map_err(|e| self.map_get_error(e))?;
        Ok(got.into_stream().map_ok(|b| b).boxed())
    }

    /// Deletes the object and its sidecar; what is already gone counts as deleted.
    pub async fn delete(&self) -> Result<(), StoreError> {
        for path in [&self.path, &self.sidecar] {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.store_error(e)),
            }
        }
        Ok(())
    }
}

fn local_sidecar_path(path: &std::path::Path) -> std::path::PathBuf {
    let mut p = path.to_path_buf().into_os_string();
    p.push(super::location::SIDECAR_SUFFIX);
    p.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_compare_case_insensitively_and_mismatches_say_both() {
        let a = "ab".repeat(32);
        assert!(verify_checksum("/x", &a.to_uppercase(), &a).is_ok());
        let e = verify_checksum("/x", &"cd".repeat(32), &a).expect_err("mismatch");
        assert_eq!(e.reason(), "ChecksumMismatch");
        assert!(!e.is_transient());
        let msg = e.to_string();
        assert!(msg.contains(&"cd".repeat(32)) && msg.contains(&a), "{msg}");
    }

    #[test]
    fn hex_of_sha256_matches_the_known_vector() {
        assert_eq!(hex(Sha256::digest(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[tokio::test]
    async fn local_save_verify_corrupt_and_delete() {
        let dir = std::env::temp_dir().join(format!("concord-store-test-{}", std::process::id()));
        let loc = Location::parse_file(&format!("{}/sub/a.snap", dir.display())).expect("loc");
        let file = SnapshotFile::open(&loc, &StoreArgs::default()).expect("open");
        let chunks: Vec<Result<Bytes, crate::consul::Error>> =
            vec![Ok(Bytes::from_static(b"hello ")), Ok(Bytes::from_static(b"world"))];
        let written = file.save(futures::stream::iter(chunks)).await.expect("save");
        assert_eq!(written.size, 11);
        assert_eq!(written.sha256, hex(Sha256::digest(b"hello world")));
        let verified = file.verify(None).await.expect("sidecar checksum");
        assert_eq!(verified.sha256, written.sha256);
        let body: Vec<Bytes> = file.read_verified(&verified).await.expect("read").try_collect().await.expect("bytes");
        assert_eq!(body.concat(), b"hello world");

        std::fs::write(dir.join("sub/a.snap"), b"hello w0rld").expect("corrupt");
        let e = file.verify(None).await.expect_err("corrupt");
        assert_eq!(e.reason(), "ChecksumMismatch");

        file.delete().await.expect("delete");
        assert!(!dir.join("sub/a.snap").exists() && !dir.join("sub/a.snap.sha256").exists());
        let e = file.verify(None).await.expect_err("gone");
        assert_eq!(e.reason(), "SnapshotNotFound");
        file.delete().await.expect("deleting twice is fine");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
