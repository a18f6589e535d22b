//! Integration tests that drive the real `baton` binary as separate processes against an
//! embedded store in a temporary data directory: the `--json` contract, error reporting
//! without side effects, plan idempotency, concurrent claimers, crash durability and
//! idempotency keys.

use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
const BATON: &str = env!("CARGO_BIN_EXE_baton");

/// Environment variables that would change what the binary does behind the test's back.
const BATON_ENV: [&str; 4] = [
    "BATON_DATA_DIR",
    "BATON_WORKSPACE",
    "BATON_ACTOR",
    "BATON_DURABILITY",
];

/// What one process did.
struct Ran {
    args: Vec<String>,
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn describe(&self) -> String {
        format!(
            "baton {:?}\nexit: {:?}\nstdout: {}\nstderr: {}",
            self.args, self.status, self.stdout, self.stderr
        )
    }
}

/// Parses stdout that must be exactly one JSON object on one line.
fn single_object(ran: &Ran) -> Value {
    let text = ran.stdout.trim_end_matches('\n');
    assert!(
        !text.is_empty() && !text.contains('\n'),
        "expected exactly one line of JSON on stdout\n{}",
        ran.describe()
    );
    // `from_str` refuses trailing characters, so this is one value and nothing else.
    let value: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e})\n{}", ran.describe()));
    assert!(
        value.is_object(),
        "stdout is not a JSON object\n{}",
        ran.describe()
    );
    value
}

