//! File scopes (DESIGN §4): the paths a task expects to touch, as globs, and the warning a
//! claim carries when another leased task's paths overlap its own, so two agents learn
//! before they start that they may edit the same files.
//!
//! Overlap is decided on the globs' literal prefixes (what comes before the first
//! wildcard): two scopes overlap when one prefix starts the other. That errs towards
//! warning (`src/*.rs` and `src/main.py` overlap) and never misses a real overlap.

use super::Ctx;
use crate::api::Claim;
use crate::error::{Code, Error, Result};
use crate::model::Task;
use crate::state::Status;

/// At most this many paths per task.
pub const MAX_PATHS: usize = 100;

/// Checks a task's paths: each 1 to 1,000 bytes of one line, at most [`MAX_PATHS`];
/// returns them trimmed and without repeats.
pub fn check_paths(paths: &[String]) -> Result<Vec<String>> {
    if paths.len() > MAX_PATHS {
        return Err(Error::new(
            Code::TooLarge,
            format!("{} paths; the limit is {MAX_PATHS}", paths.len()),
            "name directories with globs (src/db/**) rather than every file",
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(paths.len());
    for path in paths {
        let given = path.trim();
        let normal = (given.len() <= 1000 && !given.chars().any(char::is_control))
            .then(|| normalize(given))
            .flatten();
        let Some(path) = normal else {
            return Err(Error::invalid(
                format!("{given:?} is not a valid path"),
                "give a path or glob relative to the repository, without '..' and not from \
                 '/', e.g. src/db/** or README.md",
            ));
        };
        if !out.contains(&path) {
            out.push(path);
        }
    }
    Ok(out)
}

/// `path` in one spelling, so that overlap is judged on what it names: `.` segments and
/// repeated slashes dropped (`src/./db//a.rs` is `src/db/a.rs`); `None` for a path from
/// the root, one that climbs (`..`), or one that names nothing.
fn normalize(path: &str) -> Option<String> {
    if path.starts_with('/') {
        return None;
    }
    let mut segments = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            s => segments.push(s),
        }
    }
    let mut out = segments.join("/");
    if out.is_empty() {
        return None;
    }
    if path.ends_with('/') {
        out.push('/');
    }
    Some(out)
}

/// What a glob names for certain: the text before its first wildcard.
fn literal_prefix(glob: &str) -> &str {
    let end = glob.find(['*', '?', '[', '{']).unwrap_or(glob.len());
    glob[..end].trim_start_matches("./")
}

/// Whether two globs may name a file in common.
pub fn overlap(a: &str, b: &str) -> bool {
    let (a, b) = (literal_prefix(a), literal_prefix(b));
    a.starts_with(b) || b.starts_with(a)
}

/// Adds to each claim whose task has paths a warning naming the other leased tasks of the
/// workspace whose paths overlap (tasks of the same claim among them). Reads the leased
/// tasks only when a claimed task has paths.
pub fn warn_of_overlaps(ctx: &mut Ctx<'_>, claims: &mut [Claim]) -> Result<()> {
    if claims.iter().all(|c| c.task.paths.is_empty()) {
        return Ok(());
    }
    let leased = leased_with_paths(ctx)?;
    for claim in claims.iter_mut().filter(|c| !c.task.paths.is_empty()) {
        let others: Vec<String> = leased
            .iter()
            .filter(|t| t.id != claim.task.id)
            .filter_map(|t| {
                let shared: Vec<&str> = t
                    .paths
                    .iter()
                    .filter(|p| claim.task.paths.iter().any(|q| overlap(p, q)))
                    .map(String::as_str)
                    .collect();
                (!shared.is_empty()).then(|| format!("{} ({})", t.id, shared.join(", ")))
            })
            .collect();
        if !others.is_empty() {
            claim.warnings.push(format!(
                "paths overlap leased task(s) {}: coordinate before editing the same files",
                others.join("; ")
            ));
        }
    }
    Ok(())
}

/// Whether `task` may be leased now as far as file scopes go: true without paths or in a
/// project whose scopes only warn; otherwise the workspace's scopes are held to the end of
/// the transaction (passed over, false, when another transaction holds them) and no
/// leased task's paths may overlap the task's.
pub fn may_take(ctx: &mut Ctx<'_>, task: &Task) -> Result<bool> {
    if !exclusive(ctx, task)? {
        return Ok(true);
    }
    if !ctx.tx.try_hold(ctx.ws, "scopes")? {
        return Ok(false);
    }
    Ok(!overlaps_leased(ctx, task, None)?)
}

/// Whether no exclusive file scope holds `task` back: no leased task (but `except`) has
/// paths overlapping its own, where its project makes scopes exclusive.
pub fn clear_of_overlaps(ctx: &mut Ctx<'_>, task: &Task, except: Option<&str>) -> Result<bool> {
    Ok(!exclusive(ctx, task)? || !overlaps_leased(ctx, task, except)?)
}

/// Whether `task` has paths in a project whose file scopes are exclusive.
fn exclusive(ctx: &mut Ctx<'_>, task: &Task) -> Result<bool> {
    if task.paths.is_empty() {
        return Ok(false);
    }
    let project = ctx.tx.project(ctx.ws, &task.project_id)?;
    Ok(project.is_some_and(|p| p.exclusive_scopes))
}

/// Whether a leased task other than `task` and `except` has paths overlapping `task`'s.
fn overlaps_leased(ctx: &mut Ctx<'_>, task: &Task, except: Option<&str>) -> Result<bool> {
    let leased = leased_with_paths(ctx)?;
    Ok(leased.iter().any(|t| {
        t.id != task.id
            && Some(t.id.as_str()) != except
            && t.paths
                .iter()
                .any(|p| task.paths.iter().any(|q| overlap(p, q)))
    }))
}

/// The workspace's leased tasks that declare paths.
fn leased_with_paths(ctx: &mut Ctx<'_>) -> Result<Vec<Task>> {
    let leased: Vec<Status> = Status::ALL.into_iter().filter(|s| s.is_leased()).collect();
    let mut out = Vec::new();
    super::for_each_task(ctx, &leased, None, |_, task| {
        if !task.paths.is_empty() {
            out.push(task);
        }
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_overlap_on_their_literal_prefixes() {
        for (a, b) in [
            ("src/db/**", "src/db/schema.rs"),
            ("src/**", "src/db/*.rs"),
            ("README.md", "README.md"),
            ("./docs/*", "docs/http.md"),
            ("**", "anything"),
        ] {
            assert!(overlap(a, b) && overlap(b, a), "{a} {b}");
        }
        for (a, b) in [("src/db/**", "src/api/**"), ("docs/*", "README.md")] {
            assert!(!overlap(a, b) && !overlap(b, a), "{a} {b}");
        }
    }

    #[test]
    fn paths_are_checked_trimmed_and_unique() {
        let given = vec![" src/** ".to_string(), "src/**".to_string()];
        assert_eq!(check_paths(&given).unwrap(), ["src/**"]);
        let spelled = ["src//db/a.rs", "./src/./db/a.rs", "src/db/"].map(String::from);
        assert_eq!(
            check_paths(&spelled).unwrap(),
            ["src/db/a.rs", "src/db/"],
            "one spelling each"
        );
        for bad in ["", "a\nb", "/src/db/a.rs", "src/x/../db/a.rs", "./", "."] {
            assert_eq!(
                check_paths(&[bad.to_string()]).unwrap_err().code,
                Code::InvalidInput
            );
        }
        let many = vec!["a".to_string(); MAX_PATHS + 1];
        assert_eq!(check_paths(&many).unwrap_err().code, Code::TooLarge);
    }
}
