//! The storage boundary. A backend implements [`Tx`] (row access inside one transaction) and
//! [`Store`] (how transactions are run: a single group-committing writer on SQLite). All
//! rules live in the operation layer above; a backend stores and indexes, nothing more.
//!
//! `Tx` is synchronous on purpose: on SQLite every write runs on the one writer thread, where
//! a statement costs microseconds and an `.await` per row would cost more than the row.

use crate::error::Result;
use crate::model::*;
use crate::time::Millis;

/// Deepest nesting a stored row may hold: [`crate::ops::MAX_JSON_DEPTH`] for what callers
/// send, the objects around it, and room for rows written before that limit was checked
/// (a request's own limit is 128).
const MAX_STORED_DEPTH: usize = 1024;

/// Reads a stored JSON row. serde stops at 128 levels of nesting; a row deeper than that
/// (a caller's value inside a snapshot inside an event, stored before the depth of values
/// was checked) is read again without that limit, once its depth is known to be bounded.
pub fn from_stored_json<T: serde::de::DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    match serde_json::from_str(text) {
        Err(e)
            if e.to_string().starts_with("recursion limit exceeded")
                && nesting(text) <= MAX_STORED_DEPTH =>
        {
            let mut de = serde_json::Deserializer::from_str(text);
            de.disable_recursion_limit();
            let value = T::deserialize(&mut de)?;
            de.end()?;
            Ok(value)
        }
        read => read,
    }
}

/// The deepest nesting of arrays and objects in JSON `text` (brackets in strings aside).
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Filters for listing tasks.
#[derive(Debug, Clone)]
pub struct TaskFilter {
    /// Only tasks in this status.
    pub status: Option<crate::state::Status>,
    /// Only children of this task.
    pub parent_id: Option<String>,
    /// Only tasks carrying this label.
    pub label: Option<String>,
    /// Only tasks of this project.
    pub project_id: Option<String>,
    /// Only tasks whose id sorts after this one (keyset pagination).
    pub after_id: Option<String>,
    /// At most this many: 1 to 1000 (100 by default).
    pub limit: u32,
}

impl Default for TaskFilter {
    /// Every task, the first page of 100.
    fn default() -> Self {
        TaskFilter {
            status: None,
            parent_id: None,
            label: None,
            project_id: None,
            after_id: None,
            limit: 100,
        }
    }
}

/// A task row's columns besides its body: what queries filter and sort on, derived from the
/// task on every write. Both schemas store these same columns (`schema.sql` of each store).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskColumns {
    /// The task's project.
    pub project_id: String,
    /// Its parent, if any.
    pub parent_id: Option<String>,
    /// Its status.
    pub status: &'static str,
    /// `-priority`: claim order ascends on every column.
    pub neg_priority: i64,
    /// `due_at`, or `i64::MAX` when none: sorts last.
    pub due_key: i64,
    /// Not claimable before this time.
    pub not_before: Option<i64>,
    /// When the live lease expires, if one is held.
    pub lease_expires_at: Option<i64>,
    /// The idempotency key it was created with.
    pub idem_key: Option<String>,
    /// `,a,b,`: every label between commas, so one label matches `,label,`.
    pub labels: String,
    /// The required capabilities as a set: `,a,b,` sorted by bytes, empty when none. The
    /// claim index leads with it, so a claim seeks each set the agent can serve instead of
    /// stepping over every ready task it cannot take ([`caps_within`]).
    pub caps: String,
    /// The concurrency key, if any: claims count the leased tasks with it.
    pub conc_key: Option<String>,
    /// How many tasks with the key may be leased at once.
    pub conc_limit: Option<i64>,
}

impl TaskColumns {
    /// The columns `task` is stored with.
    pub fn of(task: &Task) -> TaskColumns {
        TaskColumns {
            project_id: task.project_id.clone(),
            parent_id: task.parent_id.clone(),
            status: task.status.as_str(),
            neg_priority: task.priority.saturating_neg(),
            due_key: task.due_at.unwrap_or(i64::MAX),
            not_before: task.not_before,
            lease_expires_at: task.lease.as_ref().map(|l| l.expires_at),
            idem_key: task.idempotency_key.clone(),
            labels: if task.labels.is_empty() {
                String::new()
            } else {
                format!(",{},", task.labels.join(","))
            },
            caps: caps_key(&task.required_capabilities),
            conc_key: task.concurrency_key.clone(),
            conc_limit: task
                .concurrency_key
                .as_ref()
                .map(|_| i64::from(task.concurrency_limit.unwrap_or(1))),
        }
    }
}

