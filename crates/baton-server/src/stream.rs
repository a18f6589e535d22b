//! The event log, live: Server-Sent Events at `GET /v1/events/stream` and WebSocket at
//! `GET /v1/ws`, with the same resume and filters.
//!
//! Fan-out: one follower task per workspace reads each new page of the log once, waits
//! once for it to be durable, encodes each event once and broadcasts the frames to every
//! live subscriber. A subscriber that starts behind (a resume), falls behind (the broadcast
//! buffer overflowed while its client was slow) or sees a gap reads the log itself from its
//! cursor until it has caught up, then listens again; frames are de-duplicated by sequence
//! number, so across the switch nothing is skipped or repeated. Writers never wait for
//! readers, and a slow consumer only slows itself.
//!
//! Events are sent only once durable: before frames leave, an empty write job is answered,
//! which happens after the next fsync, which covers every commit the page was read from.

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
use baton_core::{Baton, Code, Error};
use serde::Deserialize;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Batches of frames buffered per subscriber before its task waits for the client.
const BUFFER: usize = 64;
/// Frames a follower keeps for subscribers that have not taken them yet; one that falls
/// further behind reads the log instead.
const BROADCAST: usize = 4096;
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

/// One event, encoded once for every subscriber.
#[derive(Debug)]
struct Frame {
    event: Event,
    /// As an SSE frame.
    sse: String,
    /// As JSON (a WebSocket message).
    json: String,
}

impl Frame {
    fn new(event: Event) -> Arc<Frame> {
        let json = serde_json::to_string(&event).unwrap_or_default();
        let sse = format!("id: {}\nevent: {}\ndata: {json}\n\n", event.seq, event.kind);
        Arc::new(Frame { event, sse, json })
    }
}

/// The followers of the workspaces that have subscribers.
#[derive(Debug, Default)]
pub struct Hub {
    followers: Mutex<HashMap<String, broadcast::Sender<Arc<Frame>>>>,
}

impl Hub {
    /// A receiver of the workspace's live frames, starting the follower if none runs.
    fn subscribe(self: &Arc<Hub>, baton: &Baton, actor: &Actor) -> broadcast::Receiver<Arc<Frame>> {
        let mut followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = followers.get(&actor.workspace_id) {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(BROADCAST);
        followers.insert(actor.workspace_id.clone(), tx.clone());
        let start = baton.last_seq(actor).unwrap_or(0);
        tokio::spawn(follow(
            self.clone(),
            baton.clone(),
            actor.clone(),
            tx,
            start,
        ));
        rx
    }
}

/// A workspace's follower: reads each new page once, makes sure it is durable, broadcasts.
/// Ends when no subscriber is left, or when the server begins to shut down (its streams end
/// then too): a follower still pausing as the runtime went down would find its timer gone.
async fn follow(
    hub: Arc<Hub>,
    baton: Baton,
    actor: Actor,
    tx: broadcast::Sender<Arc<Frame>>,
    after: u64,
) {
    let closing = baton.clone();
    tokio::select! {
        _ = closing.closing() => {
            let mut followers = hub.followers.lock().unwrap_or_else(|p| p.into_inner());
            followers.remove(&actor.workspace_id);
        }
        _ = follow_log(&hub, &baton, &actor, &tx, after) => {}
    }
}

/// The loop of [`follow`].
async fn follow_log(
    hub: &Hub,
    baton: &Baton,
    actor: &Actor,
    tx: &broadcast::Sender<Arc<Frame>>,
    mut after: u64,
) {
    loop {
        {
            let mut followers = hub.followers.lock().unwrap_or_else(|p| p.into_inner());
            if tx.receiver_count() == 0 {
                followers.remove(&actor.workspace_id);
                return;
            }
        }
        let notified = baton.store().commits().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let page = match baton.events(actor, after, PAGE) {
            Ok(out) => out.events,
            Err(_) => {
                tokio::time::sleep(IDLE).await; // subscribers time out to the log and see it
                continue;
            }
        };
        if page.is_empty() {
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(IDLE) => {}
            }
            continue;
        }
        // Not durable yet (the store is behind or failing): the same page again after a
        // pause. Ending here would leave the workspace's subscribers on a silent channel.
        if baton.sync().await.is_err() {
            tokio::time::sleep(IDLE).await;
            continue;
        }
        for e in page {
            after = e.seq;
            let _ = tx.send(Frame::new(e));
        }
    }
}