/// A data directory with an initialized store, and helpers to drive `baton` on it.
struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    /// A fresh store, created with `baton init` (whose shape is checked here once).
    fn new() -> Store {
        let store = Store {
            dir: tempfile::tempdir().expect("temporary directory"),
        };
        let init = store.ok(&["init"]);
        let ws = &init["workspace"];
        assert!(
            ws["id"].as_str().is_some_and(|id| id.starts_with("ws_")),
            "init: {init}"
        );
        assert_eq!(ws["name"], "default", "init: {init}");
        assert!(init["data_dir"].is_string(), "init: {init}");
        assert!(store.db().exists(), "init did not create baton.db");
        store
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn db(&self) -> PathBuf {
        self.path().join("baton.db")
    }

    /// Writes a file into the data directory; returns its path.
    fn file(&self, name: &str, contents: &str) -> String {
        let path = self.path().join(name);
        std::fs::write(&path, contents).expect("write test file");
        path.display().to_string()
    }

    /// `baton --json --data-dir DIR ARGS...`, not yet run.
    fn command(&self, args: &[&str]) -> Command {
        self.human(&[&["--json"], args].concat())
    }

    /// `baton --data-dir DIR ARGS...` (output for a person unless ARGS say `--json`), not
    /// yet run.
    fn human(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BATON);
        cmd.arg("--data-dir")
            .arg(self.path())
            .args(args)
            .current_dir(self.path())
            .stdin(Stdio::null());
        for var in BATON_ENV {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Runs `baton --json ARGS` to completion.
    fn run(&self, args: &[&str]) -> Ran {
        let out = self
            .command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {BATON}: {e}"));
        Ran {
            args: args.iter().map(|s| s.to_string()).collect(),
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed: exit 0 and exactly one JSON object, not an error.
    fn ok(&self, args: &[&str]) -> Value {
        let ran = self.run(args);
        assert_eq!(ran.status, Some(0), "command failed\n{}", ran.describe());
        let value = single_object(&ran);
        assert!(
            value.get("error").is_none(),
            "success carries an error\n{}",
            ran.describe()
        );
        value
    }

    /// Runs a command that must fail with `code`: exit 1 and stdout exactly
    /// `{"error": {"code", "message", "hint", "retryable", "details"?}}`. Returns the error.
    fn fails(&self, args: &[&str], code: &str) -> Value {
        let ran = self.run(args);
        assert_eq!(
            ran.status,
            Some(1),
            "expected exit 1 with {code}\n{}",
            ran.describe()
        );
        let value = single_object(&ran);
        let top = value.as_object().expect("object");
        assert_eq!(
            top.keys().collect::<Vec<_>>(),
            vec!["error"],
            "an error response has exactly one key, error\n{}",
            ran.describe()
        );
        let error = &value["error"];
        assert_eq!(error["code"], code, "wrong error code\n{}", ran.describe());
        for field in ["message", "hint"] {
            assert!(
                error[field].as_str().is_some_and(|s| !s.trim().is_empty()),
                "error.{field} must be a non-empty string\n{}",
                ran.describe()
            );
        }
        assert!(
            error["retryable"].is_boolean(),
            "error.retryable must be a boolean\n{}",
            ran.describe()
        );
        error.clone()
    }

    /// As [`Store::fails`], and the event log is unchanged: the failure wrote nothing.
    fn fails_without_writing(&self, args: &[&str], code: &str) -> Value {
        let before = self.event_count();
        let error = self.fails(args, code);
        assert_eq!(
            self.event_count(),
            before,
            "a failed `baton {args:?}` ({code}) appended events"
        );
        assert_eq!(
            error["retryable"], false,
            "{code} is not retryable: {error}"
        );
        error
    }

    /// Runs a command that clap must refuse as a usage error (exit 2), writing nothing:
    /// with `--json` one `INVALID_INPUT` object on stdout, as every other error; for a
    /// person, clap's message on stderr.
    fn usage_error(&self, args: &[&str]) {
        let before = self.event_count();
        let ran = self.run(args);
        assert_eq!(
            ran.status,
            Some(2),
            "expected a usage error\n{}",
            ran.describe()
        );
        let error = &single_object(&ran)["error"];
        assert_eq!(error["code"], "INVALID_INPUT", "{}", ran.describe());
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            ran.describe()
        );
        let out = self
            .human(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {BATON}: {e}"));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            !out.stderr.is_empty() && out.stdout.is_empty(),
            "for a person, a usage error explains itself on stderr: {args:?}"
        );
        assert_eq!(self.event_count(), before, "a usage error appended events");
    }

    /// The whole event log, a page (`--limit 1000`) at a time.
    fn events(&self) -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        let mut after = 0u64;
        loop {
            let after_arg = after.to_string();
            let page = self.ok(&["events", "--after", &after_arg, "--limit", "1000"]);
            let events = page["events"].as_array().expect("events array").clone();
            let Some(last) = events.last() else { break };
            after = last["seq"].as_u64().expect("seq");
            all.extend(events);
        }
        all
    }

    fn event_count(&self) -> usize {
        self.events().len()
    }

    /// Creates a task from `task create` arguments (after `--title TITLE`); returns it.
    fn create(&self, title: &str, extra: &[&str]) -> Value {
        let mut args = vec!["task", "create", "--title", title];
        args.extend_from_slice(extra);
        task_of(&self.ok(&args))
    }

    fn get(&self, id: &str) -> Value {
        task_of(&self.ok(&["task", "get", id]))
    }

    /// Claims exactly one task for `agent`; returns (task, token).
    fn claim_one(&self, agent: &str, extra: &[&str]) -> (Value, String) {
        let mut args = vec!["claim", "--agent", agent];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        let claims = out["claims"].as_array().expect("claims array");
        assert_eq!(claims.len(), 1, "expected one claim: {out}");
        let claim = &claims[0];
        check_claim_shape(claim);
        let token = claim["lease"]["token"].as_str().expect("token").to_string();
        (claim["task"].clone(), token)
    }

    /// `replay --verify` must exit 0 and report the projections equal to the log.
    fn replay_verifies(&self) -> Value {
        let out = self.ok(&["replay", "--verify"]);
        let report = &out["replay"];
        assert_eq!(report["equal"], true, "replay differs: {out}");
        assert!(report["difference"].is_null(), "replay differs: {out}");
        report.clone()
    }
}

/// The task of a `{"task": {...}}` response, with its contract fields checked.
fn task_of(response: &Value) -> Value {
    let task = &response["task"];
    check_task_shape(task);
    task.clone()
}

fn check_task_shape(task: &Value) {
    assert!(
        task["id"].as_str().is_some_and(|id| id.starts_with("tsk_")),
        "task id: {task}"
    );
    assert!(task["status"].is_string(), "task status: {task}");
    assert!(task["version"].is_u64(), "task version: {task}");
    assert!(task["attempts"].is_u64(), "task attempts: {task}");
    assert!(task["priority"].is_i64(), "task priority: {task}");
    assert!(
        task.get("parent_id")
            .is_some_and(|p| p.is_null() || p.is_string()),
        "task parent_id: {task}"
    );
}

fn check_claim_shape(claim: &Value) {
    check_task_shape(&claim["task"]);
    assert_eq!(claim["task"]["status"], "claimed", "claim: {claim}");
    assert!(
        claim["run"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("run_")),
        "claim run: {claim}"
    );
    assert_eq!(
        claim["run"]["task_id"], claim["task"]["id"],
        "claim: {claim}"
    );
    let lease = &claim["lease"];
    assert!(
        lease["token"].as_str().is_some_and(|t| t.len() >= 16),
        "lease token: {claim}"
    );
    assert!(
        lease["epoch"].as_u64().is_some_and(|e| e >= 1),
        "lease epoch: {claim}"
    );
    assert!(lease["expires_at"].is_string(), "lease expiry: {claim}");
    assert_eq!(lease["epoch"], claim["task"]["epoch"], "claim: {claim}");
}

fn id_of(task: &Value) -> String {
    task["id"].as_str().expect("task id").to_string()
}

fn ids(tasks: &Value) -> Vec<String> {
    tasks
        .as_array()
        .expect("task array")
        .iter()
        .map(|t| {
            check_task_shape(t);
            id_of(t)
        })
        .collect()
}

/// The event log's sequence numbers run 1, 2, 3... without gaps or repeats.
fn assert_contiguous(events: &[Value]) {
    for (i, event) in events.iter().enumerate() {
        assert_eq!(
            event["seq"].as_u64(),
            Some(i as u64 + 1),
            "event #{i} has the wrong seq: {event}"
        );
        assert!(event["type"].is_string(), "event without a type: {event}");
    }
}

/// Contract shapes and the full agent loop, one `--json` call per command: init, create
/// (every flag), get, list (by parent, label, status), ready, draft → publish, cancel,
/// claim (nothing claimable, then a real claim), start, heartbeat, note (and a superseding
/// note), step add/done, complete (which releases the dependent), brief of the parent
/// (context, steps, children) and of the child, fail → retry → release, dep add/rm, plan
/// apply (JSON), events, and finally `replay --verify` exiting 0. The lease token is never
/// shown by any read. (`task update` has its own test below.)
#[test]
fn contract_shapes_and_full_agent_loop() {
    let s = Store::new();

    // Nothing to do yet: an empty list, not an error.
    assert_eq!(s.ok(&["claim", "--agent", "idle"]), json!({ "claims": [] }));

    let parent = s.create(
        "Parent epic",
        &[
            "--intent",
            "ship feature x",
            "--description",
            "the whole feature",
            "--plan",
            "core first, docs second",
            "--type",
            "epic",
            "--label",
            "feature-x",
            "--priority",
            "1",
        ],
    );
    let pid = id_of(&parent);
    assert_eq!(parent["status"], "ready");
    assert_eq!(parent["type"], "epic");
    assert_eq!(parent["intent"], "ship feature x");
    assert_eq!(parent["description"], "the whole feature");
    assert_eq!(parent["plan"], "core first, docs second");
    assert_eq!(parent["labels"], json!(["feature-x"]));
    assert_eq!(parent["priority"], 1);
    assert_eq!(parent["attempts"], 0);
    assert_eq!(parent["version"], 1);
    assert!(parent["parent_id"].is_null());

    let child = s.create(
        "Build the core",
        &[
            "--parent",
            &pid,
            "--capability",
            "rust",
            "--label",
            "core",
            "--priority",
            "10",
            "--lease-ttl",
            "30s",
            "--max-attempts",
            "2",
        ],
    );
    let cid = id_of(&child);
    assert_eq!(child["parent_id"], pid.as_str());
    assert_eq!(child["required_capabilities"], json!(["rust"]));
    assert_eq!(child["lease_ttl"], "30s");
    assert_eq!(child["retry_policy"]["max_attempts"], 2);
    assert_eq!(child["status"], "ready");

    let dependent = s.create(
        "Document the core",
        &["--parent", &pid, "--blocked-by", &cid],
    );
    let did = id_of(&dependent);
    assert_eq!(dependent["status"], "blocked");
    assert_eq!(dependent["blocked_reason"], "dependencies");

    // Draft → publish → cancel.
    let draft = s.create("Maybe later", &["--draft"]);
    let draft_id = id_of(&draft);
    assert_eq!(draft["status"], "draft");
    let published = task_of(&s.ok(&["task", "publish", &draft_id]));
    assert_eq!(published["status"], "ready");
    assert_eq!(published["version"], 2);
    let canceled = task_of(&s.ok(&["task", "cancel", &draft_id]));
    assert_eq!(canceled["status"], "canceled");

    // Reads.
    assert_eq!(s.get(&cid)["title"], "Build the core");
    let children: BTreeSet<String> = ids(&s.ok(&["task", "list", "--parent", &pid])["tasks"])
        .into_iter()
        .collect();
    assert_eq!(children, BTreeSet::from([cid.clone(), did.clone()]));
    assert_eq!(
        ids(&s.ok(&["task", "list", "--label", "core"])["tasks"]),
        vec![cid.clone()]
    );
    assert_eq!(
        ids(&s.ok(&["task", "list", "--status", "blocked"])["tasks"]),
        vec![did.clone()]
    );
    let ready = ids(&s.ok(&["ready"])["tasks"]);
    assert_eq!(
        ready.first(),
        Some(&cid),
        "highest priority first: {ready:?}"
    );
    assert!(
        !ready.contains(&pid),
        "a container with open children is not claimable"
    );
    assert!(!ready.contains(&did), "a blocked task is not ready");
    assert!(!ready.contains(&draft_id), "a canceled task is not ready");

    // Claim: the task needing `rust` goes to an agent that has it, highest priority first.
    let claimed = s.ok(&[
        "claim",
        "--agent",
        "worker-1",
        "--capability",
        "rust",
        "--count",
        "1",
        "--lease-ttl",
        "1m",
    ]);
    let claims = claimed["claims"].as_array().expect("claims");
    assert_eq!(claims.len(), 1, "{claimed}");
    check_claim_shape(&claims[0]);
    assert_eq!(claims[0]["task"]["id"], cid.as_str());
    assert_eq!(claims[0]["task"]["attempts"], 1);
    assert_eq!(claims[0]["run"]["attempt"], 1);
    assert_eq!(claims[0]["lease"]["epoch"], 1);
    let token = claims[0]["lease"]["token"].as_str().unwrap().to_string();

    // The token appears in no read.
    let got = s.run(&["task", "get", &cid]);
    assert_eq!(got.status, Some(0));
    assert!(
        !got.stdout.contains(&token),
        "task get leaks the lease token"
    );
    let got = single_object(&got);
    assert_eq!(got["task"]["status"], "claimed");
    assert_eq!(got["task"]["lease"]["epoch"], 1);
    for read in [
        vec!["task", "list"],
        vec!["brief", cid.as_str()],
        vec!["events", "--limit", "1000"],
    ] {
        let ran = s.run(&read);
        assert_eq!(ran.status, Some(0), "{}", ran.describe());
        assert!(
            !ran.stdout.contains(&token),
            "`baton {read:?}` leaks the lease token"
        );
    }

    let started = task_of(&s.ok(&["start", &cid, "--lease", &token]));
    assert_eq!(started["status"], "in_progress");

    let beat = s.ok(&[
        "heartbeat",
        &cid,
        "--lease",
        &token,
        "--progress",
        "0.5",
        "--message",
        "halfway",
    ]);
    assert_eq!(task_of(&beat)["status"], "in_progress");
    assert!(beat["expires_at"].is_string(), "{beat}");
    assert!(beat["signals"].is_array(), "{beat}");

    let note = s.ok(&[
        "note",
        &cid,
        "--type",
        "decision",
        "--content",
        "Use SQLite",
    ]);
    let ctx1 = note["context"]["id"]
        .as_str()
        .expect("context id")
        .to_string();
    assert!(ctx1.starts_with("ctx_"), "{note}");
    assert_eq!(note["context"]["type"], "decision");
    assert_eq!(note["context"]["task_id"], cid.as_str());
    let note2 = s.ok(&[
        "note",
        &cid,
        "--type",
        "decision",
        "--content",
        "Use SQLite in WAL mode",
        "--supersedes",
        &ctx1,
    ]);
    assert_eq!(note2["context"]["supersedes"], ctx1.as_str());

    let step = s.ok(&[
        "step",
        "add",
        &cid,
        "--title",
        "Write the schema",
        "--details",
        "tasks, events",
    ]);
    let step_id = step["step"]["id"].as_str().expect("step id").to_string();
    assert!(step_id.starts_with("stp_"), "{step}");
    assert_eq!(step["step"]["position"], 1);
    assert_eq!(step["step"]["done"], false);
    let done = s.ok(&["step", "done", &cid, &step_id, "--notes", "schema v1"]);
    assert_eq!(done["step"]["done"], true);
    assert_eq!(done["step"]["notes"], "schema v1");

    let completed = task_of(&s.ok(&[
        "complete",
        &cid,
        "--lease",
        &token,
        "--output",
        r#"{"files": 3}"#,
    ]));
    assert_eq!(completed["status"], "done");
    assert_eq!(completed["output"], json!({ "files": 3 }));
    assert!(completed["lease"].is_null());

    // The dependent was released in the same commit.
    let released = s.get(&did);
    assert_eq!(released["status"], "ready");
    assert!(released["blocked_reason"].is_null());
    assert!(
        s.events()
            .iter()
            .any(|e| e["type"] == "task.released" && e["task_id"] == did.as_str()),
        "no task.released event for the dependent"
    );

    // The parent's brief shows its own context and steps, and its children.
    s.ok(&[
        "note",
        &pid,
        "--type",
        "discovery",
        "--content",
        "The core is reusable",
    ]);
    s.ok(&["step", "add", &pid, "--title", "Review the design"]);
    s.ok(&["step", "add", &pid, "--title", "Merge"]);
    // A step is named by its id or by the position a brief shows.
    let merged = s.ok(&["step", "done", &pid, "2"]);
    assert_eq!(
        (
            merged["step"]["title"].clone(),
            merged["step"]["done"].clone()
        ),
        (json!("Merge"), json!(true))
    );
    let missing = s.fails_without_writing(&["step", "done", &pid, "9"], "NOT_FOUND");
    assert!(
        missing["hint"].as_str().unwrap().contains("position"),
        "{missing}"
    );
    let brief = s.ok(&["brief", &pid])["brief"].clone();
    assert_eq!(brief["task"]["id"], pid.as_str());
    assert_eq!(brief["task"]["intent"], "ship feature x");
    assert_eq!(brief["truncated"], false);
    let contents: Vec<&str> = brief["context"]
        .as_array()
        .expect("context")
        .iter()
        .filter_map(|c| c["content"].as_str())
        .collect();
    assert_eq!(contents, vec!["The core is reusable"], "{brief}");
    assert_eq!(brief["steps"][0]["title"], "Review the design", "{brief}");
    assert_eq!(brief["steps"][0]["done"], false, "{brief}");
    let kids: HashMap<String, String> = brief["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(kids.get(&cid).map(String::as_str), Some("done"), "{brief}");
    assert_eq!(kids.get(&did).map(String::as_str), Some("ready"), "{brief}");

    // The child's brief: only the live (superseding) decision, the done step, the run.
    let brief = s.ok(&["brief", &cid])["brief"].clone();
    assert_eq!(brief["parent"]["id"], pid.as_str(), "{brief}");
    let context = brief["context"].as_array().expect("context");
    assert_eq!(context.len(), 1, "superseded entries are hidden: {brief}");
    assert_eq!(context[0]["content"], "Use SQLite in WAL mode");
    assert_eq!(brief["steps"][0]["done"], true, "{brief}");
    assert_eq!(brief["runs"][0]["status"], "completed", "{brief}");
    assert!(
        brief["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .any(|d| d["id"] == did.as_str() && d["relation"] == "blocks"),
        "{brief}"
    );

    // Fail (no retry) → retry → claim again → release.
    let flaky = s.create(
        "Flaky job",
        &[
            "--capability",
            "flaky",
            "--priority",
            "100",
            "--max-attempts",
            "3",
        ],
    );
    let fid = id_of(&flaky);
    let (task, tok) = s.claim_one("worker-2", &["--capability", "flaky"]);
    assert_eq!(id_of(&task), fid);
    let failed = task_of(&s.ok(&[
        "fail",
        &fid,
        "--lease",
        &tok,
        "--error",
        "segfault",
        "--class",
        "transient",
        "--no-retry",
    ]));
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["reason"], "segfault");
    assert_eq!(failed["attempts"], 1);
    let retried = task_of(&s.ok(&["task", "retry", &fid]));
    assert_eq!(retried["status"], "ready");
    assert_eq!(retried["attempts"], 0);
    let (task, tok2) = s.claim_one("worker-2", &["--capability", "flaky"]);
    assert_eq!(id_of(&task), fid);
    assert_eq!(task["epoch"], 2, "a new claim is a new fencing epoch");
    assert_ne!(tok, tok2);
    let given_back = task_of(&s.ok(&["release", &fid, "--lease", &tok2]));
    assert_eq!(given_back["status"], "ready");
    assert_eq!(
        given_back["attempts"], 0,
        "a release is not a failed attempt"
    );
    assert!(given_back["lease"].is_null());

    // dep add / dep rm.
    let x = id_of(&s.create("X", &[]));
    let y = id_of(&s.create("Y", &[]));
    let added = s.ok(&["dep", "add", &x, &y]);
    assert_eq!(added["dependency"]["blocker_id"], x.as_str());
    assert_eq!(added["dependency"]["blocked_id"], y.as_str());
    assert_eq!(added["dependency"]["kind"], "blocks");
    assert_eq!(task_of(&added)["id"], y.as_str());
    assert_eq!(added["task"]["status"], "blocked");
    let removed = s.ok(&["dep", "rm", &x, &y]);
    assert_eq!(task_of(&removed)["status"], "ready");

    // A plan as JSON.
    let plan = s.file(
        "mini.json",
        &json!({
            "name": "mini",
            "tasks": [
                { "ref": "a", "title": "Plan A" },
                { "ref": "b", "title": "Plan B", "blocked_by": ["a"] }
            ]
        })
        .to_string(),
    );
    let applied = s.ok(&["plan", "apply", &plan]);
    assert_eq!(applied["created"], 2, "{applied}");
    assert_eq!(applied["updated"], 0, "{applied}");
    assert_eq!(applied["unchanged"], 0, "{applied}");
    assert_eq!(applied["tasks"][0]["ref"], "a");
    assert_eq!(applied["tasks"][0]["result"], "created");
    assert_eq!(applied["tasks"][1]["task"]["status"], "blocked");

    // The event log: contiguous, typed, pageable.
    let events = s.events();
    assert_contiguous(&events);
    let types: HashSet<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    for kind in [
        "workspace.created",
        "task.created",
        "task.published",
        "task.canceled",
        "task.claimed",
        "task.started",
        "task.heartbeat",
        "context.added",
        "step.added",
        "step.done",
        "task.completed",
        "task.released",
        "task.failed",
        "task.retried",
        "task.lease_released",
        "dependency.added",
        "dependency.removed",
    ] {
        assert!(types.contains(kind), "no {kind} event among {types:?}");
    }
    let page = s.ok(&["events", "--after", "5", "--limit", "2"]);
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![6, 7]);

    let report = s.replay_verifies();
    assert_eq!(report["events"].as_u64(), Some(events.len() as u64));
}

/// Errors: every failure prints exactly one `{"error": {code, message, hint, retryable}}`
/// object with exit status 1 (usage errors exit 2), and none of them writes anything: the
/// event count is the same before and after. Covers NOT_FOUND, INVALID_DURATION, malformed
/// JSON (INVALID_INPUT), TOO_LARGE, CYCLE (with its path), malformed plans (INVALID_PLAN or
/// CYCLE), INVALID_TRANSITION, stale and forged lease tokens (LEASE_LOST) and clap usage
/// errors.
#[test]
fn errors_are_reported_as_one_json_object_and_write_nothing() {
    let s = Store::new();
    let a = id_of(&s.create("A", &["--priority", "5"]));
    let b = id_of(&s.create("B", &[]));

    // NOT_FOUND, on reads and on writes.
    let e = s.fails_without_writing(&["task", "get", "tsk_doesnotexist"], "NOT_FOUND");
    assert_eq!(e["details"]["id"], "tsk_doesnotexist", "{e}");
    s.fails_without_writing(&["task", "cancel", "tsk_doesnotexist"], "NOT_FOUND");
    s.fails_without_writing(&["dep", "add", &a, "tsk_doesnotexist"], "NOT_FOUND");
    s.fails_without_writing(
        &[
            "task", "create", "--title", "orphan", "--parent", "tsk_nope",
        ],
        "NOT_FOUND",
    );
    s.fails_without_writing(&["brief", "tsk_doesnotexist"], "NOT_FOUND");

    // INVALID_DURATION.
    s.fails_without_writing(
        &["task", "create", "--title", "X", "--lease-ttl", "5x"],
        "INVALID_DURATION",
    );
    s.fails_without_writing(
        &["claim", "--agent", "w9", "--lease-ttl", "5x"],
        "INVALID_DURATION",
    );

    // TOO_LARGE: the limit is 1000 bytes of title.
    let huge = "t".repeat(1001);
    let e = s.fails_without_writing(&["task", "create", "--title", &huge], "TOO_LARGE");
    assert!(e["message"].as_str().unwrap().contains("1001"), "{e}");

    // INVALID_INPUT for an unknown status filter and a bad context type.
    s.fails_without_writing(&["task", "list", "--status", "sleeping"], "INVALID_INPUT");
    s.fails_without_writing(
        &["note", &a, "--type", "gossip", "--content", "c"],
        "INVALID_INPUT",
    );

    // INVALID_TRANSITION names the current status and what is allowed.
    let e = s.fails_without_writing(&["task", "publish", &a], "INVALID_TRANSITION");
    assert_eq!(e["details"]["status"], "ready", "{e}");
    assert!(e["details"]["allowed"].is_array(), "{e}");

    // Under a lease: malformed --output, forged and stale tokens.
    let (task, token) = s.claim_one("w1", &[]);
    assert_eq!(id_of(&task), a, "priority 5 is claimed first");
    s.fails_without_writing(
        &["complete", &a, "--lease", &token, "--output", "{not json"],
        "INVALID_INPUT",
    );
    assert_eq!(
        s.get(&a)["status"],
        "claimed",
        "a refused complete changes nothing"
    );
    let e = s.fails_without_writing(&["heartbeat", &a, "--lease", "lse_forged"], "LEASE_LOST");
    assert_eq!(e["details"]["status"], "claimed", "{e}");
    s.ok(&["release", &a, "--lease", &token]);
    for args in [
        vec!["heartbeat", a.as_str(), "--lease", token.as_str()],
        vec!["complete", a.as_str(), "--lease", token.as_str()],
        vec!["start", a.as_str(), "--lease", token.as_str()],
        vec![
            "fail",
            a.as_str(),
            "--lease",
            token.as_str(),
            "--error",
            "x",
        ],
    ] {
        s.fails_without_writing(&args, "LEASE_LOST");
    }
    // A newer claim supersedes the old token for good.
    let (task, token2) = s.claim_one("w2", &[]);
    assert_eq!(id_of(&task), a);
    s.fails_without_writing(&["complete", &a, "--lease", &token], "LEASE_LOST");
    s.ok(&["complete", &a, "--lease", &token2]);

    // CYCLE, with the path of the cycle.
    let c = id_of(&s.create("C", &[]));
    let d = id_of(&s.create("D", &[]));
    let e2 = id_of(&s.create("E", &[]));
    s.ok(&["dep", "add", &c, &d]);
    s.ok(&["dep", "add", &d, &e2]);
    let e = s.fails_without_writing(&["dep", "add", &e2, &c], "CYCLE");
    let path: Vec<&str> = e["details"]["path"]
        .as_array()
        .unwrap_or_else(|| panic!("CYCLE without details.path: {e}"))
        .iter()
        .map(|p| p.as_str().expect("path entries are ids"))
        .collect();
    assert!(path.len() >= 4, "{e}");
    assert_eq!(path.first(), path.last(), "a cycle's path is closed: {e}");
    for id in [&c, &d, &e2] {
        assert!(path.contains(&id.as_str()), "{id} missing from path: {e}");
    }
    let e = s.fails_without_writing(&["dep", "add", &b, &b], "CYCLE");
    assert!(e["details"]["path"].is_array(), "{e}");

    // Malformed plans: nothing of them is applied.
    let bad_plans: [(&str, &str, &str); 10] = [
        ("invalid-yaml.yaml", "tasks: [\n  - ref: a\n   title: : x\n", "INVALID_PLAN"),
        ("invalid-json.json", "{\"tasks\": [{\"ref\": \"a\",", "INVALID_PLAN"),
        (
            "unknown-field.yaml",
            "tasks:\n  - ref: a\n    title: A\n    colour: red\n",
            "INVALID_PLAN",
        ),
        (
            "unknown-top-field.yaml",
            "owner: me\ntasks:\n  - ref: a\n    title: A\n",
            "INVALID_PLAN",
        ),
        (
            "duplicate-ref.yaml",
            "tasks:\n  - ref: a\n    title: A\n    children:\n      - ref: a\n        title: A again\n",
            "INVALID_PLAN",
        ),
        (
            "unknown-blocker.yaml",
            "tasks:\n  - ref: a\n    title: A\n  - ref: b\n    title: B\n    blocked_by: [nope]\n",
            "INVALID_PLAN",
        ),
        (
            "ref-cycle.yaml",
            "tasks:\n  - ref: a\n    title: A\n    blocked_by: [c]\n  - ref: b\n    title: B\n    blocked_by: [a]\n  - ref: c\n    title: C\n    blocked_by: [b]\n",
            "CYCLE",
        ),
        (
            "parent-waits-on-child.yaml",
            "tasks:\n  - ref: p\n    title: P\n    blocked_by: [k]\n    children:\n      - ref: k\n        title: K\n",
            "CYCLE",
        ),
        ("no-tasks.yaml", "name: empty\ntasks: []\n", "INVALID_PLAN"),
        (
            "bad-ref.yaml",
            "tasks:\n  - ref: \"has space\"\n    title: A\n",
            "INVALID_PLAN",
        ),
    ];
    let tasks_before = s.ok(&["task", "list", "--limit", "1000"])["tasks"]
        .as_array()
        .unwrap()
        .len();
    for (name, text, code) in bad_plans {
        let file = s.file(name, text);
        let e = s.fails_without_writing(&["plan", "apply", &file], code);
        if code == "CYCLE" {
            let path = e["details"]["path"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: CYCLE without details.path: {e}"));
            assert!(path.len() >= 2, "{name}: {e}");
            assert_eq!(path.first(), path.last(), "{name}: {e}");
        }
    }
    let missing = s.path().join("no-such-plan.yaml").display().to_string();
    s.fails_without_writing(&["plan", "apply", &missing], "INVALID_PLAN");
    let tasks_after = s.ok(&["task", "list", "--limit", "1000"])["tasks"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(tasks_before, tasks_after, "a refused plan created tasks");

    // Usage errors: clap exits 2 and nothing runs.
    s.usage_error(&["task", "create", "--title", "X", "--bogus"]);
    s.usage_error(&["task", "create"]);
    s.usage_error(&["task", "create", "--title", "X", "--priority", "high"]);
    s.usage_error(&["frobnicate"]);
    s.usage_error(&["claim"]);
    // A command without its subcommand says so (clap would render the command's help,
    // whose first line is only its description).
    s.usage_error(&["task"]);
    let ran = s.run(&["task"]);
    let message = single_object(&ran)["error"]["message"].to_string();
    assert!(
        message.contains("a subcommand or arguments are required: baton task"),
        "{message}"
    );
    // clap's suggestion leads the hint.
    s.usage_error(&["tsak", "list"]);
    let hint = single_object(&s.run(&["tsak", "list"]))["error"]["hint"].to_string();
    assert!(
        hint.contains("a similar subcommand exists: 'task'"),
        "{hint}"
    );

    // Found by probing the command line: each is refused as bad input, not retryable.
    s.fails_without_writing(
        &["task", "create", "--title", "evil\u{1b}[2J\nfake-line"],
        "INVALID_INPUT",
    );
    // Lines to whatever splits text the Unicode way, or reordered on screen.
    for forged in ["a\u{2028}b", "a\u{2029}b", "a\u{202E}b", "a\u{2066}b"] {
        s.fails_without_writing(&["task", "create", "--title", forged], "INVALID_INPUT");
    }
    s.fails_without_writing(
        &["key", "create", "--role", "worker", "--agent", " x"],
        "INVALID_INPUT",
    );
    s.fails_without_writing(
        &["--as", "", "task", "create", "--title", "x"],
        "INVALID_INPUT",
    );
    s.fails_without_writing(
        &["--as", "x\ny", "task", "create", "--title", "x"],
        "INVALID_INPUT",
    );
    // A claim's agent is told as the agent, not as the actor it would be recorded as.
    let err = s.fails_without_writing(&["claim", "--agent", ""], "INVALID_INPUT");
    assert!(
        err["message"].as_str().unwrap().starts_with("agent"),
        "{err}"
    );
    s.fails_without_writing(
        &[
            "--idempotency-key",
            "a\nb",
            "task",
            "create",
            "--title",
            "x",
        ],
        "INVALID_INPUT",
    );
    s.fails_without_writing(&["--server", "notaurl", "task", "list"], "INVALID_INPUT");
    s.fails_without_writing(&["demo", "--workers", "0"], "INVALID_INPUT");
    s.fails_without_writing(&["events", "--after", "999999"], "INVALID_INPUT");
    // A data directory that is a file, or that holds a file that is no database.
    let file = s.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let junk = s.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("baton.db"), "not a database at all").unwrap();
    for (dir, named) in [(&file, "not-a-dir"), (&junk, "junk")] {
        let out = Command::new(BATON)
            .args(["--json", "--data-dir"])
            .arg(dir)
            .args(["task", "list"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
        let e = &answer["error"];
        assert_eq!(
            (&e["code"], &e["retryable"]),
            (&json!("INVALID_INPUT"), &json!(false)),
            "{e}"
        );
        assert!(e["message"].as_str().unwrap().contains(named), "{e}");
    }

    s.replay_verifies();
}

/// `plan apply -` reads the plan from standard input.
#[test]
fn plan_apply_reads_standard_input() {
    let s = Store::new();
    let mut child = s
        .command(&["plan", "apply", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"name: piped\ntasks:\n  - ref: a\n    title: from stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let applied: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(applied["created"], 1, "{applied}");
    assert_eq!(
        applied["tasks"][0]["task"]["title"], "from stdin",
        "{applied}"
    );
}

/// Plan idempotency: a YAML plan with a parent, children, `blocked_by` between them and on
/// the parent, context and steps is applied once (everything created, dependency-ordered
/// tasks blocked, context and steps recorded), then again from the same file: the second
/// result reports created 0 and every task unchanged, with the same ids, and the event log
/// does not grow. Working the graph then releases each blocked task only once its blockers
/// are done, and a third apply after all that still changes nothing.
/// The example of docs/plans.md applies as it is printed, with every field it shows; a
/// file whose task breaks a rule is refused whether that task exists already or not.
#[test]
fn the_documented_plan_applies_and_reapplies_are_checked() {
    let s = Store::new();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/plans.md"))
        .expect("docs/plans.md");
    let example = doc
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a yaml block");
    let plan = s.file("documented.yaml", example);
    let out = s.ok(&["plan", "apply", &plan]);
    assert_eq!(out["created"], 3, "{out}");
    let first = &out["tasks"][0]["task"];
    assert_eq!(first["timeout"], "2h", "{first}");
    assert_eq!(first["retry_policy"]["max_attempts"], 3);
    assert_eq!(first["paths"], json!(["docs/requirements/**"]));
    assert_eq!(
        (&first["concurrency_key"], &first["concurrency_limit"]),
        (&json!("area:docs"), &json!(1))
    );
    let again = s.ok(&["plan", "apply", &plan]);
    assert_eq!(
        (again["created"].clone(), again["unchanged"].clone()),
        (json!(0), json!(3))
    );
    let raised = s.file(
        "raised.yaml",
        &example.replace("concurrency_limit: 1 ", "concurrency_limit: 2 "),
    );
    let out = s.ok(&["plan", "apply", &raised]);
    assert_eq!(out["updated"], 1, "{out}");
    assert_eq!(out["tasks"][0]["task"]["concurrency_limit"], 2, "{out}");

    // The same file with a rule broken on a task that exists: refused, nothing written.
    let broken = s.file(
        "broken.yaml",
        &example.replace("max_attempts: 3", "max_attempts: 0"),
    );
    let err = s.fails_without_writing(&["plan", "apply", &broken], "INVALID_INPUT");
    assert!(
        err["message"].as_str().unwrap().contains("requirements"),
        "{err}"
    );
}

#[test]
fn plan_apply_is_idempotent_and_orders_by_dependencies() {
    let s = Store::new();
    let plan = s.file(
        "release.yaml",
        r#"name: release
tasks:
  - ref: epic
    title: Ship v1
    type: epic
    intent: Get v1 into users' hands
    context:
      - type: decision
        content: Ship behind a feature flag
    steps:
      - Write the changelog
      - title: Tag the release
        details: git tag v1.0.0
    children:
      - ref: build
        title: Build artifacts
        priority: 5
        labels: [ci]
        steps: [Compile, Package]
      - ref: test
        title: Run the test suite
        priority: 5
        blocked_by: [build]
        context:
          - type: note
            content: test_network is known to be flaky
      - ref: deploy
        title: Deploy
        priority: 5
        blocked_by: [build, test]
  - ref: announce
    title: Announce the release
    blocked_by: [epic]
"#,
    );

    let first = s.ok(&["plan", "apply", &plan]);
    assert_eq!(first["created"], 5, "{first}");
    assert_eq!(first["updated"], 0, "{first}");
    assert_eq!(first["unchanged"], 0, "{first}");
    let mut by_ref: HashMap<String, Value> = HashMap::new();
    for entry in first["tasks"].as_array().expect("tasks") {
        assert_eq!(entry["result"], "created", "{entry}");
        check_task_shape(&entry["task"]);
        by_ref.insert(
            entry["ref"].as_str().unwrap().to_string(),
            entry["task"].clone(),
        );
    }
    let id = |r: &str| id_of(&by_ref[r]);
    let status = |r: &str| s.get(&id(r))["status"].as_str().unwrap().to_string();
    assert_eq!(by_ref.len(), 5);
    for child in ["build", "test", "deploy"] {
        assert_eq!(by_ref[child]["parent_id"], id("epic").as_str(), "{child}");
    }
    assert!(by_ref["epic"]["parent_id"].is_null());
    assert_eq!(status("epic"), "ready");
    assert_eq!(status("build"), "ready");
    for blocked in ["test", "deploy", "announce"] {
        assert_eq!(status(blocked), "blocked", "{blocked}");
        assert_eq!(s.get(&id(blocked))["blocked_reason"], "dependencies");
    }

    let brief = s.ok(&["brief", &id("epic")])["brief"].clone();
    assert_eq!(brief["task"]["intent"], "Get v1 into users' hands");
    assert_eq!(brief["context"][0]["content"], "Ship behind a feature flag");
    let steps: Vec<(&str, &Value)> = brief["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|st| (st["title"].as_str().unwrap(), &st["details"]))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("Write the changelog", &Value::Null),
            ("Tag the release", &json!("git tag v1.0.0")),
        ]
    );
    assert_eq!(
        brief["children"].as_array().map(Vec::len),
        Some(3),
        "{brief}"
    );
    let brief = s.ok(&["brief", &id("test")])["brief"].clone();
    assert_eq!(brief["context"][0]["type"], "note", "{brief}");
    assert_eq!(brief["steps"], json!([]), "{brief}");
    let brief = s.ok(&["brief", &id("build")])["brief"].clone();
    assert_eq!(brief["steps"].as_array().map(Vec::len), Some(2), "{brief}");

    // Same file again: nothing changes, nothing is written.
    let check_unchanged = |label: &str| {
        let before = s.event_count();
        let again = s.ok(&["plan", "apply", &plan]);
        assert_eq!(again["created"], 0, "{label}: {again}");
        assert_eq!(again["updated"], 0, "{label}: {again}");
        assert_eq!(again["unchanged"], 5, "{label}: {again}");
        for entry in again["tasks"].as_array().expect("tasks") {
            let r = entry["ref"].as_str().unwrap();
            assert_eq!(entry["result"], "unchanged", "{label}: {entry}");
            assert_eq!(id_of(&entry["task"]), id(r), "{label}: {r} got a new id");
        }
        assert_eq!(s.event_count(), before, "{label}: re-applying wrote events");
    };
    check_unchanged("second apply");
    assert_eq!(
        s.ok(&["task", "list", "--limit", "1000"])["tasks"]
            .as_array()
            .map(Vec::len),
        Some(5),
        "re-applying created tasks"
    );

    // Work the graph: priority 5 children first, each released by its last blocker.
    let work = |expected: &str| {
        let (task, token) = s.claim_one("builder", &[]);
        assert_eq!(id_of(&task), id(expected), "expected to claim {expected}");
        let done = task_of(&s.ok(&["complete", &id(expected), "--lease", &token]));
        assert_eq!(done["status"], "done", "{expected}");
    };
    work("build");
    assert_eq!(status("test"), "ready");
    assert_eq!(status("deploy"), "blocked", "deploy still waits on test");
    assert_eq!(status("announce"), "blocked");
    work("test");
    assert_eq!(status("deploy"), "ready");
    assert_eq!(status("announce"), "blocked", "announce waits on the epic");
    work("deploy");
    work("epic");
    assert_eq!(status("announce"), "ready");
    work("announce");
    assert_eq!(
        s.ok(&["claim", "--agent", "builder"]),
        json!({ "claims": [] })
    );

    check_unchanged("apply after the work is done");
    s.replay_verifies();
}

/// Race with real processes: 40 tasks, then 8 `baton claim --agent wN --count 3` processes
/// started together against the same data directory, each claiming again until it gets an
/// empty list. Every task is claimed exactly once across all processes (no task twice,
/// none missed), every claim is a first attempt at epoch 1, and `replay --verify` passes.
#[test]
fn concurrent_claim_processes_claim_each_task_exactly_once() {
    let s = Store::new();
    let created: BTreeSet<String> = (0..40)
        .map(|i| id_of(&s.create(&format!("job {i}"), &[])))
        .collect();
    assert_eq!(created.len(), 40);

    const WORKERS: usize = 8;
    let barrier = Barrier::new(WORKERS);
    let claimed: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for w in 0..WORKERS {
            let (s, barrier, claimed) = (&s, &barrier, &claimed);
            scope.spawn(move || {
                let agent = format!("w{w}");
                barrier.wait();
                for _ in 0..50 {
                    let out = s.ok(&["claim", "--agent", &agent, "--count", "3"]);
                    let claims = out["claims"].as_array().expect("claims").clone();
                    assert!(claims.len() <= 3, "more than --count: {out}");
                    if claims.is_empty() {
                        return;
                    }
                    let mut all = claimed.lock().unwrap();
                    for claim in &claims {
                        check_claim_shape(claim);
                        assert_eq!(claim["lease"]["epoch"], 1, "{claim}");
                        assert_eq!(claim["task"]["attempts"], 1, "{claim}");
                        all.push((id_of(&claim["task"]), agent.clone()));
                    }
                }
                panic!("{agent} never saw an empty claim list");
            });
        }
    });

    let claimed = claimed.into_inner().unwrap();
    let mut times: HashMap<&str, Vec<&str>> = HashMap::new();
    for (task, agent) in &claimed {
        times.entry(task).or_default().push(agent);
    }
    let twice: Vec<_> = times.iter().filter(|(_, a)| a.len() > 1).collect();
    assert!(twice.is_empty(), "claimed more than once: {twice:?}");
    let got: BTreeSet<String> = claimed.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(got, created, "not every task was claimed");
    assert_eq!(claimed.len(), 40);

    // The store agrees: every task claimed, once, by the agent that was told so.
    let listed = s.ok(&["task", "list", "--status", "claimed", "--limit", "1000"]);
    assert_eq!(listed["tasks"].as_array().map(Vec::len), Some(40));
    assert_eq!(s.ok(&["ready"])["tasks"], json!([]));
    let events = s.events();
    assert_contiguous(&events);
    let claim_events: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "task.claimed")
        .collect();
    assert_eq!(claim_events.len(), 40);
    s.replay_verifies();
}

/// Crash: `baton stress --count 100000` prints each task id only once its commit is
/// durable. Read about 300 acknowledged ids, SIGKILL the process mid-stream, and then every
/// acknowledged id must be readable with `task get`, `replay --verify` must pass, the event
/// log must run 1..N without gaps, at most one commit may be unacknowledged, and the store
/// must still accept writes.
#[test]
fn acknowledged_tasks_survive_sigkill() {
    let s = Store::new();
    let mut child = s
        .human(&["stress", "--count", "100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn baton stress");
    let stdout = child.stdout.take().expect("stdout");
    let (lines, received) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = std::io::BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match stdout.read_line(&mut line) {
                // Only whole lines are acknowledgements.
                Ok(n) if n > 0 && line.ends_with('\n') => {
                    if lines.send(line.trim_end().to_string()).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    });

    let mut acked: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.len() < 300 {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(id) => acked.push(id),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("stress stalled after {} ids: {e:?}", acked.len());
            }
        }
    }
    child.kill().expect("SIGKILL stress");
    let status = child.wait().expect("reap stress");
    assert!(
        !status.success(),
        "stress was killed, not finished: {status}"
    );
    // Lines already in the pipe were acknowledged too.
    acked.extend(received.iter());
    reader.join().expect("reader thread");

    for id in &acked {
        assert!(
            id.starts_with("tsk_") && id.len() > 4 && !id.contains(' '),
            "not a task id: {id:?}"
        );
    }
    let unique: HashSet<&String> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len(), "an id was acknowledged twice");

    // Every acknowledged task is there; reads run on two threads to keep this quick.
    std::thread::scope(|scope| {
        for half in acked.chunks(acked.len().div_ceil(2)) {
            let s = &s;
            scope.spawn(move || {
                for id in half {
                    let task = s.get(id);
                    assert_eq!(task["id"], id.as_str());
                    assert_eq!(task["status"], "ready");
                }
            });
        }
    });

    s.replay_verifies();
    let events = s.events();
    assert_contiguous(&events);
    let created: HashSet<&str> = events
        .iter()
        .filter(|e| e["type"] == "task.created")
        .filter_map(|e| e["task_id"].as_str())
        .collect();
    for id in &acked {
        assert!(
            created.contains(id.as_str()),
            "{id} has no task.created event"
        );
    }
    assert!(
        created.len() - acked.len() <= 1,
        "{} tasks committed but only {} acknowledged",
        created.len(),
        acked.len()
    );

    // The store is still usable after the crash.
    let after = s.create("after the crash", &[]);
    assert_eq!(after["status"], "ready");
    let events = s.events();
    assert_contiguous(&events);
    s.replay_verifies();
}

