//! What the harness's agents read of the server's answers on their hot path: typed, so an
//! answer is parsed straight into the few fields an agent acts on and the rest is skipped
//! without being built. The agents share the machine's two cores with the server they
//! measure; parsing every answer into a `serde_json::Value` tree cost them about a third of
//! their CPU (BENCHMARKS.md, "Over HTTP").

use serde::{Deserialize, Serialize};

/// A claim as an agent keeps it: the task and the lease that fences its work.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Claim {
    pub task: ClaimedTask,
    pub lease: ClaimLease,
}

/// The claimed task's identity (and title, where a scenario encodes data in it).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ClaimedTask {
    pub id: String,
    #[serde(default)]
    pub title: String,
}

/// The lease token a claim returns.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ClaimLease {
    pub token: String,
}

/// `POST /v1/tasks/claim`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct ClaimAnswer {
    pub claims: Vec<Claim>,
}

/// The body of a lease operation that carries nothing but the lease.
#[derive(Debug, Serialize)]
pub(crate) struct LeaseBody<'a> {
    pub lease: &'a str,
}

/// One completion of a `POST /v1/tasks/complete` request.
#[derive(Debug, Serialize)]
pub(crate) struct Completion<'a> {
    pub id: &'a str,
    pub lease: &'a str,
}

/// `POST /v1/tasks/complete`'s body: completions and, optionally, the next claim.
#[derive(Debug, Serialize)]
pub(crate) struct CompleteRequest<'a> {
    pub completions: Vec<Completion<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<&'a serde_json::Value>,
}

/// `POST /v1/tasks/complete`'s answer: one result per completion, and the next claim's.
#[derive(Debug, Deserialize)]
pub(crate) struct CompleteAnswer {
    pub results: Vec<Outcome>,
    #[serde(default)]
    pub next: Option<NextClaims>,
}

/// One completion's result: only a refusal is read.
#[derive(Debug, Deserialize)]
pub(crate) struct Outcome {
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

/// The claims a completion call made for its `next`, or why it made none.
#[derive(Debug, Deserialize)]
pub(crate) struct NextClaims {
    #[serde(default)]
    pub claims: Vec<Claim>,
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}
