//! [`Baton`]: the handle every surface holds. It runs each operation of [`crate::ops`] as a
//! write job on the store (with idempotency keys) or in a read transaction, and adds what
//! needs time to pass: the long-poll claim and the reaper.

use crate::admission::{Admission, Backlog, Slot, WriteLimits};
use crate::api::*;
use crate::blobs::Blobs;
use crate::dispatch::{Registration, Waiters};
use crate::error::{Code, Error, Result};
use crate::id::{new_id, sha256_hex};
use crate::metrics::{Meter, Metrics};
use crate::model::*;
use crate::ops::{self, Ctx};
use crate::state::Op;
use crate::store::{Loads, LockMode, Store, TaskFilter, Tx, WriteJob};
use crate::time::{Clock, Duration};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Longest long-poll a claim may ask for.
pub const MAX_CLAIM_WAIT: Duration = Duration::secs(60);

/// The engine handle: cheap to clone, shared by every surface.
#[derive(Clone)]
pub struct Baton {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    waiters: Arc<Waiters>,
    backlog: Arc<Backlog>,
    /// Set when the server begins to shut down: long waits end (see [`Baton::close`]).
    closing: Arc<tokio::sync::watch::Sender<bool>>,
    /// Where artifacts' bytes go; `None` until [`Baton::with_blobs`].
    blobs: Option<Blobs>,
    /// What this process committed and how long its claims took, for `/metrics`.
    meter: Arc<Meter>,
}

impl std::fmt::Debug for Baton {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Baton")
    }
}

/// A write job: the operation, its result slot and where to send the answer after commit.
struct Job<F, T> {
    op: F,
    mode: LockMode,
    /// What the job loads for update first (a task or an agent, and its workspace), if
    /// known: see [`WriteJob::loads`].
    loads: Option<(Loads, String, String)>,
    out: Option<Result<T>>,
    /// What its operation measured in its last run (events emitted, runs completed, cost
    /// reported), counted once committed.
    emitted: Vec<(String, crate::metrics::Note)>,
    meter: Arc<Meter>,
    reply: Option<oneshot::Sender<Result<T>>>,
    /// Its place in the backlog, given back when the job is dropped (after its answer).
    _slot: Slot,
}

impl<F, T> WriteJob for Job<F, T>
where
    F: Fn(&mut dyn Tx) -> Result<T> + Send,
    T: Send,
{
    fn run(&mut self, tx: &mut dyn Tx) -> Result<()> {
        let (out, emitted) = crate::metrics::noted(|| (self.op)(tx));
        self.emitted = emitted;
        let status = match &out {
            Ok(_) => Ok(()),
            Err(e) => Err(e.clone()),
        };
        self.out = Some(out);
        status
    }

    fn lock_mode(&self) -> LockMode {
        self.mode
    }

    fn loads(&self) -> Option<(Loads, &str, &str)> {
        self.loads
            .as_ref()
            .map(|(kind, ws, id)| (*kind, ws.as_str(), id.as_str()))
    }

    fn finish(mut self: Box<Self>, committed: Result<()>) {
        if committed.is_ok() && matches!(self.out, Some(Ok(_))) {
            self.meter.committed(&self.emitted);
        }
        let answer = match (committed, self.out.take()) {
            (_, Some(Err(op_error))) => Err(op_error),
            (Ok(()), Some(out)) => out,
            (Err(commit_error), _) => Err(commit_error),
            (Ok(()), None) => Err(Error::new(
                Code::Internal,
                "write job never ran",
                "retry the call",
            )),
        };
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(answer);
        }
    }
}

