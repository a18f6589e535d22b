//! Request and response types of the operation layer: the contract that the CLI, HTTP and
//! MCP adapters all speak. Field names are the wire names.

use crate::model::*;
use crate::time::{rfc3339, Duration, Millis};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who is calling: every operation runs as an actor inside one workspace.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The workspace the call is scoped to.
    pub workspace_id: String,
    /// The caller's name, recorded in events (`cli`, an agent's name, `system`).
    pub name: String,
    /// The agent a key bound to one acts as (its `name` too): such a caller works only
    /// under its own agent's leases, whatever tokens it holds.
    pub agent: Option<String>,
    /// The request this call serves (HTTP's `X-Request-Id`, given or made up by the
    /// server): recorded on every event the call appends, so a change in the log leads
    /// back to the request, and its log lines, that made it.
    pub request_id: Option<String>,
}

/// Input of `task create`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// Short name; required.
    #[schema(min_length = 1, max_length = 1000)]
    pub title: String,
    /// Why the task exists; immutable once created.
    #[serde(default)]
    pub intent: Option<String>,
    /// What is to be done.
    #[serde(default)]
    pub description: Option<String>,
    /// How it is to be done.
    #[serde(default)]
    pub plan: Option<String>,
    /// epic, feature, bug, investigation, chore, or another label (default `task`).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Project id or name (default project when omitted).
    #[serde(default)]
    pub project: Option<String>,
    /// Container task.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// Higher is claimed first (default 0).
    #[serde(default)]
    pub priority: Option<i64>,
    /// Deadline.
    #[serde(default, with = "rfc3339::option")]
    #[schema(value_type = Option<crate::time::TimeInput>)]
    pub due_at: Option<Millis>,
    /// Not claimable before.
    #[serde(default, with = "rfc3339::option")]
    #[schema(value_type = Option<crate::time::TimeInput>)]
    pub not_before: Option<Millis>,
    /// Capabilities a claimer must have.
    #[serde(default)]
    pub required_capabilities: Vec<String>,
    /// Free labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Files it expects to touch, as globs (`src/db/**`): claiming it while a leased task's
    /// paths overlap warns.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Keyed concurrency: at most `concurrency_limit` tasks of the workspace with this key
    /// (e.g. `area:db`) are leased at once.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub concurrency_key: Option<String>,
    /// How many tasks with the key may be leased at once, this one included (1 to 10,000;
    /// default 1). Needs `concurrency_key`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000)]
    pub concurrency_limit: Option<u32>,
    /// Tasks that must be done first.
    #[serde(default)]
    pub blocked_by: Vec<String>,
    /// Lease TTL (default: the project's).
    #[serde(default)]
    pub lease_ttl: Option<Duration>,
    /// Attempts allowed (default: the project's, 3).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Full retry policy; `max_attempts` overrides its field.
    #[serde(default, deserialize_with = "crate::object::optional")]
    pub retry_policy: Option<RetryPolicy>,
    /// Longest one attempt may run: its lease is never extended past it, so a run that
    /// outlives it lapses and is retried like a lost lease (`error_class` `timeout`).
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// Whether completion goes to review (default: the project's).
    #[serde(default)]
    pub review_required: Option<bool>,
    /// Spend limits, e.g. `{"max_cost": 5.0}`.
    #[serde(default)]
    pub budget: Option<Value>,
    /// Input data.
    #[serde(default)]
    pub input: Option<Value>,
    /// JSON Schema for the input.
    #[serde(default)]
    pub input_schema: Option<Value>,
    /// JSON Schema the output must satisfy.
    #[serde(default)]
    pub output_schema: Option<Value>,
    /// Create as a draft, not yet claimable.
    #[serde(default)]
    pub draft: bool,
}

