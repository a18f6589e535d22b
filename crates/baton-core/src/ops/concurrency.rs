//! Keyed concurrency (DESIGN §4): a task may carry a concurrency key (`area:db`) and a
//! limit, and at most that many tasks of the workspace with the key are leased at once. A
//! claim passes over a task whose key is full, and takes the next one in claim order. A
//! project's `max_concurrency` limits its tasks so, as if they shared a key.
//!
//! The stores leave tasks whose key is full out of their candidates (a count in the claim
//! query), which keeps claims from stepping over them; what makes the limit hold under
//! concurrent writers is [`has_room`], asked for every candidate with a key before it is
//! granted: it holds the key for the rest of the transaction ([`Tx::try_hold`]) and
//! counts the leases with it, this transaction's grants included.
//!
//! [`Tx::key_leases`]: crate::store::Tx::key_leases
//! [`Tx::try_hold`]: crate::store::Tx::try_hold

use super::Ctx;
use crate::error::{Error, Result};
use crate::model::{Lease, Task};
use crate::time::{Duration, Millis};

/// The highest limit a key may be given.
pub const MAX_LIMIT: u32 = 10_000;

/// How long a lease asked to yield may run on (DESIGN §4, preemption): time for the agent
/// to hear `yield` at its next heartbeat (a third of a short lease, typically) and to save
/// what it has before it releases.
pub const YIELD_GRACE: Duration = Duration::secs(60);

/// When a lease asked to yield ends at the latest: [`YIELD_GRACE`] after it was asked.
pub fn yield_ends(lease: &Lease) -> Option<Millis> {
    lease
        .yield_requested_at
        .map(|asked| asked + YIELD_GRACE.ms())
}

/// Checks a create request's key and limit; the pair a task stores (the limit 1 unless
/// given), or none.
pub fn check(key: Option<&str>, limit: Option<u32>) -> Result<Option<(String, u32)>> {
    if let Some(limit) = limit {
        check_limit(limit)?;
    }
    match (key, limit) {
        (Some(key), limit) => Ok(Some((check_key(key)?, limit.unwrap_or(1)))),
        (None, Some(_)) => Err(Error::invalid(
            "concurrency_limit is given without a concurrency_key",
            "give the key the limit is for, e.g. \"concurrency_key\": \"area:db\"",
        )),
        (None, None) => Ok(None),
    }
}

/// Applies an update's key (`Some(None)` removes it) and limit to `task`.
pub fn update(task: &mut Task, key: Option<Option<String>>, limit: Option<u32>) -> Result<()> {
    if let Some(limit) = limit {
        check_limit(limit)?;
    }
    match key {
        Some(None) => {
            if limit.is_some() {
                return Err(Error::invalid(
                    "concurrency_limit is given while concurrency_key is removed",
                    "leave concurrency_limit out when removing the key",
                ));
            }
            task.concurrency_key = None;
            task.concurrency_limit = None;
        }
        Some(Some(key)) => {
            task.concurrency_key = Some(check_key(&key)?);
            task.concurrency_limit = Some(limit.or(task.concurrency_limit).unwrap_or(1));
        }
        None => {
            if let Some(limit) = limit {
                if task.concurrency_key.is_none() {
                    return Err(Error::invalid(
                        "concurrency_limit is given but the task has no concurrency_key",
                        "give the key the limit is for as well",
                    ));
                }
                task.concurrency_limit = Some(limit);
            }
        }
    }
    Ok(())
}

fn check_key(key: &str) -> Result<String> {
    super::check_name("concurrency_key", key, 200)?;
    Ok(key.trim().to_string())
}

fn check_limit(limit: u32) -> Result<()> {
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Error::invalid(
            format!("concurrency_limit must be 1 to {MAX_LIMIT}, not {limit}"),
            "give how many tasks with the key may be leased at once, e.g. 1",
        ));
    }
    Ok(())
}

/// The warning for an update that leaves `task`, leased, with a key whose leases pass its
/// limit (the key or the limit changed under it, from `before`): nothing is revoked, and
/// claims grant no task with the key until fewer are leased.
pub fn over_limit(ctx: &mut Ctx<'_>, before: &Task, task: &Task) -> Result<Option<String>> {
    let Some(key) = &task.concurrency_key else {
        return Ok(None);
    };
    let moved = before.concurrency_key != task.concurrency_key;
    if !task.status.is_leased() || !(moved || before.concurrency_limit != task.concurrency_limit) {
        return Ok(None);
    }
    // The store still counts the task under the key it had.
    let leased = ctx.tx.key_leases(ctx.ws, key)? + u64::from(moved);
    let limit = task.concurrency_limit.unwrap_or(1);
    Ok((leased > u64::from(limit)).then(|| {
        format!(
            "{leased} tasks with concurrency key {key} are leased, this one among them, over its \
             limit of {limit}: none is revoked, and no task with the key is claimed until fewer \
             are leased"
        )
    }))
}

/// Whether `task` may be leased now as far as concurrency limits go: its key's (if it has
/// one: the key is held to the end of the transaction and fewer than its limit of the
/// workspace's tasks with it are leased) and its project's. False too when another
/// transaction holds the key or the project (it may be granting the last place): the
/// claim takes another task.
pub fn has_room(ctx: &mut Ctx<'_>, task: &Task) -> Result<bool> {
    if let Some(key) = &task.concurrency_key {
        if !ctx.tx.try_hold(ctx.ws, &format!("key:{key}"))? {
            return Ok(false);
        }
        let limit = u64::from(task.concurrency_limit.unwrap_or(1));
        if ctx.tx.key_leases(ctx.ws, key)? >= limit {
            return Ok(false);
        }
    }
    project_has_room(ctx, task)
}