/// Idempotency keys: repeating `--idempotency-key K task create` returns the same task and
/// writes no new event; the same key with a different title is IDEMPOTENCY_MISMATCH and
/// writes nothing; a key reused for another operation is a mismatch too. Keys also make
/// claims and lease operations safe to repeat: the repeat returns the first response.
#[test]
fn idempotency_keys_return_the_first_response() {
    let s = Store::new();
    let create = |title: &str, key: &str| {
        s.run(&["--idempotency-key", key, "task", "create", "--title", title])
    };

    let before = s.event_count();
    let first = create("Write docs", "key-1");
    assert_eq!(first.status, Some(0), "{}", first.describe());
    let first = task_of(&single_object(&first));
    let after_first = s.event_count();
    assert_eq!(after_first, before + 1, "one create, one event");
    assert_eq!(first["idempotency_key"], "key-1");

    for _ in 0..2 {
        let again = create("Write docs", "key-1");
        assert_eq!(again.status, Some(0), "{}", again.describe());
        let again = task_of(&single_object(&again));
        assert_eq!(again["id"], first["id"], "a repeat returns the same task");
        assert_eq!(again, first, "a repeat returns the first response");
        assert_eq!(s.event_count(), after_first, "a repeat writes nothing");
    }

    let e = s.fails_without_writing(
        &[
            "--idempotency-key",
            "key-1",
            "task",
            "create",
            "--title",
            "Write other docs",
        ],
        "IDEMPOTENCY_MISMATCH",
    );
    assert!(e["message"].as_str().unwrap().contains("key-1"), "{e}");
    s.fails_without_writing(
        &["--idempotency-key", "key-1", "claim", "--agent", "w1"],
        "IDEMPOTENCY_MISMATCH",
    );
    let listed = s.ok(&["task", "list"]);
    assert_eq!(
        ids(&listed["tasks"]),
        vec![id_of(&first)],
        "only one task exists"
    );

    // A different key is a different request.
    let second = task_of(&single_object(&create("Write docs", "key-2")));
    assert_ne!(second["id"], first["id"]);

    // Claims and lease operations repeat safely too.
    let claim = |key: &str| s.ok(&["--idempotency-key", key, "claim", "--agent", "w1"]);
    let c1 = claim("claim-1");
    let after_claim = s.event_count();
    let c2 = claim("claim-1");
    assert_eq!(c1, c2, "a repeated claim returns the same claims and token");
    assert_eq!(s.event_count(), after_claim);
    let claims = c1["claims"].as_array().expect("claims");
    assert_eq!(claims.len(), 1, "{c1}");
    let tid = id_of(&claims[0]["task"]);
    let token = claims[0]["lease"]["token"].as_str().unwrap().to_string();
    let complete = || {
        s.ok(&[
            "--idempotency-key",
            "done-1",
            "complete",
            &tid,
            "--lease",
            &token,
            "--output",
            "42",
        ])
    };
    let d1 = complete();
    assert_eq!(d1["task"]["status"], "done");
    let after_complete = s.event_count();
    // Without the key this would be LEASE_LOST: the lease ended with the first complete.
    let d2 = complete();
    assert_eq!(d1, d2);
    assert_eq!(s.event_count(), after_complete);
    s.fails_without_writing(
        &["complete", &tid, "--lease", &token, "--output", "42"],
        "LEASE_LOST",
    );

    s.replay_verifies();
}

