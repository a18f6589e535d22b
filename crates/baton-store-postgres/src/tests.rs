//! Tests of the write path against a real PostgreSQL (`BATON_TEST_DATABASE_URL`, set by
//! `./scripts/test`; skipped without it). What the conformance suite cannot pin down: which
//! jobs share a commit is up to the writers, so here a batch is handed to [`run_batch`]
//! directly.

use super::*;
use baton_core::api::{Actor, ClaimRequest, CreateTask};
use baton_core::model::Task;
use baton_core::state::Status;
use baton_core::store::Loads;
use baton_core::time::SystemClock;
use baton_core::Baton;
use std::sync::atomic::{AtomicU64, Ordering};

/// A shared job that declares the task (or agent) it loads and runs `f`.
struct Probe<F> {
    kind: Loads,
    ws: String,
    loads: String,
    f: F,
}

impl<F> WriteJob for Probe<F>
where
    F: FnMut(&mut dyn Tx) -> Result<()> + Send,
{
    fn run(&mut self, tx: &mut dyn Tx) -> Result<()> {
        (self.f)(tx)
    }
    fn lock_mode(&self) -> LockMode {
        LockMode::Shared
    }
    fn loads(&self) -> Option<(Loads, &str, &str)> {
        Some((self.kind, &self.ws, &self.loads))
    }
    fn finish(self: Box<Self>, _: Result<()>) {}
}

fn probe<F>(ws: &str, loads: &str, f: F) -> Box<dyn WriteJob>
where
    F: FnMut(&mut dyn Tx) -> Result<()> + Send + 'static,
{
    probe_loading(Loads::Task, ws, loads, f)
}

/// A shared job that declares the agent it loads (as a claim does) and runs `f`.
fn agent_probe<F>(ws: &str, name: &str, f: F) -> Box<dyn WriteJob>
where
    F: FnMut(&mut dyn Tx) -> Result<()> + Send + 'static,
{
    probe_loading(Loads::Agent, ws, name, f)
}

fn probe_loading<F>(kind: Loads, ws: &str, loads: &str, f: F) -> Box<dyn WriteJob>
where
    F: FnMut(&mut dyn Tx) -> Result<()> + Send + 'static,
{
    Box::new(Probe {
        kind,
        ws: ws.to_string(),
        loads: loads.to_string(),
        f,
    })
}

fn save(tx: &mut dyn Tx, task: &Task) -> Result<()> {
    tx.put_task(task, &serde_json::to_string(task).expect("task serializes"))
}

/// A lease job that ends the lease of task `id` and gives it `status` (as a completion, or
/// an expiry that makes it ready again, would).
fn set_status(ws: &str, id: &str, status: Status) -> Box<dyn WriteJob> {
    let (w, i) = (ws.to_string(), id.to_string());
    probe(ws, id, move |tx| {
        let mut task = tx.task_for_update(&w, &i)?.expect("task");
        task.status = status;
        task.lease = None;
        save(tx, &task)
    })
}

/// Runs `batch` as one transaction on a connection of its own; every job must succeed.
fn commit_together(url: &str, mut batch: Vec<Box<dyn WriteJob>>) {
    let mut conn = Conn::open(url).expect("connect");
    let claiming = Claiming::default();
    let slot = ClaimSlot {
        claiming: &claiming,
        writer: 0,
    };
    let (results, _) = run_batch(&mut conn, slot, LockMode::Shared, &mut batch).expect("commit");
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
}

/// Runs `batch` as one transaction with a savepoint per job (as a batch's second try
/// does), on a connection of its own; each job's result.
fn commit_with_savepoints(url: &str, mut batch: Vec<Box<dyn WriteJob>>) -> Vec<Result<()>> {
    let mut conn = Conn::open(url).expect("connect");
    let claiming = Claiming::default();
    let slot = ClaimSlot {
        claiming: &claiming,
        writer: 0,
    };
    let (results, _) = attempt(&mut conn, slot, LockMode::Shared, &mut batch, true)
        .expect("commit")
        .expect("results");
    results
}

/// A fresh database with a parent task and its child, both claimed, and a third claimed
/// task; the URL, the workspace id and the three tasks.
fn fixture() -> Option<(String, String, Task, Task, Task)> {
    let Ok(admin) = std::env::var("BATON_TEST_DATABASE_URL") else {
        eprintln!("skipped: BATON_TEST_DATABASE_URL is not set (run ./scripts/test)");
        return None;
    };
    let name = format!(
        "baton_test_{}",
        baton_core::id::new_id("db").trim_start_matches("db_")
    );
    let url = PgStore::create_database(&admin, &name).expect("create a test database");
    let store = PgStore::open(&url).expect("open the store");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (ws, parent, child, other) = rt.block_on(async {
        let baton = Baton::new(store, Arc::new(SystemClock));
        let actor = baton.actor("default", "planner").await.expect("actor");
        let claim = || ClaimRequest {
            agent: "a".into(),
            ..Default::default()
        };
        let create = |title: &str, parent: Option<&str>| CreateTask {
            title: title.into(),
            parent_id: parent.map(str::to_string),
            ..Default::default()
        };
        let parent = baton.create_task(&actor, None, create("parent", None));
        let parent = parent.await.expect("create").task;
        baton.claim(&actor, None, claim()).await.expect("claim");
        let child = baton.create_task(&actor, None, create("child", Some(&parent.id)));
        let child = child.await.expect("create").task;
        baton.claim(&actor, None, claim()).await.expect("claim");
        let other = baton.create_task(&actor, None, create("other", None));
        let other = other.await.expect("create").task;
        baton.claim(&actor, None, claim()).await.expect("claim");
        (actor.workspace_id, parent, child, other)
    });
    Some((url, ws, parent, child, other))
}