/// Input of `task update`: only the fields given change. A field given as `null` is
/// cleared where the task may be without it (description, plan, due_at, timeout, input,
/// output_schema, budget; labels and required_capabilities become empty); a field the task
/// cannot be without refuses `null`. Left-out fields are not serialized, so a request's
/// idempotency fingerprint tells "keep" from "clear".
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTask {
    /// Expected current version; a mismatch is `VERSION_CONFLICT`.
    #[serde(
        default,
        deserialize_with = "patch::required",
        skip_serializing_if = "Option::is_none"
    )]
    pub version: Option<u64>,
    /// New title.
    #[serde(
        default,
        deserialize_with = "patch::required",
        skip_serializing_if = "Option::is_none"
    )]
    pub title: Option<String>,
    /// Refused, null too: intent is immutable. Present so the refusal can be explained.
    #[serde(
        default,
        deserialize_with = "patch::clearable",
        skip_serializing_if = "Option::is_none"
    )]
    pub intent: Option<Option<String>>,
    /// New description; null clears it.
    #[serde(
        default,
        deserialize_with = "patch::clearable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// New plan; null clears it.
    #[serde(
        default,
        deserialize_with = "patch::clearable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub plan: Option<Option<String>>,
    /// New type.
    #[serde(
        default,
        rename = "type",
        deserialize_with = "patch::required",
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<String>,
    /// New priority.
    #[serde(
        default,
        deserialize_with = "patch::required",
        skip_serializing_if = "Option::is_none"
    )]
    pub priority: Option<i64>,
    /// New deadline; null clears it.
    #[serde(
        default,
        with = "rfc3339::clearable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<crate::time::TimeInput>)]
    pub due_at: Option<Option<Millis>>,
    /// New labels (replace); null or `[]` removes them all.
    #[serde(
        default,
        deserialize_with = "patch::emptied",
        skip_serializing_if = "Option::is_none"
    )]
    pub labels: Option<Vec<String>>,
    /// New paths (replace); null or `[]` removes them all.
    #[serde(
        default,
        deserialize_with = "patch::emptied",
        skip_serializing_if = "Option::is_none"
    )]
    pub paths: Option<Vec<String>>,
    /// New concurrency key; null removes it (and its limit).
    #[serde(
        default,
        deserialize_with = "patch::clearable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200)]
    pub concurrency_key: Option<Option<String>>,
    /// New limit for the task's concurrency key (1 to 10,000).
    #[serde(
        default,
        deserialize_with = "patch::required",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 10000)]
    pub concurrency_limit: Option<u32>,
    /// New required capabilities (replace); null or `[]` removes them all.
    #[serde(
        default,
        deserialize_with = "patch::emptied",
        skip_serializing_if = "Option::is_none"
    )]
    pub required_capabilities: Option<Vec<String>>,
    /// New lease TTL.
    #[serde(
        default,
        deserialize_with = "patch::required",
        skip_serializing_if = "Option::is_none"
    )]
    pub lease_ttl: Option<Duration>,
    /// New attempt timeout: the longest one attempt may run (a running attempt's lease
    /// is held to it from its next heartbeat); null removes the limit.
    #[serde(
        default,
        deserialize_with = "patch::clearable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Duration>)]
    pub timeout: Option<Option<Duration>>,
    /// New attempt limit.
    #[serde(
        default,
        deserialize_with = "patch::required",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_attempts: Option<u32>,
    /// New review requirement.
    #[serde(
        default,
        deserialize_with = "patch::required",
        skip_serializing_if = "Option::is_none"
    )]
    pub review_required: Option<bool>,
    /// New input; null clears it.
    #[serde(
        default,
        deserialize_with = "patch::clearable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<serde_json::Value>)]
    pub input: Option<Option<Value>>,
    /// New output schema; null clears it.
    #[serde(
        default,
        deserialize_with = "patch::clearable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<serde_json::Value>)]
    pub output_schema: Option<Option<Value>>,
    /// New budget; null clears it.
    #[serde(
        default,
        deserialize_with = "patch::clearable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<serde_json::Value>)]
    pub budget: Option<Option<Value>>,
}

/// How [`UpdateTask`] reads `null`, field by field: a left-out field never reaches these
/// (`#[serde(default)]` makes it `None`), so each sees only null or a value.
pub mod patch {
    use serde::{de::Error as _, Deserialize, Deserializer};

    /// A field the task may be without: null is `Some(None)` (clear it).
    pub fn clearable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }

    /// A list: null is the empty list, as `[]` is.
    pub fn emptied<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default,
    {
        Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
    }

    /// A field the task cannot be without: null is refused, saying which fields it clears.
    pub fn required<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        match Option::<T>::deserialize(d)? {
            Some(value) => Ok(Some(value)),
            None => Err(D::Error::custom(
                "null is given for a field a task cannot be without (null clears only \
                 description, plan, due_at, timeout, input, output_schema, budget, labels, \
                 paths, concurrency_key and required_capabilities); leave the field out to \
                 keep it",
            )),
        }
    }
}

/// Input of `claim`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The claiming agent's name; registered on first use. Required, unless the key is
    /// bound to an agent (then that agent claims).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub agent: String,
    /// What the agent can do.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// How many tasks at most (default 1, at most 100).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub count: Option<u32>,
    /// Lease TTL to grant instead of the task's.
    #[serde(default)]
    pub lease_ttl: Option<Duration>,
    /// Long-poll: wait up to this long for work (at most 60s).
    #[serde(default)]
    pub wait: Option<Duration>,
}

