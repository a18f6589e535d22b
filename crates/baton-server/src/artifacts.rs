//! Artifact routes: attach bytes to a task, list a task's artifacts, read one (described,
//! with its bytes in JSON, or the bytes alone with their media type).

use crate::tasks::{bad_query, TaskId};
use crate::{idempotency_key, ApiError, AppState, JsonBody, NoQuery, Path};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use baton_core::access::Permission;
use baton_core::api::{ArtifactOut, ArtifactsOut, AttachArtifact};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Result<T> = std::result::Result<T, ApiError>;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(attach, list))
        .routes(routes!(read))
        .routes(routes!(content))
}

/// The artifact a route reads.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
struct ArtifactId {
    /// The artifact's id (`art_…`).
    #[allow(dead_code)]
    id: String,
}

/// Attach a file to a task: `content` (UTF-8 text) or `content_base64`, up to 2 MiB. With
/// the holder's `lease` it belongs to the run; attached by anyone else, the holder's next
/// heartbeat carries `context_changed`.
#[utoipa::path(post, path = "/v1/tasks/{id}/artifacts", tag = "artifacts", params(TaskId),
    request_body = AttachArtifact,
    responses((status = 201, description = "The artifact, described", body = ArtifactOut)))]
async fn attach(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: JsonBody<AttachArtifact>,
) -> Result<Response> {
    let need = [Permission::Plan, Permission::Work, Permission::Review];
    let actor = s.auth(&headers, &need)?.actor;
    let req = body.parse()?;
    let key = idempotency_key(&headers)?;
    let out = s
        .baton
        .attach_artifact(&actor, key.as_deref(), &id, req)
        .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// A task's artifacts, oldest first (described; the bytes are at
/// `/v1/artifacts/{id}/content`).
#[utoipa::path(get, path = "/v1/tasks/{id}/artifacts", tag = "artifacts", params(TaskId),
    responses((status = 200, description = "The task's artifacts", body = ArtifactsOut)))]
async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    _: NoQuery,
) -> Result<Json<ArtifactsOut>> {
    let actor = s.auth(&headers, &[Permission::Read])?.actor;
    Ok(Json(s.baton.artifacts(&actor, &id)?))
}

/// Query of `GET /v1/artifacts/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    /// Include the bytes: as `content` when they are UTF-8 text, else `content_base64`.
    #[serde(default)]
    content: bool,
}

/// An artifact, described; with `content=true`, its bytes too.
#[utoipa::path(get, path = "/v1/artifacts/{id}", tag = "artifacts", params(ArtifactId, ReadQuery),
    responses((status = 200, description = "The artifact", body = ArtifactOut)))]
async fn read(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: std::result::Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Json<ArtifactOut>> {
    let actor = s.auth(&headers, &[Permission::Read])?.actor;
    let Query(q) = query.map_err(|e| bad_query(e, "use content=true, or no query"))?;
    Ok(Json(s.baton.artifact(&actor, &id, q.content).await?))
}

/// An artifact's bytes, as stored, with its media type; `ETag` is their SHA-256.
#[utoipa::path(get, path = "/v1/artifacts/{id}/content", tag = "artifacts", params(ArtifactId),
    responses((status = 200, description = "The bytes, with the media type they were attached with", content_type = "*/*", body = Vec<u8>)))]
async fn content(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    _: NoQuery,
) -> Result<Response> {
    let actor = s.auth(&headers, &[Permission::Read])?.actor;
    let (artifact, bytes) = s.baton.artifact_bytes(&actor, &id).await?;
    // Checked when attached: printable ASCII, so always a valid header value.
    let media_type = HeaderValue::from_str(&artifact.media_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let etag = HeaderValue::from_str(&format!("\"{}\"", artifact.sha256))
        .unwrap_or(HeaderValue::from_static("\"\""));
    Ok((
        [
            (header::CONTENT_TYPE, media_type),
            (header::ETAG, etag),
            // The bytes are an agent's output: a browser must not run them as a page.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("sandbox"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment"),
            ),
        ],
        bytes,
    )
        .into_response())
}
