//! The command line, as clap types. Names and flags here are a contract: external checks
//! and agents' scripts drive them.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Baton: work coordination for AI agents.
#[derive(Debug, Parser)]
#[command(name = "baton", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Print exactly one JSON object on stdout: the response, or {"error": {...}}.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Data directory of the embedded store (default: ./.baton).
    #[arg(long, global = true, env = "BATON_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Where artifacts' bytes go: a directory (default: the data directory's objects/) or
    /// s3://BUCKET[/PREFIX] (settings from AWS_* variables). Replicas on one PostgreSQL
    /// must share it.
    #[arg(long, global = true, env = "BATON_OBJECTS")]
    pub(crate) objects: Option<PathBuf>,
    /// Workspace to act in.
    #[arg(
        long,
        global = true,
        env = "BATON_WORKSPACE",
        default_value = "default"
    )]
    pub(crate) workspace: String,
    /// Name recorded as the actor of changes.
    #[arg(long = "as", global = true, env = "BATON_ACTOR", default_value = "cli")]
    pub(crate) actor: String,
    /// Idempotency key: repeating a call with the same key returns the first response.
    #[arg(long, global = true)]
    pub(crate) idempotency_key: Option<String>,
    /// PostgreSQL instead of the embedded store: postgres://user@host/db.
    #[arg(
        long,
        global = true,
        env = "BATON_DATABASE_URL",
        hide_env_values = true
    )]
    pub(crate) database: Option<String>,
    /// Talk to a Baton server at this URL instead of the embedded store.
    #[arg(long, global = true, env = "BATON_SERVER")]
    pub(crate) server: Option<String>,
    /// The API key for --server.
    #[arg(long, global = true, env = "BATON_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Commit durability: full (safe against power loss, default) or normal (process crash
    /// only; on PostgreSQL, synchronous_commit off: a server crash may lose the last commits).
    #[arg(long, global = true, env = "BATON_DURABILITY", default_value = "full")]
    pub(crate) durability: String,
    #[command(subcommand)]
    pub(crate) command: Command,
}

