//! The event log, live: Server-Sent Events at `GET /v1/events/stream` and WebSocket at
//! `GET /v1/ws`, with the same resume and filters. Each subscriber has its own
//! task that reads the log from its cursor and waits on the store's commit signal when it
//! has caught up, so a slow consumer only slows itself: writers never wait for readers, and
//! a consumer that falls behind simply reads further back in the log.
//!
//! Events are sent only once durable: before sending a page, the task waits for an empty
//! write job to be answered, which happens after the next fsync, which covers every commit
//! the page was read from.

use crate::{ApiError, AppState};
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use baton_core::api::Actor;
use baton_core::model::Event;
use baton_core::{Baton, Error};
use serde::Deserialize;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Frames buffered per subscriber before its reader task waits for the client.
const BUFFER: usize = 256;
/// Events read from the log per page.
const PAGE: u32 = 500;
/// How long a caught-up subscriber waits for a commit before looking anyway (commits made
/// by other processes on the same file are not signalled) and sending a keep-alive.
const IDLE: Duration = Duration::from_secs(2);

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stream))
        .routes(routes!(websocket))
}

/// What a subscriber's reader task hands its connection.
enum Item {
    /// The next kept event.
    Event(Box<Event>),
    /// Nothing happened for a while.
    KeepAlive,
    /// The log could not be read; the stream ends.
    Failed(Error),
}

/// Query of the stream: where to start and what to keep.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamQuery {
    /// Resume after this sequence number (0 replays everything). `Last-Event-ID` wins.
    after: Option<u64>,
    /// Only events of this task.
    task: Option<String>,
    /// Only events of this type (`task.completed`), or of a family (`task.`).
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Only events by this actor (an agent's name).
    actor: Option<String>,
    /// Only events of this project.
    project: Option<String>,
}

impl StreamQuery {
    fn keeps(&self, e: &Event) -> bool {
        let kind_ok = match &self.kind {
            None => true,
            Some(k) if k.ends_with('.') => e.kind.starts_with(k.as_str()),
            Some(k) => &e.kind == k,
        };
        kind_ok
            && self
                .task
                .as_ref()
                .is_none_or(|t| e.task_id.as_ref() == Some(t))
            && self.actor.as_ref().is_none_or(|a| &e.actor == a)
            && self
                .project
                .as_ref()
                .is_none_or(|p| e.data["task"]["project_id"].as_str() == Some(p.as_str()))
    }
}

/// Authenticates a subscriber and starts its reader task; returns the items to deliver.
fn subscribe(
    s: &AppState,
    headers: &HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<mpsc::Receiver<Item>, ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError(Error::invalid(
            format!("invalid query string: {}", e.body_text()),
            "use after, task, type, actor, project",
        ))
    })?;
    let last_id = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError(Error::invalid(
                        "Last-Event-ID is not a sequence number",
                        "send the id of the last event you received",
                    ))
                })?,
        ),
        None => None,
    };
    let actor = s
        .auth(headers, &[baton_core::access::Permission::Read])?
        .actor;
    let start = match last_id.or(q.after) {
        Some(n) => n,
        // Neither: new events only.
        None => s.baton.last_seq(&actor)?,
    };
    let (tx, rx) = mpsc::channel::<Item>(BUFFER);
    tokio::spawn(feed(s.baton.clone(), actor, q, start, tx));
    Ok(rx)
}

/// The event log, live, as Server-Sent Events: each event's `id:` is its sequence number
/// and `data:` its JSON. Resume with `Last-Event-ID` or `after` (nothing skipped, nothing
/// repeated); with neither, new events only. Events are sent once durable. A slow consumer
/// never slows writers and is never dropped: it reads further back in the log at its own
/// pace. A `: keep-alive` comment comes every 2 s of quiet; `event: error` ends the stream
/// if the log cannot be read.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events",
    params(StreamQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this sequence number")),
    responses((status = 200, description = "An endless text/event-stream of events",
        content_type = "text/event-stream", body = String)))]
async fn stream(
    State(s): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let rx = subscribe(&s, &headers, query)?;
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(Frames(rx)))
        .map_err(|e| ApiError(Error::new(baton_core::Code::Internal, e.to_string(), "")))
}

/// Reads the log from `after` and sends each kept event as an SSE frame, until the client
/// goes away.
async fn feed(baton: Baton, actor: Actor, q: StreamQuery, mut after: u64, tx: mpsc::Sender<Item>) {
    loop {
        // Register for the wake-up before reading, so a commit in between is not missed.
        let notified = baton.store().commits().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let page = match baton.events(&actor, after, PAGE) {
            Ok(out) => out.events,
            Err(e) => {
                let _ = tx.send(Item::Failed(e)).await;
                return;
            }
        };
        if page.is_empty() {
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(IDLE) => {
                    if tx.send(Item::KeepAlive).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
            continue;
        }
        // Durable before visible: an empty write is answered only after the next fsync.
        if baton.write_tx(|_| Ok(())).await.is_err() {
            return;
        }
        for e in page {
            after = e.seq;
            if !q.keeps(&e) {
                continue;
            }
            if tx.send(Item::Event(Box::new(e))).await.is_err() {
                return;
            }
        }
    }
}

/// The SSE frames of one subscriber, as a body stream.
struct Frames(mpsc::Receiver<Item>);

impl futures_core::Stream for Frames {
    type Item = Result<String, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|item| {
            item.map(|item| {
                Ok(match item {
                    Item::Event(e) => {
                        let data = serde_json::to_string(&e).unwrap_or_default();
                        format!("id: {}\nevent: {}\ndata: {data}\n\n", e.seq, e.kind)
                    }
                    Item::KeepAlive => ": keep-alive\n\n".into(),
                    Item::Failed(e) => format!("event: error\ndata: {}\n\n", e.to_json()),
                })
            })
        })
    }
}

/// The event log, live, over a WebSocket: one event per text message (its JSON, with
/// `seq`), the same filters and guarantees as the SSE stream; resume with `after` on
/// reconnect. Pings every 2 s of quiet.
#[utoipa::path(get, path = "/v1/ws", tag = "events", params(StreamQuery),
    responses((status = 101, description = "Switching to the WebSocket protocol")))]
async fn websocket(
    State(s): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    s.auth(&headers, &[baton_core::access::Permission::Read])?; // 401 before 400
    let upgrade = upgrade.map_err(|e| {
        ApiError(Error::invalid(
            format!("not a WebSocket handshake: {}", e.body_text()),
            "connect with a WebSocket client, or use the SSE stream at /v1/events/stream",
        ))
    })?;
    let mut rx = subscribe(&s, &headers, query)?;
    Ok(upgrade.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(item) = rx.recv().await {
            let message = match item {
                Item::Event(e) => {
                    Message::Text(serde_json::to_string(&e).unwrap_or_default().into())
                }
                Item::KeepAlive => Message::Ping(Default::default()),
                Item::Failed(e) => Message::Text(e.to_json().to_string().into()),
            };
            if socket.send(message).await.is_err() {
                return; // the client went away; dropping `rx` stops the reader task
            }
        }
    }))
}