/// Heartbeat signals: `context_changed` means someone else changed the task since the
/// holder's last heartbeat. The holder's own `start` (and its own notes under its lease)
/// must not raise it; a planner's note must, once.
#[test]
fn heartbeat_signals_context_changed_only_for_others_changes() {
    let s = Store::new();
    let id = id_of(&s.create("Signals", &[]));
    let (_, token) = s.claim_one("holder", &[]);
    let signals = |s: &Store| s.ok(&["heartbeat", &id, "--lease", &token])["signals"].clone();
    assert_eq!(signals(&s), json!([]), "nothing changed since the claim");

    s.ok(&[
        "note",
        &id,
        "--type",
        "note",
        "--content",
        "mine",
        "--lease",
        &token,
    ]);
    assert_eq!(signals(&s), json!([]), "the holder's own note is not news");

    s.ok(&[
        "note",
        &id,
        "--type",
        "user_input",
        "--content",
        "from the planner",
    ]);
    assert_eq!(
        signals(&s),
        json!(["context_changed"]),
        "a planner's note is news"
    );
    assert_eq!(signals(&s), json!([]), "and only once");

    s.ok(&["start", &id, "--lease", &token]);
    assert_eq!(
        signals(&s),
        json!([]),
        "the holder's own start is not someone else's change"
    );
}

