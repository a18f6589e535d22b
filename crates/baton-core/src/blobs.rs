//! Where artifacts' bytes live (DESIGN §5): an object store, addressed by workspace and
//! SHA-256, through `object_store`: a local directory (beside the embedded store, or one
//! every replica mounts) or an S3-compatible bucket (for replicas on several hosts).
//!
//! Bytes are stored before the row that describes them commits, and durably (a directory's
//! file and entry synced; an S3 PUT acknowledged): an acknowledged artifact's bytes survive
//! a crash. A failed commit leaves unreferenced bytes behind, which cost space, never
//! correctness; the same content attached twice is stored once.

use crate::error::{Code, Error, Result};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use std::sync::Arc;
use std::time::Duration;

/// The object store of a Baton deployment.
#[derive(Clone, Debug)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// Where the bytes are, for people: "directory /srv/objects", "bucket s3://b/p".
    place: Arc<str>,
}

/// How long one request to an S3 store may take, and to connect: an agent's call waits on
/// it, so a store that does not answer is an error soon, not after object_store's default
/// of ten retries over three minutes.
const S3_TIMEOUT: &str = "30s";
const S3_CONNECT_TIMEOUT: &str = "5s";
const S3_RETRIES: usize = 3;
const S3_RETRY_WINDOW: Duration = Duration::from_secs(20);

/// A local directory that cannot be made or opened.
fn storage(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(
        Code::Storage,
        format!("object store: {what}: {e}"),
        "retry the call; if it persists, check the object store's directory (space, permissions)",
    )
}

impl Blobs {
    /// The store `location` names: an `s3://bucket[/prefix]` URL (endpoint, region and
    /// credentials from the standard `AWS_*` variables), else a local directory.
    pub fn open(location: &std::path::Path) -> Result<Blobs> {
        match location.to_str().filter(|l| l.starts_with("s3://")) {
            Some(url) => Blobs::s3(url),
            None => Blobs::local(location),
        }
    }