/// The stored form of a set of capabilities ([`TaskColumns::caps`]): sorted, without
/// duplicates, between commas (capabilities hold no commas); empty for none.
pub fn caps_key(capabilities: &[String]) -> String {
    if capabilities.is_empty() {
        return String::new();
    }
    let mut sorted: Vec<&str> = capabilities.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    format!(",{},", sorted.join(","))
}

/// Whether an agent with `agent` capabilities can take a task stored with the capability
/// set `caps` ([`caps_key`]), or `agent` is `None` (no agent: every task qualifies).
pub fn caps_within(caps: &str, agent: Option<&[String]>) -> bool {
    let Some(agent) = agent else { return true };
    caps.split(',')
        .filter(|c| !c.is_empty())
        .all(|c| agent.iter().any(|a| a == c))
}

/// A task's place in claim order (priority desc, due asc, id asc) as a key that ascends:
/// what a store sorts candidates by when its query does not keep claim order.
pub fn claim_key(task: &Task) -> (i64, i64, &str) {
    (
        task.priority.saturating_neg(),
        task.due_at.unwrap_or(i64::MAX),
        &task.id,
    )
}

/// A kill switch that is set (DESIGN §4), with the name of what it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillSwitch {
    /// The whole workspace.
    Workspace(String),
    /// One project.
    Project(String),
    /// One agent (its status is `killed`).
    Agent(String),
}

impl KillSwitch {
    /// Builds one from a store's row: its kind (`workspace`, `project`, `agent`) and name.
    pub fn from_row(kind: &str, name: String) -> Option<KillSwitch> {
        match kind {
            "workspace" => Some(KillSwitch::Workspace(name)),
            "project" => Some(KillSwitch::Project(name)),
            "agent" => Some(KillSwitch::Agent(name)),
            _ => None,
        }
    }

    /// How to lift it, for a hint.
    pub fn lift(&self) -> &'static str {
        match self {
            KillSwitch::Workspace(_) => "an admin revives the workspace",
            KillSwitch::Project(_) => "the project is revived",
            KillSwitch::Agent(_) => "a planner or admin reactivates the agent",
        }
    }
}

impl std::fmt::Display for KillSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KillSwitch::Workspace(name) => write!(f, "workspace {name}"),
            KillSwitch::Project(name) => write!(f, "project {name}"),
            KillSwitch::Agent(name) => write!(f, "agent {name}"),
        }
    }
}

/// An event about to be appended; the store assigns its sequence number.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// Owning workspace.
    pub workspace_id: &'a str,
    /// Event type, e.g. `task.claimed`.
    pub kind: &'a str,
    /// When.
    pub at: Millis,
    /// Who.
    pub actor: &'a str,
    /// The task concerned.
    pub task_id: Option<&'a str>,
    /// Entity snapshots after the change, as JSON text (an object).
    pub data: &'a str,
    /// The request that caused it, if one did.
    pub request_id: Option<&'a str>,
}

impl NewEvent<'_> {
    /// Whether its commit should wake long-poll claims and live streams at once: changes to
    /// tasks, projects and the workspace (a revived project's work is claimable again; a
    /// kill switch is news to its followers and to the claims waiting in it). Agents' and keys' events do not: a claimer registering
    /// itself would wake every other (streams still see them within their idle wait).
    pub fn wakes_waiters(&self) -> bool {
        self.task_id.is_some()
            || self.kind.starts_with("project.")
            || self.kind.starts_with("workspace.")
    }
}

/// The workspace rows of [`PROJECTION_QUERIES`], with each workspace's last event number as
/// readers see it (the embedded store keeps it nowhere else; the PostgreSQL store, which
/// also keeps a counter, substitutes a query that shows it where it disagrees).
pub const WORKSPACES_PROJECTION: &str = "SELECT 'workspaces/' || id, body || ' last_seq=' ||
    (SELECT coalesce(max(seq), 0) FROM events WHERE events.workspace_id = workspaces.id)
    FROM workspaces ORDER BY id";

