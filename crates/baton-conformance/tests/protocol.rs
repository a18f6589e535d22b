//! The coordination protocol (DESIGN §4): claim order and routing, leases and fencing,
//! retries with backoff, DAG release, failure propagation, containers, review, optimistic
//! concurrency and idempotency.

use baton_conformance::{on_every_backend, Env, T0};
use baton_core::api::*;
use baton_core::state::{BlockedReason, Op, Status};
use baton_core::store::TaskFilter;
use baton_core::time::Duration;
use baton_core::{Code, LeaseOp};
use serde_json::json;

/// A claim of one task by `agent`.
fn claim_as(agent: &str) -> ClaimRequest {
    ClaimRequest {
        agent: agent.into(),
        ..Default::default()
    }
}

fn complete() -> LeaseOp {
    LeaseOp::Complete(Complete::default())
}

/// Claims come out by priority, then earliest due date, then age.
async fn claim_order_is_priority_then_due_then_age(env: Env) {
    let old_low = env
        .create(CreateTask {
            title: "old low".into(),
            priority: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let late = env
        .create(CreateTask {
            title: "due late".into(),
            priority: Some(5),
            due_at: Some(T0 + 100_000),
            ..Default::default()
        })
        .await
        .unwrap();
    let early = env
        .create(CreateTask {
            title: "due early".into(),
            priority: Some(5),
            due_at: Some(T0 + 10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    let no_due_a = env
        .create(CreateTask {
            title: "no due a".into(),
            priority: Some(5),
            ..Default::default()
        })
        .await
        .unwrap();
    let no_due_b = env
        .create(CreateTask {
            title: "no due b".into(),
            priority: Some(5),
            ..Default::default()
        })
        .await
        .unwrap();
    let top = env
        .create(CreateTask {
            title: "top".into(),
            priority: Some(9),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut order = Vec::new();
    while let Some(c) = env.claim("w").await {
        order.push(c.task.id);
    }
    assert_eq!(
        order,
        vec![
            top.id,
            early.id,
            late.id,
            no_due_a.id,
            no_due_b.id,
            old_low.id
        ]
    );
}

/// An agent is only offered tasks whose required capabilities it has.
async fn capability_routing(env: Env) {
    let rust = env
        .create(CreateTask {
            title: "rust".into(),
            required_capabilities: vec!["rust".into()],
            priority: Some(9),
            ..Default::default()
        })
        .await
        .unwrap();
    let plain = env.task("plain").await;
    assert_eq!(env.claim("generalist").await.unwrap().task.id, plain.id);
    assert!(
        env.claim("generalist").await.is_none(),
        "rust task must not go to an agent without rust"
    );
    assert_eq!(
        env.claim_with("rustacean", &["rust", "review"])
            .await
            .unwrap()
            .task
            .id,
        rust.id
    );
}

/// Each claim increments the epoch; an expired lease is never honoured, and the token of an
/// earlier epoch is LEASE_LOST even after the task is claimed again.
async fn expired_lease_is_fenced(env: Env) {
    let t = env
        .create(CreateTask {
            title: "t".into(),
            lease_ttl: Some(Duration::secs(30)),
            ..Default::default()
        })
        .await
        .unwrap();
    let first = env.claim("a").await.unwrap();
    assert_eq!(first.lease.epoch, 1);
    env.clock.advance(30_500);
    // Expired but not yet reaped: still refused.
    let err = env
        .lease(&t.id, &first.lease.token, complete())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::LeaseLost);
    // Backoff after a lost lease, then another agent takes it at the next epoch.
    assert!(env.claim("b").await.is_none(), "backoff holds the task");
    env.clock.advance(2_000);
    let second = env.claim("b").await.unwrap();
    assert_eq!(second.task.id, t.id);
    assert_eq!(second.lease.epoch, 2);
    assert_eq!(second.run.attempt, 2);
    let events_before = env.event_count();
    let err = env
        .lease(&t.id, &first.lease.token, complete())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::LeaseLost);
    assert!(!err.retryable());
    assert_eq!(
        env.event_count(),
        events_before,
        "a stale token changes nothing"
    );
    env.lease(&t.id, &second.lease.token, complete())
        .await
        .unwrap();
    assert_eq!(env.get(&t.id).status, Status::Done);
    let lost: Vec<_> = env
        .all_events()
        .into_iter()
        .filter(|e| e.kind == "task.lease_expired")
        .collect();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].data["run"]["status"], "lost");
    // The effects of expiry are computed as of the expiry time, not when it was noticed.
    assert_eq!(
        lost[0].data["run"]["ended_at"],
        baton_core::time::format_rfc3339(T0 + 30_000)
    );
}

/// An attempt's timeout bounds its lease: heartbeats extend it no further, and a run that
/// outlives it lapses like a lost lease, retried, with the timeout as its error.
async fn attempt_timeout_bounds_the_lease(env: Env) {
    let t = env
        .create(CreateTask {
            title: "t".into(),
            lease_ttl: Some(Duration::secs(30)),
            timeout: Some(Duration::secs(50)),
            ..Default::default()
        })
        .await
        .unwrap();
    let c = env.claim("a").await.unwrap();
    assert_eq!(c.lease.expires_at, T0 + 30_000);
    env.clock.advance(25_000);
    let ack = env.heartbeat(&t.id, &c.lease.token).await.unwrap();
    assert_eq!(
        ack["expires_at"],
        baton_core::time::format_rfc3339(T0 + 50_000),
        "not 30 s past the heartbeat: the attempt's 50 s end first"
    );
    assert_eq!(ack["signals"], json!(["timeout"]));
    env.clock.advance(26_000);
    let err = env
        .lease(&t.id, &c.lease.token, complete())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::LeaseLost);
    env.clock.advance(10_000);
    let again = env.claim("b").await.expect("retried after its backoff");
    assert_eq!(again.run.attempt, 2);
    let lost = env
        .all_events()
        .into_iter()
        .find(|e| e.kind == "task.lease_expired")
        .unwrap();
    assert_eq!(lost.data["run"]["error_class"], "timeout", "{}", lost.data);
    assert_eq!(
        lost.data["run"]["ended_at"],
        baton_core::time::format_rfc3339(T0 + 50_000)
    );
    assert!(lost.data["task"]["reason"]
        .as_str()
        .unwrap()
        .contains("timed out"));
    assert_eq!(env.replay_difference().await, None);
}

/// The kill switch revokes a project's leases at once: the holders' next lease operations
/// are `KILLED` and change nothing, nothing of it is claimable while it is set, and once it
/// is revived its tasks are claimed again, the revoked attempt not counted.
async fn kill_switch_revokes_leases_at_once(env: Env) {
    let project = env
        .baton
        .create_project(
            &env.actor,
            None,
            CreateProject {
                name: "web".into(),
                lease_ttl: None,
                retry_policy: None,
                review_required: None,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .project;
    let t = env
        .create(CreateTask {
            title: "t".into(),
            project: Some("web".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let c = env.claim("a").await.unwrap();
    assert_eq!(c.task.id, t.id);
    let kill = |killed: bool| ProjectSettings {
        lease_ttl: None,
        retry_policy: None,
        review_required: None,
        killed: Some(killed),
        ..Default::default()
    };
    env.baton
        .update_project(&env.actor, None, &project.id, kill(true))
        .await
        .unwrap();
    let revoked = env.get(&t.id);
    assert_eq!(
        (revoked.status, revoked.lease.is_none()),
        (Status::Ready, true)
    );
    let events = env.all_events();
    let event = events
        .iter()
        .find(|e| e.kind == "task.lease_revoked")
        .expect("the revocation is in the log");
    assert_eq!(event.data["run"]["status"], "revoked", "{}", event.data);
    let before = env.event_count();
    for op in [LeaseOp::Heartbeat(Heartbeat::default()), complete()] {
        let err = env.lease(&t.id, &c.lease.token, op).await.unwrap_err();
        assert_eq!(err.code, Code::Killed, "{err}");
    }
    let note = AddContext {
        kind: "note".into(),
        content: "still here".into(),
        supersedes: None,
        lease: Some(c.lease.token.clone()),
    };
    let err = env
        .baton
        .add_context(&env.actor, None, &t.id, note)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Killed, "{err}");
    assert_eq!(env.event_count(), before, "refused, nothing written");
    assert!(
        env.claim("b").await.is_none(),
        "nothing claimable while killed"
    );
    env.baton
        .update_project(&env.actor, None, &project.id, kill(false))
        .await
        .unwrap();
    let again = env.claim("b").await.expect("claimable once revived");
    assert_eq!((again.run.attempt, again.lease.epoch), (1, 2));
    // A stale token after the revival is only a lost lease.
    let err = env
        .lease(&t.id, &c.lease.token, complete())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::LeaseLost);
    assert_eq!(
        env.replay_difference().await,
        None,
        "the log replays the revocation"
    );
}

/// An agent's kill switch revokes the leases it holds (and only those), refuses its claims
/// and lease operations `KILLED`, and leaves its tasks to other agents at once; `disabled`
/// refuses claims but lets held leases run on.
async fn agent_kill_switch_revokes_its_leases(env: Env) {
    let mine = env.task("mine").await;
    let theirs = env.task("theirs").await;
    let spare = env.task("spare").await;
    let a = env.claim("a").await.unwrap();
    let b = env.claim("b").await.unwrap();
    assert_eq!(
        (a.task.id.as_str(), b.task.id.as_str()),
        (mine.id.as_str(), theirs.id.as_str())
    );
    let status = |s: &str| AgentSettings {
        status: Some(s.into()),
        ..Default::default()
    };
    let bad = env
        .baton
        .update_agent(&env.actor, None, "a", status("asleep"))
        .await
        .unwrap_err();
    assert_eq!(bad.code, Code::InvalidInput, "{bad}");
    let missing = env
        .baton
        .update_agent(&env.actor, None, "nobody", status("killed"))
        .await
        .unwrap_err();
    assert_eq!(missing.code, Code::NotFound, "{missing}");

    // Disabled: no new claims, the held lease runs on.
    let before = env.event_count();
    env.baton
        .update_agent(&env.actor, None, "b", status("disabled"))
        .await
        .unwrap();
    assert_eq!(env.event_count(), before + 1, "agent.updated only");
    let refused = env
        .baton
        .claim(&env.actor, None, claim_as("b"))
        .await
        .unwrap_err();
    assert_eq!(refused.code, Code::Killed, "{refused}");
    env.heartbeat(&theirs.id, &b.lease.token).await.unwrap();

    // Killed: a's lease is revoked at once, b's is untouched.
    let agent = env
        .baton
        .update_agent(&env.actor, None, "a", status("killed"))
        .await
        .unwrap()
        .agent;
    assert_eq!(agent.status, "killed");
    let revoked = env.get(&mine.id);
    assert_eq!(
        (revoked.status, revoked.lease.is_none()),
        (Status::Ready, true)
    );
    assert!(
        env.get(&theirs.id).lease.is_some(),
        "another agent's lease stands"
    );
    let err = env
        .lease(&mine.id, &a.lease.token, complete())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Killed, "{err}");
    assert!(err.message.contains("agent a is killed"), "{err}");
    let refused = env
        .baton
        .claim(&env.actor, None, claim_as("a"))
        .await
        .unwrap_err();
    assert_eq!(refused.code, Code::Killed, "{refused}");
    // Its task went back to the queue for others, the attempt not counted.
    let c = env.claim("c").await.expect("another agent takes it");
    assert_eq!((c.task.id.as_str(), c.run.attempt), (mine.id.as_str(), 1));
    // Its old token still hears why, though the task's newest run is another agent's.
    let err = env
        .lease(
            &mine.id,
            &a.lease.token,
            LeaseOp::Heartbeat(Heartbeat::default()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Killed, "{err}");
    env.heartbeat(&mine.id, &c.lease.token).await.unwrap();
    assert!(env.claim("c").await.is_some_and(|t| t.task.id == spare.id));

    // Reactivated, it claims again; its old token is only a lost lease now.
    env.baton
        .update_agent(&env.actor, None, "a", status("active"))
        .await
        .unwrap();
    let err = env
        .lease(&mine.id, &a.lease.token, complete())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::LeaseLost, "{err}");
    assert_eq!(
        env.replay_difference().await,
        None,
        "the log replays the switch"
    );
}

/// The workspace's kill switch revokes every lease in it, refuses every claim `KILLED`
/// (a waiting claim too) and signals `killed`; revived, work goes on.
async fn workspace_kill_switch_stops_everything(env: Env) {
    let one = env.task("one").await;
    env.task("two").await;
    let a = env.claim("a").await.unwrap();
    assert_eq!(a.task.id, one.id);
    let kill = |killed: bool| WorkspaceSettings {
        killed: Some(killed),
    };
    // A claim already waiting when the switch is set hears of it, not only a new one.
    env.claim("b0").await.expect("the second task");
    let waiting = {
        let (baton, actor) = (env.baton.clone(), env.actor.clone());
        tokio::spawn(async move {
            let req = ClaimRequest {
                wait: Some(Duration::secs(20)),
                ..claim_as("waiter")
            };
            baton.claim(&actor, None, req).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let ws = env
        .baton
        .update_workspace(&env.actor, None, kill(true))
        .await
        .unwrap()
        .workspace;
    assert!(ws.killed);
    assert!(env.baton.workspace(&env.actor).unwrap().workspace.killed);
    let woken = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the waiting claim is answered at once")
        .unwrap();
    assert_eq!(woken.unwrap_err().code, Code::Killed);
    let revoked = env.get(&one.id);
    assert_eq!(
        (revoked.status, revoked.lease.is_none()),
        (Status::Ready, true)
    );
    let before = env.event_count();
    let err = env
        .lease(
            &one.id,
            &a.lease.token,
            LeaseOp::Heartbeat(Heartbeat::default()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Killed, "{err}");
    assert!(err.message.contains("workspace"), "{err}");
    for req in [
        claim_as("b"),
        ClaimRequest {
            wait: Some(Duration::secs(5)),
            ..claim_as("b")
        },
    ] {
        let refused = env.baton.claim(&env.actor, None, req).await.unwrap_err();
        assert_eq!(refused.code, Code::Killed, "{refused}");
    }
    assert_eq!(env.event_count(), before, "refusals write nothing");
    // Setting it again changes nothing and writes no event.
    env.baton
        .update_workspace(&env.actor, None, kill(true))
        .await
        .unwrap();
    assert_eq!(env.event_count(), before);

    env.baton
        .update_workspace(&env.actor, None, kill(false))
        .await
        .unwrap();
    let again = env.claim("b").await.expect("claimable once revived");
    assert_eq!(
        (again.task.id.as_str(), again.lease.epoch),
        (one.id.as_str(), 2)
    );
    assert_eq!(
        env.replay_difference().await,
        None,
        "the log replays the switch"
    );
}

/// A claim waiting for work when its agent is killed or disabled hears of it (`KILLED`)
/// within a tick of the dispatcher, not once its wait runs out with nothing.
async fn a_waiting_claim_hears_its_agent_stopped(env: Env) {
    for status in ["killed", "disabled"] {
        let name = format!("waiter-{status}");
        let waiting = {
            let (baton, actor, name) = (env.baton.clone(), env.actor.clone(), name.clone());
            tokio::spawn(async move {
                let req = ClaimRequest {
                    wait: Some(Duration::secs(30)),
                    ..claim_as(&name)
                };
                baton.claim(&actor, None, req).await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let settings = AgentSettings {
            status: Some(status.into()),
            ..Default::default()
        };
        env.baton
            .update_agent(&env.actor, None, &name, settings)
            .await
            .expect("the waiting claim registered its agent");
        let answer = tokio::time::timeout(std::time::Duration::from_secs(15), waiting)
            .await
            .expect("answered before its wait runs out")
            .unwrap();
        assert_eq!(answer.unwrap_err().code, Code::Killed, "{status}");
    }
}

/// A heartbeat extends the lease by the TTL its claim was granted, not the task's: a lease
/// claimed for 60 s is neither cut to a task's 2 s nor stretched to its 5 minutes. A
/// heartbeat that asks a TTL gets it, and the heartbeats after it keep it.
async fn a_heartbeat_extends_by_the_ttl_the_claim_was_granted(env: Env) {
    use baton_core::time::{format_rfc3339, Clock};
    for task_ttl in [2, 300] {
        let t = env
            .create(CreateTask {
                title: format!("ttl {task_ttl}"),
                lease_ttl: Some(Duration::secs(task_ttl)),
                ..Default::default()
            })
            .await
            .unwrap();
        let req = ClaimRequest {
            lease_ttl: Some(Duration::secs(60)),
            ..claim_as("a")
        };
        let c = env
            .baton
            .claim(&env.actor, None, req)
            .await
            .unwrap()
            .claims
            .remove(0);
        assert_eq!(c.task.id, t.id);
        env.clock.advance(1_000);
        let ack = env.heartbeat(&t.id, &c.lease.token).await.unwrap();
        let by = |ms: i64| format_rfc3339(env.clock.now() + ms);
        assert_eq!(ack["expires_at"], by(60_000), "task TTL {task_ttl} s");
        let asked = Heartbeat {
            lease_ttl: Some(Duration::secs(90)),
            ..Default::default()
        };
        let ack = env
            .lease(&t.id, &c.lease.token, LeaseOp::Heartbeat(asked))
            .await
            .unwrap();
        assert_eq!(ack["expires_at"], by(90_000));
        env.clock.advance(1_000);
        let ack = env.heartbeat(&t.id, &c.lease.token).await.unwrap();
        assert_eq!(ack["expires_at"], by(90_000), "a heartbeat's TTL is kept");
        env.lease(&t.id, &c.lease.token, complete()).await.unwrap();
    }
    assert_eq!(env.replay_difference().await, None);
}

/// Heartbeats extend the lease and carry signals back.
async fn heartbeat_extends_and_signals(env: Env) {
    let t = env
        .create(CreateTask {
            title: "t".into(),
            lease_ttl: Some(Duration::secs(10)),
            budget: Some(json!({"max_cost": 1.0})),
            ..Default::default()
        })
        .await
        .unwrap();
    let c = env.claim("a").await.unwrap();
    for _ in 0..5 {
        env.clock.advance(8_000);
        let ack = env.heartbeat(&t.id, &c.lease.token).await.unwrap();
        assert_eq!(ack["signals"], json!([]));
    }
    // A planner changes the plan: the worker learns it on its next heartbeat, once.
    env.baton
        .update_task(
            &env.actor,
            None,
            &t.id,
            UpdateTask {
                plan: Some(Some("new plan".into())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let usage = Heartbeat {
        usage: Some(json!({"cost": 0.9})),
        progress: Some(0.5),
        ..Default::default()
    };
    let ack = env
        .lease(&t.id, &c.lease.token, LeaseOp::Heartbeat(usage))
        .await
        .unwrap();
    assert_eq!(ack["signals"], json!(["context_changed", "budget_warning"]));
    let ack = env.heartbeat(&t.id, &c.lease.token).await.unwrap();
    assert_eq!(ack["signals"], json!(["budget_warning"]));
    // Steps: the holder's own (sent with its lease) are no news to it; a step someone else
    // adds or marks done is.
    let beat = || async {
        let ack = env.heartbeat(&t.id, &c.lease.token).await.unwrap();
        ack["signals"]
            .as_array()
            .unwrap()
            .contains(&json!("context_changed"))
    };
    let mine = env
        .baton
        .add_step(
            &env.actor,
            None,
            &t.id,
            "mine".into(),
            None,
            Some(c.lease.token.clone()),
        )
        .await
        .unwrap();
    env.baton
        .done_step(
            &env.actor,
            None,
            &t.id,
            &mine.step.id,
            None,
            Some(c.lease.token.clone()),
        )
        .await
        .unwrap();
    assert!(!beat().await, "the holder's own steps");
    let theirs = env
        .baton
        .add_step(&env.actor, None, &t.id, "theirs".into(), None, None)
        .await
        .unwrap();
    assert!(beat().await, "a step added by someone else");
    assert!(!beat().await, "said once");
    env.baton
        .done_step(&env.actor, None, &t.id, &theirs.step.id, None, None)
        .await
        .unwrap();
    assert!(beat().await, "a step marked done by someone else");
    // The holder's own write does not hide a change someone else made before it.
    env.baton
        .add_step(&env.actor, None, &t.id, "planner's".into(), None, None)
        .await
        .unwrap();
    env.baton
        .add_step(
            &env.actor,
            None,
            &t.id,
            "own".into(),
            None,
            Some(c.lease.token.clone()),
        )
        .await
        .unwrap();
    assert!(beat().await, "the planner's step is still news");
    // A step done already is not done again, but a stale lease is still refused.
    let stale = env
        .baton
        .done_step(
            &env.actor,
            None,
            &t.id,
            &mine.step.id,
            None,
            Some("lse_stale".into()),
        )
        .await
        .unwrap_err();
    assert_eq!(stale.code, Code::LeaseLost);
    let stale = env
        .baton
        .add_step(
            &env.actor,
            None,
            &t.id,
            "x".into(),
            None,
            Some("lse_stale".into()),
        )
        .await
        .unwrap_err();
    assert_eq!(stale.code, Code::LeaseLost);
    // Marked done again: the same (or no) notes change nothing; other notes replace them.
    let holder = Some(c.lease.token.clone());
    let before = env.event_count();
    let again = |notes: Option<&str>| {
        env.baton.done_step(
            &env.actor,
            None,
            &t.id,
            &mine.step.id,
            notes.map(str::to_string),
            holder.clone(),
        )
    };
    again(None).await.unwrap();
    assert_eq!(env.event_count(), before, "done already");
    let noted = again(Some("merged in #12")).await.unwrap().step;
    assert_eq!(
        (noted.done, noted.notes.as_deref()),
        (true, Some("merged in #12"))
    );
    assert_eq!(env.event_count(), before + 1, "step.updated");
    again(Some("merged in #12")).await.unwrap();
    assert_eq!(env.event_count(), before + 1, "the same notes again");
    assert_eq!(
        env.replay_difference().await,
        None,
        "the log replays the notes"
    );
    let bad = Heartbeat {
        progress: Some(1.5),
        ..Default::default()
    };
    assert_eq!(
        env.lease(&t.id, &c.lease.token, LeaseOp::Heartbeat(bad))
            .await
            .unwrap_err()
            .code,
        Code::InvalidInput
    );
}

/// Failures back off and retry until attempts are used up; then the task fails and an event
/// asks for attention. Non-retryable classes fail at once.
async fn fail_retries_with_backoff_then_fails(env: Env) {
    let t = env
        .create(CreateTask {
            title: "t".into(),
            max_attempts: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    let fail = || {
        LeaseOp::Fail(Fail {
            error: "boom".into(),
            ..Default::default()
        })
    };
    for attempt in 1..=3u32 {
        let c = env
            .claim("a")
            .await
            .unwrap_or_else(|| panic!("attempt {attempt} claimable"));
        assert_eq!(c.run.attempt, attempt);
        let out = env.lease(&t.id, &c.lease.token, fail()).await.unwrap();
        if attempt < 3 {
            assert_eq!(out["task"]["status"], "ready");
            // The next claim begins attempt `attempt + 1`: a maximum below it is refused.
            let lower = UpdateTask {
                max_attempts: Some(attempt),
                ..Default::default()
            };
            let err = env
                .baton
                .update_task(&env.actor, None, &t.id, lower)
                .await
                .unwrap_err();
            assert_eq!(err.code, Code::InvalidInput, "{err}");
            assert!(err.hint.contains(&format!("{}", attempt + 1)), "{err}");
            assert!(env.claim("a").await.is_none(), "backoff holds the task");
            env.clock.advance(10 * 60 * 1000);
        } else {
            assert_eq!(out["task"]["status"], "failed");
        }
    }
    assert!(env
        .all_events()
        .iter()
        .any(|e| e.kind == "task.needs_attention" && e.task_id.as_deref() == Some(&t.id)));
    // Explicit retry gives a fresh set of attempts.
    env.baton
        .transition(&env.actor, None, Op::Retry, &t.id, None)
        .await
        .unwrap();
    assert_eq!(env.claim("a").await.unwrap().run.attempt, 1);

    let p = env.task("permanent").await;
    let c = env.claim("a").await.unwrap();
    assert_eq!(c.task.id, p.id);
    let f = Fail {
        error: "bad input".into(),
        class: Some("permanent".into()),
        no_retry: false,
    };
    let out = env
        .lease(&p.id, &c.lease.token, LeaseOp::Fail(f))
        .await
        .unwrap();
    assert_eq!(out["task"]["status"], "failed");
    let f = Fail {
        error: "x".into(),
        class: Some("cosmic".into()),
        no_retry: false,
    };
    assert_eq!(
        env.lease(&p.id, &c.lease.token, LeaseOp::Fail(f))
            .await
            .unwrap_err()
            .code,
        Code::InvalidInput
    );
}

/// Backoff grows with attempts and is capped.
#[test]
fn backoff_grows_and_caps() {
    let p = baton_core::model::RetryPolicy::default();
    let b1 = p.backoff(1, "t");
    let b2 = p.backoff(2, "t");
    let b20 = p.backoff(20, "t");
    assert!((900..=1100).contains(&b1), "{b1}");
    assert!((1800..=2200).contains(&b2), "{b2}");
    assert!(b20 <= 330_000, "{b20}");
    assert_eq!(p.backoff(2, "t"), b2, "deterministic");
}

/// Dependents are released in the same transaction as the blocker's completion; a failed
/// blocker marks them `dependency_failed`.
async fn dag_release_and_failure_propagation(env: Env) {
    let a = env
        .create(CreateTask {
            title: "a".into(),
            priority: Some(9),
            max_attempts: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let b = env
        .create(CreateTask {
            title: "b".into(),
            blocked_by: vec![a.id.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(b.status, Status::Blocked);
    assert_eq!(b.blocked_reason, Some(BlockedReason::Dependencies));
    // A refusal lists what the task accepts as it is: its blockers release it, so
    // `unblock` is not offered (it would be refused in turn).
    let err = env
        .baton
        .transition(&env.actor, None, Op::Publish, &b.id, None)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidTransition);
    assert_eq!(err.details.unwrap()["allowed"], json!(["update", "cancel"]));
    let c = env.claim("w").await.unwrap();
    assert_eq!(c.task.id, a.id);
    assert!(env.claim("w2").await.is_none(), "b is blocked");
    env.lease(&a.id, &c.lease.token, complete()).await.unwrap();
    assert_eq!(env.get(&b.id).status, Status::Ready);
    let events = env.all_events();
    let done = events.iter().find(|e| e.kind == "task.completed").unwrap();
    let released = events.iter().find(|e| e.kind == "task.released").unwrap();
    assert_eq!(
        released.seq,
        done.seq + 1,
        "released right after the completion, in its transaction"
    );
    assert_eq!(released.at, done.at);

    let x = env
        .create(CreateTask {
            title: "x".into(),
            priority: Some(9),
            max_attempts: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let y = env
        .create(CreateTask {
            title: "y".into(),
            blocked_by: vec![x.id.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let cx = env.claim("w").await.unwrap();
    assert_eq!(cx.task.id, x.id);
    env.lease(
        &x.id,
        &cx.lease.token,
        LeaseOp::Fail(Fail {
            error: "no".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let y = env.get(&y.id);
    assert_eq!(
        (y.status, y.blocked_reason),
        (Status::Blocked, Some(BlockedReason::DependencyFailed))
    );
    assert!(env
        .all_events()
        .iter()
        .any(|e| e.kind == "task.dependency_failed" && e.task_id.as_deref() == Some(&y.id)));
    // A planner decides: retry the blocker and finish it; the dependent is released.
    env.baton
        .transition(&env.actor, None, Op::Retry, &x.id, None)
        .await
        .unwrap();
    let waiting = env.get(&y.id);
    assert_eq!(
        (waiting.status, waiting.blocked_reason),
        (Status::Blocked, Some(BlockedReason::Dependencies)),
        "the blocker runs again: the dependent waits on it, no longer failed"
    );
    let cx = env.claim("w").await.unwrap();
    assert_eq!(cx.task.id, x.id);
    env.lease(&x.id, &cx.lease.token, complete()).await.unwrap();
    assert_eq!(env.get(&y.id).status, Status::Ready);
}

/// Dependencies added later block a ready task; removing them releases it; cycles are refused
/// with the path named.
async fn dependencies_and_cycles(env: Env) {
    let a = env.task("a").await;
    let b = env.task("b").await;
    let c = env.task("c").await;
    let a_ = &env.actor;
    let out = env
        .baton
        .dependency(
            a_,
            None,
            &a.id,
            &b.id,
            baton_core::model::DepKind::Blocks,
            true,
        )
        .await
        .unwrap();
    assert_eq!(out.task.status, Status::Blocked);
    env.baton
        .dependency(
            a_,
            None,
            &b.id,
            &c.id,
            baton_core::model::DepKind::Blocks,
            true,
        )
        .await
        .unwrap();
    let before = env.event_count();
    let err = env
        .baton
        .dependency(
            a_,
            None,
            &c.id,
            &a.id,
            baton_core::model::DepKind::Blocks,
            true,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Cycle);
    assert_eq!(
        err.details.unwrap()["path"],
        json!([a.id, b.id, c.id, a.id])
    );
    assert_eq!(env.event_count(), before, "a refused edge changes nothing");
    let err = env
        .baton
        .dependency(
            a_,
            None,
            &a.id,
            &a.id,
            baton_core::model::DepKind::Blocks,
            true,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Cycle);
    let out = env
        .baton
        .dependency(
            a_,
            None,
            &a.id,
            &b.id,
            baton_core::model::DepKind::Blocks,
            false,
        )
        .await
        .unwrap();
    assert_eq!(out.task.status, Status::Ready);
    let err = env
        .baton
        .dependency(
            a_,
            None,
            &a.id,
            &b.id,
            baton_core::model::DepKind::Blocks,
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
}

/// A parent waits on its children (it is not claimable while they are open), so a task
/// blocked by its own parent, or by anything that waits on its parent, could never run:
/// such an edge is `CYCLE` at creation and when added later, and changes nothing. A parent
/// blocked by its child is fine.
async fn parents_close_cycles(env: Env) {
    let blocks = baton_core::model::DepKind::Blocks;
    let a_ = &env.actor;
    let grandparent = env.task("grandparent").await;
    let child_of =
        |parent: &baton_core::model::Task, title: &str, blocked_by: Vec<String>| CreateTask {
            title: title.into(),
            parent_id: Some(parent.id.clone()),
            blocked_by,
            ..Default::default()
        };
    let parent = env
        .create(child_of(&grandparent, "parent", vec![]))
        .await
        .unwrap();
    let before = env.event_count();
    // Created blocked by its parent, or by its grandparent.
    for blocker in [&parent, &grandparent] {
        let err = env
            .create(child_of(&parent, "child", vec![blocker.id.clone()]))
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::Cycle, "{err:?}");
        let path = err.details.unwrap()["path"].clone();
        let path: Vec<&str> = path
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert_eq!(path.first(), path.last(), "a closed path: {path:?}");
        assert_eq!(path[path.len() - 2], blocker.id, "{path:?}");
    }
    // Blocked by a task that waits on its grandparent.
    let waits = env.task("waits on the grandparent").await;
    env.baton
        .dependency(a_, None, &grandparent.id, &waits.id, blocks, true)
        .await
        .unwrap();
    let before_waits = env.event_count();
    let err = env
        .create(child_of(&parent, "child", vec![waits.id.clone()]))
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Cycle, "{err:?}");
    assert_eq!(
        env.event_count(),
        before_waits,
        "a refused task changes nothing"
    );
    assert!(before < before_waits);
    // Blocked by a container one of whose children waits on the parent: the container
    // waits on its child, which waits on the parent.
    let container = env.task("container").await;
    let inner = env
        .create(child_of(&container, "inner", vec![parent.id.clone()]))
        .await
        .unwrap();
    let before_inner = env.event_count();
    let err = env
        .create(child_of(&parent, "child", vec![container.id.clone()]))
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Cycle, "{err:?}");
    let path = err.details.unwrap()["path"].clone();
    assert_eq!(path[1], json!(parent.id), "{path}");
    assert_eq!(path[2], json!(inner.id), "{path}");
    assert_eq!(path[3], json!(container.id), "{path}");
    assert_eq!(env.event_count(), before_inner);
    // Added later: the child's own parent, then an ancestor, as its blocker.
    let child = env
        .create(child_of(&parent, "child", vec![]))
        .await
        .unwrap();
    let before = env.event_count();
    for blocker in [&parent.id, &grandparent.id, &waits.id] {
        let err = env
            .baton
            .dependency(a_, None, blocker, &child.id, blocks, true)
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::Cycle, "{blocker}: {err:?}");
        let path = err.details.unwrap()["path"].clone();
        assert_eq!(
            path[0],
            json!(child.id),
            "starts at the blocked task: {path}"
        );
        assert_eq!(path.as_array().unwrap().last(), Some(&json!(child.id)));
    }
    assert_eq!(env.event_count(), before, "a refused edge changes nothing");
    assert_eq!(env.get(&child.id).status, Status::Ready);
    // The other way round is a plain wait: the parent is blocked by its child.
    let out = env
        .baton
        .dependency(a_, None, &child.id, &parent.id, blocks, true)
        .await
        .unwrap();
    assert_eq!(out.task.status, Status::Blocked);
    let c = env.claim("w").await.unwrap();
    assert_eq!(c.task.id, child.id);
    env.lease(&child.id, &c.lease.token, complete())
        .await
        .unwrap();
    assert_eq!(env.get(&parent.id).status, Status::Ready);
    // A parent completed over its open children (forced) waits on them no more: a task
    // that waits on it may block one of them.
    let p = env.claim("w").await.unwrap();
    assert_eq!(p.task.id, parent.id);
    let orphan = env
        .create(child_of(&parent, "late child", vec![]))
        .await
        .unwrap();
    let forced = LeaseOp::Complete(Complete {
        force: true,
        ..Default::default()
    });
    env.lease(&parent.id, &p.lease.token, forced).await.unwrap();
    let after = env.task("after the parent").await;
    env.baton
        .dependency(a_, None, &parent.id, &after.id, blocks, true)
        .await
        .unwrap();
    let out = env
        .baton
        .dependency(a_, None, &after.id, &orphan.id, blocks, true)
        .await
        .unwrap();
    assert_eq!(out.task.id, orphan.id);
    assert_eq!(
        out.task.status,
        Status::Blocked,
        "it waits until `after` is done"
    );
}

/// A task with open children is a container: not claimable until its children end, and it
/// does not complete over open children unless forced (with a warning).
async fn containers(env: Env) {
    let parent = env
        .create(CreateTask {
            title: "parent".into(),
            priority: Some(9),
            ..Default::default()
        })
        .await
        .unwrap();
    let child = env
        .create(CreateTask {
            title: "child".into(),
            parent_id: Some(parent.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let c = env.claim("w").await.unwrap();
    assert_eq!(c.task.id, child.id, "the container is not offered");
    assert!(env.claim("w").await.is_none());
    env.lease(&child.id, &c.lease.token, complete())
        .await
        .unwrap();
    let p = env.claim("w").await.unwrap();
    assert_eq!(
        p.task.id, parent.id,
        "claimable again for its finishing work"
    );
    let late = env
        .create(CreateTask {
            title: "late child".into(),
            parent_id: Some(parent.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = env
        .lease(&parent.id, &p.lease.token, complete())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::OpenChildren);
    let forced = LeaseOp::Complete(Complete {
        force: true,
        ..Default::default()
    });
    let out = env.lease(&parent.id, &p.lease.token, forced).await.unwrap();
    assert_eq!(out["warnings"].as_array().unwrap().len(), 1);
    assert_eq!(env.get(&late.id).status, Status::Ready);
    // A child that fails under the finished parent is not retried there: the parent
    // takes no new work, as it takes no new children.
    let l = env.claim("w").await.unwrap();
    assert_eq!(l.task.id, late.id);
    let fail = LeaseOp::Fail(Fail {
        error: "no".into(),
        class: None,
        no_retry: true,
    });
    env.lease(&late.id, &l.lease.token, fail).await.unwrap();
    let before = env.event_count();
    let err = env
        .baton
        .transition(&env.actor, None, Op::Retry, &late.id, None)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidTransition, "{err}");
    assert_eq!(err.details.unwrap()["parent_status"], "done");
    assert_eq!(env.event_count(), before);
    assert_eq!(env.get(&late.id).status, Status::Failed);
    // Nor is a new child created under it; the refusal names the parent and its status.
    let err = env
        .create(CreateTask {
            title: "too late".into(),
            parent_id: Some(parent.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidTransition, "{err}");
    let details = err.details.unwrap();
    assert_eq!(
        (&details["parent_id"], &details["parent_status"]),
        (&json!(parent.id), &json!("done"))
    );
    assert_eq!(env.event_count(), before);
}

/// Output is checked against the task's output schema.
async fn output_schema_is_enforced(env: Env) {
    let schema =
        json!({"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}});
    let t = env
        .create(CreateTask {
            title: "t".into(),
            output_schema: Some(schema),
            ..Default::default()
        })
        .await
        .unwrap();
    let c = env.claim("w").await.unwrap();
    let bad = LeaseOp::Complete(Complete {
        output: Some(json!({"url": 5})),
        ..Default::default()
    });
    let err = env.lease(&t.id, &c.lease.token, bad).await.unwrap_err();
    assert_eq!(err.code, Code::SchemaViolation);
    assert_eq!(
        env.get(&t.id).status,
        Status::Claimed,
        "a refused completion changes nothing"
    );
    let good = LeaseOp::Complete(Complete {
        output: Some(json!({"url": "https://x"})),
        ..Default::default()
    });
    env.lease(&t.id, &c.lease.token, good).await.unwrap();
    assert_eq!(env.get(&t.id).output, Some(json!({"url": "https://x"})));
    let err = env
        .create(CreateTask {
            title: "bad schema".into(),
            output_schema: Some(json!({"type": 7})),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidInput);
}

/// Review: approve finishes; reject sends back for another attempt.
async fn review_approve_and_reject(env: Env) {
    // A project that requires review requires it of every task: a task cannot waive it.
    env.baton
        .create_project(
            &env.actor,
            None,
            CreateProject {
                name: "audited".into(),
                lease_ttl: None,
                retry_policy: None,
                review_required: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let created = env
        .baton
        .create_task(
            &env.actor,
            None,
            CreateTask {
                title: "t".into(),
                project: Some("audited".into()),
                review_required: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let t = created.task;
    assert!(t.review_required, "the project's review stands");
    assert!(
        created.warnings.iter().any(|w| w.contains("audited")),
        "{:?}",
        created.warnings
    );
    let waive = UpdateTask {
        review_required: Some(false),
        ..Default::default()
    };
    let updated = env
        .baton
        .update_task(&env.actor, None, &t.id, waive)
        .await
        .unwrap();
    assert!(
        updated.task.review_required,
        "not waived by an update either"
    );
    assert_eq!(updated.task.version, t.version, "nothing changed");
    assert_eq!(updated.warnings.len(), 1, "{:?}", updated.warnings);
    let c = env.claim("w").await.unwrap();
    let submit = LeaseOp::Complete(Complete {
        output: Some(serde_json::json!({"pr": 12})),
        outcome: Some("PR 12 merged".into()),
        ..Default::default()
    });
    let out = env.lease(&t.id, &c.lease.token, submit).await.unwrap();
    assert_eq!(out["task"]["status"], "review");
    assert_eq!(out["task"]["outcome"], "PR 12 merged");
    let out = env
        .baton
        .transition(
            &env.actor,
            None,
            Op::Reject,
            &t.id,
            Some("missing tests".into()),
        )
        .await
        .unwrap();
    assert_eq!(out.task.status, Status::Ready);
    // The rejected work stays with its run, not on the task as if it were the result.
    assert_eq!((out.task.output, out.task.outcome), (None, None));
    let c = env.claim("w").await.unwrap();
    assert_eq!(c.run.attempt, 2);
    // Whoever takes it next reads why the first attempt was turned down.
    let brief = serde_json::to_value(env.baton.brief(&env.actor, &t.id, None).unwrap()).unwrap();
    let first = &brief["brief"]["runs"][1];
    assert_eq!(first["attempt"], 1, "{brief}");
    assert_eq!(first["status"], "rejected", "{brief}");
    assert_eq!(first["error"], "missing tests", "{brief}");
    assert_eq!(first["outcome"], "PR 12 merged", "{brief}");
    assert_eq!(first["output"]["pr"], 12, "{brief}");
    assert_eq!(
        env.replay_difference().await,
        None,
        "the log replays the verdict"
    );
    env.lease(&t.id, &c.lease.token, complete()).await.unwrap();
    let out = env
        .baton
        .transition(&env.actor, None, Op::Approve, &t.id, None)
        .await
        .unwrap();
    assert_eq!(out.task.status, Status::Done);
}

/// A task read as of an event of the log is the task as that event left it: before its
/// creation it is not found, past the newest event the number is refused.
async fn a_task_reads_as_of_an_event(env: Env) {
    let before = env.baton.last_seq(&env.actor).unwrap();
    let t = env.task("first title").await;
    let created = env.baton.last_seq(&env.actor).unwrap();
    let other = env.task("another task").await;
    let rename = UpdateTask {
        title: Some("second title".into()),
        ..Default::default()
    };
    env.baton
        .update_task(&env.actor, None, &t.id, rename)
        .await
        .unwrap();
    let renamed = env.baton.last_seq(&env.actor).unwrap();
    let c = env.claim("w").await.unwrap();
    assert_eq!(c.task.id, t.id);
    let at = |seq| env.baton.get_task_as_of(&env.actor, &t.id, seq);
    let first = at(created).unwrap().task;
    assert_eq!(
        (first.title.as_str(), first.status, first.version),
        ("first title", Status::Ready, t.version)
    );
    // Another task's event in between leaves this one as it was.
    assert_eq!(at(created + 1).unwrap().task, first);
    let second = at(renamed).unwrap().task;
    assert_eq!(
        (second.title.as_str(), second.status),
        ("second title", Status::Ready)
    );
    let now = env.baton.last_seq(&env.actor).unwrap();
    assert_eq!(
        at(now).unwrap().task,
        env.get(&t.id).view(),
        "the newest is the live task"
    );
    assert_eq!(at(before).unwrap_err().code, Code::NotFound);
    assert_eq!(at(now + 1).unwrap_err().code, Code::InvalidInput);
    assert_eq!(at(u64::MAX).unwrap_err().code, Code::InvalidInput);
    let unknown = env.baton.get_task_as_of(&env.actor, "tsk_nope", now);
    assert_eq!(unknown.unwrap_err().code, Code::NotFound);
    assert_ne!(other.id, t.id);
}

/// Release gives the task back without counting an attempt; cancel ends a live run.
async fn release_and_cancel(env: Env) {
    let t = env.task("t").await;
    let c = env.claim("w").await.unwrap();
    env.lease(&t.id, &c.lease.token, LeaseOp::Release)
        .await
        .unwrap();
    let again = env.claim("w").await.unwrap();
    assert_eq!(again.run.attempt, 1, "release does not count an attempt");
    assert_eq!(again.lease.epoch, 2, "but the epoch still grows");
    env.baton
        .transition(&env.actor, None, Op::Cancel, &t.id, None)
        .await
        .unwrap();
    let err = env.heartbeat(&t.id, &again.lease.token).await.unwrap_err();
    assert_eq!(err.code, Code::LeaseLost);
    assert!(err.hint.contains("canceled"), "{}", err.hint);
}

/// Canceling a parent cancels its open descendants with it (a leased one's holder hears
/// it at the next heartbeat; a finished one stays as it ended), and the dependents of each
/// are told: nothing of the canceled work stays claimable.
async fn cancel_takes_open_descendants_with_it(env: Env) {
    let under = |title: &str, parent: &baton_core::model::Task, priority: i64| CreateTask {
        title: title.into(),
        parent_id: Some(parent.id.clone()),
        priority: Some(priority),
        ..Default::default()
    };
    let epic = env.task("epic").await;
    let done = env.create(under("done", &epic, 20)).await.unwrap();
    let leased = env.create(under("leased", &epic, 10)).await.unwrap();
    let container = env.create(under("container", &epic, 0)).await.unwrap();
    let grandchild = env
        .create(under("grandchild", &container, 0))
        .await
        .unwrap();
    // A sibling waiting on another: canceled with it, never logged blocked in between.
    let sibling = CreateTask {
        blocked_by: vec![leased.id.clone()],
        ..under("sibling", &epic, 0)
    };
    let sibling = env.create(sibling).await.unwrap();
    let outside = env
        .create(CreateTask {
            title: "outside".into(),
            blocked_by: vec![leased.id.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let first = env.claim("w").await.unwrap();
    assert_eq!(first.task.id, done.id);
    env.lease(
        &done.id,
        &first.lease.token,
        LeaseOp::Complete(Default::default()),
    )
    .await
    .unwrap();
    let second = env.claim("w").await.unwrap();
    assert_eq!(second.task.id, leased.id);

    let before = env.event_count() as usize;
    let out = env
        .baton
        .transition(
            &env.actor,
            None,
            Op::Cancel,
            &epic.id,
            Some("scope cut".into()),
        )
        .await
        .unwrap();
    assert_eq!(out.task.status, Status::Canceled);
    assert_eq!(out.task.reason.as_deref(), Some("scope cut"));
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].contains("4 open descendant"),
        "{:?}",
        out.warnings
    );
    let logged: Vec<_> = env.all_events().split_off(before);
    let failed: Vec<_> = logged
        .iter()
        .filter(|e| e.kind == "task.dependency_failed")
        .filter_map(|e| e.task_id.as_deref())
        .collect();
    assert_eq!(
        failed,
        [outside.id.as_str()],
        "only the task left open is told"
    );
    for t in [&leased, &container, &grandchild, &sibling] {
        let t = env.get(&t.id);
        assert_eq!(t.status, Status::Canceled, "{}", t.title);
        assert_eq!(
            t.reason,
            Some(format!("its ancestor {} was canceled", epic.id))
        );
    }
    assert_eq!(
        env.get(&done.id).status,
        Status::Done,
        "a finished child stays"
    );
    let err = env
        .heartbeat(&leased.id, &second.lease.token)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::LeaseLost);
    assert!(err.hint.contains("canceled"), "{}", err.hint);
    let outside = env.get(&outside.id);
    assert_eq!(
        (outside.status, outside.blocked_reason),
        (Status::Blocked, Some(BlockedReason::DependencyFailed))
    );
    assert!(
        env.claim("w").await.is_none(),
        "nothing of the epic is left to claim"
    );
    assert_eq!(env.replay_difference().await, None);
}

/// A task created or published behind a blocker that already failed or was canceled is
/// blocked `dependency_failed` and says so, to the caller (a warning naming the blocker,
/// per item in a batch) and to watchers (`task.dependency_failed`), as when a blocker
/// fails later.
async fn a_task_born_behind_a_failed_blocker_says_so(env: Env) {
    let gone = env.task("gone").await;
    env.baton
        .transition(&env.actor, None, Op::Cancel, &gone.id, None)
        .await
        .unwrap();
    let behind = |title: &str, draft: bool| CreateTask {
        title: title.into(),
        blocked_by: vec![gone.id.clone()],
        draft,
        ..Default::default()
    };
    let said_so = |warnings: &[String], task: &baton_core::model::Task| {
        assert_eq!(
            (task.status, task.blocked_reason),
            (Status::Blocked, Some(BlockedReason::DependencyFailed))
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("dependency_failed"), "{warnings:?}");
        assert!(
            warnings[0].contains(&format!("{} is canceled", gone.id)),
            "{warnings:?}"
        );
        let last = env.all_events().pop().unwrap();
        assert_eq!(
            (last.kind.as_str(), last.task_id.as_deref()),
            ("task.dependency_failed", Some(task.id.as_str()))
        );
    };
    let created = env
        .baton
        .create_task(&env.actor, None, behind("created", false))
        .await
        .unwrap();
    said_so(&created.warnings, &created.task);

    let draft = env
        .baton
        .create_task(&env.actor, None, behind("draft", true))
        .await
        .unwrap();
    assert!(draft.warnings.is_empty(), "a draft waits on nothing yet");
    let published = env
        .baton
        .transition(&env.actor, None, Op::Publish, &draft.task.id, None)
        .await
        .unwrap();
    said_so(&published.warnings, &published.task);

    let item = baton_core::ops::task::BatchItem {
        reference: "batched".into(),
        task: behind("batched", false),
    };
    let batch = env
        .baton
        .create_batch(&env.actor, None, vec![item])
        .await
        .unwrap();
    said_so(&batch.tasks[0].warnings, &batch.tasks[0].task);

    // A plan applied again that publishes its draft behind the failed blocker says so too.
    let plan = |draft: bool| {
        let text = format!(
            "name: late\ntasks:\n  - ref: l\n    title: late\n    draft: {draft}\n    blocked_by: [{}]\n",
            gone.id
        );
        baton_core::ops::plan::parse(&text).unwrap()
    };
    let first = env
        .baton
        .apply_plan(&env.actor, None, plan(true))
        .await
        .unwrap();
    assert!(
        first.tasks[0].warnings.is_empty(),
        "{:?}",
        first.tasks[0].warnings
    );
    let again = env
        .baton
        .apply_plan(&env.actor, None, plan(false))
        .await
        .unwrap();
    said_so(&again.tasks[0].warnings, &again.tasks[0].task);
    assert_eq!(env.replay_difference().await, None);
}

/// Things are named by id or name alike, so a new name shaped like an id is refused: it
/// would be read as another thing's id (or as an id that names nothing).
async fn names_shaped_like_ids_are_refused(env: Env) {
    let web = env
        .baton
        .create_project(&env.actor, None, web_request())
        .await;
    let web = web.unwrap();
    for name in [web.project.id.clone(), baton_core::id::new_id("prj")] {
        let req = CreateProject {
            name: name.clone(),
            ..web_request()
        };
        let err = env
            .baton
            .create_project(&env.actor, None, req)
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::InvalidInput, "{name}: {}", err.message);
        assert!(err.message.contains("shaped like an id"), "{}", err.message);
    }
    let fresh = baton_core::id::new_id("agt");
    let register = RegisterAgent {
        agent: fresh.clone(),
        ..Default::default()
    };
    let err = env
        .baton
        .register_agent(&env.actor, None, register)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidInput, "{}", err.message);
    let claim = ClaimRequest {
        agent: fresh,
        ..Default::default()
    };
    let err = env.baton.claim(&env.actor, None, claim).await.unwrap_err();
    assert_eq!(err.code, Code::InvalidInput, "{}", err.message);
}

fn web_request() -> CreateProject {
    CreateProject {
        name: "web".into(),
        lease_ttl: None,
        retry_policy: None,
        review_required: None,
        ..Default::default()
    }
}

/// Readers of the log never see the hashes of secrets (a lease's token, a key's), though
/// the stored snapshots keep them: replay still restores the lease, which still works.
async fn the_log_shows_no_secret_hashes(env: Env) {
    let t = env.task("t").await;
    let c = env.claim("w").await.unwrap();
    let admin = env.baton.actor("default", "admin").await.unwrap();
    env.baton.create_key(&admin, "worker", None).await.unwrap();
    let events = env.all_events();
    assert!(
        events.iter().any(|e| e.kind == "task.claimed")
            && events.iter().any(|e| e.kind == "key.created")
    );
    for e in &events {
        assert!(
            !e.data.to_string().contains("token_sha256"),
            "{}: {}",
            e.kind,
            e.data
        );
    }
    assert_eq!(env.replay_difference().await, None);
    env.heartbeat(&t.id, &c.lease.token).await.unwrap();
}

/// Turning review on for a project requires it of its open tasks too, not only of those
/// created later: a task claimed before goes to review when completed. Finished tasks and
/// tasks that required it already are left as they are.
async fn project_review_reaches_its_open_tasks(env: Env) {
    let web = env
        .baton
        .create_project(&env.actor, None, web_request())
        .await;
    let web = web.unwrap().project;
    let in_web = |title: &str| CreateTask {
        title: title.into(),
        project: Some("web".into()),
        ..Default::default()
    };
    let finished = env.create(in_web("finished")).await.unwrap();
    let c = env.claim("w").await.unwrap();
    env.lease(
        &finished.id,
        &c.lease.token,
        LeaseOp::Complete(Default::default()),
    )
    .await
    .unwrap();
    let held = env.create(in_web("held")).await.unwrap();
    let waiting = env.create(in_web("waiting")).await.unwrap();
    let elsewhere = env.task("elsewhere").await;
    let c = env.claim("w").await.unwrap();
    assert_eq!(c.task.id, held.id);

    let review = ProjectSettings {
        review_required: Some(true),
        ..Default::default()
    };
    env.baton
        .update_project(&env.actor, None, &web.id, review)
        .await
        .unwrap();
    assert!(env.get(&held.id).review_required && env.get(&waiting.id).review_required);
    assert!(
        !env.get(&finished.id).review_required,
        "a finished task stays as it ended"
    );
    assert!(
        !env.get(&elsewhere.id).review_required,
        "another project's task"
    );
    let out = env
        .lease(
            &held.id,
            &c.lease.token,
            LeaseOp::Complete(Default::default()),
        )
        .await
        .unwrap();
    assert_eq!(out["task"]["status"], "review", "{out}");
    assert_eq!(env.replay_difference().await, None);
}

/// File scopes (DESIGN §4): a claim of a task whose paths overlap a leased task's carries
/// a warning naming it (tasks of the same claim among them); paths that do not overlap, or
/// a task without paths, claim quietly. Paths are replaced by an update and emptied by null.
async fn a_claim_warns_of_overlapping_paths(env: Env) {
    let scoped = |title: &str, paths: &[&str], priority: i64| CreateTask {
        title: title.into(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        priority: Some(priority),
        ..Default::default()
    };
    let db = env.create(scoped("db", &["src/db/**"], 9)).await.unwrap();
    let api = env.create(scoped("api", &["src/api/**"], 8)).await.unwrap();
    let schema = env
        .create(scoped("schema", &[" src/db/schema.rs "], 7))
        .await
        .unwrap();
    let free = env.create(scoped("free", &[], 6)).await.unwrap();
    assert_eq!(schema.paths, ["src/db/schema.rs"], "trimmed");

    let first = env.claim("a").await.unwrap();
    assert_eq!(
        (first.task.id.as_str(), first.warnings.len()),
        (db.id.as_str(), 0)
    );
    let second = env.claim("b").await.unwrap();
    assert_eq!(second.task.id, api.id);
    assert!(second.warnings.is_empty(), "{:?}", second.warnings);
    let third = env.claim("c").await.unwrap();
    assert_eq!(third.task.id, schema.id);
    assert_eq!(third.warnings.len(), 1, "{:?}", third.warnings);
    assert!(third.warnings[0].contains(&db.id), "{:?}", third.warnings);
    assert!(!third.warnings[0].contains(&api.id), "{:?}", third.warnings);
    let fourth = env.claim("d").await.unwrap();
    assert_eq!(
        (fourth.task.id.as_str(), fourth.warnings.len()),
        (free.id.as_str(), 0)
    );

    let rescope = |paths: Option<Vec<String>>| UpdateTask {
        paths,
        ..Default::default()
    };
    let moved = env.baton.update_task(
        &env.actor,
        None,
        &free.id,
        rescope(Some(vec!["docs/*".into()])),
    );
    assert_eq!(moved.await.unwrap().task.paths, ["docs/*"]);
    let cleared = env
        .baton
        .update_task(&env.actor, None, &free.id, rescope(Some(vec![])));
    assert!(cleared.await.unwrap().task.paths.is_empty());
    let bad = env.create(scoped("bad", &["a\nb"], 0)).await.unwrap_err();
    assert_eq!(bad.code, Code::InvalidInput);
    assert_eq!(env.replay_difference().await, None);
}

/// Keyed concurrency (DESIGN §4): at most a key's limit of tasks with it are leased at
/// once; a claim passes over the rest for the next task in claim order, and a lease that
/// ends makes room. A claim of several tasks stops at the limit too. Keys are set, changed
/// and removed by update; bad keys and limits are refused and change nothing.
/// A project's `max_concurrency`: claims pass over its tasks while that many are leased,
/// take other projects' tasks meanwhile, and take its tasks again once a lease ends; one
/// claim of many takes no more than the places left; the limit comes off with null; a limit
/// out of range is `INVALID_INPUT` and changes nothing.
async fn a_project_limit_holds_its_leases(env: Env) {
    let create = CreateProject {
        name: "narrow".into(),
        max_concurrency: Some(2),
        ..Default::default()
    };
    let project = env.baton.create_project(&env.actor, None, create).await;
    assert_eq!(project.unwrap().project.max_concurrency, Some(2));
    let task = |title: &str, project: &str, priority: i64| CreateTask {
        title: title.into(),
        project: Some(project.into()),
        priority: Some(priority),
        ..Default::default()
    };
    let mut narrow = Vec::new();
    for i in 0..4 {
        narrow.push(
            env.create(task(&format!("n{i}"), "narrow", 9))
                .await
                .unwrap(),
        );
    }
    let wide = env.create(task("wide", "default", 1)).await.unwrap();
    let claim = |agent: &str, count: u32| ClaimRequest {
        agent: agent.into(),
        count: Some(count),
        ..Default::default()
    };
    let first = env.baton.claim(&env.actor, None, claim("a", 3)).await;
    let first = first.unwrap().claims;
    let ids: Vec<&str> = first.iter().map(|c| c.task.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            narrow[0].id.as_str(),
            narrow[1].id.as_str(),
            wide.id.as_str()
        ]
    );
    assert!(env.claim("b").await.is_none(), "n2 and n3 wait for a place");
    env.lease(&narrow[0].id, &first[0].lease.token, complete())
        .await
        .unwrap();
    assert_eq!(env.claim("b").await.unwrap().task.id, narrow[2].id);
    assert!(env.claim("c").await.is_none(), "full again");

    for bad in [0, 10_001] {
        let settings = ProjectSettings {
            max_concurrency: Some(Some(bad)),
            ..Default::default()
        };
        let refused = env
            .baton
            .update_project(&env.actor, None, "narrow", settings);
        assert_eq!(refused.await.unwrap_err().code, Code::InvalidInput, "{bad}");
    }
    let project = env.baton.project(&env.actor, "narrow").unwrap().project;
    assert_eq!(
        project.max_concurrency,
        Some(2),
        "a refused update changes nothing"
    );
    let lifted = ProjectSettings {
        max_concurrency: Some(None),
        ..Default::default()
    };
    let lifted = env.baton.update_project(&env.actor, None, "narrow", lifted);
    assert_eq!(lifted.await.unwrap().project.max_concurrency, None);
    assert_eq!(env.claim("c").await.unwrap().task.id, narrow[3].id);
}

async fn a_concurrency_key_limits_leases(env: Env) {
    let keyed = |title: &str, key: Option<&str>, limit: Option<u32>, priority: i64| CreateTask {
        title: title.into(),
        concurrency_key: key.map(str::to_string),
        concurrency_limit: limit,
        priority: Some(priority),
        ..Default::default()
    };
    let db1 = env
        .create(keyed("db1", Some(" area:db "), None, 9))
        .await
        .unwrap();
    let db2 = env
        .create(keyed("db2", Some("area:db"), None, 8))
        .await
        .unwrap();
    let free = env.create(keyed("free", None, None, 1)).await.unwrap();
    assert_eq!(
        (db1.concurrency_key.as_deref(), db1.concurrency_limit),
        (Some("area:db"), Some(1)),
        "trimmed, and a key alone is a mutex"
    );

    let first = env.claim("a").await.unwrap();
    assert_eq!(first.task.id, db1.id);
    let second = env.claim("b").await.unwrap();
    assert_eq!(second.task.id, free.id, "db2 waits while db1 is leased");
    assert!(env.claim("c").await.is_none(), "nothing else is claimable");
    env.lease(&db1.id, &first.lease.token, complete())
        .await
        .unwrap();
    let third = env.claim("c").await.unwrap();
    assert_eq!(third.task.id, db2.id, "the lease that ended made room");
    // A leased task moved under a full key stays leased, and the update says so.
    let onto = UpdateTask {
        concurrency_key: Some(Some("area:db".into())),
        ..Default::default()
    };
    let moved = env.baton.update_task(&env.actor, None, &free.id, onto);
    let warnings = moved.await.unwrap().warnings;
    assert!(
        warnings.len() == 1 && warnings[0].starts_with("2 tasks with concurrency key area:db"),
        "{warnings:?}"
    );
    let back = UpdateTask {
        concurrency_key: Some(None),
        ..Default::default()
    };
    let back = env.baton.update_task(&env.actor, None, &free.id, back);
    assert!(back.await.unwrap().warnings.is_empty());

    // A limit of 2, claimed three at a time: two of the key, then the next task.
    let mut gpu = Vec::new();
    for i in 0..3 {
        let req = keyed(&format!("gpu{i}"), Some("gpu"), Some(2), 5);
        gpu.push(env.create(req).await.unwrap());
    }
    let other = env.create(keyed("other", None, None, 0)).await.unwrap();
    let many = env
        .baton
        .claim(
            &env.actor,
            None,
            ClaimRequest {
                agent: "d".into(),
                count: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .claims;
    let mut got: Vec<&str> = many.iter().map(|c| c.task.id.as_str()).collect();
    got.sort();
    let mut want = vec![gpu[0].id.as_str(), gpu[1].id.as_str(), other.id.as_str()];
    want.sort();
    assert_eq!(got, want);
    assert!(env.claim("e").await.is_none(), "gpu2 waits for a place");

    // Raising the limit of the waiting task lets it in; removing its key too.
    let raise = UpdateTask {
        concurrency_limit: Some(3),
        ..Default::default()
    };
    let raised = env.baton.update_task(&env.actor, None, &gpu[2].id, raise);
    assert_eq!(raised.await.unwrap().task.concurrency_limit, Some(3));
    assert_eq!(env.claim("e").await.unwrap().task.id, gpu[2].id);
    let unkeyed = env
        .create(keyed("unkeyed", Some("gpu"), None, 0))
        .await
        .unwrap();
    assert!(env.claim("f").await.is_none());
    let remove = UpdateTask {
        concurrency_key: Some(None),
        ..Default::default()
    };
    let removed = env.baton.update_task(&env.actor, None, &unkeyed.id, remove);
    let removed = removed.await.unwrap().task;
    assert_eq!(
        (removed.concurrency_key, removed.concurrency_limit),
        (None, None)
    );
    assert_eq!(env.claim("f").await.unwrap().task.id, unkeyed.id);

    // Bad input is refused and changes nothing.
    let events = env.event_count();
    for (key, limit) in [
        (None, Some(2)),
        (Some("k"), Some(0)),
        (Some("k"), Some(10_001)),
        (Some(""), None),
        (Some("a\nb"), None),
    ] {
        let refused = env.create(keyed("bad", key, limit, 0)).await.unwrap_err();
        assert_eq!(refused.code, Code::InvalidInput, "{key:?} {limit:?}");
    }
    let no_key = UpdateTask {
        concurrency_limit: Some(2),
        ..Default::default()
    };
    let refused = env.baton.update_task(&env.actor, None, &other.id, no_key);
    assert_eq!(refused.await.unwrap_err().code, Code::InvalidInput);
    assert_eq!(env.event_count(), events);
    assert_eq!(env.replay_difference().await, None);
}

/// An agent's max_concurrency (DESIGN §2, §4): a claim takes no more than the places left,
/// and at the limit is AT_CAPACITY (details: held and the limit), writing nothing; a lease
/// that ends, or lapses, frees a place; the limit is set at registration or by update and
/// removed by null; a limit out of range is refused.
async fn an_agent_holds_at_most_its_max_concurrency(env: Env) {
    let register = RegisterAgent {
        agent: "w".into(),
        max_concurrency: Some(2),
        ..Default::default()
    };
    let agent = env.baton.register_agent(&env.actor, None, register).await;
    assert_eq!(agent.unwrap().agent.max_concurrency, Some(2));
    let mut ids = Vec::new();
    for i in 0..5 {
        let req = CreateTask {
            title: format!("t{i}"),
            lease_ttl: Some(Duration::secs(30)),
            ..Default::default()
        };
        ids.push(env.create(req).await.unwrap().id);
    }
    let claim = |count: u32| ClaimRequest {
        agent: "w".into(),
        count: Some(count),
        ..Default::default()
    };
    let first = env.baton.claim(&env.actor, None, claim(3)).await.unwrap();
    assert_eq!(first.claims.len(), 2, "two places");
    let events = env.event_count();
    let full = env
        .baton
        .claim(&env.actor, None, claim(1))
        .await
        .unwrap_err();
    assert_eq!(full.code, Code::AtCapacity);
    assert_eq!(full.details.as_ref().unwrap()["held"], 2);
    assert_eq!(full.details.as_ref().unwrap()["max_concurrency"], 2);
    assert!(!full.retryable());
    assert_eq!(env.event_count(), events, "a refused claim writes nothing");
    assert!(
        env.claim("other").await.is_some(),
        "other agents are not limited"
    );

    let done = &first.claims[0];
    env.lease(&done.task.id, &done.lease.token, complete())
        .await
        .unwrap();
    let next = env.baton.claim(&env.actor, None, claim(3)).await.unwrap();
    assert_eq!(next.claims.len(), 1, "the completed lease freed one place");
    // Leases that lapsed hold no place, reaped or not.
    env.clock.advance(31_000);
    let after = env.baton.claim(&env.actor, None, claim(1)).await.unwrap();
    assert_eq!(after.claims.len(), 1);

    let settings = |max: Option<Option<u32>>| AgentSettings {
        max_concurrency: max,
        ..Default::default()
    };
    let unlimited = env
        .baton
        .update_agent(&env.actor, None, "w", settings(Some(None)));
    assert_eq!(unlimited.await.unwrap().agent.max_concurrency, None);
    for max in [0, 10_001] {
        let refused = env
            .baton
            .update_agent(&env.actor, None, "w", settings(Some(Some(max))))
            .await
            .unwrap_err();
        assert_eq!(refused.code, Code::InvalidInput);
        let register = RegisterAgent {
            agent: "w".into(),
            max_concurrency: Some(max),
            ..Default::default()
        };
        let refused = env.baton.register_agent(&env.actor, None, register).await;
        assert_eq!(refused.unwrap_err().code, Code::InvalidInput);
    }
    assert_eq!(env.replay_difference().await, None);
}

/// Exclusive file scopes (DESIGN §4): in a project that makes scopes exclusive, a claim
/// passes over a task whose paths overlap a leased task's (tasks of the same claim among
/// them) and takes the next; the overlap's end lets it in. In a project that does not,
/// the same overlap is granted with a warning.
async fn exclusive_scopes_hold_overlapping_tasks_back(env: Env) {
    let create = CreateProject {
        name: "strict".into(),
        exclusive_scopes: Some(true),
        ..Default::default()
    };
    let project = env.baton.create_project(&env.actor, None, create).await;
    assert!(project.unwrap().project.exclusive_scopes);
    let scoped = |title: &str, project: &str, paths: &[&str], priority: i64| CreateTask {
        title: title.into(),
        project: Some(project.into()),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        priority: Some(priority),
        ..Default::default()
    };
    let db = env
        .create(scoped("db", "strict", &["src/db/**"], 9))
        .await
        .unwrap();
    let schema = env
        .create(scoped("schema", "strict", &["src/db/schema.rs"], 8))
        .await
        .unwrap();
    let api = env
        .create(scoped("api", "strict", &["src/api/**"], 7))
        .await
        .unwrap();
    let loose = env
        .create(scoped("loose", "default", &["src/db/**"], 1))
        .await
        .unwrap();

    let claim = |agent: &str, count: u32| ClaimRequest {
        agent: agent.into(),
        count: Some(count),
        ..Default::default()
    };
    let first = env
        .baton
        .claim(&env.actor, None, claim("a", 2))
        .await
        .unwrap();
    let ids: Vec<&str> = first.claims.iter().map(|c| c.task.id.as_str()).collect();
    assert_eq!(
        ids,
        [db.id.as_str(), api.id.as_str()],
        "schema overlaps db, claimed first"
    );
    let second = env.claim("b").await.unwrap();
    assert_eq!(
        second.task.id, loose.id,
        "a project that warns grants the overlap"
    );
    assert_eq!(second.warnings.len(), 1, "{:?}", second.warnings);
    assert!(env.claim("c").await.is_none(), "schema waits");
    env.lease(&db.id, &first.claims[0].lease.token, complete())
        .await
        .unwrap();
    assert!(
        env.claim("c").await.is_none(),
        "loose still overlaps schema"
    );
    env.lease(&loose.id, &second.lease.token, complete())
        .await
        .unwrap();
    assert_eq!(env.claim("c").await.unwrap().task.id, schema.id);

    let relax = ProjectSettings {
        exclusive_scopes: Some(false),
        ..Default::default()
    };
    let relaxed = env.baton.update_project(&env.actor, None, "strict", relax);
    assert!(!relaxed.await.unwrap().project.exclusive_scopes);
    assert_eq!(env.replay_difference().await, None);
}

/// A completion that claims the agent's next task in the same call (`next`) counts its own
/// completions as ended: an agent at its max_concurrency, on tasks of one concurrency key
/// with a limit of 1, moves from task to task without a refusal or an empty answer.
async fn next_claims_take_the_places_their_completions_free(env: Env) {
    let register = RegisterAgent {
        agent: "w".into(),
        max_concurrency: Some(1),
        ..Default::default()
    };
    env.baton
        .register_agent(&env.actor, None, register)
        .await
        .unwrap();
    for i in 0..6 {
        let req = CreateTask {
            title: format!("t{i}"),
            concurrency_key: Some("k".into()),
            ..Default::default()
        };
        env.create(req).await.unwrap();
    }
    let mut held = env.claim("w").await.unwrap();
    for _ in 0..5 {
        let item = Completion {
            id: held.task.id.clone(),
            lease: held.lease.token.clone(),
            output: None,
            outcome: None,
            force: false,
        };
        let next = ClaimRequest {
            agent: "w".into(),
            ..Default::default()
        };
        let done = env
            .baton
            .complete_many(&env.actor, None, vec![item], Some(next))
            .await
            .unwrap();
        assert!(done.results[0].is_ok());
        let mut claims = done.next.unwrap().unwrap().claims;
        assert_eq!(claims.len(), 1, "the next task, not a refusal or nothing");
        held = claims.remove(0);
    }
}

/// Preemption (DESIGN §4): a ready task held back by its concurrency key, more urgent than
/// the key's holder, has the holder asked to yield at its next heartbeat (`yield`, once, an
/// event naming the waiting task); a less urgent one does not. A holder that releases makes
/// room at once; one that does not loses its lease after the grace period, revoked without
/// the attempt counted, and the urgent task is claimed.
async fn a_more_urgent_task_asks_the_holder_of_its_key_to_yield(env: Env) {
    let keyed = |title: &str, priority: i64| CreateTask {
        title: title.into(),
        concurrency_key: Some("k".into()),
        priority: Some(priority),
        ..Default::default()
    };
    let low = env.create(keyed("low", 1)).await.unwrap();
    let held = env.claim("a").await.unwrap();
    env.create(keyed("lower", 0)).await.unwrap();
    let beat = env.heartbeat(&low.id, &held.lease.token).await.unwrap();
    assert_eq!(
        beat["signals"],
        json!([]),
        "a less urgent task waits its turn"
    );
    // A more urgent task the holder's agent could not take (a capability it lacks) does
    // not preempt it: the place would come straight back to the holder.
    let gpu = CreateTask {
        required_capabilities: vec!["gpu".into()],
        ..keyed("gpu", 5)
    };
    let gpu = env.create(gpu).await.unwrap();
    let beat = env.heartbeat(&low.id, &held.lease.token).await.unwrap();
    assert_eq!(beat["signals"], json!([]), "{beat}");
    let cancel = env
        .baton
        .transition(&env.actor, None, Op::Cancel, &gpu.id, None);
    cancel.await.unwrap();
    let high = env.create(keyed("high", 9)).await.unwrap();
    assert!(env.claim("b").await.is_none(), "the key is full");
    for _ in 0..2 {
        let beat = env.heartbeat(&low.id, &held.lease.token).await.unwrap();
        assert_eq!(beat["signals"], json!(["yield"]), "{beat}");
    }
    let asked: Vec<_> = env
        .all_events()
        .into_iter()
        .filter(|e| e.kind == "task.yield_requested")
        .collect();
    assert_eq!(asked.len(), 1, "asked once");
    assert_eq!(asked[0].data["for"], json!(high.id));
    env.lease(&low.id, &held.lease.token, LeaseOp::Release)
        .await
        .unwrap();
    let took = env.claim("b").await.unwrap();
    assert_eq!(took.task.id, high.id);

    // A request whose waiting task is gone is withdrawn: the lease is extended as before.
    let gone = env.create(keyed("gone", 15)).await.unwrap();
    let beat = env.heartbeat(&high.id, &took.lease.token).await.unwrap();
    assert_eq!(beat["signals"], json!(["yield"]), "{beat}");
    let cancel = env
        .baton
        .transition(&env.actor, None, Op::Cancel, &gone.id, None);
    cancel.await.unwrap();
    let beat = env.heartbeat(&high.id, &took.lease.token).await.unwrap();
    assert_eq!(beat["signals"], json!([]), "{beat}");
    assert_eq!(
        beat["expires_at"],
        baton_core::time::format_rfc3339(T0 + 300_000),
        "extended by the task's TTL again"
    );
    assert!(beat["task"]["lease"].get("yield_requested_at").is_none());

    // A holder that does not release is revoked after the grace period.
    let urgent = env.create(keyed("urgent", 20)).await.unwrap();
    let beat = env.heartbeat(&high.id, &took.lease.token).await.unwrap();
    assert_eq!(beat["signals"], json!(["yield"]), "{beat}");
    env.clock.advance(61_000);
    let next = env.claim("c").await.unwrap();
    assert_eq!(next.task.id, urgent.id);
    let revoked = env.get(&high.id);
    assert_eq!(revoked.status, Status::Ready);
    assert_eq!(revoked.attempts, 0, "the attempt is not counted");
    assert!(revoked.not_before.is_none(), "no backoff");
    let err = env
        .lease(&high.id, &took.lease.token, complete())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::LeaseLost);
    // A holder that vanishes within the grace loses its lease as any other: counted.
    let short = CreateTask {
        lease_ttl: Some(Duration::secs(5)),
        ..keyed("short", 30)
    };
    let short = env.create(short).await.unwrap();
    env.lease(&urgent.id, &next.lease.token, complete())
        .await
        .unwrap();
    let vanishing = env.claim("d").await.unwrap();
    assert_eq!(vanishing.task.id, short.id);
    env.create(keyed("urgent2", 40)).await.unwrap();
    let beat = env.heartbeat(&short.id, &vanishing.lease.token).await;
    assert_eq!(beat.unwrap()["signals"], json!(["yield"]));
    env.clock.advance(6_000);
    env.claim("e").await.unwrap();
    let lapsed = env.get(&short.id);
    assert_eq!(
        (lapsed.status, lapsed.attempts),
        (Status::Ready, 1),
        "expired, counted"
    );
    assert!(lapsed.not_before.is_some(), "with backoff");
    assert_eq!(env.replay_difference().await, None);
}

/// Optimistic concurrency: a stale version is VERSION_CONFLICT with the current version.
async fn version_conflict(env: Env) {
    let t = env.task("t").await;
    let up = |v| UpdateTask {
        version: Some(v),
        title: Some(format!("v{v}")),
        ..Default::default()
    };
    let out = env
        .baton
        .update_task(&env.actor, None, &t.id, up(t.version))
        .await
        .unwrap();
    assert_eq!(out.task.version, t.version + 1);
    let err = env
        .baton
        .update_task(&env.actor, None, &t.id, up(t.version))
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::VersionConflict);
    assert_eq!(err.details.unwrap()["current_version"], t.version + 1);
    // Intent is immutable: neither replaced nor cleared (null).
    for intent in [Some("new why".to_string()), None] {
        let change = UpdateTask {
            intent: Some(intent),
            ..Default::default()
        };
        let err = env.baton.update_task(&env.actor, None, &t.id, change).await;
        let err = err.unwrap_err();
        assert_eq!(err.code, Code::InvalidInput);
        assert!(err.message.contains("immutable"), "{}", err.message);
    }
}

/// The same idempotency key and request return the original response and write nothing; the
/// same key with another request is refused.
async fn idempotency_keys(env: Env) {
    let req = || CreateTask {
        title: "once".into(),
        ..Default::default()
    };
    let first = env
        .baton
        .create_task(&env.actor, Some("k1"), req())
        .await
        .unwrap();
    let events = env.event_count();
    let second = env
        .baton
        .create_task(&env.actor, Some("k1"), req())
        .await
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(env.event_count(), events);
    let other = CreateTask {
        title: "other".into(),
        ..Default::default()
    };
    let err = env
        .baton
        .create_task(&env.actor, Some("k1"), other)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::IdempotencyMismatch);
    // Plans key their tasks `plan:<name>:<ref>`: a request may not take such a key (it
    // would collide with, or take over, a plan's task).
    let plan = env
        .baton
        .apply_plan(
            &env.actor,
            None,
            baton_core::ops::plan::parse(r#"{"name": "p", "tasks": [{"ref": "a", "title": "A"}]}"#)
                .unwrap(),
        )
        .await
        .unwrap();
    let events = env.event_count();
    for key in ["plan:p:a", "plan:p:b"] {
        let err = env
            .baton
            .create_task(&env.actor, Some(key), req())
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::InvalidInput, "{key}: {err}");
    }
    assert_eq!(env.event_count(), events, "refused, nothing written");
    assert_eq!(env.get(&plan.tasks[0].task.id).title, "A");
    // Lease operations too: a retried completion returns the stored answer.
    let c = env.claim("w").await.unwrap();
    let a = env
        .baton
        .lease_op(
            &env.actor,
            Some("done-1"),
            &first.task.id,
            &c.lease.token,
            complete(),
        )
        .await
        .unwrap();
    let b = env
        .baton
        .lease_op(
            &env.actor,
            Some("done-1"),
            &first.task.id,
            &c.lease.token,
            complete(),
        )
        .await
        .unwrap();
    assert_eq!(a, b);
}

/// Context entries are typed and immutable; superseded entries leave the briefing.
async fn context_and_briefing(env: Env) {
    let parent = env
        .create(CreateTask {
            title: "epic".into(),
            intent: Some("ship it".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let t = env
        .create(CreateTask {
            title: "t".into(),
            intent: Some("why".into()),
            description: Some("what".into()),
            plan: Some("how".into()),
            parent_id: Some(parent.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let add = |kind: &str, content: &str, supersedes: Option<String>| AddContext {
        kind: kind.into(),
        content: content.into(),
        supersedes,
        lease: None,
    };
    let old = env
        .baton
        .add_context(&env.actor, None, &t.id, add("decision", "use sqlite", None))
        .await
        .unwrap();
    env.baton
        .add_context(
            &env.actor,
            None,
            &t.id,
            add("decision", "use postgres", Some(old.context.id.clone())),
        )
        .await
        .unwrap();
    env.baton
        .add_context(
            &env.actor,
            None,
            &t.id,
            add("note", &"x".repeat(3000), None),
        )
        .await
        .unwrap();
    let err = env
        .baton
        .add_context(&env.actor, None, &t.id, add("gossip", "x", None))
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidInput);
    let err = env
        .baton
        .add_context(
            &env.actor,
            None,
            &t.id,
            add("note", "x", Some("ctx_nope".into())),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    // One line of succession: "use sqlite" was replaced already, so it cannot be again.
    let before = env.event_count();
    let err = env
        .baton
        .add_context(
            &env.actor,
            None,
            &t.id,
            add("decision", "use mysql", Some(old.context.id.clone())),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidInput, "{err}");
    assert!(err.hint.starts_with("supersede ctx_"), "{err}");
    assert_eq!(env.event_count(), before);
    let step = env
        .baton
        .add_step(&env.actor, None, &t.id, "write code".into(), None, None)
        .await
        .unwrap();
    env.baton
        .done_step(
            &env.actor,
            None,
            &t.id,
            &step.step.id,
            Some("done".into()),
            None,
        )
        .await
        .unwrap();

    let brief = serde_json::to_value(env.baton.brief(&env.actor, &t.id, None).unwrap()).unwrap()
        ["brief"]
        .clone();
    assert_eq!(brief["task"]["intent"], "why");
    assert_eq!(brief["task"]["plan"], "how");
    assert_eq!(brief["parent"]["intent"], "ship it");
    let contents: Vec<&str> = brief["context"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents[0], "use postgres",
        "decisions first; superseded gone"
    );
    assert!(!contents.contains(&"use sqlite"));
    assert_eq!(brief["steps"][0]["done"], true);
    assert_eq!(brief["truncated"], false);

    let small = serde_json::to_value(env.baton.brief(&env.actor, &t.id, Some(1500)).unwrap())
        .unwrap()["brief"]
        .clone();
    assert!(serde_json::to_string(&small).unwrap().len() <= 1500);
    assert_eq!(small["truncated"], true);
    assert_eq!(small["task"]["intent"], "why", "the core survives trimming");
    let err = env.baton.brief(&env.actor, &t.id, Some(10)).unwrap_err();
    assert_eq!(err.code, Code::InvalidInput);
}

/// A briefing under a budget is never over it, and leaves out the least relevant first:
/// long texts are cut before whole items go; done steps before the steps left to do, notes
/// before decisions and blockers, all of those before the task's intent.
async fn briefs_fit_every_budget_most_relevant_last(env: Env) {
    let parent = env
        .create(CreateTask {
            title: "epic".into(),
            intent: Some("p".repeat(3000)),
            ..Default::default()
        })
        .await
        .unwrap();
    let blocker = env
        .create(CreateTask {
            title: "the schema".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let t = env
        .create(CreateTask {
            title: "t".into(),
            intent: Some("why".into()),
            description: Some("d".repeat(5000)),
            plan: Some("a \"quoted\" plan, ".repeat(1000)),
            parent_id: Some(parent.id.clone()),
            blocked_by: vec![blocker.id.clone()],
            input: Some(json!({"spec": "i".repeat(4000)})),
            ..Default::default()
        })
        .await
        .unwrap();
    for i in 0..6 {
        let step = env
            .baton
            .add_step(
                &env.actor,
                None,
                &t.id,
                format!("step {i}"),
                Some("s".repeat(150)),
                None,
            )
            .await
            .unwrap();
        if i < 4 {
            env.baton
                .done_step(&env.actor, None, &t.id, &step.step.id, None, None)
                .await
                .unwrap();
        }
    }
    let add = |kind: &str, content: String| AddContext {
        kind: kind.into(),
        content,
        supersedes: None,
        lease: None,
    };
    for i in 0..8 {
        env.baton
            .add_context(
                &env.actor,
                None,
                &t.id,
                add("note", format!("{i}{}", "n".repeat(200))),
            )
            .await
            .unwrap();
    }
    for (kind, content) in [("blocker", "DB is down"), ("decision", "use postgres")] {
        env.baton
            .add_context(&env.actor, None, &t.id, add(kind, content.into()))
            .await
            .unwrap();
    }
    let brief = |max: Option<usize>| {
        serde_json::to_value(env.baton.brief(&env.actor, &t.id, max).unwrap()).unwrap()["brief"]
            .clone()
    };
    let full = brief(None);
    let full_size = serde_json::to_string(&full).unwrap().len();
    assert_eq!(full["truncated"], false);
    assert_eq!(
        brief(Some(full_size)),
        full,
        "a budget it fits changes nothing"
    );
    let kept = |b: &serde_json::Value, section: &str, pick: &dyn Fn(&serde_json::Value) -> bool| {
        b[section]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| pick(v))
            .count()
    };
    let budgets = (512..4000)
        .step_by(97)
        .chain([4000])
        .chain((4000..full_size).step_by(1013));
    let mut checked_4000 = false;
    for budget in budgets {
        let b = brief(Some(budget));
        let size = serde_json::to_string(&b).unwrap().len();
        assert!(
            size <= budget,
            "{size} bytes under a budget of {budget}: {b}"
        );
        assert_eq!(b["truncated"], true, "{budget}");
        let open_steps = kept(&b, "steps", &|s| s["done"] == false);
        let done_steps = kept(&b, "steps", &|s| s["done"] == true);
        let notes = kept(&b, "context", &|c| c["type"] == "note");
        let key_entries = kept(&b, "context", &|c| c["type"] != "note");
        if open_steps < 2 {
            assert_eq!(
                done_steps, 0,
                "done steps outlive open ones at {budget}: {b}"
            );
        }
        if key_entries < 2 {
            assert_eq!(notes, 0, "notes outlive decisions at {budget}: {b}");
        }
        if b["task"]["intent"] != "why" {
            assert_eq!(
                open_steps + key_entries,
                0,
                "the intent went first at {budget}: {b}"
            );
        }
        if budget == 4000 {
            // Room for the work left and what was decided, with the long texts cut.
            assert_eq!((open_steps, key_entries), (2, 2), "{b}");
            assert_eq!(b["task"]["intent"], "why", "{b}");
            let plan = b["task"]["plan"].as_str().unwrap();
            assert!(plan.ends_with("…[truncated]"), "{plan}");
            assert_eq!(b["omitted"]["task.plan"], "truncated", "{b}");
            assert!(b["dependencies"][0]["id"] == blocker.id, "{b}");
            // The 4 KB input is a value, never cut: it goes before what the agent needs.
            assert_eq!(b["omitted"]["task.input"], "dropped", "{b}");
            checked_4000 = true;
        }
    }
    assert!(checked_4000);

    // A long title is cut like any text, before what the agent needs goes.
    let long = env
        .create(CreateTask {
            title: "t".repeat(1000),
            intent: Some("why".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    env.baton
        .add_context(
            &env.actor,
            None,
            &long.id,
            add("blocker", "DB is down".into()),
        )
        .await
        .unwrap();
    let b = serde_json::to_value(env.baton.brief(&env.actor, &long.id, Some(900)).unwrap())
        .unwrap()["brief"]
        .clone();
    assert!(serde_json::to_string(&b).unwrap().len() <= 900, "{b}");
    assert_eq!(b["task"]["intent"], "why", "{b}");
    assert_eq!(b["context"][0]["content"], "DB is down", "{b}");
    assert_eq!(b["omitted"]["task.title"], "truncated", "{b}");

    // Children past the first thousand are not listed, and `omitted` says how many.
    for round in 0..11 {
        let items = (0..100)
            .map(|i| baton_core::ops::task::BatchItem {
                reference: format!("c{round}-{i}"),
                task: CreateTask {
                    title: "child".into(),
                    parent_id: Some(long.id.clone()),
                    ..Default::default()
                },
            })
            .collect();
        env.baton
            .create_batch(&env.actor, None, items)
            .await
            .unwrap();
    }
    let b = serde_json::to_value(env.baton.brief(&env.actor, &long.id, None).unwrap()).unwrap()
        ["brief"]
        .clone();
    assert_eq!(b["children"].as_array().unwrap().len(), 1000);
    assert_eq!(
        (b["truncated"].clone(), b["omitted"]["children"].clone()),
        (json!(true), json!(100))
    );
}

/// Long-poll: a claim with `wait` returns as soon as work appears.
async fn long_poll_claim_wakes_on_commit(env: Env) {
    let baton = env.baton.clone();
    let actor = env.actor.clone();
    let waiter = tokio::spawn(async move {
        let req = ClaimRequest {
            agent: "w".into(),
            wait: Some(Duration::secs(30)),
            ..Default::default()
        };
        baton.claim(&actor, None, req).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let t = env.task("late").await;
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
        .await
        .expect("woke")
        .unwrap()
        .unwrap();
    assert_eq!(got.claims[0].task.id, t.id);
}

/// Waiting claims are woken by work they can take: a task needing a capability wakes the
/// agent that has it, not the one ahead of it in line, and an agent waiting behind a full
/// page of tasks it cannot take still gets the one it can.
async fn long_poll_wakes_the_agent_that_can_take_the_work(env: Env) {
    let wait = |agent: &str, caps: &[&str]| {
        let (baton, actor) = (env.baton.clone(), env.actor.clone());
        let req = ClaimRequest {
            agent: agent.into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            wait: Some(Duration::secs(30)),
            ..Default::default()
        };
        tokio::spawn(async move { baton.claim(&actor, None, req).await })
    };
    let needs = |title: &str, caps: &[&str], priority: i64| CreateTask {
        title: title.into(),
        required_capabilities: caps.iter().map(|c| c.to_string()).collect(),
        priority: Some(priority),
        ..Default::default()
    };
    let plain = wait("plain", &[]);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let gpu = wait("gpu", &["gpu"]);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let g = env.create(needs("render", &["gpu"], 0)).await.unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), gpu)
        .await
        .expect("the gpu agent woke")
        .unwrap()
        .unwrap();
    assert_eq!(got.claims[0].task.id, g.id);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!plain.is_finished(), "the plain agent had nothing to take");
    for i in 0..3 {
        env.create(needs(&format!("gpu {i}"), &["gpu"], 9))
            .await
            .unwrap();
    }
    let t = env.create(needs("plain work", &[], 0)).await.unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), plain)
        .await
        .expect("the plain agent woke")
        .unwrap()
        .unwrap();
    assert_eq!(got.claims[0].task.id, t.id);
}

/// Replay of a mixed history rebuilds exactly the live projections.
async fn replay_equals_live_state(env: Env) {
    let a = env
        .create(CreateTask {
            title: "a".into(),
            priority: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    let b = env
        .create(CreateTask {
            title: "b".into(),
            blocked_by: vec![a.id.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let c = env.claim("w").await.unwrap();
    env.lease(
        &a.id,
        &c.lease.token,
        LeaseOp::Heartbeat(Heartbeat {
            progress: Some(0.3),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    env.baton
        .add_context(
            &env.actor,
            None,
            &a.id,
            AddContext {
                kind: "discovery".into(),
                content: "found".into(),
                supersedes: None,
                lease: Some(c.lease.token.clone()),
            },
        )
        .await
        .unwrap();
    env.lease(&a.id, &c.lease.token, complete()).await.unwrap();
    let c = env.claim("w").await.unwrap();
    assert_eq!(c.task.id, b.id);
    env.clock.advance(10 * 60 * 1000);
    env.baton.reap(&env.actor).await.unwrap();
    env.baton
        .dependency(
            &env.actor,
            None,
            &a.id,
            &b.id,
            baton_core::model::DepKind::RelatesTo,
            true,
        )
        .await
        .unwrap();
    assert_eq!(env.replay_difference().await, None);
}

/// Timestamps outside what RFC 3339 can write back are refused, so no stored task becomes
/// unreadable.
async fn out_of_range_timestamps_are_refused(env: Env) {
    for due in [999_999_999_999_999i64, -1] {
        let req = CreateTask {
            title: "t".into(),
            due_at: Some(due),
            ..Default::default()
        };
        assert_eq!(
            env.create(req).await.unwrap_err().code,
            Code::InvalidInput,
            "{due}"
        );
    }
    let t = env.task("t").await;
    let up = UpdateTask {
        due_at: Some(Some(i64::MAX)),
        ..Default::default()
    };
    assert_eq!(
        env.baton
            .update_task(&env.actor, None, &t.id, up)
            .await
            .unwrap_err()
            .code,
        Code::InvalidInput
    );
    assert!(env.claim("w").await.is_some(), "the workspace still works");
}

/// A task's budget covers every attempt: the cost an earlier run last reported counts
/// with the running one's.
async fn a_budget_counts_every_attempt(env: Env) {
    let t = env
        .create(CreateTask {
            title: "t".into(),
            max_attempts: Some(3),
            budget: Some(json!({"max_cost": 1.0})),
            ..Default::default()
        })
        .await
        .unwrap();
    let spend = |token: String, cost: f64| {
        let env = &env;
        let id = t.id.clone();
        async move {
            let hb = Heartbeat {
                usage: Some(json!({ "cost": cost })),
                ..Default::default()
            };
            env.lease(&id, &token, LeaseOp::Heartbeat(hb))
                .await
                .unwrap()["signals"]
                .clone()
        }
    };
    let first = env.claim("a").await.unwrap();
    assert_eq!(spend(first.lease.token.clone(), 0.5).await, json!([]));
    assert_eq!(
        spend(first.lease.token.clone(), 0.6).await,
        json!([]),
        "cost so far, not added"
    );
    let fail = Fail {
        error: "boom".into(),
        ..Default::default()
    };
    env.lease(&t.id, &first.lease.token, LeaseOp::Fail(fail))
        .await
        .unwrap();
    env.clock.advance(10 * 60 * 1000);
    let second = env.claim("b").await.unwrap();
    assert_eq!(second.run.attempt, 2);
    assert_eq!(spend(second.lease.token.clone(), 0.1).await, json!([]));
    assert_eq!(
        spend(second.lease.token.clone(), 0.25).await,
        json!(["budget_warning"]),
        "0.6 + 0.25 is past 80% of 1.0"
    );
    assert_eq!(
        spend(second.lease.token.clone(), 0.4).await,
        json!(["budget_exhausted"])
    );
    // A report without the cost keeps it (usage is totals, field by field); counts are
    // never negative.
    let tokens = Heartbeat {
        usage: Some(json!({"tokens_in": 5})),
        ..Default::default()
    };
    let out = env
        .lease(&t.id, &second.lease.token, LeaseOp::Heartbeat(tokens))
        .await
        .unwrap();
    assert_eq!(out["signals"], json!(["budget_exhausted"]), "{out}");
    let brief = serde_json::to_value(env.baton.brief(&env.actor, &t.id, None).unwrap()).unwrap();
    let newest = &brief["brief"]["runs"][0];
    assert_eq!(
        newest["usage"],
        json!({"cost": 0.4, "tokens_in": 5}),
        "{newest}"
    );
    let before = env.event_count();
    let negative = Heartbeat {
        usage: Some(json!({"tokens_out": -1})),
        ..Default::default()
    };
    let err = env
        .lease(&t.id, &second.lease.token, LeaseOp::Heartbeat(negative))
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidInput, "{err}");
    assert_eq!(env.event_count(), before);
}

/// Gaps the probes found: a parent in review takes no new child (its approval would finish
/// it over the child), nor a retried one; an update's input meets the task's input schema;
/// a retried task drops the failure's reason; a finished task's steps stay as they were;
/// a stale version is not retryable as it is.
async fn review_schema_retry_and_finished_steps_hold(env: Env) {
    let parent = env
        .create(CreateTask {
            title: "parent".into(),
            review_required: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let child = env
        .create(CreateTask {
            title: "child".into(),
            parent_id: Some(parent.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let c = env.claim("w").await.unwrap();
    assert_eq!(c.task.id, child.id);
    let fail = Fail {
        error: "boom".into(),
        no_retry: true,
        ..Default::default()
    };
    env.lease(&child.id, &c.lease.token, LeaseOp::Fail(fail))
        .await
        .unwrap();
    let p = env.claim("w").await.unwrap();
    assert_eq!(p.task.id, parent.id);
    env.lease(&parent.id, &p.lease.token, complete())
        .await
        .unwrap();
    assert_eq!(env.get(&parent.id).status, Status::Review);
    let before = env.event_count();
    let err = env
        .create(CreateTask {
            title: "late".into(),
            parent_id: Some(parent.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidTransition, "{err}");
    assert_eq!(err.details.unwrap()["parent_status"], "review");
    let err = env
        .baton
        .transition(&env.actor, None, Op::Retry, &child.id, None)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidTransition, "{err}");
    assert_eq!(env.event_count(), before);
    // Rejected, the parent is open again: the child is retried, without the old reason.
    env.baton
        .transition(
            &env.actor,
            None,
            Op::Reject,
            &parent.id,
            Some("redo".into()),
        )
        .await
        .unwrap();
    assert_eq!(env.get(&child.id).reason.as_deref(), Some("boom"));
    env.baton
        .transition(&env.actor, None, Op::Retry, &child.id, None)
        .await
        .unwrap();
    let retried = env.get(&child.id);
    assert_eq!((retried.status, retried.reason), (Status::Ready, None));

    let typed = env
        .create(CreateTask {
            title: "typed".into(),
            input_schema: Some(json!({"type": "object", "required": ["a"]})),
            input: Some(json!({"a": 1})),
            ..Default::default()
        })
        .await
        .unwrap();
    let before = env.event_count();
    let bad = UpdateTask {
        input: Some(Some(json!({"b": 2}))),
        ..Default::default()
    };
    let err = env
        .baton
        .update_task(&env.actor, None, &typed.id, bad)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::SchemaViolation, "{err}");
    assert_eq!(env.get(&typed.id).input, Some(json!({"a": 1})));
    let stale = UpdateTask {
        title: Some("renamed".into()),
        version: Some(99),
        ..Default::default()
    };
    let err = env
        .baton
        .update_task(&env.actor, None, &typed.id, stale)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::VersionConflict, "{err}");
    assert!(!err.code.retryable());
    assert_eq!(env.event_count(), before);

    let step = env
        .baton
        .add_step(&env.actor, None, &typed.id, "s".into(), None, None)
        .await
        .unwrap();
    env.baton
        .transition(&env.actor, None, Op::Cancel, &typed.id, None)
        .await
        .unwrap();
    let before = env.event_count();
    let err = env
        .baton
        .done_step(&env.actor, None, &typed.id, &step.step.id, None, None)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidTransition, "{err}");
    assert_eq!(env.event_count(), before);
}

/// An update clears what a task may be without (`Some(None)`, null on the wire) and keeps
/// what it leaves out; the cleared task replays.
async fn an_update_clears_optional_fields(env: Env) {
    let t = env
        .create(CreateTask {
            title: "t".into(),
            description: Some("d".into()),
            plan: Some("p".into()),
            due_at: Some(1_900_000_000_000),
            timeout: Some(Duration::secs(60)),
            input: Some(json!({"n": 1})),
            output_schema: Some(json!({"type": "object"})),
            budget: Some(json!({"max_cost": 2.0})),
            labels: vec!["l".into()],
            required_capabilities: vec!["c".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let keep = UpdateTask {
        priority: Some(3),
        ..Default::default()
    };
    let kept = env
        .baton
        .update_task(&env.actor, None, &t.id, keep)
        .await
        .unwrap()
        .task;
    assert_eq!(kept.description.as_deref(), Some("d"), "left out is kept");
    assert_eq!(kept.budget, Some(json!({"max_cost": 2.0})));
    let clear = UpdateTask {
        description: Some(None),
        plan: Some(None),
        due_at: Some(None),
        timeout: Some(None),
        input: Some(None),
        output_schema: Some(None),
        budget: Some(None),
        labels: Some(vec![]),
        required_capabilities: Some(vec![]),
        ..Default::default()
    };
    let cleared = env
        .baton
        .update_task(&env.actor, None, &t.id, clear.clone())
        .await
        .unwrap()
        .task;
    assert_eq!(
        (
            &cleared.description,
            &cleared.plan,
            cleared.due_at,
            cleared.timeout
        ),
        (&None, &None, None, None)
    );
    assert_eq!(
        (&cleared.input, &cleared.output_schema, &cleared.budget),
        (&None, &None, &None)
    );
    assert!(cleared.labels.is_empty() && cleared.required_capabilities.is_empty());
    assert_eq!(cleared.priority, 3);
    assert_eq!(env.get(&t.id).description, None, "the clearing is stored");
    // Clearing what is already clear changes nothing: no new version, no event.
    let before = env.event_count();
    let again = env
        .baton
        .update_task(&env.actor, None, &t.id, clear)
        .await
        .unwrap()
        .task;
    assert_eq!(again.version, cleared.version);
    assert_eq!(env.event_count(), before);
    // A task with no capabilities left is claimable by anyone.
    assert_eq!(env.claim("w").await.unwrap().task.id, t.id);
    assert_eq!(env.replay_difference().await, None);
}

/// Waiting claimers of one agent with the same capabilities in another order do not wake
/// each other: a claim that finds nothing writes nothing.
async fn idle_long_polls_write_nothing(env: Env) {
    env.claim_with("worker", &["a", "b"]).await; // registers the agent
    let before = env.event_count();
    let mut waiters = Vec::new();
    for caps in [vec!["a", "b"], vec!["b", "a"]] {
        let (baton, actor) = (env.baton.clone(), env.actor.clone());
        waiters.push(tokio::spawn(async move {
            let req = ClaimRequest {
                agent: "worker".into(),
                capabilities: caps.into_iter().map(String::from).collect(),
                wait: Some(Duration(600)),
                ..Default::default()
            };
            baton.claim(&actor, None, req).await
        }));
    }
    for w in waiters {
        assert!(w.await.unwrap().unwrap().claims.is_empty());
    }
    assert_eq!(env.event_count(), before, "idle claims appended events");
}

/// `If-Match` is checked against the version a caller could read, even when a lapsed lease
/// is expired by the same call.
async fn version_check_is_stable_across_lazy_expiry(env: Env) {
    let t = env
        .create(CreateTask {
            title: "t".into(),
            lease_ttl: Some(Duration::secs(5)),
            ..Default::default()
        })
        .await
        .unwrap();
    env.claim("w").await.unwrap();
    env.clock.advance(6_000);
    let seen = env.get(&t.id).version;
    let up = UpdateTask {
        version: Some(seen),
        priority: Some(7),
        ..Default::default()
    };
    let out = env
        .baton
        .update_task(&env.actor, None, &t.id, up)
        .await
        .unwrap();
    assert_eq!(out.task.priority, 7);
    assert_eq!(
        out.task.status,
        Status::Ready,
        "the lapsed lease was expired on the way"
    );
}

/// A planner's override of a failed dependency sticks: the failed edge becomes `relates_to`,
/// and the task's own later failures retry normally.
async fn unblocking_a_failed_dependency_sticks(env: Env) {
    let a = env
        .create(CreateTask {
            title: "a".into(),
            priority: Some(9),
            max_attempts: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let c = env
        .create(CreateTask {
            title: "c".into(),
            blocked_by: vec![a.id.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    // A soft link beside the hard one: the waiver leaves it as it is.
    env.baton
        .dependency(
            &env.actor,
            None,
            &a.id,
            &c.id,
            baton_core::model::DepKind::RelatesTo,
            true,
        )
        .await
        .unwrap();
    let ca = env.claim("w").await.unwrap();
    env.lease(
        &a.id,
        &ca.lease.token,
        LeaseOp::Fail(Fail {
            error: "no".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        env.get(&c.id).blocked_reason,
        Some(BlockedReason::DependencyFailed)
    );
    let before = env.event_count();
    env.baton
        .transition(&env.actor, None, Op::Unblock, &c.id, None)
        .await
        .unwrap();
    let kinds: Vec<String> = env.all_events()[before as usize..]
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    assert!(
        !kinds.contains(&"dependency.added".to_string()),
        "the existing soft link is not added again: {kinds:?}"
    );
    assert!(
        kinds.contains(&"dependency.removed".to_string()),
        "{kinds:?}"
    );
    let cc = env.claim("w").await.unwrap();
    assert_eq!(cc.task.id, c.id);
    let out = env
        .lease(
            &c.id,
            &cc.lease.token,
            LeaseOp::Fail(Fail {
                error: "flaky".into(),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        out["task"]["status"], "ready",
        "retried, not blocked again: {out}"
    );
    let brief = serde_json::to_value(env.baton.brief(&env.actor, &c.id, None).unwrap()).unwrap();
    assert_eq!(brief["brief"]["dependencies"][0]["relation"], "relates_to");
    let bad = Heartbeat {
        lease_ttl: Some(Duration(0)),
        ..Default::default()
    };
    let cc = {
        env.clock.advance(10 * 60 * 1000);
        env.claim("w").await.unwrap()
    };
    assert_eq!(
        env.lease(&c.id, &cc.lease.token, LeaseOp::Heartbeat(bad))
            .await
            .unwrap_err()
            .code,
        Code::InvalidDuration
    );
    assert_eq!(env.replay_difference().await, None);
}

/// A claim passes over many tasks the agent cannot take (here 300 needing `gpu`, ahead of
/// it in claim order) and still finds the one it can, in order.
async fn claim_pages_past_tasks_the_agent_cannot_take(env: Env) {
    for i in 0..300 {
        let req = CreateTask {
            title: format!("gpu {i}"),
            priority: Some(5 + (i % 3)),
            required_capabilities: vec!["gpu".into()],
            ..Default::default()
        };
        env.create(req).await.unwrap();
    }
    let plain = env.task("plain").await;
    let got = env.claim("cpu-only").await.expect("the plain task");
    assert_eq!(got.task.id, plain.id);
    assert_eq!(
        env.claim_with("gpu-box", &["gpu"])
            .await
            .unwrap()
            .task
            .priority,
        7
    );
}

/// Tasks needing different capability sets come out in one claim order: a claim takes,
/// across every set the agent can serve, the first tasks by priority, due date and age, and
/// none of a set it cannot (the store seeks each set: `TaskColumns::caps`). A set is the
/// same whatever order its capabilities were given in.
async fn claims_merge_capability_sets_in_claim_order(env: Env) {
    let make = |title: &str, caps: &[&str], priority: i64, due_at: Option<i64>| CreateTask {
        title: title.into(),
        required_capabilities: caps.iter().map(|c| c.to_string()).collect(),
        priority: Some(priority),
        due_at,
        ..Default::default()
    };
    let mut ids = std::collections::HashMap::new();
    for req in [
        make("plain low", &[], 1, None),
        make("gpu old", &["gpu"], 5, None),
        make("rust and gpu", &["rust", "gpu"], 7, None),
        make("rust", &["rust"], 3, None),
        make("x", &["x"], 9, None),
        make("gpu due", &["gpu"], 5, Some(T0 + 60_000)),
        make("plain", &[], 5, None),
        make("gpu and rust", &["gpu", "rust"], 5, None),
    ] {
        let title = req.title.clone();
        ids.insert(env.create(req).await.unwrap().id, title);
    }
    let titles =
        |tasks: Vec<String>| -> Vec<&str> { tasks.iter().map(|id| ids[id].as_str()).collect() };
    let every = titles(
        env.baton
            .ready(&env.actor, 100)
            .unwrap()
            .tasks
            .into_iter()
            .map(|t| t.id)
            .collect(),
    );
    let order = [
        "x",
        "rust and gpu",
        "gpu due",
        "gpu old",
        "plain",
        "gpu and rust",
        "rust",
        "plain low",
    ];
    assert_eq!(every, order, "the ready list spans every set");
    let first = |limit: u32| {
        let req = ClaimRequest {
            agent: "builder".into(),
            capabilities: vec!["rust".into(), "gpu".into()],
            count: Some(limit),
            ..Default::default()
        };
        env.baton.claim(&env.actor, None, req)
    };
    let claimed = first(3).await.unwrap().claims;
    let claimed = titles(claimed.into_iter().map(|c| c.task.id).collect());
    assert_eq!(claimed, ["rust and gpu", "gpu due", "gpu old"]);
    let mut one_by_one = Vec::new();
    while let Some(c) = env.claim_with("builder", &["gpu", "rust"]).await {
        one_by_one.push(c.task.id);
    }
    assert_eq!(
        titles(one_by_one),
        ["plain", "gpu and rust", "rust", "plain low"],
        "the x task is left to an agent that has x"
    );
    let x = env.claim_with("other", &["x", "unused"]).await.unwrap();
    assert_eq!(ids[&x.task.id], "x");
    assert!(env.baton.ready(&env.actor, 100).unwrap().tasks.is_empty());
}

/// Lease operations committed together (a store groups concurrent writes into one commit)
/// stand or fail alone: a completion whose lease had lapsed expires it and is then refused,
/// and the refusal undoes the expiry it wrote; the completions in the same commit keep all
/// of theirs.
async fn failing_jobs_in_a_group_commit_undo_only_themselves(env: Env) {
    let mut claims = Vec::new();
    for i in 0..20 {
        env.task(&format!("t{i}")).await;
        // Every other lease lapses before the completions below.
        let ttl = if i % 2 == 0 { 60 } else { 5 };
        let req = ClaimRequest {
            agent: "a".into(),
            lease_ttl: Some(Duration::secs(ttl)),
            ..Default::default()
        };
        let claimed = env.baton.claim(&env.actor, None, req).await.unwrap();
        claims.extend(claimed.claims);
    }
    assert_eq!(claims.len(), 20);
    env.clock.advance(6_000);
    let events_before = env.event_count();
    let outcomes = futures_util::future::join_all(
        claims
            .iter()
            .map(|c| env.lease(&c.task.id, &c.lease.token, complete())),
    )
    .await;
    for (i, (c, outcome)) in claims.iter().zip(&outcomes).enumerate() {
        let task = env.get(&c.task.id);
        if i % 2 == 0 {
            assert!(outcome.is_ok(), "task {i}: {outcome:?}");
            assert_eq!(task.status, Status::Done);
        } else {
            assert_eq!(outcome.as_ref().unwrap_err().code, Code::LeaseLost);
            // The expiry written before the refusal is gone with it.
            assert_eq!(task.status, Status::Claimed, "task {i}");
            assert_eq!(task.version, c.task.version, "task {i}");
        }
    }
    let kinds: Vec<String> = env
        .all_events()
        .into_iter()
        .skip(events_before as usize)
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds.len(), 10, "{kinds:?}");
    assert!(kinds.iter().all(|k| k == "task.completed"), "{kinds:?}");
    // The lapsed leases are still there to expire, once.
    assert_eq!(env.baton.reap_all().await.unwrap(), 10);
    for c in claims.iter().skip(1).step_by(2) {
        assert_eq!(env.get(&c.task.id).status, Status::Ready);
    }
    // The refused jobs' events (their expiries) took no numbers: the log has no gap, and
    // the workspace's last number is its last event's.
    let seqs: Vec<u64> = env.all_events().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(env.baton.last_seq(&env.actor).unwrap(), seqs.len() as u64);
    assert_eq!(env.replay_difference().await, None);
}

/// Listing by status finds exactly the tasks in that status, whichever index serves it
/// (on PostgreSQL open tasks, failed or canceled ones and done ones are indexed apart).
async fn listing_by_status_finds_every_status(env: Env) {
    let done = env.task("done").await;
    let failed = env.task("failed").await;
    let in_progress = env.task("in progress").await;
    let claimed = env.task("claimed").await;
    let blocked = env.task("blocked").await;
    let ready = env.task("ready").await;
    let canceled = env.task("canceled").await;
    env.baton
        .transition(&env.actor, None, Op::Cancel, &canceled.id, None)
        .await
        .unwrap();
    let next = |id: &str| {
        let id = id.to_string();
        let env = &env;
        async move {
            let c = env.claim("w").await.unwrap();
            assert_eq!(c.task.id, id, "claims come oldest first");
            c.lease.token
        }
    };
    let lease = next(&done.id).await;
    env.lease(&done.id, &lease, complete()).await.unwrap();
    let lease = next(&failed.id).await;
    let permanent = Fail {
        error: "bad input".into(),
        class: Some("permanent".into()),
        no_retry: false,
    };
    env.lease(&failed.id, &lease, LeaseOp::Fail(permanent))
        .await
        .unwrap();
    let lease = next(&in_progress.id).await;
    env.lease(&in_progress.id, &lease, LeaseOp::Start)
        .await
        .unwrap();
    next(&claimed.id).await;
    let lease = next(&blocked.id).await;
    let block = LeaseOp::Block {
        reason: "needs a key".into(),
    };
    env.lease(&blocked.id, &lease, block).await.unwrap();

    let expected = [
        (Status::Done, &done),
        (Status::Failed, &failed),
        (Status::InProgress, &in_progress),
        (Status::Claimed, &claimed),
        (Status::Blocked, &blocked),
        (Status::Ready, &ready),
        (Status::Canceled, &canceled),
    ];
    for status in Status::ALL {
        let filter = TaskFilter {
            status: Some(status),
            limit: 100,
            ..Default::default()
        };
        let listed: Vec<String> = env
            .baton
            .list_tasks(&env.actor, filter)
            .unwrap()
            .tasks
            .into_iter()
            .map(|t| t.id)
            .collect();
        let want: Vec<String> = expected
            .iter()
            .filter(|(s, _)| *s == status)
            .map(|(_, t)| t.id.clone())
            .collect();
        assert_eq!(listed, want, "tasks listed as {}", status.as_str());
    }
}

/// Artifacts: bytes stored by their hash and described by a row, listed oldest first, read
/// back checked; the holder's own attach (with its lease) belongs to its run and is no news
/// to it, anyone else's raises `context_changed`; a stale lease, a task that is not there
/// and bad input are refused with nothing written; the log replays every artifact.
async fn artifacts_attach_list_read_and_replay(env: Env) {
    let t = env.task("Write the report").await;
    let text = |name: &str, content: &str, lease: Option<&str>| AttachArtifact {
        name: name.into(),
        content: Some(content.into()),
        lease: lease.map(str::to_string),
        ..Default::default()
    };
    let notes = env
        .baton
        .attach_artifact(&env.actor, None, &t.id, text("notes.md", "# notes", None))
        .await
        .unwrap()
        .artifact;
    assert_eq!(notes.run_id, None);
    assert_eq!(notes.size, 7);
    assert_eq!(notes.media_type, "text/plain; charset=utf-8");
    assert_eq!(notes.sha256, baton_core::id::sha256_hex("# notes"));

    let c = env.claim("w1").await.expect("claimed");
    let token = c.lease.token.clone();
    let beat = || async {
        let ack = env.heartbeat(&t.id, &token).await.unwrap();
        ack["signals"]
            .as_array()
            .unwrap()
            .contains(&json!("context_changed"))
    };
    assert!(!beat().await, "nothing new yet");
    let png = AttachArtifact {
        name: "chart.png".into(),
        media_type: Some("image/png".into()),
        content_base64: Some("iVBORw0KGgo=".into()),
        lease: Some(token.clone()),
        ..Default::default()
    };
    let chart = env
        .baton
        .attach_artifact(&env.actor, None, &t.id, png)
        .await
        .unwrap()
        .artifact;
    assert_eq!(chart.run_id.as_deref(), Some(c.run.id.as_str()));
    assert_eq!((chart.size, chart.media_type.as_str()), (8, "image/png"));
    assert!(!beat().await, "the holder's own artifact is no news to it");
    // The same bytes again, by someone else: a second artifact, the bytes stored once.
    let again = env
        .baton
        .attach_artifact(
            &env.actor,
            None,
            &t.id,
            text("notes-copy.md", "# notes", None),
        )
        .await
        .unwrap()
        .artifact;
    assert_eq!(again.sha256, notes.sha256);
    assert!(beat().await, "another's artifact raises context_changed");

    let listed: Vec<String> = env
        .baton
        .artifacts(&env.actor, &t.id)
        .unwrap()
        .artifacts
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(
        listed,
        [notes.id.clone(), chart.id.clone(), again.id.clone()]
    );
    let read = env
        .baton
        .artifact(&env.actor, &notes.id, true)
        .await
        .unwrap();
    assert_eq!(
        (read.content.as_deref(), read.content_base64),
        (Some("# notes"), None)
    );
    let read = env
        .baton
        .artifact(&env.actor, &chart.id, true)
        .await
        .unwrap();
    assert_eq!(read.content_base64.as_deref(), Some("iVBORw0KGgo="));
    let described = env
        .baton
        .artifact(&env.actor, &chart.id, false)
        .await
        .unwrap();
    assert_eq!((described.content, described.content_base64), (None, None));
    let (_, bytes) = env
        .baton
        .artifact_bytes(&env.actor, &chart.id)
        .await
        .unwrap();
    assert_eq!(bytes, b"\x89PNG\r\n\x1a\n");
    let brief = env.baton.brief(&env.actor, &t.id, None).unwrap().brief;
    let named: Vec<&str> = brief
        .artifacts
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(
        named,
        ["notes-copy.md", "chart.png", "notes.md"],
        "newest first"
    );

    // Refused, with nothing written.
    let before = env.event_count();
    let code = |r: baton_core::Result<ArtifactOut>| r.unwrap_err().code;
    let stale = text("late.md", "late", Some("lse_1_stale"));
    assert_eq!(
        code(
            env.baton
                .attach_artifact(&env.actor, None, &t.id, stale)
                .await
        ),
        Code::LeaseLost
    );
    // Under an idempotency key too, and the refused bytes are not stored.
    let stale = text("late.md", "late and keyed", Some("lse_1_stale"));
    let keyed = env
        .baton
        .attach_artifact(&env.actor, Some("late-1"), &t.id, stale)
        .await;
    assert_eq!(code(keyed), Code::LeaseLost);
    let blobs = env.baton.objects().expect("an object store");
    let sha = baton_core::id::sha256_hex("late and keyed");
    assert!(
        blobs.get(&env.actor.workspace_id, &sha).await.is_err(),
        "bytes stored"
    );
    let nowhere = text("x.md", "x", None);
    assert_eq!(
        code(
            env.baton
                .attach_artifact(&env.actor, None, "tsk_nope", nowhere)
                .await
        ),
        Code::NotFound
    );
    let empty = AttachArtifact {
        name: "x".into(),
        ..Default::default()
    };
    assert_eq!(
        code(
            env.baton
                .attach_artifact(&env.actor, None, &t.id, empty)
                .await
        ),
        Code::InvalidInput
    );
    let bad_type = AttachArtifact {
        media_type: Some("not a type".into()),
        ..text("x", "x", None)
    };
    assert_eq!(
        code(
            env.baton
                .attach_artifact(&env.actor, None, &t.id, bad_type)
                .await
        ),
        Code::InvalidInput
    );
    assert_eq!(
        code(env.baton.artifact(&env.actor, "art_nope", true).await),
        Code::NotFound
    );
    assert_eq!(
        env.baton
            .artifacts(&env.actor, "tsk_nope")
            .unwrap_err()
            .code,
        Code::NotFound
    );
    assert_eq!(env.event_count(), before);
    assert_eq!(
        env.baton
            .artifacts(&env.actor, &t.id)
            .unwrap()
            .artifacts
            .len(),
        3
    );

    // Another workspace sees none of it.
    env.baton.create_workspace("elsewhere").await.unwrap();
    let other = env.baton.actor("elsewhere", "planner").await.unwrap();
    assert_eq!(
        env.baton
            .artifact(&other, &notes.id, false)
            .await
            .unwrap_err()
            .code,
        Code::NotFound
    );
    assert_eq!(
        env.baton.artifacts(&other, &t.id).unwrap_err().code,
        Code::NotFound
    );

    // A repeat with its idempotency key answers as the first call did, though the lease
    // it was sent under has ended since.
    let keyed = || AttachArtifact {
        lease: Some(token.clone()),
        ..text("log.txt", "done", None)
    };
    let first = env
        .baton
        .attach_artifact(&env.actor, Some("art-1"), &t.id, keyed())
        .await
        .unwrap();
    env.lease(&t.id, &token, LeaseOp::Release).await.unwrap();
    let repeat = env
        .baton
        .attach_artifact(&env.actor, Some("art-1"), &t.id, keyed())
        .await
        .unwrap();
    assert_eq!(first, repeat);

    let attached = env
        .all_events()
        .into_iter()
        .filter(|e| e.kind == "artifact.attached")
        .count();
    assert_eq!(attached, 4);
    assert_eq!(env.replay_difference().await, None);
}

on_every_backend!(
    a_task_reads_as_of_an_event,
    a_budget_counts_every_attempt,
    review_schema_retry_and_finished_steps_hold,
    an_update_clears_optional_fields,
    artifacts_attach_list_read_and_replay,
    claim_order_is_priority_then_due_then_age,
    capability_routing,
    expired_lease_is_fenced,
    attempt_timeout_bounds_the_lease,
    kill_switch_revokes_leases_at_once,
    agent_kill_switch_revokes_its_leases,
    workspace_kill_switch_stops_everything,
    heartbeat_extends_and_signals,
    a_waiting_claim_hears_its_agent_stopped,
    a_heartbeat_extends_by_the_ttl_the_claim_was_granted,
    fail_retries_with_backoff_then_fails,
    dag_release_and_failure_propagation,
    dependencies_and_cycles,
    parents_close_cycles,
    containers,
    output_schema_is_enforced,
    review_approve_and_reject,
    release_and_cancel,
    cancel_takes_open_descendants_with_it,
    a_task_born_behind_a_failed_blocker_says_so,
    names_shaped_like_ids_are_refused,
    the_log_shows_no_secret_hashes,
    project_review_reaches_its_open_tasks,
    a_claim_warns_of_overlapping_paths,
    a_concurrency_key_limits_leases,
    a_project_limit_holds_its_leases,
    an_agent_holds_at_most_its_max_concurrency,
    exclusive_scopes_hold_overlapping_tasks_back,
    next_claims_take_the_places_their_completions_free,
    a_more_urgent_task_asks_the_holder_of_its_key_to_yield,
    version_conflict,
    idempotency_keys,
    context_and_briefing,
    briefs_fit_every_budget_most_relevant_last,
    long_poll_claim_wakes_on_commit,
    long_poll_wakes_the_agent_that_can_take_the_work,
    replay_equals_live_state,
    out_of_range_timestamps_are_refused,
    idle_long_polls_write_nothing,
    version_check_is_stable_across_lazy_expiry,
    unblocking_a_failed_dependency_sticks,
    claim_pages_past_tasks_the_agent_cannot_take,
    claims_merge_capability_sets_in_claim_order,
    failing_jobs_in_a_group_commit_undo_only_themselves,
    listing_by_status_finds_every_status,
);
