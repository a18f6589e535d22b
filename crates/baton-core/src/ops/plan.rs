//! Plans as files (DESIGN §6): a YAML or JSON task tree with refs, dependencies, context and
//! steps, applied in one transaction. Each task is keyed by `plan:<name>:<ref>`, so applying
//! the same file again changes nothing, and applying an edited file updates what changed.

use super::task::with_ref;
use super::{graph, knowledge, task, Ctx};
use crate::api::{AddContext, CreateTask, UpdateTask};
use crate::error::{Code, Error, Result};
use crate::model::*;
use crate::state::{BlockedReason, Status};
use crate::time::{rfc3339, Duration, Millis};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Most tasks in one plan.
pub const MAX_PLAN_TASKS: usize = 10_000;

/// What every plan task's key starts with (`plan:<name>:<ref>`); request idempotency keys
/// may not, so no request can name a plan's task.
pub const KEY_PREFIX: &str = "plan:";

/// Output of applying a plan: every task of the plan in document order, and counts.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct PlanOut {
    /// One entry per task of the plan, parents before children, in document order.
    pub tasks: Vec<PlanResult>,
    /// Tasks created by this application.
    pub created: u32,
    /// Existing tasks changed to match the plan.
    pub updated: u32,
    /// Existing tasks that already matched.
    pub unchanged: u32,
}

/// What applying a plan did to one of its tasks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct PlanResult {
    /// The task's ref in the plan.
    #[serde(rename = "ref")]
    pub reference: String,
    /// `created`, `updated` or `unchanged`.
    pub result: String,
    /// The task now.
    pub task: Task,
    /// What the file asks of an existing task that this application did not do, and why
    /// (a task that ended keeps its fields, intent is immutable, a task is not moved to
    /// another parent nor made a draft again, a blocker holds back only a task that has not
    /// started, context and steps are recorded when a task is created). Absent when
    /// everything applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A plan document.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanDoc {
    /// Names the plan; task keys are `plan:<name>:<ref>` (default `plan`).
    #[serde(default)]
    pub name: Option<String>,
    /// Project id or name for every task (default project when omitted).
    #[serde(default)]
    pub project: Option<String>,
    /// The top-level tasks.
    #[serde(deserialize_with = "crate::object::list")]
    #[schema(min_items = 1, max_items = 10000)]
    pub tasks: Vec<PlanTask>,
}

/// One task of a plan, with its children.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanTask {
    /// Unique within the plan; how other tasks of the plan refer to this one.
    #[serde(rename = "ref")]
    #[schema(min_length = 1)]
    pub reference: String,
    /// Short name.
    #[schema(min_length = 1, max_length = 1000)]
    pub title: String,
    /// Why.
    #[serde(default)]
    pub intent: Option<String>,
    /// What.
    #[serde(default)]
    pub description: Option<String>,
    /// How.
    #[serde(default)]
    pub plan: Option<String>,
    /// Task type.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Higher first.
    #[serde(default)]
    pub priority: Option<i64>,
    /// Deadline.
    #[serde(default, with = "rfc3339::option")]
    #[schema(value_type = Option<crate::time::TimeInput>)]
    pub due_at: Option<Millis>,
    /// Free labels (on a task that exists, given replaces them: `[]` clears them).
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// Capabilities a claimer needs (on a task that exists, given replaces them).
    #[serde(default, alias = "capabilities")]
    pub required_capabilities: Option<Vec<String>>,
    /// Files it expects to touch, as globs (on a task that exists, given replaces them).
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    /// Concurrency key: at most `concurrency_limit` tasks with it are leased at once.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub concurrency_key: Option<String>,
    /// How many tasks with the key may be leased at once (default 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000)]
    pub concurrency_limit: Option<u32>,
    /// Refs of this plan, or ids of existing tasks, that must be done first.
    #[serde(default)]
    pub blocked_by: Vec<String>,
    /// Lease TTL.
    #[serde(default, deserialize_with = "crate::time::text_only")]
    pub lease_ttl: Option<Duration>,
    /// The longest one attempt may run (no heartbeat extends a lease past it).
    #[serde(default, deserialize_with = "crate::time::text_only")]
    pub timeout: Option<Duration>,
    /// Attempts allowed.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Whether completion goes to review.
    #[serde(default)]
    pub review_required: Option<bool>,
    /// Input data.
    #[serde(default)]
    pub input: Option<Value>,
    /// JSON Schema for the output.
    #[serde(default)]
    pub output_schema: Option<Value>,
    /// Create as draft.
    #[serde(default)]
    pub draft: bool,
    /// Context entries recorded when the task is created.
    #[serde(default, deserialize_with = "crate::object::list")]
    pub context: Vec<PlanContext>,
    /// Steps recorded when the task is created: titles, or `{title, details}`.
    #[serde(default)]
    pub steps: Vec<PlanStep>,
    /// Child tasks.
    #[serde(default, deserialize_with = "crate::object::list")]
    #[schema(no_recursion)]
    pub children: Vec<PlanTask>,
}

