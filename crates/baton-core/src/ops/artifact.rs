//! Artifacts (DESIGN §2, §5): content-addressed blobs attached to a task. The engine puts
//! the bytes in the object store first, under their SHA-256; this module checks what a
//! caller sends and records what describes the bytes, with its event, in the transaction.
//! An artifact attached with the holder's lease belongs to its run and raises no
//! `context_changed` for it; one attached by anyone else does, as a note does.

use super::knowledge::{holder_run, touch};
use super::{check_line, snap, Ctx, MAX_TITLE};
use crate::api::{ArtifactOut, ArtifactsOut, AttachArtifact};
use crate::error::{Code, Error, Result};
use crate::id::new_id;
use crate::model::Artifact;
use base64::Engine as _;

/// Most artifacts on one task.
pub const MAX_ARTIFACTS: usize = 1_000;
/// Largest artifact, in bytes. It travels inside a JSON body (base64 makes it a third
/// larger), which must stay within the HTTP API's 4 MiB; larger outputs belong in a store
/// of their own, named by a `reference` context entry.
pub const MAX_ARTIFACT_BYTES: usize = 2 * 1024 * 1024;
/// Longest media type, in bytes (RFC 6838 allows 127 for each of its two names).
const MAX_MEDIA_TYPE: usize = 255;

/// The media type of text content when the caller names none.
pub const TEXT_MEDIA_TYPE: &str = "text/plain; charset=utf-8";
/// The media type of base64 content when the caller names none.
pub const BINARY_MEDIA_TYPE: &str = "application/octet-stream";

/// An artifact whose bytes are stored, ready to be recorded.
#[derive(Debug, Clone)]
pub struct NewArtifact {
    /// Its name.
    pub name: String,
    /// Its media type, checked.
    pub media_type: String,
    /// Its length in bytes.
    pub size: u64,
    /// The SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
    /// The holder's lease, if the holder attaches it.
    pub lease: Option<String>,
}

/// Checks a request and decodes its bytes: a one-line name, a well-formed media type, and
/// exactly one of `content` and `content_base64`, within [`MAX_ARTIFACT_BYTES`].
pub fn decode(req: &AttachArtifact) -> Result<(NewArtifact, Vec<u8>)> {
    check_line("name", &req.name, MAX_TITLE)?;
    let (bytes, default_type) = match (&req.content, &req.content_base64) {
        (Some(text), None) => (text.as_bytes().to_vec(), TEXT_MEDIA_TYPE),
        (None, Some(encoded)) => {
            // Four characters carry three bytes: refuse what is too large before decoding.
            if encoded.len() / 4 * 3 > MAX_ARTIFACT_BYTES + 3 {
                return Err(too_large(encoded.len() / 4 * 3));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|e| {
                    Error::invalid(
                        format!("content_base64 is not base64: {e}"),
                        "encode the bytes with the standard alphabet (A-Z a-z 0-9 + /) and = padding",
                    )
                })?;
            (bytes, BINARY_MEDIA_TYPE)
        }
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "send content or content_base64, not both",
                "content for UTF-8 text, content_base64 for any other bytes",
            ))
        }
        (None, None) => {
            return Err(Error::invalid(
                "an artifact needs its bytes: content or content_base64",
                "content for UTF-8 text, content_base64 for any other bytes",
            ))
        }
    };
    if bytes.len() > MAX_ARTIFACT_BYTES {
        return Err(too_large(bytes.len()));
    }
    let media_type = match &req.media_type {
        Some(m) => check_media_type(m)?,
        None => default_type.to_string(),
    };
    let new = NewArtifact {
        name: req.name.trim().to_string(),
        media_type,
        size: bytes.len() as u64,
        sha256: crate::id::sha256_hex_bytes(&bytes),
        lease: req.lease.clone(),
    };
    Ok((new, bytes))
}

/// Bytes as JSON carries them: `(Some(text), None)` when they are UTF-8, else
/// `(None, Some(base64))`.
pub fn text_or_base64(bytes: Vec<u8>) -> (Option<String>, Option<String>) {
    match String::from_utf8(bytes) {
        Ok(text) => (Some(text), None),
        Err(e) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(e.as_bytes());
            (None, Some(encoded))
        }
    }
}

fn too_large(size: usize) -> Error {
    Error::new(
        Code::TooLarge,
        format!("the artifact is over the limit of {MAX_ARTIFACT_BYTES} bytes ({size} or more)"),
        "store larger outputs elsewhere and record where with a context entry of type reference",
    )
}

/// A media type as RFC 6838 shapes it, `type/subtype` with optional `; name=value`
/// parameters, in printable ASCII; returned trimmed.
fn check_media_type(media_type: &str) -> Result<String> {
    let m = media_type.trim();
    let bad = || {
        Error::invalid(
            format!("'{media_type}' is not a media type"),
            "give type/subtype, e.g. text/markdown, application/json or image/png",
        )
    };
    if m.len() > MAX_MEDIA_TYPE {
        return Err(bad());
    }
    let essence = m.split(';').next().unwrap_or_default().trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match essence.split_once('/') {
        Some((kind, sub)) if token(kind) && token(sub) => {}
        _ => return Err(bad()),
    }
    // Checked whole, before the trim: a control character is refused wherever it is.
    if !media_type.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(bad());
    }
    Ok(m.to_string())
}