/// What a subscriber's task hands its connection.
enum Item {
    /// The next kept events, in order.
    Frames(Vec<Arc<Frame>>),
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
    /// Only events by this actor (an agent's name, a key id), and when it names an agent
    /// the events of its runs too, whoever sent them (a heartbeat sent with an admin key),
    /// including an agent registered after the stream opened.
    actor: Option<String>,
    /// Only events of this project.
    project: Option<String>,
    /// The id of the agent `actor` names, if it names one: looked up when the stream
    /// opens, else learnt from the event that registers it.
    #[serde(skip)]
    #[param(ignore)]
    agent_id: Option<String>,
}

impl StreamQuery {
    /// Whether the subscriber gets `e`. Called on every event in log order, so the agent
    /// `actor` names is known from its registration on. `project_of` reads a task's
    /// project, for the events about a task that do not carry it (`dependency.*`).
    fn keeps(&mut self, e: &Event, project_of: impl FnOnce(&str) -> Option<String>) -> bool {
        if let (Some(name), None) = (&self.actor, &self.agent_id) {
            let agent = &e.data["agent"];
            if agent["name"].as_str() == Some(name) || agent["id"].as_str() == Some(name) {
                self.agent_id = agent["id"].as_str().map(str::to_string);
            }
        }
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
            && self.actor.as_ref().is_none_or(|a| {
                &e.actor == a
                    || self
                        .agent_id
                        .as_deref()
                        .is_some_and(|id| e.data["run"]["agent_id"].as_str() == Some(id))
            })
            && self.project.as_ref().is_none_or(|p| {
                // A task's event names its project; a project's own events are its too. A
                // task's project never changes, so reading it now is reading it then.
                let of_task = e.data["task"]["project_id"].as_str();
                let of_project = e.data["project"]["id"].as_str();
                match (of_task.or(of_project), &e.task_id) {
                    (Some(id), _) => id == p,
                    (None, Some(task)) => project_of(task).as_ref() == Some(p),
                    (None, None) => false,
                }
            })
    }
}