/// A context entry in a plan.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanContext {
    /// Entry type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The knowledge.
    pub content: String,
}

/// A step in a plan.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum PlanStep {
    /// Just a title.
    Title(String),
    /// A title with details.
    Full(#[serde(deserialize_with = "crate::object::required")] PlanStepDetails),
}

impl PlanStep {
    /// Its title and details, however the file gives them.
    fn parts(&self) -> (&str, Option<&str>) {
        match self {
            PlanStep::Title(title) => (title, None),
            PlanStep::Full(step) => (&step.title, step.details.as_deref()),
        }
    }
}

/// A step in a plan given as an object.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanStepDetails {
    /// What the step is.
    pub title: String,
    /// More about it.
    #[serde(default)]
    pub details: Option<String>,
}

/// Parses a plan from YAML or JSON text (JSON is YAML, so one parser reads both).
pub fn parse(text: &str) -> Result<PlanDoc> {
    if text.len() > 16 * 1024 * 1024 {
        return Err(Error::new(
            Code::TooLarge,
            "plan file is over 16 MiB",
            "split the plan into several files",
        ));
    }
    let doc: PlanDoc = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| plan_error(format!("not a valid plan: {e}")))?
    } else {
        serde_yaml::from_str(text).map_err(|e| plan_error(format!("not a valid plan: {e}")))?
    };
    Ok(doc)
}

/// A plan document that did not parse into a [`PlanDoc`] as another surface reported it
/// (`INVALID_INPUT` or `INVALID_DURATION` of a JSON body): `INVALID_PLAN`, as the same file
/// is refused by [`parse`].
pub fn as_plan_error(e: Error) -> Error {
    if matches!(e.code, Code::InvalidInput | Code::InvalidDuration) {
        plan_error(format!("not a valid plan: {}", e.message))
    } else {
        e
    }
}

fn plan_error(message: String) -> Error {
    Error::new(
        Code::InvalidPlan,
        message,
        "a plan is {name?, project?, tasks: [{ref, title, blocked_by?, context?, steps?, children?, ...}]}; see docs/plans.md",
    )
}

struct Flat<'a> {
    node: &'a PlanTask,
    parent_ref: Option<&'a str>,
}

fn flatten<'a>(nodes: &'a [PlanTask], parent: Option<&'a str>, out: &mut Vec<Flat<'a>>) {
    for node in nodes {
        out.push(Flat {
            node,
            parent_ref: parent,
        });
        flatten(&node.children, Some(&node.reference), out);
    }
}