/// Whether `task`'s project may have one more of its tasks leased (its `max_concurrency`),
/// holding the project to the end of the transaction as [`has_room`] holds a key.
fn project_has_room(ctx: &mut Ctx<'_>, task: &Task) -> Result<bool> {
    let Some(limit) = ctx.tx.project_limit(ctx.ws, task)? else {
        return Ok(true);
    };
    if !ctx
        .tx
        .try_hold(ctx.ws, &format!("project:{}", task.project_id))?
    {
        return Ok(false);
    }
    Ok(ctx.tx.project_leases(ctx.ws, &task.project_id)? < u64::from(limit))
}

/// Whether `urgent`, ready, could be claimed once `holder` gave its key back: the agent
/// holding it has the capabilities `urgent` needs (so the place freed is not taken back by
/// the holder itself, over and over), and no exclusive file scope holds `urgent` back. (The
/// store's query has left out tasks of killed projects and containers with open children.)
fn claimable_but_for_its_key(ctx: &mut Ctx<'_>, urgent: &Task, holder: &Task) -> Result<bool> {
    if !urgent.required_capabilities.is_empty() {
        let agent = match &holder.lease {
            Some(lease) => ctx.tx.agent(ctx.ws, &lease.agent_id)?,
            None => None,
        };
        if !agent.is_some_and(|a| super::lease::can_take(&a.capabilities, urgent)) {
            return Ok(false);
        }
    }
    super::scope::clear_of_overlaps(ctx, urgent, Some(&holder.id))
}

/// Preemption (DESIGN §4), asked at the heartbeat of `task`, leased: whether it is to yield
/// its concurrency key, marking its lease so the first time. It is when a ready task with
/// the key, more urgent than it, is held back by the key's limit, and `task` is the least
/// urgent of the key's holders (one holder of a key yields at a time). Its lease then ends
/// within [`YIELD_GRACE`] (revoked, the attempt not counted) unless the agent releases it
/// first; a `task.yield_requested` event names the task waiting. A request whose task no
/// longer waits (claimed, canceled, made less urgent, or the key has room again) is
/// withdrawn at the next heartbeat, and the lease is extended as before.
pub fn asked_to_yield(ctx: &mut Ctx<'_>, task: &mut Task) -> Result<bool> {
    let (Some(key), Some(lease)) = (task.concurrency_key.clone(), &task.lease) else {
        return Ok(false);
    };
    let asked = lease.yield_requested_at.is_some();
    let urgent = ctx
        .tx
        .ready_with_key_above(ctx.ws, &key, task.priority, ctx.now)?;
    let holders = match &urgent {
        Some(_) => ctx.tx.leased_with_key(ctx.ws, &key)?,
        None => Vec::new(),
    };
    let held_back = match urgent {
        Some(u) if holders.len() >= u.concurrency_limit.unwrap_or(1) as usize => {
            claimable_but_for_its_key(ctx, &u, task)?.then_some(u)
        }
        _ => None,
    };
    let Some(urgent) = held_back.as_ref() else {
        if asked {
            if let Some(lease) = &mut task.lease {
                lease.yield_requested_at = None;
            }
            task.reason = None;
        }
        return Ok(false);
    };
    if asked {
        return Ok(true);
    }
    let yielding = |t: &Task| {
        t.lease
            .as_ref()
            .is_some_and(|l| l.yield_requested_at.is_some())
    };
    // The least urgent: lowest priority, then the latest due, then the newest.
    let least = holders.iter().max_by_key(|h| crate::store::claim_key(h));
    if holders.iter().any(yielding) || least.is_none_or(|l| l.id != task.id) {
        return Ok(false);
    }
    if let Some(lease) = &mut task.lease {
        lease.yield_requested_at = Some(ctx.now);
    }
    task.reason = Some(format!(
        "asked to yield: {} (priority {}) waits for concurrency key {key}; release within {} \
         or the lease is revoked",
        urgent.id, urgent.priority, YIELD_GRACE
    ));
    ctx.emit(
        "task.yield_requested",
        Some(&task.id),
        serde_json::json!({ "concurrency_key": key, "for": urgent.id, "grace": YIELD_GRACE }),
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_alone_is_a_mutex_and_a_limit_needs_a_key() {
        assert_eq!(
            check(Some(" area:db "), None).unwrap(),
            Some(("area:db".into(), 1))
        );
        assert_eq!(
            check(Some("gpu"), Some(4)).unwrap(),
            Some(("gpu".into(), 4))
        );
        assert_eq!(check(None, None).unwrap(), None);
        for (key, limit) in [
            (None, Some(2)),
            (Some("k"), Some(0)),
            (Some("k"), Some(MAX_LIMIT + 1)),
            (Some(" "), None),
            (Some("a\nb"), None),
        ] {
            let refused = check(key, limit).expect_err("refused");
            assert_eq!(refused.code, crate::Code::InvalidInput, "{key:?} {limit:?}");
        }
    }
}
