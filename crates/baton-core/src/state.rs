//! The task state machine (DESIGN §3) as one table: for every state, the operations that
//! may be applied to it. Where an operation has more than one possible target (publish →
//! ready or blocked; fail → ready or failed), the operation layer picks the target; this
//! table only decides what is allowed, so every refusal names the same allowed list.

use crate::error::{Code, Error, Result};
use serde::{Deserialize, Serialize};

/// The status of a task.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    PartialOrd,
    Ord,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Being written; not offered to claimers until published.
    Draft,
    /// Claimable (once `not_before` has passed).
    Ready,
    /// Waiting on dependencies or an agent's reported blocker; see `blocked_reason`.
    Blocked,
    /// Leased to an agent that has not yet started.
    Claimed,
    /// Leased and being worked on.
    InProgress,
    /// Leased, waiting on something outside (a human, a CI run).
    Waiting,
    /// Completed by an agent; awaiting a reviewer.
    Review,
    /// Finished successfully. Terminal.
    Done,
    /// Finished unsuccessfully. Terminal, but can be retried explicitly.
    Failed,
    /// Called off. Terminal.
    Canceled,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 10] = [
        Status::Draft,
        Status::Ready,
        Status::Blocked,
        Status::Claimed,
        Status::InProgress,
        Status::Waiting,
        Status::Review,
        Status::Done,
        Status::Failed,
        Status::Canceled,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Ready => "ready",
            Status::Blocked => "blocked",
            Status::Claimed => "claimed",
            Status::InProgress => "in_progress",
            Status::Waiting => "waiting",
            Status::Review => "review",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Result<Status> {
        Status::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                Error::invalid(
                    format!("unknown status '{text}'"),
                    format!("use one of: {}", Status::ALL.map(|s| s.as_str()).join(", ")),
                )
            })
    }

    /// Terminal states: nothing happens to the task any more (except `retry` of `failed`).
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Done | Status::Failed | Status::Canceled)
    }

    /// States of a task that has not started: a new blocker can still hold it back.
    pub fn is_unstarted(self) -> bool {
        matches!(self, Status::Draft | Status::Ready | Status::Blocked)
    }

    /// States of a task that takes no new or retried child: final ones, and review (an
    /// approval would finish the task over the child's open work).
    pub fn is_closed_to_children(self) -> bool {
        self.is_terminal() || self == Status::Review
    }

    /// States in which an agent holds a lease on the task.
    pub fn is_leased(self) -> bool {
        matches!(self, Status::Claimed | Status::InProgress | Status::Waiting)
    }
}

/// Why a task is blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BlockedReason {
    /// A `blocks` dependency is not done yet; released automatically.
    Dependencies,
    /// An agent reported a blocker; a planner or agent unblocks.
    Agent,
    /// A `blocks` dependency ended failed or canceled; a planner decides.
    DependencyFailed,
}

/// An operation on a task, as named in the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Change fields (title, plan, priority...).
    Update,
    /// draft → ready or blocked.
    Publish,
    /// ready → claimed.
    Claim,
    /// claimed → in_progress.
    Start,
    /// Extend the lease and report progress.
    Heartbeat,
    /// in_progress → waiting.
    Wait,
    /// waiting → in_progress.
    Resume,
    /// in_progress → blocked (agent).
    Block,
    /// blocked → ready.
    Unblock,
    /// Give the task back: → ready.
    Release,
    /// → review or done.
    Complete,
    /// review → done.
    Approve,
    /// review → ready or failed.
    Reject,
    /// → ready (with backoff) or failed.
    Fail,
    /// The lease ran out: → ready (with backoff) or failed.
    Expire,
    /// → canceled.
    Cancel,
    /// failed → ready.
    Retry,
}

impl Op {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Update => "update",
            Op::Publish => "publish",
            Op::Claim => "claim",
            Op::Start => "start",
            Op::Heartbeat => "heartbeat",
            Op::Wait => "wait",
            Op::Resume => "resume",
            Op::Block => "block",
            Op::Unblock => "unblock",
            Op::Release => "release",
            Op::Complete => "complete",
            Op::Approve => "approve",
            Op::Reject => "reject",
            Op::Fail => "fail",
            Op::Expire => "expire",
            Op::Cancel => "cancel",
            Op::Retry => "retry",
        }
    }

    /// Whether a caller can ask for it: every operation but `expire`, which only the
    /// clock performs (so refusals do not offer it).
    pub fn is_callable(self) -> bool {
        self != Op::Expire
    }

    /// Every operation.
    pub const ALL: [Op; 17] = [
        Op::Update,
        Op::Publish,
        Op::Claim,
        Op::Start,
        Op::Heartbeat,
        Op::Wait,
        Op::Resume,
        Op::Block,
        Op::Unblock,
        Op::Release,
        Op::Complete,
        Op::Approve,
        Op::Reject,
        Op::Fail,
        Op::Expire,
        Op::Cancel,
        Op::Retry,
    ];
}

