//! Where artifacts' bytes live (DESIGN §5): an object store, addressed by workspace and
//! SHA-256, through `object_store`: a local directory (beside the embedded store, or one
//! every replica mounts) or an S3-compatible bucket (for replicas on several hosts).
//!
//! Bytes are stored before the row that describes them commits, and durably (a directory's
//! file and entry synced; an S3 PUT acknowledged): an acknowledged artifact's bytes survive
//! a crash. A failed commit leaves unreferenced bytes behind, which cost space, never
//! correctness; the same content attached twice is stored once.

use crate::error::{Code, Error, Result};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The object store of a Baton deployment.
#[derive(Clone, Debug)]
pub struct Blobs {
    store: Backend,
    /// Where the bytes are, for people: "directory /srv/objects", "bucket s3://b/p".
    place: Arc<str>,
}

/// A store at hand, or an S3 client made on first use: a command that touches no
/// artifact never builds one, so settings only an artifact call needs cannot break it.
#[derive(Clone, Debug)]
enum Backend {
    Ready(Arc<dyn ObjectStore>),
    S3 {
        bucket: Arc<str>,
        prefix: Option<ObjectPath>,
        built: Arc<OnceLock<Result<Arc<dyn ObjectStore>>>>,
    },
}

/// Retries of one S3 request, and the window they must start in: an agent's call waits
/// on them, so a store that keeps failing is an error within about a minute (one request
/// may take object_store's 30 s), not after its default ten retries over three minutes.
const S3_RETRY: (usize, Duration) = (3, Duration::from_secs(20));

/// A local directory that cannot be made or opened.
fn local_storage(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(
        Code::Storage,
        format!("object store: {what}: {e}"),
        "retry the call; if it persists, check the object store's directory (space, permissions)",
    )
}

/// What `--objects` takes, for hints.
const LOCATIONS: &str = "give a directory, or s3://BUCKET or s3://BUCKET/PREFIX with the S3 \
     settings in AWS_* variables (docs/deploy.md)";