/// A lease as granted to its holder: the only place a token is ever shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseGrant {
    /// The secret to present on every lease operation.
    pub token: String,
    /// The fencing epoch.
    pub epoch: u64,
    /// When it lapses unless extended by a heartbeat.
    #[serde(with = "rfc3339")]
    #[schema(value_type = crate::time::Rfc3339)]
    pub expires_at: Millis,
}

/// One claimed task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Claim {
    /// The task, now `claimed`.
    pub task: Task,
    /// The new run.
    pub run: Run,
    /// The lease.
    pub lease: LeaseGrant,
    /// Things the agent should know before it starts (another leased task's paths overlap
    /// this one's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Output of `claim`: empty when nothing is claimable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Claims {
    /// The claims made, in claim order.
    pub claims: Vec<Claim>,
}

/// Input of `heartbeat`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Progress from 0.0 to 1.0.
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub progress: Option<f64>,
    /// What the agent is doing now.
    #[serde(default)]
    pub message: Option<String>,
    /// This run's usage so far (totals, not since the last heartbeat), e.g. `{"cost": 0.12,
    /// "tokens_in": 1000}`; a field left out keeps its last value. `cost`, `tokens_in`,
    /// `tokens_out`, `seconds` and `tool_calls` are numbers of at least 0; other fields are
    /// kept as sent. The task's budget counts the cost with what earlier runs last reported.
    #[serde(default)]
    pub usage: Option<Value>,
    /// Lease TTL to extend by instead of the task's.
    #[serde(default)]
    pub lease_ttl: Option<Duration>,
}

/// Output of `heartbeat`: the lease and the signals the agent must act on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatAck {
    /// The task.
    pub task: Task,
    /// The new expiry.
    #[serde(with = "rfc3339")]
    #[schema(value_type = crate::time::Rfc3339)]
    pub expires_at: Millis,
    /// `context_changed`, `budget_warning`, `budget_exhausted`, `timeout` (the attempt's
    /// timeout, not the lease, sets `expires_at`: no heartbeat extends it), `killed` (a
    /// kill switch set by an older version left this lease).
    pub signals: Vec<String>,
}

/// Input of `complete`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Complete {
    /// The result; checked against `output_schema`.
    #[serde(default)]
    pub output: Option<Value>,
    /// One-line summary of how it ended.
    #[serde(default)]
    pub outcome: Option<String>,
    /// Complete even though children are still open.
    #[serde(default)]
    pub force: bool,
}

/// One item of `complete_many`: a leased task and how it ended (the fields of
/// [`Complete`]).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Completion {
    /// The task's id.
    pub id: String,
    /// The lease token from the claim.
    pub lease: String,
    /// The result; checked against `output_schema`.
    #[serde(default)]
    pub output: Option<Value>,
    /// One-line summary of how it ended.
    #[serde(default)]
    pub outcome: Option<String>,
    /// Complete even though children are still open.
    #[serde(default)]
    pub force: bool,
}

impl Completion {
    /// The task id, the lease token and the input of `complete`.
    pub fn into_parts(self) -> (String, String, Complete) {
        let complete = Complete {
            output: self.output,
            outcome: self.outcome,
            force: self.force,
        };
        (self.id, self.lease, complete)
    }
}

/// Input of `fail`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fail {
    /// What went wrong.
    #[schema(min_length = 1)]
    pub error: String,
    /// Failure class: transient (default), timeout, resource, permanent, invalid_input.
    #[serde(default)]
    pub class: Option<String>,
    /// Never retry, whatever the class.
    #[serde(default)]
    pub no_retry: bool,
}

/// Failure classes that are never retried.
pub const NON_RETRYABLE_CLASSES: [&str; 2] = ["permanent", "invalid_input"];
/// All failure classes.
pub const FAILURE_CLASSES: [&str; 5] = [
    "transient",
    "timeout",
    "resource",
    "permanent",
    "invalid_input",
];

/// Output of operations that return one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskOut {
    /// The task after the operation.
    pub task: Task,
    /// Things the caller should know (e.g. completed with open children).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Output of operations that return many tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TasksOut {
    /// The tasks.
    pub tasks: Vec<Task>,
    /// Pass as `cursor` (`--after` on the CLI) for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Input of `note` (add a context entry).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddContext {
    /// One of decision, rationale, discovery, attempt, outcome, blocker, note, reference, user_input.
    #[serde(rename = "type")]
    pub kind: String,
    /// The knowledge.
    #[schema(min_length = 1)]
    pub content: String,
    /// An older entry on the same task that this one replaces.
    #[serde(default)]
    pub supersedes: Option<String>,
    /// The caller's lease token, when recorded under a run.
    #[serde(default)]
    pub lease: Option<String>,
}