/// The tasks of one commit's lease jobs are loaded together before the first job runs; a
/// job that writes what another's task was loaded with (the task itself, or a child that
/// changes its parent's open-children count) makes that job load it afresh.
#[test]
fn tasks_loaded_ahead_see_the_writes_of_earlier_jobs() {
    let Some((url, ws, parent, child, other)) = fixture() else {
        return;
    };
    let open_children = Arc::new(AtomicU64::new(u64::MAX));
    let other_title = Arc::new(Mutex::new(String::new()));
    let o = other.id.clone();
    let batch = vec![
        // Ends the child: the parent's count of open children, loaded ahead, is now off.
        set_status(&ws, &child.id, Status::Done),
        // Writes `other` without loading it for update (as a reap does).
        {
            let (w, o) = (ws.clone(), o.clone());
            probe(&ws, &parent.id, move |tx| {
                let mut task = tx.task(&w, &o)?.expect("other");
                task.title = "retitled".into();
                save(tx, &task)
            })
        },
        {
            let (w, p, n) = (ws.clone(), parent.id.clone(), open_children.clone());
            probe(&ws, &parent.id, move |tx| {
                tx.task_for_update(&w, &p)?.expect("parent");
                n.store(tx.open_children(&w, &p)?, Ordering::SeqCst);
                Ok(())
            })
        },
        {
            let (w, title) = (ws.clone(), other_title.clone());
            probe(&ws, &other.id, move |tx| {
                let task = tx.task_for_update(&w, &o)?.expect("other");
                *title.lock().unwrap() = task.title;
                Ok(())
            })
        },
    ];
    commit_together(&url, batch);
    assert_eq!(open_children.load(Ordering::SeqCst), 0);
    assert_eq!(*other_title.lock().unwrap(), "retitled");
}