/// The queries behind [`Tx::projection_rows`]: every projection row as (table and key,
/// stored body), in a stable order. Plain SQL that SQLite and PostgreSQL both read, so
/// every backend compares the same rows the same way.
pub const PROJECTION_QUERIES: [&str; 10] = [
    WORKSPACES_PROJECTION,
    "SELECT 'projects/' || workspace_id || '/' || id, body FROM projects ORDER BY workspace_id, id",
    "SELECT 'agents/' || workspace_id || '/' || id, body FROM agents ORDER BY workspace_id, id",
    "SELECT 'api_keys/' || workspace_id || '/' || id, body FROM api_keys ORDER BY workspace_id, id",
    // With the derived columns: a write that left one stale would make replay disagree.
    "SELECT 'tasks/' || workspace_id || '/' || id, body || ' columns=' || project_id || ','
       || coalesce(parent_id, '-') || ',' || status || ',' || CAST(neg_priority AS TEXT) || ','
       || CAST(due_key AS TEXT) || ',' || coalesce(CAST(not_before AS TEXT), '-') || ','
       || coalesce(CAST(lease_expires_at AS TEXT), '-') || ',' || coalesce(idem_key, '-') || ','
       || labels FROM tasks ORDER BY workspace_id, id",
    "SELECT 'runs/' || workspace_id || '/' || id, body FROM runs ORDER BY workspace_id, id",
    "SELECT 'dependencies/' || workspace_id || '/' || blocked_id || '/' || blocker_id || '/' || kind, body
       FROM dependencies ORDER BY workspace_id, blocked_id, blocker_id, kind",
    "SELECT 'context/' || workspace_id || '/' || id, body FROM context ORDER BY workspace_id, id",
    "SELECT 'steps/' || workspace_id || '/' || id, body FROM steps ORDER BY workspace_id, id",
    "SELECT 'artifacts/' || workspace_id || '/' || id, body FROM artifacts ORDER BY workspace_id, id",
];

/// The `max_concurrency` of `task`'s project, read from the project ([`Tx::project_limit`]
/// without a store's shortcut).
pub fn read_project_limit<T: Tx + ?Sized>(
    tx: &mut T,
    ws: &str,
    task: &Task,
) -> Result<Option<u32>> {
    Ok(tx
        .project(ws, &task.project_id)?
        .and_then(|p| p.max_concurrency))
}

/// Row access within one transaction. Every method is scoped to a workspace.
pub trait Tx {
    /// All workspaces.
    fn workspaces(&mut self) -> Result<Vec<Workspace>>;
    /// A workspace by name.
    fn workspace_by_name(&mut self, name: &str) -> Result<Option<Workspace>>;
    /// A workspace by id.
    fn workspace(&mut self, id: &str) -> Result<Option<Workspace>>;
    /// The kill switch that stops the work of agent `agent_id` on the tasks of project
    /// `project_id`, if one is set: the workspace's, the project's or the agent's own (its
    /// status `killed`), first of those in that order. One read, for heartbeats and refused
    /// lease tokens.
    fn kill_switch(
        &mut self,
        ws: &str,
        project_id: &str,
        agent_id: &str,
    ) -> Result<Option<KillSwitch>>;
    /// Inserts or replaces a workspace.
    fn put_workspace(&mut self, ws: &Workspace) -> Result<()>;

    /// A project by id or name.
    fn project(&mut self, ws: &str, id_or_name: &str) -> Result<Option<Project>>;
    /// Inserts or replaces a project.
    fn put_project(&mut self, project: &Project) -> Result<()>;
    /// Every project of a workspace, by name.
    fn projects(&mut self, ws: &str) -> Result<Vec<Project>>;

    /// The key whose secret hashes to `token_sha256`, in any workspace.
    fn key_by_hash(&mut self, token_sha256: &str) -> Result<Option<ApiKey>>;
    /// Inserts a key.
    fn put_key(&mut self, key: &ApiKey) -> Result<()>;