/// Output of `note`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ContextOut {
    /// The new entry.
    pub context: ContextEntry,
}

/// Input of `artifact add`: a name and the bytes, as text (`content`) or base64
/// (`content_base64`), exactly one of them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachArtifact {
    /// Its name, e.g. `report.md` (one line).
    #[schema(min_length = 1, max_length = 1000)]
    pub name: String,
    /// Its media type; default `text/plain; charset=utf-8` for `content`,
    /// `application/octet-stream` for `content_base64`.
    #[serde(default)]
    pub media_type: Option<String>,
    /// The bytes, as UTF-8 text.
    #[serde(default)]
    pub content: Option<String>,
    /// The bytes, base64-encoded (standard alphabet, padded).
    #[serde(default)]
    pub content_base64: Option<String>,
    /// The caller's lease token, when its holder attaches it under its run.
    #[serde(default)]
    pub lease: Option<String>,
}

/// Output of attaching or reading an artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArtifactOut {
    /// What describes the bytes.
    pub artifact: Artifact,
    /// The bytes as text, when asked for (`content=true`) and they are UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The bytes in base64, when asked for and they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
}

/// Output of listing a task's artifacts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArtifactsOut {
    /// Oldest first.
    pub artifacts: Vec<Artifact>,
}

/// Output of step operations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepOut {
    /// The step.
    pub step: Step,
}

/// Output of dependency operations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DepOut {
    /// The edge.
    pub dependency: Dependency,
    /// The blocked task after the change.
    pub task: Task,
}

/// Output of `events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventsOut {
    /// Events in sequence order.
    pub events: Vec<Event>,
}

/// Project policies: on create the defaults for what is not given, on update only what is
/// given changes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettings {
    /// Default lease TTL of its tasks (default 5m).
    #[serde(default)]
    pub lease_ttl: Option<Duration>,
    /// Default retry policy of its tasks.
    #[serde(default, deserialize_with = "crate::object::optional")]
    pub retry_policy: Option<RetryPolicy>,
    /// Whether its tasks go to review by default.
    #[serde(default)]
    pub review_required: Option<bool>,
    /// Kill switch: setting it revokes every lease on the project's tasks (their holders'
    /// lease operations answer `KILLED`), and while set nothing in it can be claimed.
    #[serde(default)]
    pub killed: Option<bool>,
    /// Whether file scopes are exclusive: claims pass over a task whose `paths` overlap a
    /// leased task's, instead of granting it with a warning.
    #[serde(default)]
    pub exclusive_scopes: Option<bool>,
    /// The most of its tasks leased at once (1 to 10,000); null removes the limit.
    #[serde(
        default,
        deserialize_with = "patch::clearable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub max_concurrency: Option<Option<u32>>,
}

/// Input of `project create`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// Unique within the workspace.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Default lease TTL of its tasks (default 5m).
    #[serde(default)]
    pub lease_ttl: Option<Duration>,
    /// Default retry policy of its tasks.
    #[serde(default, deserialize_with = "crate::object::optional")]
    pub retry_policy: Option<RetryPolicy>,
    /// Whether its tasks go to review by default (default false).
    #[serde(default)]
    pub review_required: Option<bool>,
    /// Whether file scopes are exclusive (default false: overlapping claims warn).
    #[serde(default)]
    pub exclusive_scopes: Option<bool>,
    /// The most of its tasks leased at once (1 to 10,000; default none: no limit).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000)]
    pub max_concurrency: Option<u32>,
}

/// Output of operations that return one project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProjectOut {
    /// The project.
    pub project: Project,
}

/// Output of `project list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProjectsOut {
    /// Every project of the workspace, by name.
    pub projects: Vec<Project>,
}

/// Input of `agent register`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    /// The agent's name, unique in the workspace.
    #[schema(min_length = 1, max_length = 200)]
    pub agent: String,
    /// What it can do.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The most leases it may hold at once (1 to 10,000); left out, a limit set before
    /// stays.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000)]
    pub max_concurrency: Option<u32>,
}