impl Baton {
    /// An engine over a store, reading time from `clock`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Baton {
            store,
            clock,
            waiters: Arc::default(),
            backlog: Backlog::new(WriteLimits::default()),
            closing: Arc::new(tokio::sync::watch::Sender::new(false)),
            blobs: None,
            meter: Arc::default(),
        }
    }

    /// The same engine, keeping artifacts' bytes in `blobs`.
    pub fn with_blobs(mut self, blobs: Blobs) -> Self {
        self.blobs = Some(blobs);
        self
    }

    /// The object store artifacts' bytes go to, if any: `serve` probes the very store it
    /// will use.
    pub fn objects(&self) -> Option<&Blobs> {
        self.blobs.as_ref()
    }

    fn blobs(&self) -> Result<&Blobs> {
        self.blobs.as_ref().ok_or_else(|| {
            // Not retryable: it is how the server was started, not a passing state.
            Error::new(
                Code::Internal,
                "this Baton has no object store for artifacts",
                "on PostgreSQL, start every replica with --objects (BATON_OBJECTS): a \
                 directory they all share, or s3://BUCKET/PREFIX",
            )
        })
    }

    /// Ends the waits that could hold a server's shutdown for as long as their clients
    /// like: a waiting claim answers at once with what it has (no claims), and
    /// [`Baton::closing`] resolves for the live streams, which then end. Called when a
    /// server begins its graceful shutdown; writes go on as before.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`Baton::close`] has been called.
    pub async fn closing(&self) {
        let mut closing = self.closing.subscribe();
        let _ = closing.wait_for(|closed| *closed).await;
    }

    /// The same engine with other limits on the writes waiting for the store.
    pub fn with_write_limits(mut self, limits: WriteLimits) -> Self {
        self.backlog = Backlog::new(limits);
        self
    }

    /// The store, for surfaces that need its notifications.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Runs a raw write job on the store, alone in its workspace, and waits for its commit.
    pub async fn write_tx<T, F>(&self, op: F) -> Result<T>
    where
        F: Fn(&mut dyn Tx) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.write_tx_as(LockMode::Exclusive, Admission::NewWork, None, op)
            .await
    }

    /// Returns once the store's next commit is durable: what a reader saw before the call
    /// is then on disk (streams send events only after this). Admitted as held work: a
    /// stream must not end because planners are being turned away.
    pub async fn sync(&self) -> Result<()> {
        self.write_tx_as(LockMode::Exclusive, Admission::HeldWork, None, |_| Ok(()))
            .await
    }

    /// Queues `op` as a write job and waits for its answer; `loads` names what it loads for
    /// update first, if known (see [`WriteJob::loads`]).
    async fn write_tx_as<T, F>(
        &self,
        mode: LockMode,
        admission: Admission,
        loads: Option<(Loads, String, String)>,
        op: F,
    ) -> Result<T>
    where
        F: Fn(&mut dyn Tx) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        answered(self.submit_tx_as(mode, admission, loads, op)?).await
    }

    /// Queues `op` as a write job, at once: jobs submitted one after another reach the
    /// writer in that order. The answer comes on the returned channel.
    fn submit_tx_as<T, F>(
        &self,
        mode: LockMode,
        admission: Admission,
        loads: Option<(Loads, String, String)>,
        op: F,
    ) -> Result<Answer<T>>
    where
        F: Fn(&mut dyn Tx) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let slot = self.backlog.admit(admission)?;
        let (reply, answer) = oneshot::channel();
        self.store.submit(Box::new(Job {
            op,
            mode,
            loads,
            out: None,
            emitted: Vec::new(),
            meter: self.meter.clone(),
            reply: Some(reply),
            _slot: slot,
        }));
        Ok(answer)
    }

    /// Runs an operation as one write job, alone in its workspace. With an idempotency key,
    /// a repeat of the same request returns the stored response; the same key with a
    /// different request is `IDEMPOTENCY_MISMATCH`.
    pub async fn write<T, F>(
        &self,
        actor: &Actor,
        key: Option<&str>,
        request: Value,
        op: F,
    ) -> Result<T>
    where
        F: Fn(&mut Ctx<'_>) -> Result<T> + Send + 'static,
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        self.write_as(
            LockMode::Exclusive,
            Admission::NewWork,
            actor,
            key,
            request,
            op,
        )
        .await
    }

    /// As [`Baton::write`], for the claim and lease operations that may run beside each other
    /// ([`LockMode::Shared`]).
    async fn write_shared<T, F>(
        &self,
        admission: Admission,
        actor: &Actor,
        key: Option<&str>,
        request: Value,
        op: F,
    ) -> Result<T>
    where
        F: Fn(&mut Ctx<'_>) -> Result<T> + Send + 'static,
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        self.write_as(LockMode::Shared, admission, actor, key, request, op)
            .await
    }

    async fn write_as<T, F>(
        &self,
        mode: LockMode,
        admission: Admission,
        actor: &Actor,
        key: Option<&str>,
        request: Value,
        op: F,
    ) -> Result<T>
    where
        F: Fn(&mut Ctx<'_>) -> Result<T> + Send + 'static,
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        answered(self.submit_item(mode, admission, actor, key, None, None, request, op)?).await
    }

    /// Submits an operation as one write job, at once (see [`Baton::submit_tx_as`]), as one
    /// item of a call made of several write jobs: with `whole`, the call's own key is bound
    /// to the call's request in the item's transaction, so items of another request under
    /// the same key are refused (`IDEMPOTENCY_MISMATCH`) before they write anything.
    #[allow(clippy::too_many_arguments)]
    fn submit_item<T, F>(
        &self,
        mode: LockMode,
        admission: Admission,
        actor: &Actor,
        key: Option<&str>,
        whole: Option<WholeRequest>,
        loads: Option<(Loads, &str)>,
        request: Value,
        op: F,
    ) -> Result<Answer<T>>
    where
        F: Fn(&mut Ctx<'_>) -> Result<T> + Send + 'static,
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        check_idempotency_key(key)?;
        let clock = self.clock.clone();
        let ws = actor.workspace_id.clone();
        let name = actor.name.clone();
        let agent = actor.agent.clone();
        let request_id = actor.request_id.clone();
        let key = key.map(str::to_string);
        let loads = loads.map(|(kind, id)| (kind, ws.clone(), id.to_string()));
        self.submit_tx_as(mode, admission, loads, move |tx| {
            let request_sha = if key.is_some() {
                sha256_hex(&request.to_string())
            } else {
                String::new()
            };
            let now = clock.now();
            if let Some(whole) = &whole {
                match tx.idempotency(&ws, &whole.key)? {
                    Some((sha, _)) if sha != whole.request_sha => {
                        return Err(idempotency_mismatch(&whole.key))
                    }
                    Some(_) => {}
                    None => tx.put_idempotency(&ws, &whole.key, &whole.request_sha, "", now)?,
                }
            }
            if let Some(key) = &key {
                if let Some((stored_sha, response)) = tx.idempotency(&ws, key)? {
                    if stored_sha != request_sha {
                        return Err(idempotency_mismatch(key));
                    }
                    return crate::store::from_stored_json(&response)
                        .map_err(|e| Error::new(Code::Internal, e.to_string(), ""));
                }
            }
            let mut ctx = Ctx {
                tx,
                now,
                ws: &ws,
                actor: &name,
                agent: agent.as_deref(),
                request_id: request_id.as_deref(),
            };
            let out = op(&mut ctx)?;
            if let Some(key) = &key {
                let response = serde_json::to_string(&out)
                    .map_err(|e| Error::new(Code::Internal, e.to_string(), ""))?;
                ctx.tx
                    .put_idempotency(&ws, key, &request_sha, &response, now)?;
            }
            Ok(out)
        })
    }

    /// Runs a query in a read transaction.
    pub fn read<T, F>(&self, actor: &Actor, op: F) -> Result<T>
    where
        F: FnOnce(&mut Ctx<'_>) -> Result<T> + Send,
        T: Send,
    {
        let now = self.clock.now();
        let mut op = Some(op);
        let mut out = None;
        self.store.read(&mut |tx| {
            let mut ctx = Ctx {
                tx,
                now,
                ws: &actor.workspace_id,
                actor: &actor.name,
                agent: actor.agent.as_deref(),
                request_id: actor.request_id.as_deref(),
            };
            if let Some(op) = op.take() {
                out = Some(op(&mut ctx)?);
            }
            Ok(())
        })?;
        out.ok_or_else(|| Error::new(Code::Internal, "read never ran", "retry the call"))
    }

    /// Makes sure the named workspace (and its default project) exists, and returns an actor
    /// in it. The default workspace is created on first use, so a new store needs no set-up.
    pub async fn actor(&self, workspace: &str, name: &str) -> Result<Actor> {
        // Recorded in every event it causes, as agents' names are: held to the same rules.
        ops::check_line("actor", name, 200)?;
        let found = self.read(
            &Actor {
                workspace_id: String::new(),
                name: name.into(),
                agent: None,
                request_id: None,
            },
            |ctx| ctx.tx.workspace_by_name(workspace),
        )?;
        let ws = match found {
            Some(ws) => ws,
            None if workspace == DEFAULT_WORKSPACE => self.create_workspace(workspace).await?,
            None => {
                let hint = match crate::id::is_id_shaped(workspace) {
                    true => "name the workspace by its name here, not its id".to_string(),
                    false => format!(
                        "check the name; `baton --workspace {workspace} init` creates it on \
                         this store"
                    ),
                };
                return Err(Error::not_found("workspace", workspace).with_hint(hint));
            }
        };
        Ok(Actor {
            workspace_id: ws.id,
            name: name.to_string(),
            agent: None,
            request_id: None,
        })
    }

    /// Creates a workspace with its default project (or returns it if it exists): for
    /// bootstrapping, where the caller owns the store.
    pub async fn create_workspace(&self, name: &str) -> Result<Workspace> {
        match self
            .insert_workspace(name, false, None)
            .await
            .map(|(ws, _)| ws)
        {
            // Another process (a replica starting at the same time) created it first.
            Err(e) if e.code == Code::AlreadyExists => {
                let nobody = Actor {
                    workspace_id: String::new(),
                    name: String::new(),
                    agent: None,
                    request_id: None,
                };
                let name = name.to_string();
                self.read(&nobody, move |ctx| ctx.tx.workspace_by_name(&name))?
                    .ok_or(e)
            }
            other => other,
        }
    }

    /// Creates a workspace with its default project and its first admin key, in one
    /// transaction (a workspace never exists without a key to reach it);
    /// `ALREADY_EXISTS` if the name is taken. What the API offers: handing back an existing
    /// workspace would hand whoever asks by its name a way into it.
    pub async fn create_new_workspace(
        &self,
        caller: &Actor,
        name: &str,
    ) -> Result<(Workspace, crate::access::KeyOut)> {
        let request_id = caller.request_id.as_deref();
        let (ws, key) = self.insert_workspace(name, true, request_id).await?;
        let key = key.ok_or_else(|| Error::new(Code::Internal, "no key was made", ""))?;
        Ok((ws, key))
    }

    /// Creates workspace `name` (with its first admin key when `must_be_new`), or returns
    /// the one that exists unless `must_be_new`; its events record `request_id`.
    async fn insert_workspace(
        &self,
        name: &str,
        must_be_new: bool,
        request_id: Option<&str>,
    ) -> Result<(Workspace, Option<crate::access::KeyOut>)> {
        ops::check_new_name("workspace name", name, 200)?;
        let clock = self.clock.clone();
        let name = name.to_string();
        let request_id = request_id.map(str::to_string);
        self.write_tx(move |tx| {
            if let Some(ws) = tx.workspace_by_name(&name)? {
                if must_be_new {
                    return Err(Error::new(
                        Code::AlreadyExists,
                        format!("a workspace named '{name}' exists"),
                        "pick another name; keys for an existing workspace come from its admins",
                    ));
                }
                return Ok((ws, None));
            }
            let now = clock.now();
            let ws = Workspace {
                id: new_id("ws"),
                name: name.clone(),
                created_at: now,
                killed: false,
            };
            tx.put_workspace(&ws)?;
            let mut ctx = Ctx {
                tx,
                now,
                ws: &ws.id,
                actor: "system",
                agent: None,
                request_id: request_id.as_deref(),
            };
            ctx.emit("workspace.created", None, json!({ "workspace": ws }))?;
            let project = Project {
                id: new_id("prj"),
                workspace_id: ws.id.clone(),
                name: DEFAULT_PROJECT.into(),
                lease_ttl: Duration::secs(300),
                retry_policy: RetryPolicy::default(),
                review_required: false,
                killed: false,
                exclusive_scopes: false,
                max_concurrency: None,
                created_at: now,
            };
            ctx.tx.put_project(&project)?;
            ctx.emit("project.created", None, json!({ "project": project }))?;
            let key = if must_be_new {
                ctx.actor = "admin";
                Some(crate::access::create_key(&mut ctx, "admin", None)?)
            } else {
                None
            };
            Ok((ws, key))
        })
        .await
    }

    /// Creates an API key in the actor's workspace; the secret is in the response only.
    pub async fn create_key(
        &self,
        actor: &Actor,
        role: &str,
        agent: Option<String>,
    ) -> Result<crate::access::KeyOut> {
        let request = json!({ "op": "key.create", "role": role, "agent": agent });
        let role = role.to_string();
        // Never idempotent by key: a replay would have to store and show the secret again.
        self.write(actor, None, request, move |ctx| {
            crate::access::create_key(ctx, &role, agent.clone())
        })
        .await
    }

    /// Whether the store answers a read (for readiness probes).
    pub fn ready_check(&self) -> Result<()> {
        let nobody = Actor {
            workspace_id: String::new(),
            name: String::new(),
            agent: None,
            request_id: None,
        };
        self.read(&nobody, |ctx| ctx.tx.workspaces().map(|_| ()))
    }

    /// The principal a bearer token stands for.
    pub fn authenticate(&self, token: &str) -> Result<crate::access::Principal> {
        let nobody = Actor {
            workspace_id: String::new(),
            name: String::new(),
            agent: None,
            request_id: None,
        };
        self.read(&nobody, |ctx| crate::access::authenticate(ctx, token))
    }

    /// Creates a task.
    pub async fn create_task(
        &self,
        actor: &Actor,
        key: Option<&str>,
        req: CreateTask,
    ) -> Result<TaskOut> {
        let request = json!({ "op": "task.create", "body": &req });
        let key_owned = key.map(str::to_string);
        self.write(actor, key, request, move |ctx| {
            ops::task::create(ctx, req.clone(), key_owned.clone())
        })
        .await
    }

    /// Creates a graph of tasks that refer to each other by refs, in one transaction.
    pub async fn create_batch(
        &self,
        actor: &Actor,
        key: Option<&str>,
        items: Vec<ops::task::BatchItem>,
    ) -> Result<ops::task::BatchOut> {
        let request = json!({ "op": "task.batch", "body": &items });
        self.write(actor, key, request, move |ctx| {
            ops::task::create_batch(ctx, items.clone())
        })
        .await
    }

    /// Expires lapsed leases in every workspace; how many, or the first error once every
    /// workspace has had its turn. `baton serve` runs this on a timer.
    pub async fn reap_all(&self) -> Result<usize> {
        let nobody = Actor {
            workspace_id: String::new(),
            name: "reaper".into(),
            agent: None,
            request_id: None,
        };
        let workspaces = self.read(&nobody, |ctx| ctx.tx.workspaces())?;
        let (mut expired, mut first_error) = (0, None);
        // One workspace's failure (a store far behind, a conflict) does not hold up the rest.
        for ws in workspaces {
            let actor = Actor {
                workspace_id: ws.id,
                name: "reaper".into(),
                agent: None,
                request_id: None,
            };
            match self.reap(&actor).await {
                Ok(n) => expired += n,
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        first_error.map_or(Ok(expired), Err)
    }

    /// Reads a task.
    pub fn get_task(&self, actor: &Actor, id: &str) -> Result<TaskOut> {
        self.read(actor, |ctx| ops::task::get(ctx, id))
    }

    /// Reads a task as it stood once event `seq` of its workspace was committed.
    pub fn get_task_as_of(&self, actor: &Actor, id: &str, seq: u64) -> Result<TaskOut> {
        self.read(actor, |ctx| ops::task::get_as_of(ctx, id, seq))
    }

    /// Lists tasks.
    pub fn list_tasks(&self, actor: &Actor, filter: TaskFilter) -> Result<TasksOut> {
        self.read(actor, |ctx| ops::task::list(ctx, filter))
    }

    /// Tasks claimable now, in claim order (for any capabilities).
    pub fn ready(&self, actor: &Actor, limit: u32) -> Result<TasksOut> {
        let limit = ops::check_limit("limit", limit)?;
        self.read(actor, |ctx| {
            let tasks = ctx.tx.claim_candidates(ctx.ws, ctx.now, limit, None)?;
            Ok(TasksOut {
                tasks: tasks.into_iter().map(|t| t.view()).collect(),
                next_cursor: None,
            })
        })
    }

    /// Updates a task's fields.
    pub async fn update_task(
        &self,
        actor: &Actor,
        key: Option<&str>,
        id: &str,
        req: UpdateTask,
    ) -> Result<TaskOut> {
        let request = json!({ "op": "task.update", "id": id, "body": &req });
        let id = id.to_string();
        self.write(actor, key, request, move |ctx| {
            ops::task::update(ctx, &id, req.clone())
        })
        .await
    }

    /// A state-machine operation that takes only the task id (and maybe a reason).
    pub async fn transition(
        &self,
        actor: &Actor,
        key: Option<&str>,
        op: Op,
        id: &str,
        reason: Option<String>,
    ) -> Result<TaskOut> {
        self.transition_at(actor, key, op, id, reason, None).await
    }

    /// As [`Baton::transition`], only if the task is still at `version` (when given):
    /// `VERSION_CONFLICT` otherwise, so a decision made on what a caller read is not applied
    /// to a task that changed since.
    pub async fn transition_at(
        &self,
        actor: &Actor,
        key: Option<&str>,
        op: Op,
        id: &str,
        reason: Option<String>,
        version: Option<u64>,
    ) -> Result<TaskOut> {
        let planner = ops::task::Unblocker::Planner;
        self.transition_by(actor, key, op, id, reason, version, planner)
            .await
    }

    /// Unblocks a task as a worker: only one an agent blocked (not a failed dependency,
    /// which a planner overrides), and with `agent` (the agent a key is bound to) only one
    /// that agent blocked. Lets the agent that hit a blocker lift it once it is resolved.
    /// With `version`, only if the task is still at it.
    pub async fn unblock_as_worker(
        &self,
        actor: &Actor,
        key: Option<&str>,
        id: &str,
        agent: Option<String>,
        version: Option<u64>,
    ) -> Result<TaskOut> {
        let worker = ops::task::Unblocker::Worker(agent);
        self.transition_by(actor, key, Op::Unblock, id, None, version, worker)
            .await
    }

    /// A transition by a planner or reviewer, or an unblock by `by`; recorded (for an
    /// idempotency key) alike whoever unblocks.
    #[allow(clippy::too_many_arguments)]
    async fn transition_by(
        &self,
        actor: &Actor,
        key: Option<&str>,
        op: Op,
        id: &str,
        reason: Option<String>,
        version: Option<u64>,
        by: ops::task::Unblocker,
    ) -> Result<TaskOut> {
        // Checked for every operation, those that record it and those that do not.
        if let Some(r) = &reason {
            ops::check_len("reason", r, ops::MAX_TEXT)?;
        }
        let mut request = json!({ "op": op.as_str(), "id": id, "reason": reason });
        if let Some(v) = version {
            request["version"] = json!(v);
        }
        let id = id.to_string();
        self.write(actor, key, request, move |ctx| {
            ops::task::check_version(ctx, &id, version)?;
            transition_op(ctx, op, &id, reason.clone(), &by)
        })
        .await
    }

    /// Claims work, waiting up to `req.wait` for some to appear.
    pub async fn claim(
        &self,
        actor: &Actor,
        key: Option<&str>,
        req: ClaimRequest,
    ) -> Result<Claims> {
        self.claim_item(actor, key, None, req).await
    }

    /// As [`Baton::claim`], as one item of a call made of several write jobs (see
    /// [`Baton::submit_item`]).
    async fn claim_item(
        &self,
        actor: &Actor,
        key: Option<&str>,
        whole: Option<WholeRequest>,
        req: ClaimRequest,
    ) -> Result<Claims> {
        let wait = check_wait(&req)?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(wait.0);
        // Only a claim that may wait joins the waiters (a keyed one answers at once).
        let waiting = (wait.0 > 0 && key.is_none())
            .then(|| self.register_waiter(actor, &req))
            .transpose()?;
        // The time spent answering, not waiting for work to appear.
        let mut busy = std::time::Duration::ZERO;
        let measured = |busy: std::time::Duration, claims: Claims| {
            self.meter.claimed(&actor.workspace_id, busy.as_secs_f64());
            Ok(claims)
        };
        loop {
            if let Some(w) = &waiting {
                w.rearm();
            }
            let request = json!({ "op": "claim", "body": &req });
            let r = req.clone();
            let attempt = std::time::Instant::now();
            let claims = answered(self.submit_item(
                LockMode::Shared,
                Admission::NewWork,
                actor,
                key,
                whole.clone(),
                Some((Loads::Agent, &req.agent)),
                request,
                move |ctx| ops::lease::claim(ctx, &r),
            )?)
            .await?;
            busy += attempt.elapsed();
            let Some(w) = waiting.as_ref().filter(|_| claims.claims.is_empty()) else {
                return measured(busy, claims);
            };
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(deadline) => return measured(busy, claims),
                _ = self.closing() => return measured(busy, claims),
                _ = w.woken() => {}
            }
        }
    }

    /// Adds a long-poll claim to the waiters, under the capabilities its claims will use:
    /// the request's, or else the agent's stored ones.
    fn register_waiter(&self, actor: &Actor, req: &ClaimRequest) -> Result<Registration> {
        let capabilities = if req.capabilities.is_empty() {
            self.read(actor, |ctx| ctx.tx.agent(ctx.ws, &req.agent))?
                .map(|a| a.capabilities)
                .unwrap_or_default()
        } else {
            // As the claim will store them (trimmed), so the group matches its claims.
            ops::check_tags("capabilities", &req.capabilities)?
        };
        Ok(self.waiters.register(
            &actor.workspace_id,
            &req.agent,
            capabilities,
            &self.store,
            &self.clock,
            self.closing.subscribe(),
        ))
    }

    /// Runs a lease operation: the token must be the task's current lease.
    pub async fn lease_op(
        &self,
        actor: &Actor,
        key: Option<&str>,
        id: &str,
        token: &str,
        op: LeaseOp,
    ) -> Result<LeaseOut> {
        // Recorded without the token: a caller that lost its answer and its lease with it
        // (a restarted agent) repeats the call under its idempotency key and gets the first
        // answer; the answer holds no secret, and a call under a new key proves its lease.
        let request = json!({ "op": "lease", "id": id, "body": &op });
        answered(self.submit_lease_job(actor, key, None, request, id, token, op)?).await
    }

    /// Submits a lease operation as a write job, at once (see [`Baton::submit_tx_as`]),
    /// recorded (for its idempotency key) as `request`.
    #[allow(clippy::too_many_arguments)]
    fn submit_lease_job(
        &self,
        actor: &Actor,
        key: Option<&str>,
        whole: Option<WholeRequest>,
        request: Value,
        id: &str,
        token: &str,
        op: LeaseOp,
    ) -> Result<Answer<LeaseOut>> {
        let loads = id;
        let id = id.to_string();
        let token = token.to_string();
        let held = Admission::HeldWork;
        self.submit_item(
            LockMode::Shared,
            held,
            actor,
            key,
            whole,
            Some((Loads::Task, loads)),
            request,
            move |ctx| {
                let out = match op.clone() {
                    LeaseOp::Start => LeaseOut::Task(ops::lease::start(ctx, &id, &token)?),
                    LeaseOp::Heartbeat(hb) => {
                        LeaseOut::Heartbeat(ops::lease::heartbeat(ctx, &id, &token, &hb)?)
                    }
                    LeaseOp::Release => LeaseOut::Task(ops::lease::release(ctx, &id, &token)?),
                    LeaseOp::Complete(c) => {
                        LeaseOut::Task(ops::lease::complete(ctx, &id, &token, c)?)
                    }
                    LeaseOp::Fail(f) => LeaseOut::Task(ops::lease::fail(ctx, &id, &token, f)?),
                    LeaseOp::Block { reason } => {
                        LeaseOut::Task(ops::lease::block(ctx, &id, &token, reason)?)
                    }
                    LeaseOp::Wait { reason } => {
                        LeaseOut::Task(ops::lease::wait(ctx, &id, &token, reason)?)
                    }
                    LeaseOp::Resume => LeaseOut::Task(ops::lease::resume(ctx, &id, &token)?),
                };
                Ok(out)
            },
        )
    }

    /// Completes several leased tasks in one call, answering each in request order, and
    /// with `next` claims the agent's next work in the same call. Each completion is a write
    /// job of its own, so a lost lease fails only its item; all are submitted together, so
    /// the writer commits them as one group (one fsync). The claim is one more job,
    /// submitted after them: on the embedded store (one writer, in submission order) it
    /// runs after them, so a dependent they free is claimable. A claim refused at run time (a kill
    /// switch, a store far behind) fails only `next`: the completions stand. Bad input in
    /// `next` refuses the whole call before anything is written.
    ///
    /// With an idempotency key, each item (and the claim) is stored under the key and its
    /// position, and the key itself is bound to the whole request in the transaction of
    /// every item that commits: a repeat returns the stored answers, and the same key with
    /// another body is `IDEMPOTENCY_MISMATCH` with nothing of it written.
    pub async fn complete_many(
        &self,
        actor: &Actor,
        key: Option<&str>,
        items: Vec<Completion>,
        next: Option<ClaimRequest>,
    ) -> Result<Completed> {
        if items.is_empty() || items.len() > ops::lease::MAX_CLAIM as usize {
            return Err(Error::invalid(
                format!("completions must hold 1 to {} items", ops::lease::MAX_CLAIM),
                "complete at most as many tasks per call as one claim may take",
            ));
        }
        check_idempotency_key(key)?;
        if let Some(req) = &next {
            ops::lease::check_claim(req)?;
            check_wait(req)?;
        }
        // Hashed only when a key needs it: the unkeyed call is the drain's hot path.
        let whole = key.map(|k| {
            let mut request = json!({ "op": "complete_many", "completions": &items });
            if let Some(req) = &next {
                request["next"] = json!(req);
            }
            WholeRequest {
                key: k.to_string(),
                request_sha: sha256_hex(&request.to_string()),
            }
        });
        // Every completion is submitted here, before the claim's future is first polled
        // (which submits it): the writer gets them in that order.
        let submitted: Vec<Result<Answer<LeaseOut>>> = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let item_key = key.map(|k| sha256_hex(&format!("{k}#{i}")));
                let (id, lease, complete) = item.into_parts();
                let op = LeaseOp::Complete(complete);
                let request = json!({ "op": "complete_many", "item": i, "id": id,
                    "lease_sha256": sha256_hex(&lease), "body": &op });
                let whole = whole.clone();
                self.submit_lease_job(actor, item_key.as_deref(), whole, request, &id, &lease, op)
            })
            .collect();
        let completions = submitted.into_iter().map(|answer| async move {
            Ok(match answered(answer?).await? {
                LeaseOut::Task(task) => task,
                LeaseOut::Heartbeat(ack) => TaskOut {
                    task: ack.task,
                    warnings: Vec::new(),
                },
            })
        });
        let again = next.clone();
        let mut claimer = actor.clone();
        if let Some(req) = &next {
            claimer.name = req.agent.clone();
        }
        let claim = async {
            let req = next?;
            let claim_key = key.map(|k| sha256_hex(&format!("{k}#next")));
            Some(
                self.claim_item(&claimer, claim_key.as_deref(), whole.clone(), req)
                    .await,
            )
        };
        let (results, mut next): (Vec<Result<TaskOut>>, _) =
            futures_util::future::join(futures_util::future::join_all(completions), claim).await;
        // Where jobs run beside each other (PostgreSQL's writers), the claim may have run
        // before the completions committed, and found the agent's places or a concurrency
        // key still taken by the very tasks this call completed: it is asked once more, now
        // that they have. (On the embedded store it ran after them, and asks again only
        // when the queue is empty.) A claim that waited was woken by their commits already.
        if let Some(req) = again {
            let missed = match &next {
                Some(Err(e)) => e.code == Code::AtCapacity,
                Some(Ok(c)) => c.claims.is_empty() && req.wait.is_none(),
                _ => false,
            };
            if missed && results.iter().any(Result::is_ok) {
                let claim_key = key.map(|k| sha256_hex(&format!("{k}#next/2")));
                let retried = self
                    .claim_item(&claimer, claim_key.as_deref(), whole.clone(), req)
                    .await;
                next = Some(retried);
            }
        }
        // Another request bound the key first: none of this one's items wrote anything.
        if let Some(k) = key {
            if results.iter().any(is_mismatch) || next.as_ref().is_some_and(is_mismatch) {
                return Err(idempotency_mismatch(k));
            }
        }
        Ok(Completed { results, next })
    }

    /// Adds a context entry.
    pub async fn add_context(
        &self,
        actor: &Actor,
        key: Option<&str>,
        task_id: &str,
        req: AddContext,
    ) -> Result<ContextOut> {
        let request = json!({ "op": "context.add", "id": task_id, "body": &req });
        let id = task_id.to_string();
        self.write(actor, key, request, move |ctx| {
            ops::knowledge::add_context(ctx, &id, req.clone())
        })
        .await
    }

    /// Attaches an artifact to a task: its bytes go to the object store (synced), then the
    /// row that describes them commits with its event. The task, the lease and the task's
    /// count of artifacts are checked first, so that a call refused for them stores nothing.
    pub async fn attach_artifact(
        &self,
        actor: &Actor,
        key: Option<&str>,
        task_id: &str,
        req: AttachArtifact,
    ) -> Result<ArtifactOut> {
        let (new, bytes) = ops::artifact::decode(&req)?;
        let blobs = self.blobs()?;
        check_idempotency_key(key)?;
        // What can be told before the bytes are stored is told first: a refused call stores
        // nothing (the write checks it all again, as things stand then). A call that repeats
        // one already answered under its idempotency key is answered as it was by the write
        // (its lease may have ended since): its bytes were stored by the first.
        let repeat = self.read(actor, |ctx| {
            if let Some(key) = key {
                if ctx.tx.idempotency(ctx.ws, key)?.is_some() {
                    return Ok(true);
                }
            }
            ops::artifact::check(ctx, task_id, &new).map(|()| false)
        })?;
        if !repeat {
            blobs.put(&actor.workspace_id, &new.sha256, bytes).await?;
        }
        let request = json!({ "op": "artifact.attach", "id": task_id, "name": new.name,
                              "media_type": new.media_type, "sha256": new.sha256,
                              "lease": new.lease });
        let id = task_id.to_string();
        self.write(actor, key, request, move |ctx| {
            ops::artifact::attach(ctx, &id, &new)
        })
        .await
    }

    /// A task's artifacts, oldest first.
    pub fn artifacts(&self, actor: &Actor, task_id: &str) -> Result<ArtifactsOut> {
        self.read(actor, |ctx| ops::artifact::list(ctx, task_id))
    }

    /// An artifact, with its bytes in the answer when `content` (as text when they are
    /// UTF-8, else base64).
    pub async fn artifact(&self, actor: &Actor, id: &str, content: bool) -> Result<ArtifactOut> {
        if !content {
            let artifact = self.read(actor, |ctx| ops::artifact::get(ctx, id))?;
            return Ok(ArtifactOut {
                artifact,
                content: None,
                content_base64: None,
            });
        }
        let (artifact, bytes) = self.artifact_bytes(actor, id).await?;
        let (content, content_base64) = ops::artifact::text_or_base64(bytes);
        Ok(ArtifactOut {
            artifact,
            content,
            content_base64,
        })
    }

    /// An artifact and its bytes, checked against its hash.
    pub async fn artifact_bytes(&self, actor: &Actor, id: &str) -> Result<(Artifact, Vec<u8>)> {
        let artifact = self.read(actor, |ctx| ops::artifact::get(ctx, id))?;
        let bytes = self
            .blobs()?
            .get(&actor.workspace_id, &artifact.sha256)
            .await?;
        Ok((artifact, bytes))
    }

    /// Adds a step; `lease` when the task's holder adds it (no `context_changed` for it).
    pub async fn add_step(
        &self,
        actor: &Actor,
        key: Option<&str>,
        task_id: &str,
        title: String,
        details: Option<String>,
        lease: Option<String>,
    ) -> Result<StepOut> {
        let request = json!({ "op": "step.add", "id": task_id, "title": title,
                              "details": details, "lease": lease });
        let id = task_id.to_string();
        self.write(actor, key, request, move |ctx| {
            ops::knowledge::add_step(ctx, &id, &title, details.clone(), lease.as_deref())
        })
        .await
    }

    /// Marks a step done; `lease` when the task's holder marks it.
    pub async fn done_step(
        &self,
        actor: &Actor,
        key: Option<&str>,
        task_id: &str,
        step_id: &str,
        notes: Option<String>,
        lease: Option<String>,
    ) -> Result<StepOut> {
        let request = json!({ "op": "step.done", "id": task_id, "step": step_id,
                              "notes": notes, "lease": lease });
        let (id, step) = (task_id.to_string(), step_id.to_string());
        self.write(actor, key, request, move |ctx| {
            ops::knowledge::done_step(ctx, &id, &step, notes.clone(), lease.as_deref())
        })
        .await
    }

    /// Adds (`add = true`) or removes a dependency edge.
    pub async fn dependency(
        &self,
        actor: &Actor,
        key: Option<&str>,
        blocker: &str,
        blocked: &str,
        kind: DepKind,
        add: bool,
    ) -> Result<DepOut> {
        let request = json!({ "op": if add { "dep.add" } else { "dep.rm" }, "blocker": blocker, "blocked": blocked, "kind": kind });
        let (a, b) = (blocker.to_string(), blocked.to_string());
        self.write(actor, key, request, move |ctx| {
            if add {
                ops::graph::add_dep(ctx, &a, &b, kind)
            } else {
                ops::graph::remove_dep(ctx, &a, &b, kind)
            }
        })
        .await
    }

    /// The briefing of a task.
    pub fn brief(&self, actor: &Actor, id: &str, max_bytes: Option<usize>) -> Result<BriefOut> {
        self.read(actor, |ctx| ops::brief::brief(ctx, id, max_bytes))
    }

    /// Applies a plan in one transaction.
    pub async fn apply_plan(
        &self,
        actor: &Actor,
        key: Option<&str>,
        doc: ops::plan::PlanDoc,
    ) -> Result<ops::plan::PlanOut> {
        let request = json!({ "op": "plan.apply", "body": &doc });
        self.write(actor, key, request, move |ctx| {
            ops::plan::apply(ctx, doc.clone())
        })
        .await
    }

    /// Creates a project.
    pub async fn create_project(
        &self,
        actor: &Actor,
        key: Option<&str>,
        req: CreateProject,
    ) -> Result<ProjectOut> {
        let request = json!({ "op": "project.create", "body": &req });
        self.write(actor, key, request, move |ctx| {
            ops::registry::create_project(ctx, req.clone())
        })
        .await
    }

    /// Changes a project's policies or kill switch.
    pub async fn update_project(
        &self,
        actor: &Actor,
        key: Option<&str>,
        id: &str,
        req: ProjectSettings,
    ) -> Result<ProjectOut> {
        let request = json!({ "op": "project.update", "id": id, "body": &req });
        let id = id.to_string();
        self.write(actor, key, request, move |ctx| {
            ops::registry::update_project(ctx, &id, req.clone())
        })
        .await
    }

    /// Every project of the workspace.
    pub fn projects(&self, actor: &Actor) -> Result<ProjectsOut> {
        self.read(actor, ops::registry::projects)
    }

    /// One project by id or name.
    pub fn project(&self, actor: &Actor, id: &str) -> Result<ProjectOut> {
        self.read(actor, |ctx| ops::registry::project(ctx, id))
    }

    /// Registers an agent or updates its capabilities.
    pub async fn register_agent(
        &self,
        actor: &Actor,
        key: Option<&str>,
        req: RegisterAgent,
    ) -> Result<AgentOut> {
        let request = json!({ "op": "agent.register", "body": &req });
        self.write(actor, key, request, move |ctx| {
            ops::registry::register_agent(ctx, req.clone())
        })
        .await
    }

    /// Records that an agent is alive (to a resolution of a minute).
    pub async fn agent_heartbeat(
        &self,
        actor: &Actor,
        key: Option<&str>,
        name: &str,
    ) -> Result<AgentOut> {
        let request = json!({ "op": "agent.heartbeat", "agent": name });
        let name = name.to_string();
        self.write(actor, key, request, move |ctx| {
            ops::registry::agent_heartbeat(ctx, &name)
        })
        .await
    }

    /// Changes an agent's status (its kill switch among them).
    pub async fn update_agent(
        &self,
        actor: &Actor,
        key: Option<&str>,
        name: &str,
        req: AgentSettings,
    ) -> Result<AgentOut> {
        let request = json!({ "op": "agent.update", "agent": name, "body": &req });
        let name = name.to_string();
        self.write(actor, key, request, move |ctx| {
            ops::registry::update_agent(ctx, &name, req.clone())
        })
        .await
    }

    /// The actor's workspace.
    pub fn workspace(&self, actor: &Actor) -> Result<WorkspaceOut> {
        self.read(actor, ops::registry::workspace)
    }

    /// Sets or lifts the actor's workspace's kill switch.
    pub async fn update_workspace(
        &self,
        actor: &Actor,
        key: Option<&str>,
        req: WorkspaceSettings,
    ) -> Result<WorkspaceOut> {
        let request = json!({ "op": "workspace.update", "body": &req });
        self.write(actor, key, request, move |ctx| {
            ops::registry::update_workspace(ctx, req.clone())
        })
        .await
    }

    /// Every agent of the workspace.
    pub fn agents(&self, actor: &Actor) -> Result<AgentsOut> {
        self.read(actor, ops::registry::agents)
    }

    /// The workspace's metrics (DESIGN §7): its open tasks and agents by status, read now,
    /// and what this process has committed in it and how long its claims took (each
    /// replica reports its own; see [`crate::metrics`]).
    pub fn metrics(&self, actor: &Actor) -> Result<Metrics> {
        let (tasks, agents) = self.read(actor, |ctx| {
            let tasks = ctx.tx.open_task_counts(ctx.ws)?;
            let mut agents = std::collections::BTreeMap::new();
            for agent in ctx.tx.agents(ctx.ws)? {
                *agents.entry(agent.status).or_insert(0) += 1;
            }
            Ok((tasks, agents))
        })?;
        Ok(Metrics {
            tasks,
            agents,
            measured: self.meter.of(&actor.workspace_id),
        })
    }

    /// One agent by name or id.
    pub fn agent(&self, actor: &Actor, name: &str) -> Result<AgentOut> {
        self.read(actor, |ctx| ops::registry::agent(ctx, name))
    }

    /// Events after `after`, at most `limit` (1 to 1000), as readers see them: without the
    /// hashes of secrets (lease tokens, API keys) the stored snapshots keep for replay.
    pub fn events(&self, actor: &Actor, after: u64, limit: u32) -> Result<EventsOut> {
        let limit = ops::check_limit("limit", limit)?;
        let after = ops::check_after(after)?;
        let mut events = self.read(actor, |ctx| ctx.tx.events(ctx.ws, after, limit))?;
        for e in &mut events {
            crate::model::drop_secret_hashes(&mut e.data);
        }
        Ok(EventsOut { events })
    }

    /// The sequence number of the newest event in the actor's workspace.
    pub fn last_seq(&self, actor: &Actor) -> Result<u64> {
        self.read(actor, |ctx| ctx.tx.last_seq(ctx.ws))
    }

    /// Checks where a reader of the log resumes: `INVALID_INPUT` past the newest event (no
    /// reader has seen it, and the events up to it would be passed over unseen).
    pub fn check_resume(&self, actor: &Actor, after: u64) -> Result<u64> {
        let after = ops::check_after(after)?;
        let last = self.last_seq(actor)?;
        if after > last {
            return Err(Error::invalid(
                format!("after is {after}, beyond the newest event ({last})"),
                "resume after the last sequence number you received (0 replays from the start)",
            )
            .with_details(json!({ "last_seq": last })));
        }
        Ok(after)
    }

    /// Expires lapsed leases in the actor's workspace; how many.
    pub async fn reap(&self, actor: &Actor) -> Result<usize> {
        let request = json!({ "op": "reap" });
        self.write_shared(Admission::HeldWork, actor, None, request, |ctx| {
            ops::lease::reap(ctx, ops::lease::REAP_BATCH)
        })
        .await
    }
}

