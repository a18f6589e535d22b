//! Where artifacts' bytes live (DESIGN §5): an object store, addressed by workspace and
//! SHA-256. The local filesystem for now — a directory beside the embedded store, or one
//! that every replica mounts — through `object_store`, whose S3 backend can take its place
//! behind the same type.
//!
//! Bytes are stored before the row that describes them commits, and synced (file and
//! directory) before that: an acknowledged artifact's bytes survive a crash. A failed
//! commit leaves unreferenced bytes behind, which cost space, never correctness; the same
//! content attached twice is stored once.

use crate::error::{Code, Error, Result};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;

/// The object store of a Baton deployment.
#[derive(Clone, Debug)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
}

fn storage(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(
        Code::Storage,
        format!("object store: {what}: {e}"),
        "retry the call; if it persists, check the object store's directory (space, permissions)",
    )
}

impl Blobs {
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
    /// temporary file renamed into place, then its directory synced), even when a file is
    /// there already: another call's file may not be synced yet, or may be damaged, and
    /// the bytes are at most 2 MiB.
    pub async fn put(&self, ws: &str, sha256: &str, bytes: Vec<u8>) -> Result<()> {
        let path = Self::path(ws, sha256)?;
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| storage("cannot store a blob", e))
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
                .map_err(|e| storage("cannot read a blob", e))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::new(
                    Code::Internal,
                    format!("object store: the bytes of {sha256} are missing"),
                    "the object store lost them (a different directory on this replica?): \
                     attach the artifact again",
                ))
            }
            Err(e) => return Err(storage("cannot read a blob", e)),
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

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(crate::id::new_id("blobs-test"));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
