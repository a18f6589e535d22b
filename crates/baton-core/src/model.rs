//! The domain model of DESIGN §2. These structs are both the stored projections (serialized
//! whole into the store and into events) and, through [`Task::view`], the wire shapes.

use crate::state::{BlockedReason, Status};
use crate::time::{rfc3339, Duration, Millis};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The name of the workspace every new store starts with.
pub const DEFAULT_WORKSPACE: &str = "default";
/// The name of the project every new workspace starts with.
pub const DEFAULT_PROJECT: &str = "default";

/// The tenancy boundary: nothing crosses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Workspace {
    /// `ws_…`
    pub id: String,
    /// Unique, human-chosen name.
    pub name: String,
    /// When it was created.
    #[serde(with = "rfc3339")]
    #[schema(value_type = crate::time::Rfc3339)]
    pub created_at: Millis,
    /// Kill switch: while set, no claims anywhere in the workspace (every lease was revoked
    /// as it was set). Absent from rows written before it existed.
    #[serde(default)]
    pub killed: bool,
}

/// A collection of tasks with default policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Project {
    /// `prj_…`
    pub id: String,
    /// Owning workspace.
    pub workspace_id: String,
    /// Unique name within the workspace.
    pub name: String,
    /// Default lease TTL for tasks that set none.
    pub lease_ttl: Duration,
    /// Default retry policy for tasks that set none.
    pub retry_policy: RetryPolicy,
    /// Whether completed tasks go to review by default.
    pub review_required: bool,
    /// Kill switch: no claims while set.
    pub killed: bool,
    /// Whether file scopes are exclusive: a task of it whose `paths` overlap a leased
    /// task's is passed over by claims, rather than claimed with a warning (DESIGN §4).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclusive_scopes: bool,
    /// The most of its tasks leased at once (DESIGN §2, §4: a project's concurrency
    /// limit); claims pass over its tasks while that many are leased. None: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// When it was created.
    #[serde(with = "rfc3339")]
    #[schema(value_type = crate::time::Rfc3339)]
    pub created_at: Millis,
}

/// The roles a key can carry (DESIGN §8).
pub const ROLES: [&str; 5] = ["admin", "planner", "worker", "reviewer", "observer"];

/// An API key: a secret bound to a workspace, a role and optionally an agent. Only the
/// secret's SHA-256 is stored; the secret is shown once, when the key is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// `key_…`
    pub id: String,
    /// The workspace it acts in; nothing outside it is visible to it.
    pub workspace_id: String,
    /// One of [`ROLES`].
    pub role: String,
    /// The agent a worker key acts as: its claims are that agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// SHA-256 of the secret.
    pub token_sha256: String,
    /// When it was created.
    #[serde(with = "rfc3339")]
    pub created_at: Millis,
}

/// A registered worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Agent {
    /// `agt_…`
    pub id: String,
    /// Owning workspace.
    pub workspace_id: String,
    /// Unique name within the workspace: how agents refer to themselves.
    pub name: String,
    /// What it can do; claims only offer tasks whose required capabilities it has.
    pub capabilities: Vec<String>,
    /// `active`, `disabled` or `killed`.
    pub status: String,
    /// The most leases it may hold at once, if limited: a claim takes no more than the
    /// places left, and none at the limit (`AT_CAPACITY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10000)]
    pub max_concurrency: Option<u32>,
    /// Last time it claimed or heartbeated.
    #[serde(with = "rfc3339")]
    #[schema(value_type = crate::time::Rfc3339)]
    pub last_seen_at: Millis,
    /// When it registered.
    #[serde(with = "rfc3339")]
    #[schema(value_type = crate::time::Rfc3339)]
    pub created_at: Millis,
}

/// How failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts (runs) allowed in all, the first included.
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub backoff_initial: Duration,
    /// Growth of the delay per attempt.
    pub backoff_multiplier: f64,
    /// Cap on the delay.
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff_initial: Duration::secs(1),
            backoff_multiplier: 2.0,
            backoff_max: Duration::secs(300),
        }
    }
}