/// Without a server, reads expire a lapsed lease first: a task whose holder vanished reads
/// as waiting for a claimer, as it would from a server, not as held.
#[test]
fn reads_do_not_show_a_lapsed_lease_as_held() {
    let s = Store::new();
    let id = id_of(&s.create("Lapses", &["--lease-ttl", "1s"]));
    s.claim_one("gone", &[]);
    assert_eq!(s.get(&id)["status"], "claimed");
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let task = s.get(&id);
    assert_eq!(task["status"], "ready", "{task}");
    assert!(task.get("lease").is_none_or(Value::is_null), "{task}");
    let brief = s.ok(&["brief", &id])["brief"].clone();
    assert_eq!(brief["runs"][0]["status"], "lost", "{brief}");
}

/// Everything a task carries is reachable from `task create` and `task update`: its
/// project, its budget (whose signals a heartbeat's usage raises) and its attempt timeout.
#[test]
fn task_create_and_update_reach_project_budget_and_timeout() {
    let s = Store::new();
    s.ok(&["project", "create", "web"]);
    let created = s.create("Budgeted", &["--project", "web", "--max-cost", "1.0"]);
    let id = id_of(&created);
    let project = s.ok(&["project", "get", "web"])["project"]["id"].clone();
    assert_eq!(created["project_id"], project, "{created}");
    assert_eq!(created["budget"]["max_cost"], 1.0);
    let updated = s.ok(&["task", "update", &id, "--timeout", "2h", "--max-cost", "2"]);
    assert_eq!(updated["task"]["timeout"], "2h", "{updated}");
    assert_eq!(updated["task"]["budget"]["max_cost"], 2.0);
    let (_, token) = s.claim_one("spender", &[]);
    let hb = s.ok(&[
        "heartbeat",
        &id,
        "--lease",
        &token,
        "--usage",
        r#"{"cost": 1.7}"#,
    ]);
    assert_eq!(hb["signals"], json!(["budget_warning"]), "{hb}");
    s.fails_without_writing(
        &["task", "update", &id, "--timeout", "0s"],
        "INVALID_DURATION",
    );
}