    /// An agent by id or name.
    fn agent(&mut self, ws: &str, id_or_name: &str) -> Result<Option<Agent>>;
    /// Inserts or replaces an agent.
    fn put_agent(&mut self, agent: &Agent) -> Result<()>;
    /// Every agent of a workspace, by name.
    fn agents(&mut self, ws: &str) -> Result<Vec<Agent>>;

    /// A task by id.
    fn task(&mut self, ws: &str, id: &str) -> Result<Option<Task>>;
    /// A task by id, loaded to be changed: a backend with concurrent writers locks its row
    /// until the commit, and the task read is the newest committed version.
    fn task_for_update(&mut self, ws: &str, id: &str) -> Result<Option<Task>> {
        self.task(ws, id)
    }
    /// What keeps `task_id` from running among its `blocks` blockers: the status of one that
    /// failed or was canceled if any, else of one not done yet, else `None` (all done). One
    /// query where a backend can: a join waiting on a thousand blockers is re-checked at
    /// every one's end, and decoding every blocker each time would make fan-in quadratic.
    fn unfinished_blocker(
        &mut self,
        ws: &str,
        task_id: &str,
    ) -> Result<Option<crate::state::Status>>;
    /// The task created with this idempotency key.
    fn task_by_key(&mut self, ws: &str, key: &str) -> Result<Option<Task>>;
    /// Inserts or replaces a task; `body` is its JSON serialization (made once by the
    /// caller, which also puts it in the event).
    fn put_task(&mut self, task: &Task, body: &str) -> Result<()>;
    /// Tasks matching a filter, in id (creation) order.
    fn list_tasks(&mut self, ws: &str, filter: &TaskFilter) -> Result<Vec<Task>>;
    /// Ready tasks whose `not_before` has passed, that have no open children and whose
    /// project is not killed, the first `limit` in claim order (priority desc, due asc, id
    /// asc). With `agent_capabilities`, only tasks whose required capabilities are
    /// all among them: the store seeks each capability set present that the agent can
    /// serve ([`TaskColumns::caps`]), so the tasks it cannot take cost one seek per set
    /// however many they are.
    fn claim_candidates(
        &mut self,
        ws: &str,
        now: Millis,
        limit: u32,
        agent_capabilities: Option<&[String]>,
    ) -> Result<Vec<Task>>;
    /// Leased tasks whose lease expired at or before `now`, soonest first.
    fn expired_leases(&mut self, ws: &str, now: Millis, limit: u32) -> Result<Vec<Task>>;
    /// A claim's first two questions: [`Tx::expired_leases`] and, only when there are
    /// none, the first page of [`Tx::claim_candidates`] (empty otherwise: expiring them may
    /// make more work claimable). A store may answer both in one round trip.
    fn expired_or_candidates(
        &mut self,
        ws: &str,
        now: Millis,
        reap_limit: u32,
        page: u32,
        agent_capabilities: Option<&[String]>,
    ) -> Result<(Vec<Task>, Vec<Task>)> {
        let due = self.expired_leases(ws, now, reap_limit)?;
        if !due.is_empty() {
            return Ok((due, Vec::new()));
        }
        let candidates = self.claim_candidates(ws, now, page, agent_capabilities)?;
        Ok((due, candidates))
    }
    /// Tries to hold `name` in workspace `ws` to the end of the transaction, without
    /// waiting: false when another transaction holds it. What a claim holds while it counts
    /// and grants what a limit allows (a concurrency key, the exclusive file scopes), so
    /// that concurrent claims take turns. A store whose writes are serialized always holds.
    fn try_hold(&mut self, ws: &str, name: &str) -> Result<bool>;
    /// How many of the workspace's tasks with concurrency key `key` are leased (claimed, in
    /// progress, waiting), this transaction's own writes included.
    fn key_leases(&mut self, ws: &str, key: &str) -> Result<u64>;
    /// The workspace's leased tasks with concurrency key `key`, this transaction's own
    /// writes included.
    fn leased_with_key(&mut self, ws: &str, key: &str) -> Result<Vec<Task>>;
    /// The first ready task in claim order with concurrency key `key` and a priority above
    /// `priority`, claimable by `now` (its `not_before` passed), if any.
    fn ready_with_key_above(
        &mut self,
        ws: &str,
        key: &str,
        priority: i64,
        now: Millis,
    ) -> Result<Option<Task>>;
    /// How many live leases (not expired by `now`) agent `agent_id` holds in `ws`, this
    /// transaction's own writes included.
    fn agent_leases(&mut self, ws: &str, agent_id: &str, now: Millis) -> Result<u64>;
    /// The `max_concurrency` of `task`'s project, if it has one. A store may answer from
    /// what its last claim query read in this transaction rather than read the project.
    fn project_limit(&mut self, ws: &str, task: &Task) -> Result<Option<u32>> {
        read_project_limit(self, ws, task)
    }
    /// How many of project `project_id`'s tasks are leased (claimed, in progress, waiting),
    /// this transaction's own writes included.
    fn project_leases(&mut self, ws: &str, project_id: &str) -> Result<u64>;
    /// Number of non-terminal children.
    fn open_children(&mut self, ws: &str, id: &str) -> Result<u64>;
    /// How many of the workspace's tasks are in each status that is not final, in
    /// lifecycle order, statuses with none left out (for `/metrics`; an index seek, not a
    /// scan of the history).
    fn open_task_counts(&mut self, ws: &str) -> Result<Vec<(crate::state::Status, u64)>>;