/// The agents of one commit's claims are loaded (and locked) together before the first job
/// runs; a job that writes an agent makes the later jobs of the commit read what it wrote,
/// and an agent that is not there yet is looked up by its job.
#[test]
fn agents_loaded_ahead_see_the_writes_of_earlier_jobs() {
    let Some((url, ws, ..)) = fixture() else {
        return;
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (w1, w2, w3) = (ws.clone(), ws.clone(), ws.clone());
    let (s2, s3) = (seen.clone(), seen.clone());
    let batch = vec![
        agent_probe(&ws, "a", move |tx| {
            let mut agent = tx.agent(&w1, "a")?.expect("agent a, from the fixture");
            agent.capabilities = vec!["gpu".into()];
            tx.put_agent(&agent)
        }),
        agent_probe(&ws, "a", move |tx| {
            let agent = tx.agent(&w2, "a")?.expect("agent a");
            s2.lock().unwrap().push(agent.capabilities.join(","));
            Ok(())
        }),
        agent_probe(&ws, "nobody", move |tx| {
            let none = tx.agent(&w3, "nobody")?;
            s3.lock().unwrap().push(format!("{none:?}"));
            Ok(())
        }),
    ];
    commit_together(&url, batch);
    assert_eq!(*seen.lock().unwrap(), ["gpu", "None"]);
    let store = PgStore::open(&url).expect("open");
    store
        .read(&mut |tx| {
            let agent = tx.agent(&ws, "a")?.expect("agent a");
            assert_eq!(agent.capabilities, ["gpu"]);
            Ok(())
        })
        .expect("read");
}

/// A commit with both claims (agents) and lease jobs (tasks): each job finds its own, with
/// what earlier jobs of the commit wrote, whichever were loaded ahead.
#[test]
fn agents_and_tasks_of_one_commit_see_the_writes_of_earlier_jobs() {
    let Some((url, ws, parent, child, _)) = fixture() else {
        return;
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (w1, w2, w3) = (ws.clone(), ws.clone(), ws.clone());
    let (s2, s3) = (seen.clone(), seen.clone());
    let p = parent.id.clone();
    let batch = vec![
        agent_probe(&ws, "a", move |tx| {
            let mut agent = tx.agent(&w1, "a")?.expect("agent a, from the fixture");
            agent.capabilities = vec!["gpu".into()];
            tx.put_agent(&agent)
        }),
        set_status(&ws, &child.id, Status::Done),
        agent_probe(&ws, "a", move |tx| {
            let agent = tx.agent(&w2, "a")?.expect("agent a");
            s2.lock().unwrap().push(agent.capabilities.join(","));
            Ok(())
        }),
        probe(&ws, &parent.id, move |tx| {
            let task = tx.task_for_update(&w3, &p)?.expect("parent");
            let open = tx.open_children(&w3, &p)?;
            s3.lock().unwrap().push(format!("{} {open}", task.title));
            Ok(())
        }),
    ];
    commit_together(&url, batch);
    assert_eq!(*seen.lock().unwrap(), ["gpu", "parent 0"]);
}

/// Creates `n` ready tasks titled `{prefix}{i}`; their ids in creation order.
async fn create_ready(baton: &Baton, actor: &Actor, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let req = CreateTask {
            title: format!("{prefix}{i}"),
            ..Default::default()
        };
        let created = baton.create_task(actor, None, req).await.expect("create");
        ids.push(created.task.id);
    }
    ids
}

/// Where claim jobs put the ids of the tasks they claimed, in the order they ran.
#[derive(Clone, Default)]
struct Taken(Arc<Mutex<Vec<String>>>);

impl Taken {
    fn ids(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// The ids of the tasks agent `agent` claims (one) through `baton`, as a call would.
fn claim_now(
    rt: &tokio::runtime::Runtime,
    baton: &Baton,
    actor: &Actor,
    agent: &str,
) -> Vec<String> {
    let req = ClaimRequest {
        agent: agent.into(),
        ..Default::default()
    };
    let claimed = rt.block_on(baton.claim(actor, None, req)).expect("claim");
    claimed.claims.into_iter().map(|c| c.task.id).collect()
}

/// A shared job that runs a claim as the operation layer does.
fn claim_job(ws: &str, agent: &str, count: u32, out: Taken) -> Box<dyn WriteJob> {
    claim_job_then(ws, agent, count, out, Ok(()))
}

/// A claim job that ends with `outcome` once it has claimed (an error undoes it).
fn claim_job_then(
    ws: &str,
    agent: &str,
    count: u32,
    out: Taken,
    outcome: Result<()>,
) -> Box<dyn WriteJob> {
    let (job_ws, job_agent) = (ws.to_string(), agent.to_string());
    agent_probe(ws, agent, move |tx: &mut dyn Tx| {
        let mut ctx = baton_core::ops::Ctx {
            tx,
            now: baton_core::time::Clock::now(&SystemClock),
            ws: &job_ws,
            actor: "test",
            agent: None,
            request_id: None,
        };
        let req = ClaimRequest {
            agent: job_agent.clone(),
            count: Some(count),
            ..Default::default()
        };
        let claims = baton_core::ops::lease::claim(&mut ctx, &req)?;
        let mut out = out.0.lock().unwrap();
        out.extend(claims.claims.into_iter().map(|c| c.task.id));
        outcome.clone()
    })
}

/// Claims committed together each get tasks of their own, though the earlier claims'
/// writes are held back when the later ones look (those tasks are passed over by id); a
/// task made ready earlier in the batch is seen by a later claim.
#[test]
fn claims_in_one_commit_never_share_a_task() {
    let Some((url, ws, parent, child, other)) = fixture() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = PgStore::open(&url).expect("open the store");
    let ready: Vec<String> = rt.block_on(async {
        let baton = Baton::new(store, Arc::new(SystemClock));
        let actor = baton.actor("default", "planner").await.expect("actor");
        // Registered now (nothing to claim yet), so the claims below write no agent row,
        // which would send the held-back writes before they look.
        for agent in ["b", "c"] {
            let req = ClaimRequest {
                agent: agent.into(),
                ..Default::default()
            };
            let none = baton.claim(&actor, None, req).await.expect("claim");
            assert!(none.claims.is_empty());
        }
        create_ready(&baton, &actor, "ready ", 5).await
    });
    let claimed = Taken::default();
    let batch = vec![
        claim_job(&ws, "a", 2, claimed.clone()),
        claim_job(&ws, "b", 2, claimed.clone()),
        // Gives `other` back to the queue (as an expired lease would): ready again, first
        // in claim order (the oldest).
        set_status(&ws, &other.id, Status::Ready),
        claim_job(&ws, "c", 2, claimed.clone()),
    ];
    commit_together(&url, batch);
    let claimed = claimed.ids();
    let mut distinct = claimed.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        claimed.len(),
        "a task claimed twice: {claimed:?}"
    );
    assert_eq!(claimed.len(), 6, "{claimed:?}");
    assert_eq!(
        claimed[4], other.id,
        "the released task is claimed next: {claimed:?}"
    );
    assert!(
        claimed[..4].iter().all(|id| ready.contains(id)),
        "{claimed:?}"
    );
    assert!(![&parent.id, &child.id]
        .iter()
        .any(|id| claimed.contains(id)));
}

/// A claim passes over, by id, the tasks another writer's transaction took from a claim's
/// query, until that transaction ends (whether or not it still holds their locks): two
/// claims racing in one process never lock a task the other has just claimed
/// ([`Claiming`]).
#[test]
fn claims_pass_over_what_other_writers_hold_until_their_transactions_end() {
    let Some((url, ws, ..)) = fixture() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = PgStore::open(&url).expect("open the store");
    let ready: Vec<String> = rt.block_on(async {
        let baton = Baton::new(store, Arc::new(SystemClock));
        let actor = baton.actor("default", "planner").await.expect("actor");
        create_ready(&baton, &actor, "ready ", 2).await
    });
    let now = baton_core::time::Clock::now(&SystemClock);
    let claiming = Claiming::default();
    let slot = |writer| ClaimSlot {
        claiming: &claiming,
        writer,
    };
    let ids = |tasks: Vec<Task>| tasks.into_iter().map(|t| t.id).collect::<Vec<_>>();
    let (mut one, mut two) = (
        Conn::open(&url).expect("connect"),
        Conn::open(&url).expect("connect"),
    );

    let mut first = PgTx::writing(&mut one, LockMode::Shared).claiming(slot(0));
    let taken = first
        .claim_candidates(&ws, now, 1, Some(&[]))
        .expect("claim");
    assert_eq!(ids(taken), ready[..1]);
    // Its row lock is gone; the transaction's record of it is not.
    first.batch("ROLLBACK").expect("rollback");
    let mut second = PgTx::writing(&mut two, LockMode::Shared).claiming(slot(1));
    let taken = second
        .claim_candidates(&ws, now, 1, Some(&[]))
        .expect("claim");
    assert_eq!(ids(taken), ready[1..], "passed over by id");
    second.batch("ROLLBACK").expect("rollback");
    drop(second);

    drop(first);
    let mut third = PgTx::writing(&mut two, LockMode::Shared).claiming(slot(1));
    let taken = third
        .claim_candidates(&ws, now, 1, Some(&[]))
        .expect("claim");
    assert_eq!(
        ids(taken),
        ready[..1],
        "the first writer's transaction has ended"
    );
    third.batch("ROLLBACK").expect("rollback");
}

/// Workspace `ws`'s claim floor and its count of tasks made ready.
fn floor_of(url: &str, ws: &str) -> ((i64, i64, String), i64) {
    let mut conn = Conn::open(url).expect("connect");
    let (rt, pg) = conn.parts().expect("connected");
    let (neg, due, id, gen): (i64, i64, String, i64) = rt
        .block_on(
            sqlx::query_as(
                "SELECT floor_neg, floor_due, floor_id, ready_gen FROM workspaces WHERE id = $1",
            )
            .bind(ws)
            .fetch_one(&mut *pg),
        )
        .expect("read the floor");
    ((neg, due, id), gen)
}

/// The claim floor (schema version 5): a claim raises it to the first ready task its
/// statement saw (here the one it took, still ready in that snapshot); a task made ready
/// below it, through another replica, lowers it as its transaction commits and is the
/// next claim's, and the tasks above it follow in claim order.
#[test]
fn the_claim_floor_rises_with_claims_and_falls_below_tasks_made_ready() {
    let Some((url, ws, ..)) = fixture() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let one = Baton::new(PgStore::open(&url).expect("open"), Arc::new(SystemClock));
    let two = Baton::new(PgStore::open(&url).expect("open"), Arc::new(SystemClock));
    let (a1, a2) = rt.block_on(async {
        let a1 = one.actor("default", "planner").await.expect("actor");
        let a2 = two.actor("default", "planner").await.expect("actor");
        (a1, a2)
    });
    let create = |baton: &Baton, actor, title: &str, priority: i64| {
        let req = CreateTask {
            title: title.into(),
            priority: Some(priority),
            ..Default::default()
        };
        rt.block_on(baton.create_task(actor, None, req))
            .expect("create")
            .task
            .id
    };
    let claim = || claim_now(&rt, &one, &a1, "a");
    let ids: Vec<String> = (0..3)
        .map(|i| create(&one, &a1, &format!("t{i}"), 0))
        .collect();
    assert_eq!(claim(), ids[..1]);
    assert_eq!(floor_of(&url, &ws).0, (0, i64::MAX, ids[0].clone()));
    assert_eq!(claim(), ids[1..2]);
    let (floor, gen) = floor_of(&url, &ws);
    assert_eq!(floor, (0, i64::MAX, ids[1].clone()));

    let urgent = create(&two, &a2, "urgent", 7);
    assert_eq!(
        floor_of(&url, &ws),
        ((-7, i64::MAX, urgent.clone()), gen + 1)
    );
    assert_eq!(claim(), vec![urgent]);
    assert_eq!(claim(), ids[2..]);
    assert!(claim().is_empty());
}

/// With a savepoint per job (the batch's second try), a claim's observation of the floor
/// outlives the sending of its job's rows and raises the floor at the commit; a job undone
/// by its savepoint takes the observations with it, as its claim's snapshot saw its writes.
#[test]
fn the_claim_floor_rises_through_savepoints_but_not_on_an_undone_job() {
    let Some((url, ws, ..)) = fixture() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let baton = Baton::new(PgStore::open(&url).expect("open"), Arc::new(SystemClock));
    let ids: Vec<String> = rt.block_on(async {
        let actor = baton.actor("default", "planner").await.expect("actor");
        create_ready(&baton, &actor, "t", 3).await
    });
    let with_savepoints = |batch| commit_with_savepoints(&url, batch);
    let before = floor_of(&url, &ws);

    let undone = Taken::default();
    let undone_on_purpose = Err(Error::invalid("undone on purpose", ""));
    let claim_then_fail = claim_job_then(&ws, "a", 1, undone.clone(), undone_on_purpose);
    // An event of its own, so that the commit numbers events (where the floor would rise).
    let w = ws.clone();
    let note = probe(&ws, &ids[2], move |tx| {
        tx.append_event(baton_core::store::NewEvent {
            workspace_id: &w,
            kind: "test.noted",
            at: baton_core::time::Clock::now(&SystemClock),
            actor: "test",
            task_id: None,
            data: "{}",
            request_id: None,
        })
    });
    let results = with_savepoints(vec![claim_then_fail, note]);
    assert!(results[0].is_err() && results[1].is_ok(), "{results:?}");
    assert_eq!(undone.ids(), ids[..1], "it did claim, then was undone");
    assert_eq!(
        floor_of(&url, &ws).0,
        before.0,
        "no rise on the undone job's claim"
    );

    let claimed = Taken::default();
    let results = with_savepoints(vec![claim_job(&ws, "a", 1, claimed.clone())]);
    assert!(results[0].is_ok(), "{results:?}");
    assert_eq!(claimed.ids(), ids[..1]);
    assert_eq!(floor_of(&url, &ws).0, (0, i64::MAX, ids[0].clone()));
}

/// The claims of one commit's jobs are taken by the first one's statement, for the jobs
/// after it (the pool): each gets its own tasks, in claim order, whatever its agent's
/// capabilities (an agent with some takes from the set needing none too, by a statement
/// of its own that passes over nothing the pool holds for others).
#[test]
fn claims_of_one_commit_are_served_in_claim_order() {
    let Some((url, ws, ..)) = fixture() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let baton = Baton::new(PgStore::open(&url).expect("open"), Arc::new(SystemClock));
    let ids = rt.block_on(async {
        let actor = baton.actor("default", "planner").await.expect("actor");
        for (agent, capabilities) in [("b", vec![]), ("c", vec![]), ("d", vec!["x".to_string()])] {
            let req = ClaimRequest {
                agent: agent.into(),
                capabilities,
                ..Default::default()
            };
            let none = baton.claim(&actor, None, req).await.expect("claim");
            assert!(none.claims.is_empty());
        }
        create_ready(&baton, &actor, "ready ", 7).await
    });
    let claimed = Taken::default();
    commit_together(
        &url,
        vec![
            claim_job(&ws, "a", 2, claimed.clone()),
            claim_job(&ws, "d", 1, claimed.clone()),
            claim_job(&ws, "b", 2, claimed.clone()),
            claim_job(&ws, "c", 1, claimed.clone()),
        ],
    );
    assert_eq!(claimed.ids(), ids[..6]);
}

/// A job undone by its savepoint gives back what it took from the pool: locked to the
/// commit and unclaimed, then the next claim's. A pool filled by an undone job is gone
/// with its locks: the next job's claim reads afresh and takes the same first task.
#[test]
fn a_claim_undone_by_its_savepoint_gives_its_tasks_back() {
    let Some((url, ws, ..)) = fixture() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let baton = Baton::new(PgStore::open(&url).expect("open"), Arc::new(SystemClock));
    let actor = rt
        .block_on(baton.actor("default", "planner"))
        .expect("actor");
    let ids = rt.block_on(create_ready(&baton, &actor, "ready ", 6));
    let undone_on_purpose = || Err(Error::invalid("undone on purpose", ""));
    let (claimed, undone) = (Taken::default(), Taken::default());

    let results = commit_with_savepoints(
        &url,
        vec![
            claim_job(&ws, "a", 1, claimed.clone()),
            claim_job_then(&ws, "b", 1, undone.clone(), undone_on_purpose()),
            claim_job(&ws, "c", 1, claimed.clone()),
        ],
    );
    assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());
    assert_eq!(undone.ids(), ids[1..2]);
    assert_eq!(claimed.ids(), vec![ids[0].clone(), ids[2].clone()]);
    let next = |agent: &str| claim_now(&rt, &baton, &actor, agent);
    assert_eq!(next("e"), ids[1..2], "back in the queue");

    let (claimed, undone) = (Taken::default(), Taken::default());
    let results = commit_with_savepoints(
        &url,
        vec![
            claim_job_then(&ws, "a", 1, undone.clone(), undone_on_purpose()),
            claim_job(&ws, "b", 1, claimed.clone()),
        ],
    );
    assert!(results[0].is_err() && results[1].is_ok());
    assert_eq!(undone.ids(), ids[3..4]);
    assert_eq!(claimed.ids(), ids[3..4]);
    assert_eq!(next("e"), ids[4..5]);
}

/// `lows` ready tasks of priority 1 (their ids), then a parent of priority 10 whose one
/// child (priority 20) agent "b" has claimed: the parent is ready, not claimable until the
/// child ends, and ahead of the low ones in claim order.
fn parent_with_a_claimed_child(url: &str, lows: usize) -> (Task, Task, Vec<String>) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let baton = Baton::new(PgStore::open(url).expect("open"), Arc::new(SystemClock));
    rt.block_on(async {
        let actor = baton.actor("default", "planner").await.expect("actor");
        let create = |title: &str, priority: i64, parent: Option<&str>| CreateTask {
            title: title.into(),
            priority: Some(priority),
            parent_id: parent.map(str::to_string),
            ..Default::default()
        };
        let mut low = Vec::new();
        for i in 0..lows {
            let task = baton.create_task(&actor, None, create(&format!("low {i}"), 1, None));
            low.push(task.await.expect("create").task.id);
        }
        let parent = baton.create_task(&actor, None, create("parent", 10, None));
        let parent = parent.await.expect("create").task;
        let child = baton.create_task(&actor, None, create("child", 20, Some(&parent.id)));
        let child = child.await.expect("create").task;
        let req = ClaimRequest {
            agent: "b".into(),
            ..Default::default()
        };
        let claimed = baton.claim(&actor, None, req).await.expect("claim");
        assert_eq!(claimed.claims[0].task.id, child.id);
        (parent, child, low)
    })
}