/// `task update` reaches every field HTTP's PATCH does: review, input and output schema
/// are set, and `--clear` removes what a task may be without (refusing to set and clear
/// one field at once, writing nothing).
#[test]
fn task_update_sets_review_input_schema_and_clears_fields() {
    let s = Store::new();
    let id = id_of(&s.create(
        "Clearable",
        &[
            "--description",
            "d",
            "--max-cost",
            "3",
            "--label",
            "x",
            "--due",
            "2031-01-01T00:00:00Z",
        ],
    ));
    let set = task_of(&s.ok(&[
        "task",
        "update",
        &id,
        "--review",
        "true",
        "--input",
        r#"{"n": 2}"#,
        "--output-schema",
        r#"{"type": "object"}"#,
    ]));
    assert_eq!(set["review_required"], true, "{set}");
    assert_eq!(set["input"], json!({"n": 2}));
    assert_eq!(set["output_schema"], json!({"type": "object"}));
    let cleared = task_of(&s.ok(&[
        "task",
        "update",
        &id,
        "--clear",
        "description",
        "--clear",
        "max-cost",
        "--clear",
        "labels",
        "--clear",
        "due",
        "--clear",
        "input",
        "--clear",
        "output-schema",
        "--review",
        "false",
    ]));
    for gone in ["description", "budget", "due_at", "input", "output_schema"] {
        assert!(cleared.get(gone).is_none(), "{gone} still set: {cleared}");
    }
    assert_eq!(cleared["labels"], json!([]));
    assert_eq!(cleared["review_required"], false);
    s.fails_without_writing(
        &["task", "update", &id, "--plan", "p", "--clear", "plan"],
        "INVALID_INPUT",
    );
    s.replay_verifies();
}

/// `--concurrency-key` and `--concurrency-limit` (DESIGN §4): the second task of a key with
/// the default limit of 1 waits while the first is leased; the limit is raised by update,
/// the key removed by `--clear concurrency-key`; a limit without a key or out of range is
/// refused and writes nothing.
#[test]
fn concurrency_keys_limit_leases_from_the_cli() {
    let s = Store::new();
    let first = s.create(
        "first",
        &["--concurrency-key", "area:db", "--priority", "2"],
    );
    assert_eq!(
        (&first["concurrency_key"], &first["concurrency_limit"]),
        (&json!("area:db"), &json!(1)),
        "{first}"
    );
    let second = id_of(&s.create("second", &["--concurrency-key", "area:db"]));
    let (claimed, _) = s.claim_one("a", &[]);
    assert_eq!(claimed["id"], first["id"]);
    assert_eq!(s.ok(&["claim", "--agent", "b"]), json!({ "claims": [] }));
    let raised = task_of(&s.ok(&["task", "update", &second, "--concurrency-limit", "2"]));
    assert_eq!(raised["concurrency_limit"], 2, "{raised}");
    let (claimed, _) = s.claim_one("b", &[]);
    assert_eq!(claimed["id"], json!(second));
    let cleared = task_of(&s.ok(&["task", "update", &second, "--clear", "concurrency-key"]));
    assert!(cleared.get("concurrency_key").is_none(), "{cleared}");
    assert!(cleared.get("concurrency_limit").is_none(), "{cleared}");
    s.fails_without_writing(
        &["task", "update", &second, "--concurrency-limit", "0"],
        "INVALID_INPUT",
    );
    s.fails_without_writing(
        &[
            "task",
            "create",
            "--title",
            "t",
            "--concurrency-key",
            "k",
            "--concurrency-limit",
            "10001",
        ],
        "INVALID_INPUT",
    );
    s.usage_error(&["task", "create", "--title", "t", "--concurrency-limit", "2"]);
    // A negative number is read as the flag's value, and refused as one.
    let negative = ["task", "update", &second, "--concurrency-limit", "-1"];
    s.usage_error(&negative);
    let ran = s.run(&negative);
    assert!(
        ran.stdout.contains("invalid value '-1'"),
        "{}",
        ran.describe()
    );
    s.replay_verifies();
}