    /// A bucket of an S3-compatible store, `s3://bucket[/prefix]`. Nothing is sent until
    /// the first call (see [`Blobs::check`]).
    pub fn s3(url: &str) -> Result<Blobs> {
        let invalid = |why: String| {
            Error::invalid(
                format!("object store {url}: {why}"),
                "give s3://BUCKET or s3://BUCKET/PREFIX, with AWS_REGION, AWS_ACCESS_KEY_ID, \
                 AWS_SECRET_ACCESS_KEY and, for a store other than AWS, AWS_ENDPOINT_URL \
                 (AWS_ALLOW_HTTP=true for plain http) in the environment",
            )
        };
        let rest = url.strip_prefix("s3://").unwrap_or(url);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("no bucket is named".into()));
        }
        let retry = RetryConfig {
            max_retries: S3_RETRIES,
            retry_timeout: S3_RETRY_WINDOW,
            ..Default::default()
        };
        let s3 = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                S3_TIMEOUT,
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                S3_CONNECT_TIMEOUT,
            )
            .with_retry(retry)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            let prefix = ObjectPath::parse(prefix).map_err(|e| invalid(e.to_string()))?;
            Arc::new(PrefixStore::new(s3, prefix))
        };
        Ok(Blobs {
            store,
            place: format!("bucket {url}").into(),
        })
    }

    /// Whether the store takes and gives back bytes: a small probe object written and
    /// read again (a missing bucket answers a plain read "not found", so only a write
    /// proves it). `serve` calls it at start-up, so a wrong bucket, endpoint or key stops
    /// the server instead of failing its first artifact call.
    pub async fn check(&self) -> Result<()> {
        const PROBE: &[u8] = b"baton: this store takes artifacts' bytes\n";
        let path = ObjectPath::from("baton-probe");
        self.store
            .put(&path, PutPayload::from_static(PROBE))
            .await
            .map_err(|e| self.storage("cannot write to it", e))?;
        let read = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.storage("cannot read from it", e))?
            .bytes()
            .await
            .map_err(|e| self.storage("cannot read from it", e))?;
        if read.as_ref() != PROBE {
            return Err(self.storage("it gave back other bytes than were written", "probe"));
        }
        Ok(())
    }

    fn storage(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::new(
            Code::Storage,
            format!("object store ({}): {what}: {e}", self.place),
            "retry the call; if it persists, check the object store (space, permissions, \
             credentials, that it is reachable)",
        )
    }

    /// A store in a local directory, created if missing (and its entry synced, so the
    /// directory outlives a crash as the bytes in it do).
    pub fn local(dir: &std::path::Path) -> Result<Blobs> {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)
                .map_err(|e| storage(&format!("cannot create {}", dir.display()), e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| storage(&format!("cannot sync {}", parent.display()), e))?;
            }
        }
        let fs = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| storage(&format!("cannot open {}", dir.display()), e))?
            .with_fsync(true);
        Ok(Blobs {
            store: Arc::new(fs),
            place: format!("directory {}", dir.display()).into(),
        })
    }

    /// Where a workspace's blob lives: one directory per workspace (nothing crosses it),
    /// fanned out by the hash's first two digits. Only a SHA-256 in lowercase hex makes a
    /// path.
    fn path(ws: &str, sha256: &str) -> Result<ObjectPath> {
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if sha256.len() != 64 || !sha256.bytes().all(hex) {
            return Err(Error::new(
                Code::Internal,
                format!("object store: '{sha256}' is not a SHA-256"),
                "this is a bug in Baton: report it",
            ));
        }
        Ok(ObjectPath::from(format!("{ws}/{}/{sha256}", &sha256[..2])))
    }

    /// Stores `bytes`, whose SHA-256 is `sha256`. Always written (atomically: a synced
    /// temporary file renamed into place, then its directory synced; or one S3 PUT), even
    /// when the object is there already: another call's file may not be synced yet, or may
    /// be damaged, and the bytes are at most 2 MiB.
    pub async fn put(&self, ws: &str, sha256: &str, bytes: Vec<u8>) -> Result<()> {
        let path = Self::path(ws, sha256)?;
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.storage("cannot store a blob", e))
    }

    /// The bytes stored under `sha256`, checked against it: damaged or missing bytes are
    /// never served as the artifact. They are `INTERNAL` (not retryable): asking again
    /// will not bring them back; attaching them again will.
    pub async fn get(&self, ws: &str, sha256: &str) -> Result<Vec<u8>> {
        let path = Self::path(ws, sha256)?;
        let bytes = match self.store.get(&path).await {
            Ok(found) => found
                .bytes()
                .await
                .map_err(|e| self.storage("cannot read a blob", e))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::new(
                    Code::Internal,
                    format!("object store: the bytes of {sha256} are missing"),
                    format!(
                        "the object store ({}) lost them (another store on this replica?): \
                         attach the artifact again",
                        self.place
                    ),
                ))
            }
            Err(e) => return Err(self.storage("cannot read a blob", e)),
        };
        if crate::id::sha256_hex_bytes(&bytes) != sha256 {
            return Err(Error::new(
                Code::Internal,
                format!("object store: the bytes stored for {sha256} do not match their hash"),
                "the object store damaged them: attach the artifact again",
            ));
        }
        Ok(bytes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_checks_and_repairs_bytes() {
        let dir = tempdir();
        let blobs = Blobs::local(&dir).unwrap();
        let sha = crate::id::sha256_hex_bytes(b"hello");
        blobs.put("ws_a", &sha, b"hello".to_vec()).await.unwrap();
        assert_eq!(blobs.get("ws_a", &sha).await.unwrap(), b"hello");
        // Another workspace does not see it.
        let e = blobs.get("ws_b", &sha).await.unwrap_err();
        assert!(
            e.message.contains("missing") && !e.code.retryable(),
            "{e:?}"
        );
        // Damaged bytes are refused, and the same bytes put again repair them.
        let file = dir.join("ws_a").join(&sha[..2]).join(&sha);
        std::fs::write(&file, b"jello").unwrap();
        let e = blobs.get("ws_a", &sha).await.unwrap_err();
        assert!(e.message.contains("do not match"), "{e:?}");
        blobs.put("ws_a", &sha, b"hello".to_vec()).await.unwrap();
        assert_eq!(blobs.get("ws_a", &sha).await.unwrap(), b"hello");
        // Only a hash makes a path.
        for bad in ["", "a", "../x", &sha.to_uppercase()] {
            let e = blobs.get("ws_a", bad).await.unwrap_err();
            assert_eq!(e.code, Code::Internal, "{bad:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_s3_location_names_a_bucket() {
        let e = Blobs::open(std::path::Path::new("s3://")).unwrap_err();
        assert_eq!(e.code, Code::InvalidInput, "{e:?}");
        assert!(e.hint.contains("AWS_ENDPOINT_URL"), "{e:?}");
        // Built without a request: reaching it is `check`'s (and the first call's) to find.
        let blobs = Blobs::open(std::path::Path::new("s3://bucket/some/prefix/")).unwrap();
        assert_eq!(&*blobs.place, "bucket s3://bucket/some/prefix/");
        let dir = tempdir();
        let local = Blobs::open(&dir.join("s3:")).unwrap();
        assert!(local.place.starts_with("directory "), "{}", local.place);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(crate::id::new_id("blobs-test"));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