/// A child that ends earlier in a batch frees its parent for a later claim in the same
/// commit, which takes it in claim order (the parent before a lower-priority task).
#[test]
fn a_claim_sees_a_parent_freed_earlier_in_its_commit() {
    let Some((url, ws, _, _, _)) = fixture() else {
        return;
    };
    let (parent, child, low) = parent_with_a_claimed_child(&url, 1);
    let claimed = Taken::default();
    let batch = vec![
        set_status(&ws, &child.id, Status::Done),
        claim_job(&ws, "b", 1, claimed.clone()),
    ];
    commit_together(&url, batch);
    let claimed = claimed.ids();
    assert_eq!(claimed, vec![parent.id.clone()], "not {}", low[0]);
}

/// A child ended after a commit's first claim filled the pool frees its parent for a
/// later claim of that commit, even once the child's row has been sent (here by a read
/// between them): the claim reads afresh and takes the parent, ahead of the pool's tasks.
#[test]
fn a_claim_sees_a_parent_freed_after_the_pool_was_filled() {
    let Some((url, ws, ..)) = fixture() else {
        return;
    };
    let (parent, child, low) = parent_with_a_claimed_child(&url, 3);
    let (first, later) = (Taken::default(), Taken::default());
    let (w, p) = (ws.clone(), parent.id.clone());
    let batch = vec![
        claim_job(&ws, "a", 1, first.clone()),
        set_status(&ws, &child.id, Status::Done),
        probe(&ws, &parent.id, move |tx| {
            tx.open_children(&w, &p).map(|_| ())
        }),
        claim_job(&ws, "b", 1, later.clone()),
    ];
    commit_together(&url, batch);
    assert_eq!(first.ids(), low[..1]);
    assert_eq!(later.ids(), vec![parent.id.clone()]);
}

