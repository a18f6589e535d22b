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
    /// A store in a local directory, created if missing.
    pub fn local(dir: &std::path::Path) -> Result<Blobs> {
        std::fs::create_dir_all(dir)
            .map_err(|e| storage(&format!("cannot create {}", dir.display()), e))?;
        let fs = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| storage(&format!("cannot open {}", dir.display()), e))?
            .with_fsync(true);
        Ok(Blobs {
            store: Arc::new(fs),
        })
    }

    /// Where a workspace's blob lives: one directory per workspace (nothing crosses it),
    /// fanned out by the hash's first two digits.
    fn path(ws: &str, sha256: &str) -> ObjectPath {
        ObjectPath::from(format!("{ws}/{}/{sha256}", &sha256[..2]))
    }

    /// Stores `bytes`, whose SHA-256 is `sha256`, unless they are there already.
    pub async fn put(&self, ws: &str, sha256: &str, bytes: Vec<u8>) -> Result<()> {
        let path = Self::path(ws, sha256);
        match self.store.head(&path).await {
            Ok(meta) if meta.size == bytes.len() as u64 => return Ok(()),
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(storage("cannot look up a blob", e)),
        }
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| storage("cannot store a blob", e))
    }

    /// The bytes stored under `sha256`, checked against it: damaged or missing bytes are a
    /// storage failure, never served as the artifact.
    pub async fn get(&self, ws: &str, sha256: &str) -> Result<Vec<u8>> {
        let path = Self::path(ws, sha256);
        let bytes = match self.store.get(&path).await {
            Ok(found) => found
                .bytes()
                .await
                .map_err(|e| storage("cannot read a blob", e))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::new(
                    Code::Storage,
                    format!("object store: the bytes of {sha256} are missing"),
                    "the object store lost them (a different directory on this replica?): \
                     attach the artifact again",
                ))
            }
            Err(e) => return Err(storage("cannot read a blob", e)),
        };
        if crate::id::sha256_hex_bytes(&bytes) != sha256 {
            return Err(Error::new(
                Code::Storage,
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
    async fn stores_once_and_refuses_damaged_bytes() {
        let dir = tempdir();
        let blobs = Blobs::local(&dir).unwrap();
        let sha = crate::id::sha256_hex_bytes(b"hello");
        blobs.put("ws_a", &sha, b"hello".to_vec()).await.unwrap();
        blobs.put("ws_a", &sha, b"hello".to_vec()).await.unwrap();
        assert_eq!(blobs.get("ws_a", &sha).await.unwrap(), b"hello");
        // Another workspace does not see it.
        assert_eq!(
            blobs.get("ws_b", &sha).await.unwrap_err().code,
            Code::Storage
        );
        let file = dir.join("ws_a").join(&sha[..2]).join(&sha);
        std::fs::write(&file, b"jello").unwrap();
        let e = blobs.get("ws_a", &sha).await.unwrap_err();
        assert!(e.message.contains("do not match"), "{e:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(crate::id::new_id("blobs-test"));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