/// Authenticates a subscriber and starts its reader task; returns the items to deliver.
fn subscribe(
    s: &AppState,
    headers: &HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<mpsc::Receiver<Item>, ApiError> {
    let actor = s
        .auth(headers, &[baton_core::access::Permission::Read])?
        .actor;
    let Query(mut q) = query.map_err(|e| {
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
    for (field, value) in [
        ("task", &q.task),
        ("type", &q.kind),
        ("actor", &q.actor),
        ("project", &q.project),
    ] {
        if let Some(value) = value {
            baton_core::ops::check_ref(field, value)?;
            if value.is_empty() {
                return Err(ApiError(Error::invalid(
                    format!("{field} is empty"),
                    format!("leave {field} out to keep every event, or name what to keep"),
                )));
            }
        }
    }
    // A project by id or name, as elsewhere; events name it by id.
    if let Some(project) = &q.project {
        q.project = Some(s.baton.project(&actor, project)?.project.id);
    }
    let start = match last_id.or(q.after) {
        Some(n) => s.baton.check_resume(&actor, n)?,
        // Neither: new events only.
        None => s.baton.last_seq(&actor)?,
    };
    // An actor need not be an agent (a key id, `cli`): then only the actor is matched.
    // Looked up after `start`: an agent registered in between is found here, one
    // registered later by its event (`StreamQuery::keeps`).
    if let Some(name) = &q.actor {
        q.agent_id = s.baton.agent(&actor, name).ok().map(|a| a.agent.id);
    }
    let (tx, rx) = mpsc::channel::<Item>(BUFFER);
    let live = s.hub.subscribe(&s.baton, &actor);
    tokio::spawn(feed(s.baton.clone(), actor, q, start, live, tx));
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

/// Sends one subscriber every kept event after `after`, until its client goes away: from
/// the log while behind, then from the workspace's follower.
async fn feed(
    baton: Baton,
    actor: Actor,
    mut q: StreamQuery,
    mut after: u64,
    mut live: broadcast::Receiver<Arc<Frame>>,
    out: mpsc::Sender<Item>,
) {
    // Every wait below also ends when the server begins to shut down: reading back a long
    // history, or a stalled client's full buffer, must not hold the drain.
    let send = |item: Item| {
        let (baton, out) = (&baton, &out);
        async move {
            tokio::select! {
                sent = out.send(item) => sent.is_ok(),
                _ = baton.closing() => false,
            }
        }
    };
    loop {
        let caught_up = tokio::select! {
            caught_up = catch_up(&baton, &actor, &mut q, &mut after, &out) => caught_up,
            _ = baton.closing() => false,
        };
        if !caught_up {
            return;
        }
        // Live: frames from the follower, skipping what the log already gave.
        loop {
            let first = tokio::select! {
                r = live.recv() => r,
                _ = tokio::time::sleep(IDLE) => {
                    if !send(Item::KeepAlive).await {
                        return;
                    }
                    continue;
                }
                _ = out.closed() => return,
                // The server is shutting down: end the stream, so it does not wait for
                // the client to leave (the client resumes on another replica or later).
                _ = baton.closing() => return,
            };
            let mut batch = Vec::new();
            let mut next = first;
            let behind = loop {
                match next {
                    Ok(frame) if frame.event.seq <= after => {}
                    Ok(frame) if frame.event.seq == after + 1 => {
                        after = frame.event.seq;
                        if q.keeps(&frame.event, |id| project_of(&baton, &actor, id)) {
                            batch.push(frame);
                        }
                    }
                    // A gap (or frames dropped for this slow subscriber): read the log.
                    Ok(_) | Err(RecvError::Lagged(_)) => break true,
                    Err(RecvError::Closed) => {
                        live = live.resubscribe();
                        break true;
                    }
                }
                next = match live.try_recv() {
                    Ok(f) => Ok(f),
                    Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                    Err(TryRecvError::Closed) => Err(RecvError::Closed),
                    Err(TryRecvError::Empty) => break false,
                };
            };
            if !batch.is_empty() && !send(Item::Frames(batch)).await {
                return;
            }
            if behind {
                break;
            }
        }
    }
}

/// Reads the log from `after` until a page comes back empty, sending the kept events once
/// durable. False when the client went away or the log cannot be read.
async fn catch_up(
    baton: &Baton,
    actor: &Actor,
    q: &mut StreamQuery,
    after: &mut u64,
    out: &mpsc::Sender<Item>,
) -> bool {
    loop {
        let page = match baton.events(actor, *after, PAGE) {
            Ok(out) => out.events,
            Err(e) => {
                let _ = out.send(Item::Failed(e)).await;
                return false;
            }
        };
        if page.is_empty() {
            return true;
        }
        // Durable before visible: an empty write is answered only after the next fsync. A
        // store far behind refuses for a while: read the same page again after a pause.
        match baton.sync().await {
            Ok(()) => {}
            Err(e) if e.code == Code::RateLimited => {
                tokio::time::sleep(IDLE).await;
                continue;
            }
            Err(e) => {
                let _ = out.send(Item::Failed(e)).await;
                return false;
            }
        }
        let mut batch = Vec::new();
        for e in page {
            *after = e.seq;
            if q.keeps(&e, |id| project_of(baton, actor, id)) {
                batch.push(Frame::new(e));
            }
        }
        if !batch.is_empty() && out.send(Item::Frames(batch)).await.is_err() {
            return false;
        }
    }
}

/// The project of task `id`, if the actor may read it.
fn project_of(baton: &Baton, actor: &Actor, id: &str) -> Option<String> {
    baton.get_task(actor, id).ok().map(|t| t.task.project_id)
}

/// The SSE frames of one subscriber, as a body stream.
struct Frames(mpsc::Receiver<Item>);

impl futures_core::Stream for Frames {
    type Item = Result<String, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|item| {
            item.map(|item| {
                Ok(match item {
                    // One chunk per batch: one write for many events.
                    Item::Frames(frames) => frames.iter().map(|f| f.sse.as_str()).collect(),
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
            let messages = match item {
                Item::Frames(frames) => frames
                    .iter()
                    .map(|f| Message::Text(f.json.clone().into()))
                    .collect(),
                Item::KeepAlive => vec![Message::Ping(Default::default())],
                Item::Failed(e) => vec![Message::Text(e.to_json().to_string().into())],
            };
            for message in messages {
                if socket.send(message).await.is_err() {
                    return; // the client went away; dropping `rx` stops the reader task
                }
            }
        }
    }))
}