/// Replay compares this store's event counter with its log (the embedded store keeps none,
/// so the shared projection reads the log): a counter that drifted shows in the workspace's
/// row, and a store whose counter agrees replays equal.
#[test]
fn replay_shows_a_counter_that_disagrees_with_the_log() {
    let Some((url, ws, ..)) = fixture() else {
        return;
    };
    let admin = std::env::var("BATON_TEST_DATABASE_URL").expect("set by fixture");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let verify = || {
        let name = format!(
            "baton_test_{}",
            baton_core::id::new_id("db").trim_start_matches("db_")
        );
        let scratch = PgStore::create_database(&admin, &name).expect("scratch database");
        let scratch = PgStore::open(&scratch).expect("open scratch");
        let live = PgStore::open(&url).expect("open live");
        rt.block_on(baton_core::replay::verify(live.as_ref(), scratch))
            .expect("replay runs")
            .difference
    };
    assert_eq!(verify(), None);
    Conn::open(&url)
        .expect("connect")
        .batch(&format!(
            "UPDATE workspaces SET last_seq = last_seq + 1 WHERE id = '{ws}'"
        ))
        .expect("tamper with the counter");
    let difference = verify().expect("the drifted counter shows");
    assert!(
        difference.starts_with(&format!("workspaces/{ws}: differs"))
            && difference.contains("(counter "),
        "{difference}"
    );
}