impl Blobs {
    /// The store `location` names: an `s3://bucket[/prefix]` URL (settings from the
    /// standard `AWS_*` variables), else a local directory. Another URL scheme is refused
    /// rather than taken for a directory named after it.
    pub fn open(location: &std::path::Path) -> Result<Blobs> {
        let Some(text) = location.to_str() else {
            return Blobs::local(location);
        };
        match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("s3") => Blobs::s3(rest),
            Some((scheme, _)) => Err(Error::invalid(
                format!("object store {text}: {scheme}:// is not a store Baton speaks"),
                LOCATIONS,
            )),
            None if text.to_ascii_lowercase().starts_with("s3:") => Err(Error::invalid(
                format!("object store {text}: an S3 location is written s3://BUCKET"),
                LOCATIONS,
            )),
            None => Blobs::local(location),
        }
    }

    /// A bucket of an S3-compatible store: `bucket[/prefix]`, as in `s3://bucket/prefix`.
    /// Checked now; the client is made, and nothing is sent, until the first call (see
    /// [`Blobs::check`]).
    fn s3(rest: &str) -> Result<Blobs> {
        let url = format!("s3://{rest}");
        let invalid = |why: String| Error::invalid(format!("object store {url}: {why}"), LOCATIONS);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("no bucket is named".into()));
        }
        let prefix = prefix.trim_matches('/');
        let prefix = match prefix.is_empty() {
            true => None,
            false => Some(ObjectPath::parse(prefix).map_err(|e| invalid(e.to_string()))?),
        };
        Ok(Blobs {
            store: Backend::S3 {
                bucket: bucket.into(),
                prefix,
                built: Arc::default(),
            },
            place: format!("bucket {url}").into(),
        })
    }

    /// The store, the S3 client made on the first call (a failure to make it is kept:
    /// the settings it came from do not change while the process runs).
    fn store(&self) -> Result<Arc<dyn ObjectStore>> {
        let (bucket, prefix, built) = match &self.store {
            Backend::Ready(store) => return Ok(store.clone()),
            Backend::S3 {
                bucket,
                prefix,
                built,
            } => (bucket, prefix, built),
        };
        built
            .get_or_init(|| {
                let (max_retries, retry_timeout) = S3_RETRY;
                let retry = RetryConfig {
                    max_retries,
                    retry_timeout,
                    ..Default::default()
                };
                let s3 = AmazonS3Builder::from_env()
                    .with_bucket_name(&**bucket)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| {
                        Error::new(
                            Code::Internal,
                            format!("object store ({}): cannot be set up: {e}", self.place),
                            "check the AWS_* variables this process was started with \
                             (docs/deploy.md), then restart it",
                        )
                    })?;
                Ok(match prefix {
                    Some(prefix) => Arc::new(PrefixStore::new(s3, prefix.clone())),
                    None => Arc::new(s3),
                })
            })
            .clone()
    }

    /// Whether the store takes and gives back bytes: a small `baton-probe` object
    /// written and read again (a missing bucket answers a plain read "not found", so only
    /// a write proves it). `serve` calls it at start-up, so a wrong directory, bucket,
    /// endpoint or key stops the server instead of failing its first artifact call.
    pub async fn check(&self) -> Result<()> {
        const PROBE: &[u8] = b"baton: this store takes artifacts' bytes\n";
        let store = self.store()?;
        let path = ObjectPath::from("baton-probe");
        store
            .put(&path, PutPayload::from_static(PROBE))
            .await
            .map_err(|e| self.failure("cannot write to it", e))?;
        let read = match store.get(&path).await {
            Ok(found) => found.bytes().await,
            Err(e) => Err(e),
        }
        .map_err(|e| self.failure("cannot read from it", e))?;
        if read.as_ref() != PROBE {
            return Err(Error::new(
                Code::Internal,
                format!(
                    "object store ({}): it gave back other bytes than were written",
                    self.place
                ),
                "check that nothing else writes under this prefix",
            ));
        }
        Ok(())
    }

    /// The error for a failed request: the store refusing Baton's credentials, or a
    /// bucket that is not there, is the deployment's to fix and not retryable; anything
    /// else (a store down or slow) may pass, and is.
    fn failure(&self, what: &str, e: object_store::Error) -> Error {
        let refused = matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        );
        if refused {
            return Error::new(
                Code::Internal,
                format!("object store ({}): {what}: {e}", self.place),
                "the store refused Baton's credentials: check them (AWS_* variables) and that \
                 the policy allows s3:GetObject, s3:PutObject and s3:ListBucket on the prefix",
            );
        }
        if no_such_bucket(&e) {
            return Error::new(
                Code::Internal,
                format!(
                    "object store ({}): {what}: the bucket does not exist",
                    self.place
                ),
                "create the bucket, or give --objects the one that holds the artifacts",
            );
        }
        Error::new(
            Code::Storage,
            format!("object store ({}): {what}: {e}", self.place),
            "retry the call; if it persists, check the object store (space, permissions, \
             that it is reachable)",
        )
    }

    /// A store in a local directory, created if missing (and its entry synced, so the
    /// directory outlives a crash as the bytes in it do).
    pub fn local(dir: &std::path::Path) -> Result<Blobs> {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)
                .map_err(|e| local_storage(&format!("cannot create {}", dir.display()), e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| local_storage(&format!("cannot sync {}", parent.display()), e))?;
            }
        }
        let fs = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| local_storage(&format!("cannot open {}", dir.display()), e))?
            .with_fsync(true);
        Ok(Blobs {
            store: Backend::Ready(Arc::new(fs)),
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
        self.store()?
            .put(&path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.failure("cannot store a blob", e))
    }

    /// The bytes stored under `sha256`, checked against it: damaged or missing bytes are
    /// never served as the artifact. They are `INTERNAL` (not retryable): asking again
    /// will not bring them back; attaching them again will.
    pub async fn get(&self, ws: &str, sha256: &str) -> Result<Vec<u8>> {
        let path = Self::path(ws, sha256)?;
        let bytes = match self.store()?.get(&path).await {
            Ok(found) => found
                .bytes()
                .await
                .map_err(|e| self.failure("cannot read a blob", e))?,
            Err(e @ object_store::Error::NotFound { .. }) if !no_such_bucket(&e) => {
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
            Err(e) => return Err(self.failure("cannot read a blob", e)),
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

/// Whether S3 answered "no such bucket": object_store reports it as a missing object, which
/// would send an operator looking for lost bytes instead of a wrong bucket name.
fn no_such_bucket(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. }) && e.to_string().contains("NoSuchBucket")
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
        // No bucket, another scheme, a slash short: refused, not taken for a directory.
        for bad in [
            "s3://",
            "s3:///prefix",
            "gs://bucket",
            "s3:/bucket",
            "S3:bucket",
        ] {
            let e = Blobs::open(std::path::Path::new(bad)).unwrap_err();
            assert_eq!(e.code, Code::InvalidInput, "{bad}: {e:?}");
            assert!(e.hint.contains("s3://BUCKET"), "{e:?}");
        }
        assert!(Blobs::open(std::path::Path::new("S3://Bucket")).is_ok());
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