/// The table: for each state, the operations it accepts. The single source of truth for
/// what is allowed; targets are chosen by the operation layer.
pub const TRANSITIONS: [(Status, &[Op]); 10] = [
    (Status::Draft, &[Op::Update, Op::Publish, Op::Cancel]),
    (Status::Ready, &[Op::Update, Op::Claim, Op::Cancel]),
    (Status::Blocked, &[Op::Update, Op::Unblock, Op::Cancel]),
    (
        Status::Claimed,
        &[
            Op::Update,
            Op::Start,
            Op::Heartbeat,
            Op::Release,
            Op::Complete,
            Op::Fail,
            Op::Expire,
            Op::Cancel,
        ],
    ),
    (
        Status::InProgress,
        &[
            Op::Update,
            Op::Heartbeat,
            Op::Wait,
            Op::Block,
            Op::Release,
            Op::Complete,
            Op::Fail,
            Op::Expire,
            Op::Cancel,
        ],
    ),
    (
        Status::Waiting,
        &[
            Op::Update,
            Op::Heartbeat,
            Op::Resume,
            Op::Release,
            Op::Fail,
            Op::Expire,
            Op::Cancel,
        ],
    ),
    (
        Status::Review,
        &[Op::Update, Op::Approve, Op::Reject, Op::Cancel],
    ),
    (Status::Done, &[]),
    (Status::Failed, &[Op::Retry]),
    (Status::Canceled, &[]),
];

/// The operations a task in `status` accepts.
pub fn allowed_ops(status: Status) -> &'static [Op] {
    TRANSITIONS
        .iter()
        .find(|(s, _)| *s == status)
        .map(|(_, ops)| *ops)
        .unwrap_or(&[])
}

/// Whether `op` may be applied in `status`.
pub fn is_allowed(status: Status, op: Op) -> bool {
    allowed_ops(status).contains(&op)
}

/// Checks `op` against the table; the refusal names the current state and what is allowed.
pub fn check(task_id: &str, status: Status, op: Op) -> Result<()> {
    check_in(task_id, status, None, op)
}

/// [`check`] for a task as it is: its refusal lists only what the task accepts now (one
/// blocked on its dependencies is released by them, not by `unblock`), so an agent that
/// follows the list is not refused again.
pub fn check_task(task: &crate::model::Task, op: Op) -> Result<()> {
    check_in(&task.id, task.status, task.blocked_reason, op)
}

fn check_in(task_id: &str, status: Status, reason: Option<BlockedReason>, op: Op) -> Result<()> {
    if is_allowed(status, op) {
        return Ok(());
    }
    let allowed: Vec<&str> = allowed_ops(status)
        .iter()
        .filter(|o| o.is_callable())
        .filter(|o| !(**o == Op::Unblock && reason == Some(BlockedReason::Dependencies)))
        .map(|o| o.as_str())
        .collect();
    let hint = if allowed.is_empty() {
        format!(
            "task is {}, which is final; create a new task instead",
            status.as_str()
        )
    } else {
        let article = if status == Status::InProgress {
            "an"
        } else {
            "a"
        };
        format!(
            "{article} {} task accepts: {}",
            status.as_str(),
            allowed.join(", ")
        )
    };
    Err(Error::new(
        Code::InvalidTransition,
        format!("cannot {} task {task_id}: it is {}", op.as_str(), status.as_str()),
        hint,
    )
    .with_details(serde_json::json!({ "status": status.as_str(), "operation": op.as_str(), "allowed": allowed })))
}

/// Checks that a task has not started (draft, ready or blocked) before it is made to wait
/// on a new blocker: a claimed, running or reviewed task would finish regardless of it.
pub fn check_not_started(task_id: &str, status: Status, what: &str) -> Result<()> {
    if status.is_unstarted() {
        return Ok(());
    }
    Err(Error::new(
        Code::InvalidTransition,
        format!("cannot {what} task {task_id}: it is {}", status.as_str()),
        "a blocker holds back a task that has not started (draft, ready or blocked): \
         release the task first, or let the blocker hold back the tasks that follow it",
    )
    .with_details(serde_json::json!({
        "status": status.as_str(),
        "operation": what,
        "allowed_statuses": ["draft", "ready", "blocked"],
    })))
}

/// Fails with `INVALID_TRANSITION` when the task is final (done, failed, canceled): `what`
/// (adding a step, a blocker) only makes sense on a task that can still change.
pub fn check_open(task_id: &str, status: Status, what: &str) -> Result<()> {
    if !status.is_terminal() {
        return Ok(());
    }
    Err(Error::new(
        Code::InvalidTransition,
        format!("cannot {what} task {task_id}: it is {}", status.as_str()),
        format!(
            "task is {}, which is final; create a new task instead",
            status.as_str()
        ),
    )
    .with_details(serde_json::json!({ "status": status.as_str(), "operation": what })))
}