/// Takes a store at the current version back to version 4 (the workspace's kill switch,
/// the claim floor's triggers and columns gone), as the migration tests start from older
/// versions.
const BACK_TO_4: &str = "ALTER TABLE projects DROP COLUMN max_conc;
     ALTER TABLE events DROP COLUMN request_id;
     DROP INDEX tasks_conc; ALTER TABLE tasks DROP COLUMN conc_key, DROP COLUMN conc_limit;
     DROP TABLE artifacts; ALTER TABLE workspaces DROP COLUMN killed;
     UPDATE workspaces SET body = replace(body, ',\"killed\":false}', '}');
     DROP TRIGGER tasks_inserted_lower_floor ON tasks;
     DROP TRIGGER tasks_updated_lower_floor ON tasks; DROP FUNCTION baton_lower_floor();
     ALTER TABLE workspaces DROP COLUMN ready_gen, DROP COLUMN floor_neg, DROP COLUMN floor_due,
         DROP COLUMN floor_id;
     DELETE FROM baton_schema WHERE version >= 5;";

/// A store at schema version 1 with tasks in it is migrated to the current version when
/// opened: the status index is replaced by the partial ones (version 2), the runs are keyed
/// by task (version 3), the claim floor starts below every key (version 5), the workspace
/// gains its kill switch, off (version 6), artifacts get their table (version 7), tasks their
/// concurrency key columns, empty (version 8), events their request id, none for the
/// events before (version 9), projects no concurrency limit (version 10), and listing by
/// status and reading runs still find what was there. A replica that starts while another
/// holds the migration lock for longer than the connections' lock timeout waits for it
/// instead of failing.
#[test]
fn versions_2_to_10_replace_indexes_and_starters_wait_for_them() {
    let Some((url, ws, parent, child, other)) = fixture() else {
        return;
    };
    let mut conn = Conn::open(&url).expect("connect");
    conn.batch(BACK_TO_4).expect("back to version 4");
    conn.batch(
        "DROP INDEX tasks_status_open; DROP INDEX tasks_status_ended_badly;
         CREATE INDEX tasks_status ON tasks (workspace_id, status, id);
         ALTER TABLE runs DROP CONSTRAINT runs_pkey, ADD PRIMARY KEY (workspace_id, id);
         CREATE INDEX runs_task ON runs (workspace_id, task_id, id);
         DROP INDEX tasks_claim; ALTER TABLE tasks DROP COLUMN caps;
         CREATE INDEX tasks_claim ON tasks (workspace_id, neg_priority, due_key, id) WHERE status = 'ready';
         DELETE FROM baton_schema WHERE version >= 2",
    )
    .expect("back to version 1");
    // Another process holds the migration lock (taken before the store opens) for longer
    // than the lock timeout (5 s).
    let mut holder = Conn::open(&url).expect("connect");
    holder
        .batch(&format!("SELECT pg_advisory_lock({})", migrate::LOCK))
        .expect("lock");
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(6));
        holder
            .batch(&format!("SELECT pg_advisory_unlock({})", migrate::LOCK))
            .expect("unlock");
    });
    let store = PgStore::open(&url).expect("waits for the lock, then migrates");
    holder.join().expect("holder");

    assert_eq!(migrate::version(&mut conn).expect("version"), 10);
    let (rt, pg) = conn.parts().expect("connected");
    // Version 8: no task has a concurrency key.
    let keyed: i64 = rt
        .block_on(
            sqlx::query_scalar("SELECT count(*) FROM tasks WHERE conc_key IS NOT NULL")
                .fetch_one(&mut *pg),
        )
        .expect("the key column");
    assert_eq!(keyed, 0);
    // Version 9: the events written before have no request id.
    let with_request: i64 = rt
        .block_on(
            sqlx::query_scalar("SELECT count(*) FROM events WHERE request_id IS NOT NULL")
                .fetch_one(&mut *pg),
        )
        .expect("the request id column");
    assert_eq!(with_request, 0);
    // Version 7: the artifacts' table, empty.
    let artifacts: i64 = rt
        .block_on(sqlx::query_scalar("SELECT count(*) FROM artifacts").fetch_one(&mut *pg))
        .expect("the artifacts table");
    assert_eq!(artifacts, 0);
    // Version 6: the switch is off, in the column and in the body as the model writes it.
    let (killed, body): (bool, String) = rt
        .block_on(
            sqlx::query_as("SELECT killed, body FROM workspaces WHERE id = $1")
                .bind(&ws)
                .fetch_one(&mut *pg),
        )
        .expect("the workspace");
    let workspace: baton_core::model::Workspace = serde_json::from_str(&body).expect("body");
    assert!(!killed && !workspace.killed);
    assert_eq!(serde_json::to_string(&workspace).expect("json"), body);
    // Version 5's claim floor starts below every key: no ready task is passed over.
    assert_eq!(
        floor_of(&url, &ws),
        ((i64::MIN, i64::MIN, String::new()), 0)
    );
    let (rt, pg) = conn.parts().expect("connected");
    let runs_indexes: Vec<String> = rt
        .block_on(
            sqlx::query_scalar(
                "SELECT indexdef::text FROM pg_indexes WHERE tablename = 'runs' ORDER BY 1",
            )
            .fetch_all(&mut *pg),
        )
        .expect("indexes of runs");
    assert_eq!(runs_indexes.len(), 1, "{runs_indexes:?}");
    assert!(
        runs_indexes[0].contains("runs_pkey")
            && runs_indexes[0].contains("(workspace_id, task_id, id)"),
        "{runs_indexes:?}"
    );
    let indexes: Vec<String> = rt
        .block_on(
            sqlx::query_scalar(
                "SELECT indexname::text FROM pg_indexes WHERE tablename = 'tasks'
                 AND indexname LIKE 'tasks_status%' ORDER BY 1",
            )
            .fetch_all(&mut *pg),
        )
        .expect("indexes");
    assert_eq!(indexes, ["tasks_status_ended_badly", "tasks_status_open"]);
    let filter = baton_core::store::TaskFilter {
        status: Some(Status::Claimed),
        limit: 10,
        ..Default::default()
    };
    let mut claimed = Vec::new();
    store
        .read(&mut |tx| {
            claimed = tx
                .list_tasks(&ws, &filter)?
                .into_iter()
                .map(|t| t.id)
                .collect();
            Ok(())
        })
        .expect("list");
    claimed.sort();
    let mut want = vec![parent.id.clone(), child.id, other.id];
    want.sort();
    assert_eq!(claimed, want);
    // The runs written at version 1 are read by task, and by task and id.
    store
        .read(&mut |tx| {
            let runs = tx.runs_of(&ws, &parent.id, 10)?;
            assert_eq!(runs.len(), 1);
            let again = tx.run(&ws, &parent.id, &runs[0].id)?;
            assert_eq!(again.map(|r| r.id), Some(runs[0].id.clone()));
            assert!(tx.run(&ws, &claimed[0], "run_none")?.is_none());
            Ok(())
        })
        .expect("read runs");
}