/// Orders the plan's tasks so that every parent and every blocker of the plan comes before
/// the tasks that name it; a cycle of refs is `CYCLE` naming the path.
fn order(flat: &[Flat<'_>], index: &HashMap<&str, usize>) -> Result<Vec<usize>> {
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut mark = vec![0u8; flat.len()];
    let mut out = Vec::with_capacity(flat.len());
    for start in 0..flat.len() {
        if mark[start] != 0 {
            continue;
        }
        // Iterative DFS: (node, next edge to look at).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = 1;
        while let Some((at, edge)) = stack.last().copied() {
            let f = &flat[at];
            let edges: Vec<&str> = f
                .parent_ref
                .into_iter()
                .chain(f.node.blocked_by.iter().map(|s| s.as_str()))
                .collect();
            if edge < edges.len() {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                let Some(&next) = index.get(edges[edge]) else {
                    continue;
                };
                match mark[next] {
                    0 => {
                        mark[next] = 1;
                        stack.push((next, 0));
                    }
                    1 => {
                        // `next` is on the stack: the refs from it to here, back to it, wait on each other.
                        let from = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        let mut path: Vec<String> = stack[from..]
                            .iter()
                            .map(|(n, _)| flat[*n].node.reference.clone())
                            .collect();
                        path.push(flat[next].node.reference.clone());
                        return Err(Error::new(
                            Code::Cycle,
                            format!(
                                "plan refs form a cycle (each names the next as its parent or blocker): {}",
                                path.join(" → ")
                            ),
                            "a plan creates each task after its parent and its blockers; remove one \
                             edge of the path (a parent blocked by its own child: add that edge \
                             as a dependency once both exist)",
                        )
                        .with_details(json!({ "path": path })));
                    }
                    _ => {}
                }
            } else {
                mark[at] = 2;
                out.push(at);
                stack.pop();
            }
        }
    }
    Ok(out)
}

/// Applies a plan in the current transaction.
pub fn apply(ctx: &mut Ctx<'_>, doc: PlanDoc) -> Result<PlanOut> {
    let name = doc.name.clone().unwrap_or_else(|| "plan".into());
    if name.is_empty() || name.len() > 200 || name.contains(':') || name.contains(char::is_control)
    {
        return Err(plan_error(format!(
            "plan name {name:?} is not valid: 1 to 200 characters, no ':' and no control \
             characters"
        )));
    }
    let mut flat = Vec::new();
    flatten(&doc.tasks, None, &mut flat);
    if flat.is_empty() {
        return Err(plan_error("the plan has no tasks".into()));
    }
    if flat.len() > MAX_PLAN_TASKS {
        return Err(Error::new(
            Code::TooLarge,
            format!("plan has {} tasks", flat.len()),
            format!("at most {MAX_PLAN_TASKS} per plan"),
        ));
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, f) in flat.iter().enumerate() {
        let r = f.node.reference.as_str();
        if r.is_empty()
            || r.len() > 200
            || !r
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            || crate::id::has_prefix(r, "tsk")
        {
            return Err(plan_error(format!(
                "ref '{r}' is not valid: use letters, digits, '_', '-', '.', not shaped like a \
                 task id (tsk_…)"
            )));
        }
        if index.insert(r, i).is_some() {
            return Err(plan_error(format!("ref '{r}' appears more than once")));
        }
    }
    for f in &flat {
        for b in &f.node.blocked_by {
            let unknown = |ctx: &mut Ctx<'_>| -> Result<bool> {
                Ok(super::check_ref("blocked_by", b).is_err() || ctx.tx.task(ctx.ws, b)?.is_none())
            };
            if !index.contains_key(b.as_str()) && unknown(ctx)? {
                return Err(plan_error(format!(
                    "task '{}' is blocked_by '{b}', which is neither a ref in this plan nor an existing task id",
                    f.node.reference
                )));
            }
        }
    }
    // Every task of the file is checked, those that exist as much as those to create: a
    // file refused on its first apply is refused on every one.
    for f in &flat {
        let req = create_request(&doc, f.node, f.parent_ref.map(str::to_string), vec![]);
        check_node(&req, f.node).map_err(|e| task::with_ref(e, &f.node.reference))?;
    }
    let order = order(&flat, &index)?;
    // Named or not, the project must exist, even when every task of the plan does. It is
    // where the tasks this apply creates go; tasks created before stay where they are.
    super::project(ctx, doc.project.as_deref())?;
    let mut ids: HashMap<&str, String> = HashMap::new();
    let mut results: Vec<(usize, PlanResult)> = Vec::new();
    let (mut created, mut updated, mut unchanged) = (0, 0, 0);
    for i in order {
        let f = &flat[i];
        let node = f.node;
        let key = format!("{KEY_PREFIX}{name}:{}", node.reference);
        let resolve = |r: &str, ids: &HashMap<&str, String>| {
            ids.get(r).cloned().unwrap_or_else(|| r.to_string())
        };
        let blocked_by: Vec<String> = node.blocked_by.iter().map(|b| resolve(b, &ids)).collect();
        let parent_id = f.parent_ref.map(|p| resolve(p, &ids));
        let mut warnings = Vec::new();
        let (task, outcome) = match ctx.tx.task_by_key(ctx.ws, &key)? {
            Some(existing) => {
                if existing.parent_id != parent_id {
                    let to = match &parent_id {
                        Some(parent) => format!("under {parent}"),
                        None => "to the top level".into(),
                    };
                    warnings.push(format!(
                        "not moved {to}: a task's parent is set when it is created"
                    ));
                }
                let changed =
                    match update_existing(ctx, &existing, node, &blocked_by, &mut warnings) {
                        Ok(changed) => changed,
                        // Told with the ref already, but for a cycle's path.
                        Err(e) if e.code == Code::Cycle => {
                            let known = [(existing.id.as_str(), node.reference.as_str())];
                            return Err(in_refs(ctx, e, &ids, &known, &node.reference)?);
                        }
                        Err(e) => return Err(e),
                    };
                let task = ctx
                    .tx
                    .task(ctx.ws, &existing.id)?
                    .ok_or_else(|| Error::not_found("task", &existing.id))?;
                if changed {
                    updated += 1;
                    (task, "updated")
                } else {
                    unchanged += 1;
                    (task, "unchanged")
                }
            }
            None => {
                let req = create_request(&doc, node, parent_id, blocked_by);
                let out = match task::create(ctx, req, Some(key)) {
                    Ok(out) => out,
                    Err(e) => return Err(in_refs(ctx, e, &ids, &[], &node.reference)?),
                };
                warnings.extend(out.warnings);
                for c in &node.context {
                    let add = AddContext {
                        kind: c.kind.clone(),
                        content: c.content.clone(),
                        supersedes: None,
                        lease: None,
                    };
                    knowledge::add_context(ctx, &out.task.id, add)
                        .map_err(|e| with_ref(e, &node.reference))?;
                }
                for s in &node.steps {
                    let (title, details) = s.parts();
                    knowledge::add_step(
                        ctx,
                        &out.task.id,
                        title,
                        details.map(str::to_string),
                        None,
                    )
                    .map_err(|e| with_ref(e, &node.reference))?;
                }
                created += 1;
                let task = ctx
                    .tx
                    .task(ctx.ws, &out.task.id)?
                    .ok_or_else(|| Error::not_found("task", &out.task.id))?;
                (task, "created")
            }
        };
        ids.insert(&node.reference, task.id.clone());
        results.push((
            i,
            PlanResult {
                reference: node.reference.clone(),
                result: outcome.to_string(),
                task: task.view(),
                warnings,
            },
        ));
    }
    results.sort_by_key(|(i, _)| *i);
    Ok(PlanOut {
        tasks: results.into_iter().map(|(_, v)| v).collect(),
        created,
        updated,
        unchanged,
    })
}