/// The answer of [`Baton::complete_many`].
#[derive(Debug)]
pub struct Completed {
    /// One result per completion, in request order.
    pub results: Vec<Result<TaskOut>>,
    /// The claim made after them, when the call asked for one.
    pub next: Option<Result<Claims>>,
}

/// The key and request hash of a call made of several write jobs (see
/// [`Baton::complete_many`]).
#[derive(Clone)]
struct WholeRequest {
    key: String,
    request_sha: String,
}

/// Where a submitted write job's answer comes.
type Answer<T> = oneshot::Receiver<Result<T>>;

/// Waits for a submitted write job's answer.
async fn answered<T>(answer: Answer<T>) -> Result<T> {
    answer.await.map_err(|_| {
        Error::new(
            Code::Busy,
            "the store shut down before answering",
            "retry the call",
        )
    })?
}

/// Whether an item of a call was refused because its key is bound to another request.
fn is_mismatch<T>(r: &Result<T>) -> bool {
    matches!(r, Err(e) if e.code == Code::IdempotencyMismatch)
}

/// A claim waits at most [`MAX_CLAIM_WAIT`]; how long this one may.
fn check_wait(req: &ClaimRequest) -> Result<Duration> {
    let wait = req.wait.unwrap_or_default();
    if wait > MAX_CLAIM_WAIT {
        return Err(Error::new(
            Code::InvalidDuration,
            "wait is at most 60s",
            "long-poll again after it returns",
        ));
    }
    Ok(wait)
}