#[test]
fn a_socket_url_without_a_host_gets_localhost_and_keeps_the_rest() {
    for (url, expected) in [
        (
            "postgres://baton@/db?host=/run/postgresql",
            "postgres://baton@localhost/db?host=/run/postgresql",
        ),
        (
            "postgres://baton:pw@:5433/db?host=/tmp",
            "postgres://baton:pw@localhost:5433/db?host=/tmp",
        ),
        (
            "postgres:///db?host=/tmp",
            "postgres://localhost/db?host=/tmp",
        ),
        (
            "postgresql://?host=/tmp",
            "postgresql://localhost?host=/tmp",
        ),
        (
            "postgres://baton@db.internal/db",
            "postgres://baton@db.internal/db",
        ),
        (
            "postgres://127.0.0.1:5432/db",
            "postgres://127.0.0.1:5432/db",
        ),
        (
            "postgres://baton@/db?port=5433",
            "postgres://baton@/db?port=5433",
        ),
        (
            "postgres://baton@/db?hostaddr=x",
            "postgres://baton@/db?hostaddr=x",
        ),
        ("not a url", "not a url"),
    ] {
        assert_eq!(with_host(url), expected, "{url}");
    }
}

/// The libpq form of a Unix-socket URL (no host, the socket's directory in `host`) connects
/// through the socket, not TCP.
#[test]
fn a_unix_socket_url_connects_through_the_socket() {
    let Ok(url) = std::env::var("BATON_TEST_DATABASE_SOCKET_URL") else {
        eprintln!("skipped: BATON_TEST_DATABASE_SOCKET_URL is not set (run ./scripts/test)");
        return;
    };
    assert!(
        url.contains("@/"),
        "the test wants the host-less form: {url}"
    );
    let mut conn = Conn::open(&url).expect("connects through the socket");
    let (rt, pg) = conn.parts().expect("connected");
    let unix: bool = rt
        .block_on(sqlx::query_scalar("SELECT inet_client_addr() IS NULL").fetch_one(&mut *pg))
        .expect("query");
    assert!(unix, "connected over TCP instead of the Unix socket");
}

/// Tasks written at version 3 get their capability set at version 4, in the form a write
/// stores (sorted by bytes, between commas), and claims find them by it; also a task whose
/// input holds a NUL character (which `jsonb` refuses) and a nested empty
/// `required_capabilities` ahead of its own.
#[test]
fn version_4_files_tasks_under_their_capabilities() {
    let Some((url, ws, ..)) = fixture() else {
        return;
    };
    let store = PgStore::open(&url).expect("open the store");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let baton = Baton::new(store, Arc::new(SystemClock));
    let actor = rt
        .block_on(baton.actor("default", "planner"))
        .expect("actor");
    let mut tasks = Vec::new();
    let tricky = serde_json::json!({"plan": {"required_capabilities": []}, "text": "a\u{0}b"});
    for (priority, caps) in [
        (9, vec!["zeta", "gpu", "Äpfel"]),
        (5, vec!["gpu"]),
        (1, vec![]),
    ] {
        let req = CreateTask {
            title: format!("needs {caps:?}"),
            priority: Some(priority),
            required_capabilities: caps.into_iter().map(str::to_string).collect(),
            input: (priority == 5).then(|| tricky.clone()),
            ..Default::default()
        };
        tasks.push(
            rt.block_on(baton.create_task(&actor, None, req))
                .expect("create")
                .task,
        );
    }
    drop(baton);
    let mut conn = Conn::open(&url).expect("connect");
    conn.batch(BACK_TO_4).expect("back to version 4");
    conn.batch(
        "DROP INDEX tasks_claim; ALTER TABLE tasks DROP COLUMN caps;
         CREATE INDEX tasks_claim ON tasks (workspace_id, neg_priority, due_key, id) WHERE status = 'ready';
         DELETE FROM baton_schema WHERE version >= 4",
    )
    .expect("back to version 3");
    let store = PgStore::open(&url).expect("migrates");
    assert_eq!(migrate::version(&mut conn).expect("version"), 10);
    let (crt, pg) = conn.parts().expect("connected");
    for task in &tasks {
        let stored: String = crt
            .block_on(
                sqlx::query_scalar("SELECT caps FROM tasks WHERE id = $1")
                    .bind(&task.id)
                    .fetch_one(&mut *pg),
            )
            .expect("caps");
        assert_eq!(stored, baton_core::store::TaskColumns::of(task).caps);
    }
    assert_eq!(
        baton_core::store::TaskColumns::of(&tasks[0]).caps,
        ",gpu,zeta,Äpfel,"
    );
    let ids = |caps: Option<&[String]>| {
        let mut found = Vec::new();
        store
            .read(&mut |tx| {
                found = tx.claim_candidates(&ws, i64::MAX / 2, 10, caps)?;
                Ok(())
            })
            .expect("candidates");
        found.into_iter().map(|t| t.id).collect::<Vec<_>>()
    };
    let id = |i: usize| tasks[i].id.clone();
    assert_eq!(ids(None), [id(0), id(1), id(2)]);
    assert_eq!(ids(Some(&[])), [id(2)]);
    assert_eq!(ids(Some(&["gpu".to_string()])), [id(1), id(2)]);
}