impl RetryPolicy {
    /// The delay after the `attempt`-th attempt failed: initial × multiplier^(attempt-1),
    /// capped, with ±10% jitter derived from `seed` so that the result is a pure function of
    /// the task and attempt (replays and tests see the same value).
    pub fn backoff(&self, attempt: u32, seed: &str) -> i64 {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let base = (self.backoff_initial.0 as f64) * self.backoff_multiplier.max(1.0).powi(exp);
        let capped = base.min(self.backoff_max.0 as f64).max(0.0);
        let hash = seed
            .bytes()
            .chain(attempt.to_le_bytes())
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
            });
        let jitter = ((hash % 2001) as f64 - 1000.0) / 10_000.0; // -0.1 ..= 0.1
        (capped * (1.0 + jitter)).round() as i64
    }
}

/// The current lease on a task. Internal: the token's hash never leaves the store, and the
/// token itself is only ever shown in the claim response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lease {
    /// The fencing epoch this lease was granted at.
    pub epoch: u64,
    /// SHA-256 of the token (blank in wire views).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token_sha256: String,
    /// The run this lease belongs to.
    pub run_id: String,
    /// The agent holding it.
    pub agent_id: String,
    /// When it lapses unless extended.
    #[serde(with = "rfc3339")]
    #[schema(value_type = crate::time::Rfc3339)]
    pub expires_at: Millis,
    /// The TTL its claim (or a later heartbeat) asked for, when not the task's: what each
    /// heartbeat extends it by, so a lease claimed for 60 s is not cut to the task's TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// When a claim of a more urgent task with the same concurrency key, held back by the
    /// key's limit, asked this lease to yield (DESIGN §4, preemption): its heartbeats signal
    /// `yield`, and it ends within the grace period after this, revoked without counting
    /// the attempt, if the agent does not release it first.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rfc3339::option"
    )]
    #[schema(value_type = Option<crate::time::Rfc3339>)]
    pub yield_requested_at: Option<Millis>,
}

/// The unit of work and a resumable context unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Task {
    /// `tsk_…`
    pub id: String,
    /// Owning workspace.
    pub workspace_id: String,
    /// Owning project.
    pub project_id: String,
    /// Container task, if any.
    pub parent_id: Option<String>,
    /// Short name.
    pub title: String,
    /// Why this task exists; immutable after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// What is to be done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How it is to be done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// epic, feature, bug, investigation, chore, or another label.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it is in the state machine.
    pub status: Status,
    /// Why it is blocked, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_reason: Option<BlockedReason>,
    /// Free text from the last block, wait, fail or reject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Higher is claimed first.
    pub priority: i64,
    /// SLA deadline; earlier is claimed first among equal priorities.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rfc3339::option"
    )]
    #[schema(value_type = Option<crate::time::Rfc3339>)]
    pub due_at: Option<Millis>,
    /// Spend limits (tokens, money), as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Value>,
    /// Capabilities an agent must have to be offered this task.
    pub required_capabilities: Vec<String>,
    /// Free labels for filtering.
    pub labels: Vec<String>,
    /// The files the task expects to touch, as globs (`src/db/**`): a claim of it while
    /// another leased task's paths overlap carries a warning (DESIGN §4, file scopes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Keyed concurrency (DESIGN §4): at most `concurrency_limit` tasks of the workspace
    /// with this key (e.g. `area:db`) are leased at once; a claim passes over this task
    /// while they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// How many tasks with `concurrency_key` may be leased at once, this one included
    /// (set with the key; 1 unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10000)]
    pub concurrency_limit: Option<u32>,
    /// Input data for the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// JSON Schema the input satisfies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    /// JSON Schema that `complete`'s output must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// The result, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// A one-line summary of how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The idempotency key it was created with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// How failures are retried.
    pub retry_policy: RetryPolicy,
    /// Longest allowed run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Lease length granted on claim and heartbeat.
    pub lease_ttl: Duration,
    /// Whether completion goes to review.
    pub review_required: bool,
    /// Runs started so far.
    pub attempts: u32,
    /// Not claimable before this time (schedule or backoff).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rfc3339::option"
    )]
    #[schema(value_type = Option<crate::time::Rfc3339>)]
    pub not_before: Option<Millis>,
    /// The latest fencing epoch granted; only grows.
    pub epoch: u64,
    /// The live lease, while leased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Optimistic-concurrency version; grows on every change.
    pub version: u64,
    /// Who created it.
    pub created_by: String,
    /// Who changed it last.
    pub updated_by: String,
    /// When it was created.
    #[serde(with = "rfc3339")]
    #[schema(value_type = crate::time::Rfc3339)]
    pub created_at: Millis,
    /// When it last changed.
    #[serde(with = "rfc3339")]
    #[schema(value_type = crate::time::Rfc3339)]
    pub updated_at: Millis,
}