/// An idempotency key is 1 to 200 characters of printable ASCII (spaces allowed), as an
/// HTTP header can carry it: a key one surface takes, every surface takes.
fn check_idempotency_key(key: Option<&str>) -> Result<()> {
    match key {
        Some(k)
            if k.is_empty()
                || k.len() > 200
                || !k.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) =>
        {
            Err(Error::invalid(
                "idempotency key must be 1 to 200 characters of printable ASCII",
                "use a UUID or a short unique string",
            ))
        }
        // A task created under a key keeps it, where plans keep theirs: a request key must
        // never name (and so take over) a plan's task.
        Some(k) if k.starts_with(ops::plan::KEY_PREFIX) => Err(Error::invalid(
            format!(
                "idempotency keys starting with '{}' are reserved for plans' tasks",
                ops::plan::KEY_PREFIX
            ),
            "use a UUID or another prefix",
        )),
        _ => Ok(()),
    }
}

/// The same idempotency key came with another request.
fn idempotency_mismatch(key: &str) -> Error {
    Error::new(
        Code::IdempotencyMismatch,
        format!("idempotency key '{key}' was used for a different request"),
        "use a new key for a new request; repeat a request only with its original body",
    )
}

/// The response of a lease operation: the heartbeat's acknowledgement, or the task.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum LeaseOut {
    /// A heartbeat's answer (tried first: it is the one with `expires_at` and `signals`).
    Heartbeat(HeartbeatAck),
    /// Every other lease operation's answer.
    Task(TaskOut),
}