/// The creation a plan's task stands for.
fn create_request(
    doc: &PlanDoc,
    node: &PlanTask,
    parent_id: Option<String>,
    blocked_by: Vec<String>,
) -> CreateTask {
    CreateTask {
        title: node.title.clone(),
        intent: node.intent.clone(),
        description: node.description.clone(),
        plan: node.plan.clone(),
        kind: node.kind.clone(),
        project: doc.project.clone(),
        parent_id,
        priority: node.priority,
        due_at: node.due_at,
        required_capabilities: node.required_capabilities.clone().unwrap_or_default(),
        labels: node.labels.clone().unwrap_or_default(),
        paths: node.paths.clone().unwrap_or_default(),
        concurrency_key: node.concurrency_key.clone(),
        concurrency_limit: node.concurrency_limit,
        blocked_by,
        lease_ttl: node.lease_ttl,
        timeout: node.timeout,
        max_attempts: node.max_attempts,
        review_required: node.review_required,
        input: node.input.clone(),
        output_schema: node.output_schema.clone(),
        draft: node.draft,
        ..Default::default()
    }
}

/// Checks a plan task's own fields, context entries and steps, as creating it would.
fn check_node(req: &CreateTask, node: &PlanTask) -> Result<()> {
    task::validate_create(req)?;
    for c in &node.context {
        knowledge::check_context_input(&c.kind, &c.content)?;
    }
    for s in &node.steps {
        let (title, details) = s.parts();
        knowledge::check_step_input(title, details)?;
    }
    Ok(())
}

/// A failure of the plan's task `failing`, told in refs ([`task::in_refs`]): `ids` each ref
/// applied so far and its task, `more` other ids and refs.
fn in_refs(
    ctx: &mut Ctx<'_>,
    e: Error,
    ids: &HashMap<&str, String>,
    more: &[(&str, &str)],
    failing: &str,
) -> Result<Error> {
    let mut known: Vec<(&str, &str)> = ids.iter().map(|(r, id)| (id.as_str(), *r)).collect();
    known.extend_from_slice(more);
    task::in_refs(ctx, e, &known, failing)
}