impl Task {
    /// The wire shape: the task without its lease's token hash, which never leaves the store.
    pub fn view(&self) -> Task {
        let mut task = self.clone();
        if let Some(lease) = &mut task.lease {
            lease.token_sha256.clear();
        }
        task
    }
}

/// The status of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The lease is live.
    Active,
    /// Ended by complete.
    Completed,
    /// Completed, then rejected in review: `error` holds the reviewer's reason, so whoever
    /// takes the task next reads why.
    Rejected,
    /// Ended by fail.
    Failed,
    /// Ended by release.
    Released,
    /// Ended by block.
    Blocked,
    /// The lease expired.
    Lost,
    /// The task was canceled under it.
    Canceled,
    /// Its project's kill switch revoked the lease (the attempt is not counted).
    Revoked,
}

/// One attempt at a task under one lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Run {
    /// `run_…`
    pub id: String,
    /// Owning workspace.
    pub workspace_id: String,
    /// The task attempted.
    pub task_id: String,
    /// The agent attempting it.
    pub agent_id: String,
    /// The attempt this run counts as: 1 for the first, and so on. A run given back
    /// without failing (released, blocked, revoked by a kill switch) uses none up, so the
    /// run after it has the same number; runs are told apart by id and epoch.
    pub attempt: u32,
    /// The fencing epoch of its lease.
    pub epoch: u64,
    /// Where it stands.
    pub status: RunStatus,
    /// Last reported progress, 0.0 to 1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// Last reported message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Cost reported so far, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    /// The output it completed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The one-line outcome it completed with: kept with the run, as its output is, when a
    /// review rejects the work and the task goes on without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The error it failed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The failure's class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    /// Task version seen at the last heartbeat: a newer one raises `context_changed`.
    pub seen_version: u64,
    /// When it was claimed.
    #[serde(with = "rfc3339")]
    #[schema(value_type = crate::time::Rfc3339)]
    pub started_at: Millis,
    /// Last heartbeat.
    #[serde(with = "rfc3339")]
    #[schema(value_type = crate::time::Rfc3339)]
    pub heartbeat_at: Millis,
    /// When it ended.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rfc3339::option"
    )]
    #[schema(value_type = Option<crate::time::Rfc3339>)]
    pub ended_at: Option<Millis>,
}

impl Run {
    /// Its holder made the change that brings the task to `version`: it has seen it, if it
    /// had seen every version before. A change someone else made since its last heartbeat
    /// is still news (`context_changed`) and stays unseen.
    pub fn sees_own_change(&mut self, version: u64) {
        if self.seen_version + 1 >= version {
            self.seen_version = version;
        }
    }
}

/// The kinds of edges between tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DepKind {
    /// Hard: the blocked task waits until the blocker is done.
    Blocks,
    /// Soft: informational.
    RelatesTo,
    /// Provenance: the task was discovered while working on the other.
    DiscoveredFrom,
}

impl DepKind {
    /// Parses a wire name.
    pub fn parse(text: &str) -> crate::Result<DepKind> {
        serde_json::from_value(Value::String(text.to_string())).map_err(|_| {
            crate::Error::invalid(
                format!("unknown dependency kind '{text}'"),
                "use blocks, relates_to or discovered_from",
            )
        })
    }
}