/// `agent register --max-concurrency` and `agent update --max-concurrency | --unlimited`: an
/// agent at its limit is refused AT_CAPACITY and nothing is written; `agent update` needs
/// a change and takes one status at most.
#[test]
fn an_agents_max_concurrency_from_the_cli() {
    let s = Store::new();
    let agent = s.ok(&["agent", "register", "w", "--max-concurrency", "1"]);
    assert_eq!(agent["agent"]["max_concurrency"], 1, "{agent}");
    s.create("one", &[]);
    s.create("two", &[]);
    s.claim_one("w", &[]);
    let err = s.fails_without_writing(&["claim", "--agent", "w"], "AT_CAPACITY");
    assert_eq!(err["details"]["held"], 1, "{err}");
    let raised = s.ok(&["agent", "update", "w", "--max-concurrency", "2"]);
    assert_eq!(raised["agent"]["max_concurrency"], 2, "{raised}");
    s.claim_one("w", &[]);
    let freed = s.ok(&["agent", "update", "w", "--unlimited", "--disable"]);
    assert!(freed["agent"].get("max_concurrency").is_none(), "{freed}");
    assert_eq!(freed["agent"]["status"], "disabled", "{freed}");
    s.usage_error(&["agent", "update", "w"]);
    s.usage_error(&["agent", "update", "w", "--kill", "--revive"]);
    s.usage_error(&[
        "agent",
        "update",
        "w",
        "--max-concurrency",
        "2",
        "--unlimited",
    ]);
    s.fails_without_writing(
        &["agent", "update", "w", "--max-concurrency", "0"],
        "INVALID_INPUT",
    );
    s.replay_verifies();
}

/// `init` makes the workspace `--workspace` names; other commands refuse an unknown one
/// and say how to make it.
#[test]
fn init_creates_the_named_workspace() {
    let s = Store::new();
    let err = s.fails(&["--workspace", "team-b", "task", "list"], "NOT_FOUND");
    assert!(err["hint"].as_str().unwrap().contains("init"), "{err}");
    let init = s.ok(&["--workspace", "team-b", "init"]);
    assert_eq!(init["workspace"]["name"], "team-b", "{init}");
    s.ok(&["--workspace", "team-b", "task", "create", "--title", "b's"]);
    let theirs = s.ok(&["--workspace", "team-b", "task", "list"]);
    assert_eq!(theirs["tasks"].as_array().map(Vec::len), Some(1));
    let default = s.ok(&["task", "list"]);
    assert_eq!(default["tasks"].as_array().map(Vec::len), Some(0));
}

/// Kill switches from the command line: `agent update --kill` revokes that agent's lease
/// and refuses its claims; `workspace update --kill` refuses every claim until `--revive`.
#[test]
fn agent_and_workspace_kill_switches() {
    let s = Store::new();
    let id = id_of(&s.create("Switched", &[]));
    let (_, token) = s.claim_one("doomed", &[]);
    let agent = s.ok(&["agent", "update", "doomed", "--kill"])["agent"].clone();
    assert_eq!(agent["status"], "killed", "{agent}");
    assert_eq!(s.get(&id)["status"], "ready");
    s.fails(&["heartbeat", &id, "--lease", &token], "KILLED");
    s.fails(&["claim", "--agent", "doomed"], "KILLED");
    let neither = s.run(&["agent", "update", "doomed"]);
    assert_eq!(
        neither.status,
        Some(2),
        "one of --kill, --disable, --revive"
    );

    let ws = s.ok(&["workspace", "update", "--kill"])["workspace"].clone();
    assert_eq!(ws["killed"], true, "{ws}");
    assert_eq!(s.ok(&["workspace", "get"])["workspace"]["killed"], true);
    s.fails(&["claim", "--agent", "other"], "KILLED");
    s.ok(&["workspace", "update", "--revive"]);
    let (task, _) = s.claim_one("other", &[]);
    assert_eq!(id_of(&task), id);
    s.replay_verifies();
}

/// Briefing budgets: `brief --max-bytes N` trims least relevant items first and says so
/// (`truncated: true`, `omitted`). That must hold for a claimed task too, whose core
/// carries its lease.
#[test]
fn brief_max_bytes_trims_a_claimed_task() {
    let s = Store::new();
    let id = id_of(&s.create("Budgeted brief", &[]));
    for i in 0..12 {
        s.ok(&[
            "note",
            &id,
            "--type",
            "decision",
            "--content",
            &format!("decision number {i}, padded with some text to take up room"),
        ]);
    }
    let size = |v: &Value| serde_json::to_string(v).unwrap().len();

    // Unclaimed: trimmed to the budget.
    let brief = s.ok(&["brief", &id, "--max-bytes", "600"])["brief"].clone();
    assert_eq!(brief["truncated"], true, "{brief}");
    assert!(size(&brief) <= 600, "{} bytes: {brief}", size(&brief));

    // Claimed: the same budget must still trim the context away and report it.
    s.claim_one("reader", &[]);
    let full = s.ok(&["brief", &id])["brief"].clone();
    assert_eq!(full["context"].as_array().map(Vec::len), Some(12));
    let brief = s.ok(&["brief", &id, "--max-bytes", "512"])["brief"].clone();
    assert_eq!(brief["truncated"], true, "{} bytes: {brief}", size(&brief));
    assert!(brief["omitted"]["context"].as_u64().is_some(), "{brief}");
    assert!(
        size(&brief) < size(&full),
        "a trimmed brief ({} bytes) is smaller than the full one ({} bytes)",
        size(&brief),
        size(&full)
    );
}

/// Plan idempotency with labels written loosely (a duplicate and surrounding spaces):
/// the task stores them normalized, and applying the same file again must still change
/// nothing and write no event.
#[test]
fn plan_reapply_with_unnormalized_labels_changes_nothing() {
    let s = Store::new();
    let plan = s.file(
        "labels.yaml",
        "tasks:\n  - ref: a\n    title: A\n    labels: [ops, ops, \" infra \"]\n",
    );
    let first = s.ok(&["plan", "apply", &plan]);
    assert_eq!(first["created"], 1, "{first}");
    assert_eq!(first["tasks"][0]["task"]["labels"], json!(["ops", "infra"]));
    let before = s.event_count();
    let again = s.ok(&["plan", "apply", &plan]);
    assert_eq!(again["created"], 0, "{again}");
    assert_eq!(again["updated"], 0, "{again}");
    assert_eq!(again["unchanged"], 1, "{again}");
    assert_eq!(s.event_count(), before, "re-applying wrote events");
}