/// A TCP relay on loopback to `upstream` that can be frozen: while frozen, what either side
/// sends is held back (a stalled host or a partition: connections stay open, nothing
/// answers). The relay's address and its switch.
fn freezable_relay(upstream: String) -> (String, Arc<std::sync::atomic::AtomicBool>) {
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicBool;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let frozen = Arc::new(AtomicBool::new(false));
    let switch = frozen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            for (mut from, mut to) in [
                (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                ),
                (server, client),
            ] {
                let frozen = frozen.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n @ 1..) = from.read(&mut buf) {
                        while frozen.load(Ordering::SeqCst) {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    (addr, switch)
}

/// A server that stops answering without closing its connections fails writes and reads
/// `UNAVAILABLE` (503, retryable) after the round-trip limit instead of holding them (and
/// the writers) for as long as it stays silent; once it answers again, the store goes on
/// over fresh connections. Whether the cut-off write committed is unknown to the caller
/// (its commit may have been the round trip cut off), so it retries with its idempotency
/// key: the task then exists exactly once.
#[test]
fn a_silent_server_fails_calls_unavailable_then_the_store_recovers() {
    let Ok(admin) = std::env::var("BATON_TEST_DATABASE_URL") else {
        eprintln!("skipped: BATON_TEST_DATABASE_URL is not set (run ./scripts/test)");
        return;
    };
    let name = format!(
        "baton_test_{}",
        baton_core::id::new_id("db").trim_start_matches("db_")
    );
    let url = PgStore::create_database(&admin, &name).expect("create a test database");
    let (head, rest) = url.split_once('@').expect("user@host");
    let (host, tail) = rest.split_once('/').expect("host/db");
    let (relay, frozen) = freezable_relay(host.to_string());
    let options = Options {
        round_trip_limit: Duration::from_secs(1),
        ..Default::default()
    };
    let store = PgStore::open_with(&format!("{head}@{relay}/{tail}"), options).expect("open");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let baton = Baton::new(store, Arc::new(SystemClock));
        let actor = baton.actor("default", "planner").await.expect("actor");
        let create = |title: &str| CreateTask {
            title: title.into(),
            ..Default::default()
        };
        let before = baton.create_task(&actor, None, create("before")).await;
        let before = before.expect("a live server answers").task;
        baton.get_task(&actor, &before.id).expect("read");

        frozen.store(true, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let write = baton
            .create_task(&actor, Some("k"), create("cut off"))
            .await;
        let write = write.expect_err("no answer, no success");
        assert_eq!(write.code, Code::Unavailable, "{write}");
        assert!(write.retryable());
        let read = tokio::task::block_in_place(|| baton.get_task(&actor, &before.id));
        assert_eq!(read.expect_err("no answer").code, Code::Unavailable);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(8),
            "answered after the limit, not held: {:?}",
            started.elapsed()
        );

        frozen.store(false, Ordering::SeqCst);
        let mut retried = Err(write);
        for _ in 0..50 {
            retried = baton
                .create_task(&actor, Some("k"), create("cut off"))
                .await;
            if retried.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        retried.expect("the store recovers once the server answers");
        let titles: Vec<String> = baton
            .list_tasks(&actor, Default::default())
            .expect("list")
            .tasks
            .into_iter()
            .map(|t| t.title)
            .collect();
        assert_eq!(titles, ["before", "cut off"], "the retried create, once");
    });
}

/// The store reads the server's clock as it opens: on the server's own host the offset
/// is next to nothing, and the clock it hands out reads the same time as the server.
#[test]
fn the_store_runs_by_the_servers_clock() {
    let Some((url, ..)) = fixture() else {
        return;
    };
    let store = PgStore::open(&url).expect("open");
    let clock = store.clock();
    assert!(clock.offset_ms().abs() < 1000, "{}", clock.offset_ms());
    let mut conn = Conn::open(&url).expect("connect");
    let (rt, pg) = conn.parts().expect("connected");
    let before = baton_core::time::Clock::now(&clock);
    let server: i64 = rt
        .block_on(sqlx::query_scalar(super::clock::QUERY).fetch_one(&mut *pg))
        .expect("the server's time");
    let after = baton_core::time::Clock::now(&clock);
    assert!(
        before - 50 <= server && server <= after + 50,
        "{before} {server} {after}"
    );
}