// Parsed once per process; boxing the large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create the store and the default workspace and project.
    Init,
    /// Create, read, list and shape tasks.
    #[command(subcommand)]
    Task(TaskCmd),
    /// Tasks claimable now, in claim order.
    Ready {
        /// At most this many.
        #[arg(allow_negative_numbers = true, long, default_value_t = 100)]
        limit: u32,
    },
    /// Claim work for an agent.
    Claim(ClaimArgs),
    /// Start a claimed task (claimed → in_progress).
    Start(LeaseArgs),
    /// Extend a lease and report progress; prints the signals to act on.
    Heartbeat(HeartbeatArgs),
    /// Give a task back to the queue without counting a failure.
    Release(LeaseArgs),
    /// Complete a task.
    Complete(CompleteArgs),
    /// Report a failed attempt.
    Fail(FailArgs),
    /// Report a blocker: the task becomes blocked and the lease is released.
    Block(ReasonLeaseArgs),
    /// Wait on something outside; the lease is kept.
    Wait(ReasonLeaseArgs),
    /// Back to work after waiting.
    Resume(LeaseArgs),
    /// Approve a task in review.
    Approve {
        /// Task id.
        id: String,
        /// A comment for the record.
        #[arg(long)]
        comment: Option<String>,
        /// Only if the task is still at this version (VERSION_CONFLICT otherwise).
        #[arg(allow_negative_numbers = true, long = "if-version", id = "if_version")]
        if_version: Option<u64>,
    },
    /// Reject a task in review: it goes back to ready, or fails when attempts are used up.
    Reject {
        /// Task id.
        id: String,
        /// What is wrong.
        #[arg(long)]
        reason: String,
        /// Only if the task is still at this version (VERSION_CONFLICT otherwise).
        #[arg(allow_negative_numbers = true, long = "if-version", id = "if_version")]
        if_version: Option<u64>,
    },
    /// Record a context entry on a task.
    Note(NoteArgs),
    /// Steps of a task's plan.
    #[command(subcommand)]
    Step(StepCmd),
    /// Dependencies between tasks.
    #[command(subcommand)]
    Dep(DepCmd),
    /// Files attached to tasks: add, list, get.
    #[command(subcommand)]
    Artifact(ArtifactCmd),
    /// Everything needed to resume a task, in one response.
    Brief {
        /// Task id.
        id: String,
        /// Trim the briefing to this many bytes of JSON, least relevant first.
        #[arg(long)]
        max_bytes: Option<usize>,
    },
    /// Plans as files.
    #[command(subcommand)]
    Plan(PlanCmd),
    /// The event log.
    Events {
        /// Only events after this sequence number.
        #[arg(allow_negative_numbers = true, long, default_value_t = 0)]
        after: u64,
        /// At most this many (1 to 1000).
        #[arg(allow_negative_numbers = true, long, default_value_t = 100)]
        limit: u32,
    },
    /// Rebuild every projection from the event log and compare with the live store.
    Replay {
        /// Compare and exit non-zero, naming the first difference, if they differ.
        #[arg(long)]
        verify: bool,
    },
    /// Expire lapsed leases now (claims do this too).
    Reap,
    /// API keys for the HTTP API.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Projects: default policies and the kill switch.
    #[command(subcommand)]
    Project(ProjectCmd),
    /// Agents: register, heartbeat, list, and each agent's kill switch.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// The workspace and its kill switch.
    #[command(subcommand)]
    Workspace(WorkspaceCmd),
    /// Serve the HTTP API and MCP (on the embedded store, or PostgreSQL with --database).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7300", env = "BATON_LISTEN")]
        listen: String,
        /// The least severe log lines written to stderr: `debug` adds a line per request.
        #[arg(long, default_value = "info", env = "BATON_LOG",
            value_parser = ["off", "error", "warn", "info", "debug", "trace"])]
        log_level: String,
        /// Log lines as text for people or as JSON objects (one per line) for collectors.
        #[arg(long, default_value = "text", env = "BATON_LOG_FORMAT",
            value_parser = ["text", "json"])]
        log_format: String,
    },
    /// Apply the store's migrations (also done at every start) and exit.
    Migrate,
    /// Serve MCP over stdio for one agent (on the embedded store, or proxying to --server).
    Mcp {
        /// The agent this server acts as (default: the key's bound agent, or the client's
        /// name with a session suffix).
        #[arg(long, env = "BATON_AGENT")]
        agent: Option<String>,
    },
    /// Watch simulated agents plan and work through a project.
    Demo(DemoArgs),
    /// Internal: create tasks one by one, printing each id once it is durable (crash tests).
    #[command(hide = true)]
    Stress {
        /// How many tasks.
        #[arg(allow_negative_numbers = true, long, default_value_t = 1000)]
        count: u32,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ArtifactCmd {
    /// Attach a file (up to 2 MiB) to a task.
    Add {
        /// Task id.
        id: String,
        /// The file; `-` for standard input (then --name is needed).
        file: PathBuf,
        /// Its name (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        /// Its media type (default: text/plain for UTF-8 text, application/octet-stream
        /// for other bytes).
        #[arg(long)]
        media_type: Option<String>,
        /// Your lease token, when you hold the task: the artifact belongs to your run.
        #[arg(long)]
        lease: Option<String>,
    },
    /// A task's artifacts, oldest first.
    List {
        /// Task id.
        id: String,
    },
    /// An artifact's bytes, to standard output (with --json: described, the bytes in it),
    /// or to --output, printing what describes them.
    Get {
        /// Artifact id (art_…).
        id: String,
        /// Write the bytes to this file.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCmd {
    /// Create a key (on the store, or with --server as an admin key); its secret is printed
    /// once.
    Create {
        /// admin, planner, worker, reviewer or observer.
        #[arg(long)]
        role: String,
        /// The agent a worker key acts as.
        #[arg(long)]
        agent: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProjectCmd {
    /// Create a project.
    Create {
        /// Unique name.
        name: String,
        #[command(flatten)]
        settings: ProjectSettingsArgs,
    },
    /// List projects.
    List,
    /// Read a project (by id or name).
    Get {
        /// Project id or name.
        id: String,
    },
    /// Change a project's policies, or kill/revive it.
    Update {
        /// Project id or name.
        id: String,
        #[command(flatten)]
        settings: ProjectSettingsArgs,
        /// Stop all claims in the project (heartbeats say `killed`).
        #[arg(long, conflicts_with = "revive")]
        kill: bool,
        /// Lift the kill switch.
        #[arg(long)]
        revive: bool,
    },
}

/// Project policies on the command line.
#[derive(Debug, Args)]
pub(crate) struct ProjectSettingsArgs {
    /// Default lease TTL of its tasks, e.g. 5m.
    #[arg(long)]
    pub lease_ttl: Option<String>,
    /// Default attempts allowed.
    #[arg(allow_negative_numbers = true, long)]
    pub max_attempts: Option<u32>,
    /// Whether its tasks go to review by default.
    #[arg(long)]
    pub review_required: Option<bool>,
    /// Whether file scopes are exclusive: claims pass over a task whose paths overlap a
    /// leased task's (true), or grant it with a warning (false, the default).
    #[arg(long, value_name = "BOOL")]
    pub exclusive_scopes: Option<bool>,
    /// The most of its tasks leased at once (1 to 10,000); claims pass over its tasks
    /// while that many are leased.
    #[arg(allow_negative_numbers = true, long, value_name = "N")]
    pub max_concurrency: Option<u32>,
    /// Remove the project's max-concurrency.
    #[arg(long, conflicts_with = "max_concurrency")]
    pub unlimited: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AgentCmd {
    /// Register an agent (or set its capabilities).
    Register {
        /// The agent's name.
        name: String,
        /// Its capabilities, comma-separated.
        #[arg(long, value_delimiter = ',')]
        capabilities: Vec<String>,
        /// The most leases it may hold at once (left out, a limit set before stays).
        #[arg(allow_negative_numbers = true, long)]
        max_concurrency: Option<u32>,
    },
    /// Say an agent is alive.
    Heartbeat {
        /// The agent's name.
        name: String,
    },
    /// List agents.
    List,
    /// Read an agent (by name or id).
    Get {
        /// Agent name or id.
        name: String,
    },
    /// Kill, disable or reactivate an agent, or set how many leases it may hold.
    #[command(group = clap::ArgGroup::new("status").multiple(false))]
    #[command(group = clap::ArgGroup::new("change").required(true).multiple(true)
        .args(["kill", "disable", "revive", "max_concurrency", "unlimited"]))]
    Update {
        /// Agent name or id.
        name: String,
        /// Revoke every lease it holds at once (its tasks go back to the queue) and refuse
        /// its claims and lease operations with KILLED.
        #[arg(long, group = "status")]
        kill: bool,
        /// Refuse its new claims; the leases it holds run on.
        #[arg(long, group = "status")]
        disable: bool,
        /// Let it claim again.
        #[arg(long, group = "status")]
        revive: bool,
        /// The most leases it may hold at once; a claim at the limit is AT_CAPACITY.
        #[arg(allow_negative_numbers = true, long, conflicts_with = "unlimited")]
        max_concurrency: Option<u32>,
        /// Remove its max_concurrency.
        #[arg(long)]
        unlimited: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum WorkspaceCmd {
    /// Read the workspace.
    Get,
    /// Kill or revive the whole workspace (admin).
    #[command(group = clap::ArgGroup::new("switch").required(true))]
    Update {
        /// Revoke every lease in the workspace at once and refuse every claim with KILLED.
        #[arg(long, group = "switch")]
        kill: bool,
        /// Lift the kill switch.
        #[arg(long, group = "switch")]
        revive: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TaskCmd {
    /// Create a task.
    Create(CreateArgs),
    /// Read a task.
    Get {
        /// Task id.
        id: String,
        /// The task as it stood once this event (its sequence number) was committed.
        #[arg(allow_negative_numbers = true, long, value_name = "SEQ")]
        as_of: Option<u64>,
    },
    /// List tasks.
    List {
        /// Only in this status.
        #[arg(long)]
        status: Option<String>,
        /// Only children of this task.
        #[arg(long)]
        parent: Option<String>,
        /// Only with this label.
        #[arg(long)]
        label: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(allow_negative_numbers = true, long, default_value_t = 100)]
        limit: u32,
        /// Only tasks after this id (the previous page's next_cursor).
        #[arg(long)]
        after: Option<String>,
    },
    /// Change a task's fields.
    Update(UpdateArgs),
    /// Cancel a task.
    Cancel {
        /// Task id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        /// Only if the task is still at this version (VERSION_CONFLICT otherwise).
        #[arg(allow_negative_numbers = true, long = "if-version", id = "if_version")]
        if_version: Option<u64>,
    },
    /// Publish a draft.
    Publish {
        /// Task id.
        id: String,
        /// Only if the task is still at this version (VERSION_CONFLICT otherwise).
        #[arg(allow_negative_numbers = true, long = "if-version", id = "if_version")]
        if_version: Option<u64>,
    },
    /// Retry a failed task.
    Retry {
        /// Task id.
        id: String,
        /// Only if the task is still at this version (VERSION_CONFLICT otherwise).
        #[arg(allow_negative_numbers = true, long = "if-version", id = "if_version")]
        if_version: Option<u64>,
    },
    /// Unblock a task blocked by an agent (or override a failed dependency).
    Unblock {
        /// Task id.
        id: String,
        /// Only if the task is still at this version (VERSION_CONFLICT otherwise).
        #[arg(allow_negative_numbers = true, long = "if-version", id = "if_version")]
        if_version: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Short name.
    #[arg(long)]
    pub(crate) title: String,
    /// Why the task exists (immutable).
    #[arg(long)]
    pub(crate) intent: Option<String>,
    /// What is to be done.
    #[arg(long)]
    pub(crate) description: Option<String>,
    /// How it is to be done.
    #[arg(long)]
    pub(crate) plan: Option<String>,
    /// epic, feature, bug, investigation, chore...
    #[arg(long = "type")]
    pub(crate) kind: Option<String>,
    /// Container task.
    #[arg(long)]
    pub(crate) parent: Option<String>,
    /// The project (id or name) the task belongs to (default: `default`).
    #[arg(long)]
    pub(crate) project: Option<String>,
    /// Spend limit: heartbeats reporting `--usage` cost near it signal `budget_warning`,
    /// at it `budget_exhausted`.
    #[arg(long)]
    pub(crate) max_cost: Option<f64>,
    /// Higher is claimed first.
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) priority: Option<i64>,
    /// Required capability (repeatable).
    #[arg(long = "capability")]
    pub(crate) capabilities: Vec<String>,
    /// Label (repeatable).
    #[arg(long = "label")]
    pub(crate) labels: Vec<String>,
    /// A file or glob the task expects to touch (repeatable), e.g. 'src/db/**'.
    #[arg(long = "path")]
    pub(crate) paths: Vec<String>,
    /// Concurrency key, e.g. area:db: at most --concurrency-limit tasks with it are leased
    /// at once.
    #[arg(long)]
    pub(crate) concurrency_key: Option<String>,
    /// How many tasks with the concurrency key may be leased at once (default 1).
    #[arg(allow_negative_numbers = true, long, requires = "concurrency_key")]
    pub(crate) concurrency_limit: Option<u32>,
    /// A task that must be done first (repeatable).
    #[arg(long = "blocked-by")]
    pub(crate) blocked_by: Vec<String>,
    /// Lease TTL, e.g. 30s, 5m.
    #[arg(long)]
    pub(crate) lease_ttl: Option<String>,
    /// Longest one attempt may run, e.g. 1h: its lease is never extended past it.
    #[arg(long)]
    pub(crate) timeout: Option<String>,
    /// Attempts allowed.
    #[arg(allow_negative_numbers = true, long)]
    pub(crate) max_attempts: Option<u32>,
    /// Deadline (RFC 3339).
    #[arg(long)]
    pub(crate) due: Option<String>,
    /// Completion goes to review.
    #[arg(long)]
    pub(crate) review: bool,
    /// JSON Schema the output must satisfy.
    #[arg(long)]
    pub(crate) output_schema: Option<String>,
    /// Input data (JSON).
    #[arg(long)]
    pub(crate) input: Option<String>,
    /// Create as a draft (not claimable until published).
    #[arg(long)]
    pub(crate) draft: bool,
}

#[derive(Debug, Args)]
pub(crate) struct UpdateArgs {
    /// Task id.
    pub(crate) id: String,
    /// Expected current version (optimistic concurrency).
    #[arg(allow_negative_numbers = true, long = "if-version", id = "if_version")]
    pub(crate) version: Option<u64>,
    /// New title.
    #[arg(long)]
    pub(crate) title: Option<String>,
    /// Refused: intent is immutable.
    #[arg(long)]
    pub(crate) intent: Option<String>,
    /// New description.
    #[arg(long)]
    pub(crate) description: Option<String>,
    /// New plan.
    #[arg(long)]
    pub(crate) plan: Option<String>,
    /// New type.
    #[arg(long = "type")]
    pub(crate) kind: Option<String>,
    /// New priority.
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) priority: Option<i64>,
    /// New labels (repeatable; replaces).
    #[arg(long = "label")]
    pub(crate) labels: Vec<String>,
    /// New paths the task expects to touch (repeatable; replaces).
    #[arg(long = "path")]
    pub(crate) paths: Vec<String>,
    /// New concurrency key (e.g. area:db).
    #[arg(long)]
    pub(crate) concurrency_key: Option<String>,
    /// New limit for the concurrency key.
    #[arg(allow_negative_numbers = true, long)]
    pub(crate) concurrency_limit: Option<u32>,
    /// New required capabilities (repeatable; replaces).
    #[arg(long = "capability")]
    pub(crate) capabilities: Vec<String>,
    /// New lease TTL.
    #[arg(long)]
    pub(crate) lease_ttl: Option<String>,
    /// New attempt timeout (e.g. 2h).
    #[arg(long)]
    pub(crate) timeout: Option<String>,
    /// New attempt limit.
    #[arg(allow_negative_numbers = true, long)]
    pub(crate) max_attempts: Option<u32>,
    /// New spend limit.
    #[arg(long)]
    pub(crate) max_cost: Option<f64>,
    /// New deadline (RFC 3339).
    #[arg(long)]
    pub(crate) due: Option<String>,
    /// Whether completion goes to review (true or false).
    #[arg(long, value_name = "BOOL")]
    pub(crate) review: Option<bool>,
    /// New input data (JSON).
    #[arg(long)]
    pub(crate) input: Option<String>,
    /// New JSON Schema the output must satisfy.
    #[arg(long)]
    pub(crate) output_schema: Option<String>,
    /// Remove a field's value (repeatable).
    #[arg(long, value_enum, value_name = "FIELD")]
    pub(crate) clear: Vec<ClearField>,
}

/// A field `task update --clear` removes: what a task may be without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ClearField {
    Description,
    Plan,
    Due,
    Timeout,
    Input,
    OutputSchema,
    /// The budget (its max cost).
    #[value(alias = "max-cost")]
    Budget,
    Labels,
    Capabilities,
    Paths,
    /// The concurrency key and its limit.
    ConcurrencyKey,
}

#[derive(Debug, Args)]
pub(crate) struct ClaimArgs {
    /// The claiming agent's name.
    #[arg(long)]
    pub(crate) agent: String,
    /// A capability the agent has (repeatable).
    #[arg(long = "capability")]
    pub(crate) capabilities: Vec<String>,
    /// How many tasks at most.
    #[arg(allow_negative_numbers = true, long, default_value_t = 1)]
    pub(crate) count: u32,
    /// Wait up to this long for work (e.g. 30s).
    #[arg(long)]
    pub(crate) wait: Option<String>,
    /// Lease TTL to ask for.
    #[arg(long)]
    pub(crate) lease_ttl: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct LeaseArgs {
    /// Task id.
    pub(crate) id: String,
    /// The lease token from the claim.
    #[arg(long)]
    pub(crate) lease: String,
}

#[derive(Debug, Args)]
pub(crate) struct ReasonLeaseArgs {
    /// Task id.
    pub(crate) id: String,
    /// The lease token from the claim.
    #[arg(long)]
    pub(crate) lease: String,
    /// What blocks or what the task waits on.
    #[arg(long)]
    pub(crate) reason: String,
}

#[derive(Debug, Args)]
pub(crate) struct HeartbeatArgs {
    /// Task id.
    pub(crate) id: String,
    /// The lease token from the claim.
    #[arg(long)]
    pub(crate) lease: String,
    /// Progress, 0.0 to 1.0.
    #[arg(long)]
    pub(crate) progress: Option<f64>,
    /// What the agent is doing.
    #[arg(long)]
    pub(crate) message: Option<String>,
    /// Cost so far (JSON, e.g. {"cost": 0.1}).
    #[arg(long)]
    pub(crate) usage: Option<String>,
    /// Extend the lease by this TTL, and by it at later heartbeats too (e.g. 90s; default:
    /// the TTL the claim was granted, else the task's).
    #[arg(long)]
    pub(crate) lease_ttl: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct CompleteArgs {
    /// Task id.
    pub(crate) id: String,
    /// The lease token from the claim.
    #[arg(long)]
    pub(crate) lease: String,
    /// The result (JSON).
    #[arg(long)]
    pub(crate) output: Option<String>,
    /// One-line summary.
    #[arg(long)]
    pub(crate) outcome: Option<String>,
    /// Complete even with open children.
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct FailArgs {
    /// Task id.
    pub(crate) id: String,
    /// The lease token from the claim.
    #[arg(long)]
    pub(crate) lease: String,
    /// What went wrong.
    #[arg(long)]
    pub(crate) error: String,
    /// transient (default), timeout, resource, permanent, invalid_input.
    #[arg(long)]
    pub(crate) class: Option<String>,
    /// Do not retry.
    #[arg(long)]
    pub(crate) no_retry: bool,
}

#[derive(Debug, Args)]
pub(crate) struct NoteArgs {
    /// Task id.
    pub(crate) id: String,
    /// decision, rationale, discovery, attempt, outcome, blocker, note, reference, user_input.
    #[arg(long = "type")]
    pub(crate) kind: String,
    /// The knowledge.
    #[arg(long)]
    pub(crate) content: String,
    /// The entry this one replaces.
    #[arg(long)]
    pub(crate) supersedes: Option<String>,
    /// Your lease token, if you hold the task.
    #[arg(long)]
    pub(crate) lease: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum StepCmd {
    /// Append a step.
    Add {
        /// Task id.
        id: String,
        /// What the step is.
        #[arg(long)]
        title: String,
        /// More about it.
        #[arg(long)]
        details: Option<String>,
        /// Your lease, if you hold the task (no `context_changed` for yourself).
        #[arg(long)]
        lease: Option<String>,
    },
    /// Mark a step done.
    Done {
        /// Task id.
        id: String,
        /// Step id.
        step_id: String,
        /// Notes.
        #[arg(long)]
        notes: Option<String>,
        /// Your lease, if you hold the task (no `context_changed` for yourself).
        #[arg(long)]
        lease: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DepCmd {
    /// BLOCKER must finish before BLOCKED.
    Add {
        /// The task that must finish first.
        blocker: String,
        /// The task that waits.
        blocked: String,
        /// blocks (default), relates_to, discovered_from.
        #[arg(long, default_value = "blocks")]
        kind: String,
    },
    /// Remove an edge.
    Rm {
        /// The blocker.
        blocker: String,
        /// The blocked task.
        blocked: String,
        /// blocks (default), relates_to, discovered_from.
        #[arg(long, default_value = "blocks")]
        kind: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum PlanCmd {
    /// Create (or update) a whole task graph from a YAML or JSON file, atomically.
    Apply {
        /// The plan file (YAML or JSON); `-` reads standard input.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Simulated worker agents.
    #[arg(long, default_value_t = 4)]
    pub(crate) workers: usize,
    /// Seed for the simulation's choices.
    #[arg(allow_negative_numbers = true, long)]
    pub(crate) seed: Option<u64>,
}