/// Brings an existing task of the plan in line with the file: the fields it gives that
/// differ are updated, and new blockers added. What it asks and cannot be done is told in
/// `warnings`. Whether anything changed.
fn update_existing(
    ctx: &mut Ctx<'_>,
    existing: &Task,
    node: &PlanTask,
    blocked_by: &[String],
    warnings: &mut Vec<String>,
) -> Result<bool> {
    let in_ref = |e| with_ref(e, &node.reference);
    let (mut req, mut fields) = differences(existing, node).map_err(in_ref)?;
    if req.review_required == Some(false) {
        // Not a difference when the project requires review: the task keeps it.
        let project = ctx.tx.project(ctx.ws, &existing.project_id)?;
        if let Some(p) = project.filter(|p| p.review_required) {
            req.review_required = None;
            fields.retain(|f| *f != "review_required");
            warnings.push(task::review_not_waived(&p.name));
        }
    }
    let mut changed = false;
    let status = existing.status.as_str();
    if existing.status.is_terminal() {
        if !fields.is_empty() {
            warnings.push(format!(
                "{} not updated: the task has ended (status {status}) and keeps its fields",
                fields.join(", "),
            ));
        }
    } else if !fields.is_empty() {
        warnings.extend(
            task::update(ctx, &existing.id, req)
                .map_err(in_ref)?
                .warnings,
        );
        changed = true;
    }
    // A draft is published once its file no longer says draft; a published task stays so.
    if existing.status == Status::Draft && !node.draft {
        task::publish(ctx, &existing.id).map_err(in_ref)?;
        changed = true;
    } else if existing.status != Status::Draft && node.draft {
        warnings.push(format!(
            "not made a draft: the task is published (status {status}); draft is set when a \
             task is created"
        ));
    }
    if node.intent.is_some() && node.intent != existing.intent {
        warnings.push(
            "intent not updated: it is immutable once a task is created (record a changed \
             understanding as a context entry)"
                .into(),
        );
    }
    // Any edge from a blocker counts as the file's: one that `unblock` turned into
    // `relates_to` is a planner's override, which applying the file again must not undo.
    let have: Vec<String> = ctx
        .tx
        .deps_of(ctx.ws, &existing.id)?
        .into_iter()
        .map(|d| d.blocker_id)
        .collect();
    for b in blocked_by.iter().filter(|b| !have.contains(b)) {
        // As for fields: a task that has started or finished keeps what it had (a blocker
        // holds back only a task that has not started).
        if existing.status.is_unstarted() {
            graph::add_dep(ctx, b, &existing.id, DepKind::Blocks).map_err(in_ref)?;
            changed = true;
        } else {
            warnings.push(format!(
                "blocker {b} not added: the task has started (status {status}), and a blocker \
                 holds back only a task that has not"
            ));
        }
    }
    // Published, or given a blocker, behind one that failed: said as a create says it.
    let now = ctx.read_task(&existing.id).map_err(in_ref)?;
    let was = existing.blocked_reason;
    if now.blocked_reason == Some(BlockedReason::DependencyFailed) && was != now.blocked_reason {
        warnings.push(graph::dependency_failed_warning(ctx, &now)?);
    }
    if !node.context.is_empty() {
        let recorded: Vec<(String, String)> = ctx
            .tx
            .context_of(ctx.ws, &existing.id)?
            .into_iter()
            .map(|c| (c.kind, c.content))
            .collect();
        let wanted: Vec<(String, String)> = node
            .context
            .iter()
            .map(|c| (c.kind.clone(), c.content.clone()))
            .collect();
        let missing = unmatched(&wanted, &recorded);
        if missing > 0 {
            warnings.push(format!(
                "context not recorded ({missing} of the file's entries): a plan records \
                 context when it creates the task (add entries with note)"
            ));
        }
    }
    if !node.steps.is_empty() {
        let recorded: Vec<(String, Option<String>)> = ctx
            .tx
            .steps_of(ctx.ws, &existing.id)?
            .into_iter()
            .map(|s| (s.title, s.details))
            .collect();
        let wanted: Vec<(String, Option<String>)> = node
            .steps
            .iter()
            .map(|s| {
                let (title, details) = s.parts();
                (title.trim().to_string(), details.map(str::to_string))
            })
            .collect();
        let missing = unmatched(&wanted, &recorded);
        if missing > 0 {
            warnings.push(format!(
                "steps not recorded ({missing} of the file's steps): a plan records steps \
                 when it creates the task (add them with step add)"
            ));
        }
    }
    Ok(changed)
}