    /// A run of task `task_id`, by id. The task is named because a run is stored under its
    /// task (the embedded store keys runs by task, then id).
    fn run(&mut self, ws: &str, task_id: &str, id: &str) -> Result<Option<Run>>;
    /// Inserts or replaces a run.
    fn put_run(&mut self, run: &Run) -> Result<()>;
    /// The runs of a task, newest first.
    fn runs_of(&mut self, ws: &str, task_id: &str, limit: u32) -> Result<Vec<Run>>;

    /// Edges where `task_id` is the blocked (waiting) side.
    fn deps_of(&mut self, ws: &str, task_id: &str) -> Result<Vec<Dependency>>;
    /// Edges where `task_id` is the blocker.
    fn dependents_of(&mut self, ws: &str, task_id: &str) -> Result<Vec<Dependency>>;
    /// Inserts or replaces an edge.
    fn put_dep(&mut self, dep: &Dependency) -> Result<()>;
    /// Removes an edge; whether it existed.
    fn delete_dep(&mut self, ws: &str, blocker: &str, blocked: &str, kind: DepKind)
        -> Result<bool>;

    /// A context entry by id.
    fn context(&mut self, ws: &str, id: &str) -> Result<Option<ContextEntry>>;
    /// Inserts a context entry.
    fn put_context(&mut self, entry: &ContextEntry) -> Result<()>;
    /// The context entries of a task, oldest first.
    fn context_of(&mut self, ws: &str, task_id: &str) -> Result<Vec<ContextEntry>>;

    /// An artifact by id.
    fn artifact(&mut self, ws: &str, id: &str) -> Result<Option<Artifact>>;
    /// Inserts an artifact (or replaces it, in replay).
    fn put_artifact(&mut self, artifact: &Artifact) -> Result<()>;
    /// A task's artifacts, oldest first.
    fn artifacts_of(&mut self, ws: &str, task_id: &str) -> Result<Vec<Artifact>>;

    /// Inserts or replaces a step.
    fn put_step(&mut self, step: &Step) -> Result<()>;
    /// The steps of a task, in order.
    fn steps_of(&mut self, ws: &str, task_id: &str) -> Result<Vec<Step>>;