/// Refuses, in a read before the bytes are stored, what [`attach`] would refuse for the
/// task as it stands: no such task, a lease that is not its current one, no room left.
pub fn check(ctx: &mut Ctx<'_>, task_id: &str, new: &NewArtifact) -> Result<()> {
    let task = ctx.read_task(task_id)?;
    holder_run(ctx, &task, new.lease.as_deref())?;
    check_room(ctx, task_id)
}

fn check_room(ctx: &mut Ctx<'_>, task_id: &str) -> Result<()> {
    if ctx.tx.artifacts_of(ctx.ws, task_id)?.len() >= MAX_ARTIFACTS {
        return Err(Error::new(
            Code::TooLarge,
            format!("task {task_id} already has {MAX_ARTIFACTS} artifacts"),
            "bundle the files into one archive, or attach them to a subtask",
        ));
    }
    Ok(())
}

/// Records an artifact whose bytes are stored, on task `task_id`.
pub fn attach(ctx: &mut Ctx<'_>, task_id: &str, new: &NewArtifact) -> Result<ArtifactOut> {
    let mut task = ctx.task(task_id)?;
    check_room(ctx, task_id)?;
    let run = touch(ctx, &mut task, new.lease.as_deref())?;
    let artifact = Artifact {
        id: new_id("art"),
        workspace_id: ctx.ws.to_string(),
        task_id: task_id.to_string(),
        run_id: run.as_ref().map(|r| r.id.clone()),
        name: new.name.clone(),
        media_type: new.media_type.clone(),
        size: new.size,
        sha256: new.sha256.clone(),
        created_by: ctx.actor.to_string(),
        created_at: ctx.now,
    };
    ctx.tx.put_artifact(&artifact)?;
    let mut extra = vec![snap("artifact", &artifact)];
    extra.extend(run.map(|run| snap("run", &run)));
    ctx.save_unversioned(&mut task, "artifact.attached", &extra)?;
    Ok(ArtifactOut {
        artifact,
        content: None,
        content_base64: None,
    })
}

/// A task's artifacts, oldest first.
pub fn list(ctx: &mut Ctx<'_>, task_id: &str) -> Result<ArtifactsOut> {
    ctx.read_task(task_id)?;
    Ok(ArtifactsOut {
        artifacts: ctx.tx.artifacts_of(ctx.ws, task_id)?,
    })
}

/// An artifact by id.
pub fn get(ctx: &mut Ctx<'_>, id: &str) -> Result<Artifact> {
    super::check_id("artifact id", id)?;
    ctx.tx
        .artifact(ctx.ws, id)?
        .ok_or_else(|| Error::not_found("artifact", id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(content: Option<&str>, b64: Option<&str>, media: Option<&str>) -> AttachArtifact {
        AttachArtifact {
            name: "out.txt".into(),
            media_type: media.map(str::to_string),
            content: content.map(str::to_string),
            content_base64: b64.map(str::to_string),
            lease: None,
        }
    }

    #[test]
    fn decodes_text_and_base64_with_their_default_types() {
        let (new, bytes) = decode(&req(Some("hi"), None, None)).unwrap();
        assert_eq!(
            (bytes.as_slice(), new.media_type.as_str()),
            (&b"hi"[..], TEXT_MEDIA_TYPE)
        );
        assert_eq!(new.size, 2);
        let (new, bytes) = decode(&req(None, Some("AP8="), Some("image/png"))).unwrap();
        assert_eq!(
            (bytes.as_slice(), new.media_type.as_str()),
            (&[0u8, 255][..], "image/png")
        );
        assert_eq!(new.sha256, crate::id::sha256_hex_bytes(&[0, 255]));
    }

    #[test]
    fn refuses_bad_requests_with_the_right_code() {
        let code = |r: AttachArtifact| decode(&r).unwrap_err().code;
        assert_eq!(code(req(None, None, None)), Code::InvalidInput);
        assert_eq!(code(req(Some("a"), Some("YQ=="), None)), Code::InvalidInput);
        assert_eq!(
            code(req(None, Some("not base64!"), None)),
            Code::InvalidInput
        );
        for m in ["text", "text/", "/x", "te xt/plain", "text/plain\n", "ü/x"] {
            assert_eq!(
                code(req(Some("a"), None, Some(m))),
                Code::InvalidInput,
                "{m:?}"
            );
        }
        let big = "a".repeat(MAX_ARTIFACT_BYTES + 1);
        assert_eq!(code(req(Some(&big), None, None)), Code::TooLarge);
        let encoded = base64::engine::general_purpose::STANDARD.encode(big.as_bytes());
        assert_eq!(code(req(None, Some(&encoded), None)), Code::TooLarge);
        let mut unnamed = req(Some("a"), None, None);
        unnamed.name = " ".into();
        assert_eq!(code(unnamed), Code::InvalidInput);
        let ok = decode(&req(
            Some("a"),
            None,
            Some(" text/markdown; charset=utf-8 "),
        ))
        .unwrap();
        assert_eq!(ok.0.media_type, "text/markdown; charset=utf-8");
    }
}
