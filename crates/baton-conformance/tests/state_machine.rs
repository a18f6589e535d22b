//! Every state × operation pair of the state machine: allowed pairs succeed, refused pairs
//! fail with `INVALID_TRANSITION` (or `LEASE_LOST` where there is no lease to act under)
//! and change nothing.

use baton_conformance::{backends, Env};
use baton_core::api::*;
use baton_core::state::{is_allowed, Op, Status};
use baton_core::{Code, LeaseOp};

/// Brings a fresh task into `status`; returns its id and lease token (if leased).
async fn task_in(env: &Env, status: Status) -> (String, String) {
    let bogus = "lse_not_a_real_token".to_string();
    match status {
        Status::Draft => {
            let t = env
                .create(CreateTask {
                    title: "t".into(),
                    draft: true,
                    ..Default::default()
                })
                .await
                .unwrap();
            (t.id, bogus)
        }
        Status::Ready => (env.task("t").await.id, bogus),
        Status::Canceled => {
            let t = env.task("t").await;
            env.baton
                .transition(&env.actor, None, Op::Cancel, &t.id, None)
                .await
                .unwrap();
            (t.id, bogus)
        }
        _ => {
            let review = status == Status::Review;
            let t = env
                .create(CreateTask {
                    title: "t".into(),
                    review_required: Some(review),
                    max_attempts: Some(1),
                    ..Default::default()
                })
                .await
                .unwrap();
            let c = env.claim("w").await.expect("claimable");
            let token = c.lease.token;
            let op = match status {
                Status::Claimed => None,
                Status::InProgress => Some(LeaseOp::Start),
                Status::Waiting => Some(LeaseOp::Wait {
                    reason: "ci".into(),
                }),
                Status::Blocked => Some(LeaseOp::Block {
                    reason: "need access".into(),
                }),
                Status::Review | Status::Done => Some(LeaseOp::Complete(Complete::default())),
                Status::Failed => Some(LeaseOp::Fail(Fail {
                    error: "boom".into(),
                    ..Default::default()
                })),
                _ => unreachable!(),
            };
            if let Some(op) = op {
                env.lease(&t.id, &token, op).await.unwrap();
            }
            (t.id, token)
        }
    }
}

/// Applies `op` to the task; Ok(true) if it changed the task.
async fn apply(env: &Env, op: Op, id: &str, token: &str) -> Result<(), baton_core::Error> {
    let a = &env.actor;
    let lease = |op| async move { env.lease(id, token, op).await.map(|_| ()) };
    match op {
        Op::Update => env
            .baton
            .update_task(
                a,
                None,
                id,
                UpdateTask {
                    title: Some("renamed".into()),
                    ..Default::default()
                },
            )
            .await
            .map(|_| ()),
        Op::Publish | Op::Cancel | Op::Retry | Op::Unblock | Op::Approve => env
            .baton
            .transition(a, None, op, id, None)
            .await
            .map(|_| ()),
        Op::Reject => env
            .baton
            .transition(a, None, op, id, Some("not good enough".into()))
            .await
            .map(|_| ()),
        Op::Claim => {
            let got = env.claim("other").await;
            match got {
                Some(c) if c.task.id == id => Ok(()),
                _ => Err(baton_core::Error::new(
                    Code::InvalidTransition,
                    "not claimed",
                    "",
                )),
            }
        }
        Op::Start => lease(LeaseOp::Start).await,
        Op::Heartbeat => lease(LeaseOp::Heartbeat(Heartbeat::default())).await,
        Op::Wait => lease(LeaseOp::Wait { reason: "x".into() }).await,
        Op::Resume => lease(LeaseOp::Resume).await,
        Op::Block => lease(LeaseOp::Block { reason: "x".into() }).await,
        Op::Release => lease(LeaseOp::Release).await,
        Op::Complete => lease(LeaseOp::Complete(Complete::default())).await,
        Op::Fail => {
            lease(LeaseOp::Fail(Fail {
                error: "x".into(),
                ..Default::default()
            }))
            .await
        }
        Op::Expire => {
            env.clock.advance(10 * 60 * 1000);
            let n = env.baton.reap(a).await?;
            if n == 1 {
                Ok(())
            } else {
                Err(baton_core::Error::new(
                    Code::InvalidTransition,
                    "nothing expired",
                    "",
                ))
            }
        }
    }
}

#[tokio::test]
async fn every_state_and_operation() {
    for backend in backends() {
        let mut checked = 0;
        for status in Status::ALL {
            for op in Op::ALL {
                let env = Env::new(backend).await;
                let (id, token) = task_in(&env, status).await;
                let before = env.get(&id);
                assert_eq!(before.status, status, "setup for {status:?}");
                let task_events = |env: &Env| {
                    env.all_events()
                        .iter()
                        .filter(|e| e.task_id.as_deref() == Some(&id))
                        .count()
                };
                let events_before = task_events(&env);
                // A lease operation on a claimed task that only in_progress accepts starts it first.
                let lease_op = matches!(op, Op::Wait | Op::Block);
                let allowed = is_allowed(status, op)
                    || (status == Status::Claimed
                        && lease_op
                        && is_allowed(Status::InProgress, op));
                let result = apply(&env, op, &id, &token).await;
                match (allowed, result) {
                    (true, Ok(())) => {}
                    (true, Err(e)) => panic!("{status:?} × {op:?} should be allowed, got {e}"),
                    (false, Ok(())) => panic!("{status:?} × {op:?} should be refused"),
                    (false, Err(e)) => {
                        assert!(
                            matches!(e.code, Code::InvalidTransition | Code::LeaseLost),
                            "{status:?} × {op:?}: unexpected {e}"
                        );
                        if e.code == Code::InvalidTransition && op != Op::Claim && op != Op::Expire
                        {
                            let details = e.details.clone().unwrap_or_default();
                            assert_eq!(details["status"], status.as_str(), "error names the state");
                            assert!(
                                details["allowed"].is_array(),
                                "error lists allowed operations"
                            );
                        }
                        let after = env.get(&id);
                        assert_eq!(
                            after.status, before.status,
                            "{status:?} × {op:?} changed status"
                        );
                        assert_eq!(
                            after.version, before.version,
                            "{status:?} × {op:?} changed version"
                        );
                        assert_eq!(
                            task_events(&env),
                            events_before,
                            "{status:?} × {op:?} appended events"
                        );
                    }
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 170);
    }
}

#[tokio::test]
async fn refusal_names_state_and_allowed_operations() {
    for backend in backends() {
        refusal_on(Env::new(backend).await).await;
    }
}

async fn refusal_on(env: Env) {
    let t = env.task("t").await;
    env.baton
        .transition(&env.actor, None, Op::Cancel, &t.id, None)
        .await
        .unwrap();
    let err = env
        .baton
        .transition(&env.actor, None, Op::Publish, &t.id, None)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidTransition);
    assert!(err.message.contains("canceled"), "{}", err.message);
    let failed = env
        .create(CreateTask {
            title: "f".into(),
            max_attempts: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let c = env.claim("w").await.unwrap();
    assert_eq!(c.task.id, failed.id);
    env.lease(
        &failed.id,
        &c.lease.token,
        LeaseOp::Fail(Fail {
            error: "x".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let err = env
        .baton
        .transition(&env.actor, None, Op::Approve, &failed.id, None)
        .await
        .unwrap_err();
    assert_eq!(
        err.details.unwrap()["allowed"],
        serde_json::json!(["retry"])
    );
}