impl LeaseOut {
    /// The task after the operation.
    pub fn task(&self) -> &crate::model::Task {
        match self {
            LeaseOut::Heartbeat(ack) => &ack.task,
            LeaseOut::Task(out) => &out.task,
        }
    }
}

/// An operation under a lease, with its input.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LeaseOp {
    /// claimed → in_progress.
    Start,
    /// Extend the lease and report progress.
    Heartbeat(Heartbeat),
    /// Give the task back.
    Release,
    /// Finish with output.
    Complete(Complete),
    /// Report a failure.
    Fail(Fail),
    /// Report a blocker; releases the lease.
    Block {
        /// What blocks the work.
        reason: String,
    },
    /// Wait on something outside; keeps the lease.
    Wait {
        /// What the task waits on.
        reason: String,
    },
    /// Back to work after waiting.
    Resume,
}

/// A planner's or reviewer's transition of task `id` (or an unblock by `unblocker`), inside
/// a write.
fn transition_op(
    ctx: &mut Ctx<'_>,
    op: crate::state::Op,
    id: &str,
    reason: Option<String>,
    unblocker: &ops::task::Unblocker,
) -> Result<TaskOut> {
    match op {
        Op::Publish => ops::task::publish(ctx, id),
        Op::Cancel => ops::task::cancel(ctx, id, reason),
        Op::Retry => ops::task::retry(ctx, id),
        Op::Unblock => ops::task::unblock(ctx, id, unblocker),
        Op::Approve => ops::lease::approve(ctx, id, reason),
        Op::Reject => ops::lease::reject(ctx, id, reason.unwrap_or_default()),
        other => Err(Error::invalid(
            format!("{} needs a lease", other.as_str()),
            "use the lease operation",
        )),
    }
}