/// An edited plan applied again updates every field it gives on tasks that have not ended
/// (`labels: []` clears), and tells in each task's `warnings` what it asks and cannot do:
/// fields of a finished task, a changed intent, a blocker on a started task, a new parent,
/// context and steps a task does not have. Nothing is dropped silently; the same edited
/// file applied once more changes nothing.
#[test]
fn plan_reapply_applies_given_fields_and_warns_what_it_cannot() {
    let s = Store::new();
    let v1 = s.file(
        "v1.yaml",
        "tasks:
  - ref: finished
    title: Finished
    priority: 10
  - ref: started
    title: Started
    intent: why
    priority: 5
  - ref: a
    title: A
    labels: [x]
    context: [{type: note, content: first}]
    steps: [one]
  - ref: lone
    title: Lone
  - ref: sketch
    title: Sketch
    draft: true
",
    );
    let first = s.ok(&["plan", "apply", &v1]);
    assert_eq!(first["created"], 5, "{first}");
    assert!(
        first["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .all(|t| t.get("warnings").is_none()),
        "a first apply has nothing to warn about: {first}"
    );
    let id_of_ref = |out: &Value, r: &str| -> String {
        let entry = out["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .find(|t| t["ref"] == r);
        entry.expect("ref listed")["task"]["id"]
            .as_str()
            .expect("id")
            .to_string()
    };
    let (task, token) = s.claim_one("worker", &[]);
    assert_eq!(id_of(&task), id_of_ref(&first, "finished"));
    s.ok(&["complete", &id_of(&task), "--lease", &token]);
    let (task, _) = s.claim_one("worker", &[]);
    assert_eq!(id_of(&task), id_of_ref(&first, "started"));

    let v2 = s.file(
        "v2.yaml",
        "tasks:
  - ref: finished
    title: Finished, renamed
    priority: 10
  - ref: started
    title: Started
    intent: a new why
    priority: 5
    blocked_by: [a]
  - ref: a
    title: A2
    labels: []
    max_attempts: 5
    timeout: 10m
    review_required: true
    input: {k: 1}
    context: [{type: note, content: first}, {type: note, content: second}]
    steps: [one, two]
    children:
      - ref: lone
        title: Lone
  - ref: sketch
    title: Sketch
",
    );
    let second = s.ok(&["plan", "apply", &v2]);
    assert_eq!(second["created"], 0, "{second}");
    assert_eq!(second["updated"], 2, "{second}");
    let entry = |r: &str| -> Value {
        second["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .find(|t| t["ref"] == r)
            .expect("ref")
            .clone()
    };
    let warnings = |r: &str| -> String { entry(r)["warnings"].to_string() };

    let a = entry("a");
    assert_eq!(a["result"], "updated", "{a}");
    assert_eq!(a["task"]["title"], "A2");
    assert_eq!(a["task"]["labels"], json!([]), "labels: [] clears them");
    assert_eq!(a["task"]["retry_policy"]["max_attempts"], 5);
    assert_eq!(a["task"]["timeout"], "10m");
    assert_eq!(a["task"]["review_required"], true);
    assert_eq!(a["task"]["input"], json!({"k": 1}));
    assert!(warnings("a").contains("context not recorded (1 of"), "{a}");
    assert!(warnings("a").contains("steps not recorded (1 of"), "{a}");

    let finished = entry("finished");
    assert_eq!(finished["result"], "unchanged", "{finished}");
    assert_eq!(
        finished["task"]["title"], "Finished",
        "a finished task keeps its fields"
    );
    assert!(
        warnings("finished").contains("title not updated: the task has ended (status done)"),
        "{finished}"
    );

    let started = entry("started");
    assert_eq!(started["result"], "unchanged", "{started}");
    assert!(
        warnings("started").contains("intent not updated"),
        "{started}"
    );
    assert!(
        warnings("started").contains(&format!("blocker {} not added", id_of_ref(&first, "a"))),
        "{started}"
    );

    let lone = entry("lone");
    assert_eq!(lone["task"]["parent_id"], Value::Null, "not moved");
    assert!(warnings("lone").contains("not moved under"), "{lone}");

    let sketch = entry("sketch");
    assert_eq!(sketch["result"], "updated", "{sketch}");
    assert_eq!(
        sketch["task"]["status"], "ready",
        "no longer a draft in the file: published"
    );

    let before = s.event_count();
    let third = s.ok(&["plan", "apply", &v2]);
    assert_eq!(third["updated"], 0, "{third}");
    assert_eq!(
        s.event_count(),
        before,
        "the applied edit applied again writes nothing"
    );
    s.replay_verifies();
}

/// A planner's `unblock` (the failed blocker's edge turned `relates_to`) stands when the
/// same file is applied again: the task stays ready, nothing is written, nothing warned.
#[test]
fn plan_reapply_keeps_an_unblock_override() {
    let s = Store::new();
    let plan = s.file(
        "r.yaml",
        "tasks:\n  - ref: a\n    title: A\n    max_attempts: 1\n  - ref: b\n    title: B\n    blocked_by: [a]\n",
    );
    let first = s.ok(&["plan", "apply", &plan]);
    let b = first["tasks"][1]["task"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (a, token) = s.claim_one("worker", &[]);
    s.ok(&["fail", &id_of(&a), "--lease", &token, "--error", "boom"]);
    assert_eq!(task_of(&s.ok(&["task", "get", &b]))["status"], "blocked");
    s.ok(&["task", "unblock", &b]);
    let before = s.event_count();
    let again = s.ok(&["plan", "apply", &plan]);
    assert_eq!(again["unchanged"], 2, "{again}");
    assert!(again["tasks"][1].get("warnings").is_none(), "{again}");
    assert_eq!(task_of(&s.ok(&["task", "get", &b]))["status"], "ready");
    assert_eq!(s.event_count(), before, "re-applying undid the override");
}

/// `task update`: changes fields and bumps the version; `--if-version` with the current
/// version succeeds and with a stale one is VERSION_CONFLICT (not retryable as it is: it names the
/// current version to read again) without writing, for an update as for a cancel; intent is
/// immutable.
#[test]
fn task_update_changes_fields_and_checks_versions() {
    let s = Store::new();
    let id = id_of(&s.create("Draft title", &["--intent", "why"]));
    let updated = task_of(&s.ok(&[
        "task",
        "update",
        &id,
        "--title",
        "Final title",
        "--priority",
        "7",
        "--label",
        "a",
        "--label",
        "b",
    ]));
    assert_eq!(updated["title"], "Final title");
    assert_eq!(updated["priority"], 7);
    assert_eq!(updated["labels"], json!(["a", "b"]));
    assert_eq!(updated["version"], 2);
    assert_eq!(s.get(&id)["title"], "Final title");

    let updated = task_of(&s.ok(&[
        "task",
        "update",
        &id,
        "--if-version",
        "2",
        "--description",
        "now with a description",
    ]));
    assert_eq!(updated["version"], 3);
    assert_eq!(updated["description"], "now with a description");

    let before = s.event_count();
    let e = s.fails(
        &[
            "task",
            "update",
            &id,
            "--if-version",
            "2",
            "--title",
            "Lost update",
        ],
        "VERSION_CONFLICT",
    );
    assert_eq!(e["retryable"], false, "{e}");
    assert_eq!(e["details"]["current_version"], 3, "{e}");
    assert_eq!(s.event_count(), before, "a refused update wrote events");
    s.fails_without_writing(
        &["task", "update", &id, "--intent", "changed my mind"],
        "INVALID_INPUT",
    );
    assert_eq!(s.get(&id)["title"], "Final title");
    // Transitions take --if-version too: a cancel decided on version 2 is not applied to 3.
    s.fails_without_writing(
        &["task", "cancel", &id, "--if-version", "2"],
        "VERSION_CONFLICT",
    );
    let canceled = task_of(&s.ok(&["task", "cancel", &id, "--if-version", "3"]));
    assert_eq!(canceled["status"], "canceled");
    s.replay_verifies();
}

/// Replay catches a write that bypassed the log: a task row edited behind Baton's back, and
/// a lost event, each make `replay --verify` exit 1 naming the first differing row.
#[test]
fn replay_verify_names_the_first_difference() {
    let store = Store::new();
    let task = store.create("Original title", &[]);
    let id = id_of(&task);
    store.replay_verifies();

    let db = rusqlite::Connection::open(store.db()).expect("open the store directly");
    db.execute(
        "UPDATE tasks SET body = replace(body, 'Original title', 'Edited title') WHERE id = ?1",
        [&id],
    )
    .expect("tamper with the task row");
    let ran = store.run(&["replay", "--verify"]);
    assert_eq!(ran.status, Some(1), "{}", ran.describe());
    let report = single_object(&ran);
    assert_eq!(report["replay"]["equal"], false, "{report}");
    let difference = report["replay"]["difference"].as_str().unwrap_or_default();
    assert!(
        difference.contains(&id) && difference.starts_with("tasks/"),
        "{difference}"
    );

    // Put the row back; then lose the newest event instead.
    db.execute(
        "UPDATE tasks SET body = replace(body, 'Edited title', 'Original title') WHERE id = ?1",
        [&id],
    )
    .expect("restore the row");
    store.replay_verifies();
    let other = store.create("Second", &[]);
    db.execute(
        "DELETE FROM events WHERE seq = (SELECT max(seq) FROM events)",
        [],
    )
    .expect("drop the last event");
    let ran = store.run(&["replay", "--verify"]);
    assert_eq!(ran.status, Some(1), "{}", ran.describe());
    let report = single_object(&ran);
    let difference = report["replay"]["difference"].as_str().unwrap_or_default();
    // The first row to differ is the task the lost event created: the log is one short.
    assert!(
        difference.starts_with("tasks/")
            && difference.contains(id_of(&other).as_str())
            && difference.contains("missing after replay"),
        "{difference}"
    );
    assert!(
        store.get(&id_of(&other))["id"].is_string(),
        "the live row is still there"
    );
}

/// `baton demo` runs the whole story on the real operations: every task of the plan ends
/// done, a vanished agent's lease expires and its task is re-claimed, and the log replays to
/// the same state.
#[test]
fn demo_finishes_the_plan_and_replays() {
    let out = Command::new(BATON)
        .args(["--json", "demo", "--workers", "3", "--seed", "7"])
        .stdin(Stdio::null())
        .output()
        .expect("run baton demo");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let demo = &summary["demo"];
    assert_eq!(demo["tasks"], 9, "{summary}");
    assert_eq!(demo["by_status"]["done"], 9, "{summary}");
    assert!(
        demo["lease_expiries"].as_u64().unwrap_or(0) >= 1,
        "{summary}"
    );
    assert!(demo["claims"].as_u64().unwrap_or(0) >= 10, "{summary}");
    assert_eq!(demo["replay"]["equal"], true, "{summary}");
    if let Some(dir) = demo["data_dir"].as_str() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Human output into a pipe whose reader goes away (`baton task list | head -1`) ends
/// quietly, as other Unix tools do: no panic, exit status 0.
#[test]
fn a_closed_pipe_ends_human_output_quietly() {
    let store = Store::new();
    let tasks: Vec<Value> = (0..1500)
        .map(|i| json!({"ref": format!("t{i}"), "title": format!("task number {i} with a title long enough to fill the pipe")}))
        .collect();
    let plan = store.file("plan.json", &json!({ "tasks": tasks }).to_string());
    store.ok(&["plan", "apply", &plan]);
    let mut child = store
        .human(&["task", "list", "--limit", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run baton");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("readable");
    assert!(first.starts_with("tsk_"), "{first}");
    drop(lines); // the reader goes away with ~1,000 lines (over 64 KB) unwritten
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// A writer count outside 1 to 64 (or not a number) is refused before anything connects,
/// not quietly replaced by the default.
#[test]
fn a_bad_writer_count_is_refused() {
    for bad in ["0", "65", "abc"] {
        let out = Command::new(BATON)
            .args(["--json", "serve", "--listen", "127.0.0.1:0"])
            .args(["--database", "postgres://baton@127.0.0.1:1/nowhere"])
            .env("BATON_PG_WRITERS", bad)
            .output()
            .expect("run baton");
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let error: Value = serde_json::from_slice(&out.stdout).expect("one JSON error");
        assert_eq!(error["error"]["code"], "INVALID_INPUT", "{bad}: {error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("BATON_PG_WRITERS")),
            "{error}"
        );
    }
}