/// Input of `agent update`: what to change on a registered agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// `active`; `disabled` (no new claims; the leases it holds run on); or `killed`, its
    /// kill switch (every lease it holds is revoked at once, its tasks go back to the
    /// queue for others, and its lease operations answer `KILLED`).
    #[serde(default)]
    #[schema(pattern = "^(active|disabled|killed)$")]
    pub status: Option<String>,
    /// The most leases it may hold at once (1 to 10,000); null removes the limit.
    #[serde(
        default,
        deserialize_with = "patch::clearable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub max_concurrency: Option<Option<u32>>,
}

/// Input of `workspace update`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSettings {
    /// Kill switch: setting it revokes every lease in the workspace (their holders' lease
    /// operations answer `KILLED`), and while set every claim is refused `KILLED`.
    #[serde(default)]
    pub killed: Option<bool>,
}

/// Output of operations that return the workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkspaceOut {
    /// The workspace.
    pub workspace: Workspace,
}

/// Output of operations that return one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentOut {
    /// The agent.
    pub agent: Agent,
}

/// Output of `agent list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentsOut {
    /// Every agent of the workspace, by name.
    pub agents: Vec<Agent>,
}

/// Output of `brief`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BriefOut {
    /// The briefing.
    pub brief: Brief,
}

/// Everything an agent needs to pick a task up, most relevant first. Under a byte budget
/// (never exceeded) long texts are cut and the least relevant items dropped first: old
/// runs, ended children, loose relations, done steps and minor notes before the steps left
/// to do, the blocking relations, decisions and blockers; the task's intent goes last.
/// Unset fields are left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Brief {
    /// The task's own fields (id, title, type, status, intent, description, plan, input,
    /// output_schema, lease...); long fields may be cut under a budget.
    pub task: Value,
    /// The parent's id, title, status, type and intent, if the task has a parent.
    pub parent: Option<Value>,
    /// The plan's steps in order.
    pub steps: Vec<Value>,
    /// Live (not superseded) context entries, blockers and decisions first.
    pub context: Vec<Value>,
    /// Tasks it depends on and tasks that depend on it, with their relation.
    pub dependencies: Vec<Value>,
    /// Its children's id, title, status and type: the first 1,000 (`omitted` counts the
    /// rest).
    pub children: Vec<Value>,
    /// The latest runs, newest first.
    pub runs: Vec<Value>,
    /// Attached artifacts, newest first: name, media type, size (the bytes are at
    /// `GET /v1/artifacts/{id}/content`).
    pub artifacts: Vec<Value>,
    /// Whether anything was left out to fit the budget.
    pub truncated: bool,
    /// What was left out: a count of items per section (and `parent`), `truncated` or
    /// `dropped` per task field (`task.plan`), `shortened`: how many other texts were cut
    /// (each ends in `…[truncated]`); `task: "core only"` when only the task's id, title,
    /// type, status and version fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omitted: Option<serde_json::Map<String, Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn update(body: Value) -> Result<UpdateTask, serde_json::Error> {
        serde_json::from_value(body)
    }

    #[test]
    fn an_update_tells_left_out_from_null() {
        let up = update(json!({"description": null, "due_at": null, "input": null})).unwrap();
        assert_eq!(up.description, Some(None));
        assert_eq!(up.due_at, Some(None));
        assert_eq!(up.input, Some(None));
        assert_eq!((up.plan, up.timeout, up.budget), (None, None, None));
        let up = update(json!({"labels": null, "timeout": "1m", "due_at": 5})).unwrap();
        assert_eq!(up.labels, Some(vec![]));
        assert_eq!(up.timeout, Some(Some(Duration::secs(60))));
        assert_eq!(up.due_at, Some(Some(5)));
    }

    #[test]
    fn null_is_refused_for_fields_a_task_cannot_be_without() {
        for field in [
            "title",
            "type",
            "priority",
            "lease_ttl",
            "max_attempts",
            "review_required",
            "version",
        ] {
            let err = update(json!({ field: null })).unwrap_err().to_string();
            assert!(err.contains("leave the field out"), "{field}: {err}");
        }
    }

    #[test]
    fn an_update_serializes_only_what_it_changes() {
        let up =
            update(json!({"plan": null, "due_at": "2030-01-01T00:00:00Z", "priority": 2})).unwrap();
        let wire = serde_json::to_value(&up).unwrap();
        assert_eq!(
            wire,
            json!({"plan": null, "due_at": "2030-01-01T00:00:00.000Z", "priority": 2})
        );
        let back: UpdateTask = serde_json::from_value(wire).unwrap();
        assert_eq!((back.plan, back.due_at), (up.plan, up.due_at));
        assert_eq!(
            serde_json::to_value(UpdateTask::default()).unwrap(),
            json!({})
        );
    }
}