/// An edge between two tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Dependency {
    /// Owning workspace.
    pub workspace_id: String,
    /// The task that must finish first (for `blocks`).
    pub blocker_id: String,
    /// The task that waits.
    pub blocked_id: String,
    /// The edge kind.
    pub kind: DepKind,
    /// When it was added.
    #[serde(with = "rfc3339")]
    #[schema(value_type = crate::time::Rfc3339)]
    pub created_at: Millis,
}

/// The types of context entries.
pub const CONTEXT_TYPES: [&str; 9] = [
    "decision",
    "rationale",
    "discovery",
    "attempt",
    "outcome",
    "blocker",
    "note",
    "reference",
    "user_input",
];

/// Typed, immutable knowledge recorded on a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ContextEntry {
    /// `ctx_…`
    pub id: String,
    /// Owning workspace.
    pub workspace_id: String,
    /// The task it belongs to.
    pub task_id: String,
    /// One of [`CONTEXT_TYPES`].
    #[serde(rename = "type")]
    pub kind: String,
    /// The knowledge itself.
    pub content: String,
    /// The older entry this one replaces.
    pub supersedes: Option<String>,
    /// The run it was recorded under, if any.
    pub run_id: Option<String>,
    /// Who recorded it.
    pub created_by: String,
    /// When it was recorded.
    #[serde(with = "rfc3339")]
    #[schema(value_type = crate::time::Rfc3339)]
    pub created_at: Millis,
}

/// A content-addressed blob attached to a task, or to a run when its holder attached it
/// (DESIGN §2). The row holds what describes the bytes; the bytes live in the object store
/// under their SHA-256, so two artifacts with the same content share them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Artifact {
    /// `art_…`
    pub id: String,
    /// Owning workspace.
    pub workspace_id: String,
    /// The task it belongs to.
    pub task_id: String,
    /// The run it was attached under, if its lease holder attached it.
    pub run_id: Option<String>,
    /// Its name, e.g. `report.md`.
    pub name: String,
    /// Its media type, e.g. `text/markdown`.
    pub media_type: String,
    /// Its length in bytes.
    pub size: u64,
    /// The SHA-256 of its bytes, in lowercase hex: its address in the object store.
    pub sha256: String,
    /// Who attached it.
    pub created_by: String,
    /// When it was attached.
    #[serde(with = "rfc3339")]
    #[schema(value_type = crate::time::Rfc3339)]
    pub created_at: Millis,
}

/// An ordered progress item of a task's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Step {
    /// `stp_…`
    pub id: String,
    /// Owning workspace.
    pub workspace_id: String,
    /// The task it belongs to.
    pub task_id: String,
    /// Order within the task, from 1.
    pub position: u32,
    /// What the step is.
    pub title: String,
    /// More about it.
    pub details: Option<String>,
    /// Whether it is done.
    pub done: bool,
    /// Notes left when it was done.
    pub notes: Option<String>,
    /// When it was done.
    #[serde(with = "rfc3339::option")]
    #[schema(value_type = Option<crate::time::Rfc3339>)]
    pub done_at: Option<Millis>,
}

/// An immutable record of one change, numbered per workspace without gaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Position in the workspace's log: 1, 2, 3…
    pub seq: u64,
    /// Owning workspace.
    pub workspace_id: String,
    /// What happened, e.g. `task.created`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When.
    #[serde(with = "rfc3339")]
    #[schema(value_type = crate::time::Rfc3339)]
    pub at: Millis,
    /// Who did it.
    pub actor: String,
    /// The task concerned, if any.
    pub task_id: Option<String>,
    /// The state of every entity the change touched, after the change.
    pub data: Value,
    /// The request that made the change (its `X-Request-Id`), when it came through the
    /// HTTP API or MCP: the thread from a change to the server's log lines of its request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Removes every `token_sha256` member from an event's data, however deep: a hash of a
/// secret tells a reader nothing it should act on, and a reader of the log may be anyone
/// with read access. The stored event keeps it (replay restores leases and keys from it).
pub fn drop_secret_hashes(data: &mut Value) {
    match data {
        Value::Object(map) => {
            map.remove("token_sha256");
            map.values_mut().for_each(drop_secret_hashes);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_secret_hashes),
        _ => {}
    }
}