/// How many of `wanted` have no counterpart in `recorded`, each recorded item standing for
/// one wanted item at most (a file that lists an entry twice wants it twice).
fn unmatched<T: PartialEq>(wanted: &[T], recorded: &[T]) -> usize {
    let mut used = vec![false; recorded.len()];
    wanted
        .iter()
        .filter(|w| {
            let found = (0..recorded.len()).find(|&i| !used[i] && recorded[i] == **w);
            if let Some(i) = found {
                used[i] = true;
            }
            found.is_none()
        })
        .count()
}

/// The update that brings `existing` to what `node` gives (a field the file leaves out is
/// left as it is), and the names of the fields it changes.
fn differences(existing: &Task, node: &PlanTask) -> Result<(UpdateTask, Vec<&'static str>)> {
    let mut req = UpdateTask::default();
    let mut fields = Vec::new();
    if existing.title != node.title.trim() {
        req.title = Some(node.title.clone());
        fields.push("title");
    }
    if node.description.is_some() && existing.description != node.description {
        req.description = Some(node.description.clone());
        fields.push("description");
    }
    if node.plan.is_some() && existing.plan != node.plan {
        req.plan = Some(node.plan.clone());
        fields.push("plan");
    }
    if let Some(kind) = node.kind.as_ref().filter(|k| **k != existing.kind) {
        req.kind = Some(kind.clone());
        fields.push("type");
    }
    if let Some(p) = node.priority.filter(|p| *p != existing.priority) {
        req.priority = Some(p);
        fields.push("priority");
    }
    if node.due_at.is_some() && node.due_at != existing.due_at {
        req.due_at = Some(node.due_at);
        fields.push("due_at");
    }
    if let Some(labels) = &node.labels {
        let labels = super::check_tags("labels", labels)?;
        if existing.labels != labels {
            req.labels = Some(labels);
            fields.push("labels");
        }
    }
    if let Some(caps) = &node.required_capabilities {
        let caps = super::check_tags("required_capabilities", caps)?;
        if existing.required_capabilities != caps {
            req.required_capabilities = Some(caps);
            fields.push("required_capabilities");
        }
    }
    if let Some(paths) = &node.paths {
        let paths = super::scope::check_paths(paths)?;
        if existing.paths != paths {
            req.paths = Some(paths);
            fields.push("paths");
        }
    }
    // A key the file gives replaces the task's; a limit left out keeps the task's. (A limit
    // without its key is refused, as on the file's first apply: see `check_node`.)
    if let Some((key, _)) =
        super::concurrency::check(node.concurrency_key.as_deref(), node.concurrency_limit)?
    {
        if existing.concurrency_key.as_deref() != Some(key.as_str()) {
            req.concurrency_key = Some(Some(key));
            fields.push("concurrency_key");
        }
        if let Some(limit) = node
            .concurrency_limit
            .filter(|l| existing.concurrency_limit != Some(*l))
        {
            req.concurrency_limit = Some(limit);
            fields.push("concurrency_limit");
        }
    }
    if let Some(ttl) = node.lease_ttl.filter(|t| *t != existing.lease_ttl) {
        req.lease_ttl = Some(ttl);
        fields.push("lease_ttl");
    }
    if node.timeout.is_some() && node.timeout != existing.timeout {
        req.timeout = Some(node.timeout);
        fields.push("timeout");
    }
    if let Some(max) = node
        .max_attempts
        .filter(|m| *m != existing.retry_policy.max_attempts)
    {
        req.max_attempts = Some(max);
        fields.push("max_attempts");
    }
    if let Some(r) = node
        .review_required
        .filter(|r| *r != existing.review_required)
    {
        req.review_required = Some(r);
        fields.push("review_required");
    }
    if node.input.is_some() && node.input != existing.input {
        req.input = Some(node.input.clone());
        fields.push("input");
    }
    if node.output_schema.is_some() && node.output_schema != existing.output_schema {
        req.output_schema = Some(node.output_schema.clone());
        fields.push("output_schema");
    }
    Ok((req, fields))
}