    /// Appends an event. The store numbers it with the workspace's next sequence number, at
    /// the latest when the transaction commits (so numbers follow commit order).
    fn append_event(&mut self, event: NewEvent<'_>) -> Result<()>;
    /// Events with `seq > after`, oldest first.
    fn events(&mut self, ws: &str, after: u64, limit: u32) -> Result<Vec<Event>>;
    /// The newest event about task `task_id` numbered `seq` or below: its number and data
    /// (JSON text), which holds the task as that event left it. It reads the log back from
    /// `seq` (no index by task: one would cost every write), so its cost grows with the
    /// events of other tasks in between; a tool for looking back, not for a hot path.
    fn task_event_at(&mut self, ws: &str, task_id: &str, seq: u64)
        -> Result<Option<(u64, String)>>;
    /// The sequence number of the workspace's newest event (0 when none), counting events
    /// this transaction appended.
    fn last_seq(&mut self, ws: &str) -> Result<u64>;

    /// The stored (request hash, response) for an idempotency key.
    fn idempotency(&mut self, ws: &str, key: &str) -> Result<Option<(String, String)>>;
    /// Records the response to an idempotent request.
    fn put_idempotency(
        &mut self,
        ws: &str,
        key: &str,
        request_sha256: &str,
        response: &str,
        at: Millis,
    ) -> Result<()>;

    /// Every projection row, as (table and key, stored body) in a stable order: what replay
    /// compares.
    fn projection_rows(&mut self) -> Result<Vec<(String, String)>>;
}

/// How a write job must be isolated from write jobs running at the same time in other
/// transactions (other replicas on PostgreSQL). A store with one writer runs every job alone
/// and ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Alone in its workspace: no other job of the workspace runs until this one commits.
    /// The default: the operation may read anything and rely on it not changing.
    Exclusive,
    /// Beside other `Shared` jobs of the workspace. Only for the lease and claim operations,
    /// which lock every task they change as they load it ([`Tx::task_for_update`], claim
    /// candidates, expired leases) and read nothing else that another shared job changes;
    /// the argument is in ARCHITECTURE.md.
    Shared,
}

/// A write to run inside the writer's transaction. `run` may fail, which rolls back just
/// this job; `finish` is called once the batch's commit has succeeded or failed, and only
/// then may the caller be answered.
pub trait WriteJob: Send {
    /// Does the work. An error undoes everything this job wrote. The store may call `run`
    /// again after rolling back (to isolate another job's failure); only the last run counts.
    fn run(&mut self, tx: &mut dyn Tx) -> Result<()>;
    /// How the job must be isolated from concurrent writers.
    fn lock_mode(&self) -> LockMode {
        LockMode::Exclusive
    }
    /// What this job loads for update first, when known before it runs: a task (a lease
    /// operation's) or an agent (a claim's, by name), with its workspace. A store may load
    /// those of several jobs of one commit in one statement.
    fn loads(&self) -> Option<(Loads, &str, &str)> {
        None
    }
    /// Reports the outcome: `Ok` once the job's effects are durable.
    fn finish(self: Box<Self>, committed: Result<()>);
}

/// What a write job loads for update first ([`WriteJob::loads`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loads {
    /// A task, by id.
    Task,
    /// An agent, by name.
    Agent,
}

/// A backend: runs write jobs (serialised, grouped into commits) and read transactions.
pub trait Store: Send + Sync + 'static {
    /// Queues a write job. Its `finish` is called after the commit that holds it.
    fn submit(&self, job: Box<dyn WriteJob>);
    /// Runs `f` in a read transaction (a consistent snapshot).
    fn read(&self, f: &mut (dyn FnMut(&mut dyn Tx) -> Result<()> + Send)) -> Result<()>;
    /// Signalled after every commit that changed something: wakes long-poll claims.
    fn commits(&self) -> &tokio::sync::Notify;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn deep(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    /// A row deeper than serde's 128 levels (stored before values' depth was checked) reads;
    /// one deeper than any the API could have written is an error, not a crash.
    #[test]
    fn stored_rows_deeper_than_serdes_limit_still_read() {
        assert!(serde_json::from_str::<Value>(&deep(200)).is_err());
        let value: Value = from_stored_json(&deep(200)).expect("reads");
        assert_eq!(serde_json::to_string(&value).unwrap(), deep(200));
        assert!(from_stored_json::<Value>(&deep(MAX_STORED_DEPTH + 1)).is_err());
        // Brackets in strings are text, not nesting; a shallow row reads as ever.
        let text = format!(
            "{{\"a\": \"{}\\\"\", \"b\": {}}}",
            "[".repeat(2000),
            deep(3)
        );
        assert_eq!(nesting(&text), 4);
        let value: Value = from_stored_json(&text).expect("reads");
        assert_eq!(value["b"], serde_json::json!([[[]]]));
    }
}
