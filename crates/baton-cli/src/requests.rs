//! Arguments → operation requests: one conversion per command, shared by the embedded path
//! and the HTTP client, so both send exactly the same request.

use crate::args::*;
use baton_core::api::*;
use baton_core::model::RetryPolicy;
use baton_core::time::{parse_timestamp, Duration};
use baton_core::Error;
use serde_json::Value;

/// Parses an optional duration argument (`30s`, `5m`).
pub(crate) fn duration(text: &Option<String>) -> Result<Option<Duration>, Error> {
    text.as_deref().map(Duration::parse).transpose()
}

/// Parses an optional JSON argument.
pub(crate) fn json_arg(field: &str, text: &Option<String>) -> Result<Option<Value>, Error> {
    text.as_deref()
        .map(|t| {
            serde_json::from_str(t).map_err(|e| {
                Error::invalid(
                    format!("--{field} is not valid JSON: {e}"),
                    format!("pass --{field} as a JSON value, e.g. '{{\"ok\": true}}'"),
                )
            })
        })
        .transpose()
}

pub(crate) fn create(a: &CreateArgs) -> Result<CreateTask, Error> {
    Ok(CreateTask {
        title: a.title.clone(),
        intent: a.intent.clone(),
        description: a.description.clone(),
        plan: a.plan.clone(),
        kind: a.kind.clone(),
        project: a.project.clone(),
        parent_id: a.parent.clone(),
        priority: a.priority,
        budget: a.max_cost.map(|max| serde_json::json!({ "max_cost": max })),
        due_at: a.due.as_deref().map(parse_timestamp).transpose()?,
        required_capabilities: a.capabilities.clone(),
        labels: a.labels.clone(),
        paths: a.paths.clone(),
        concurrency_key: a.concurrency_key.clone(),
        concurrency_limit: a.concurrency_limit,
        blocked_by: a.blocked_by.clone(),
        lease_ttl: duration(&a.lease_ttl)?,
        timeout: duration(&a.timeout)?,
        max_attempts: a.max_attempts,
        review_required: a.review.then_some(true),
        output_schema: json_arg("output-schema", &a.output_schema)?,
        input: json_arg("input", &a.input)?,
        draft: a.draft,
        ..Default::default()
    })
}

pub(crate) fn update(a: &UpdateArgs) -> Result<UpdateTask, Error> {
    // A field is set, cleared (`--clear`), or left out; not set and cleared at once.
    let clears = |field: ClearField, given: bool, flag: &str| -> Result<bool, Error> {
        let cleared = a.clear.contains(&field);
        if cleared && given {
            return Err(Error::invalid(
                format!("--{flag} and --clear {} are both given", clear_name(field)),
                format!("give --{flag} to set the field, or --clear to remove it"),
            ));
        }
        Ok(cleared)
    };
    // `Some(None)` clears, `Some(Some(v))` sets, `None` keeps.
    fn patch<T>(cleared: bool, value: Option<T>) -> Option<Option<T>> {
        if cleared {
            Some(None)
        } else {
            value.map(Some)
        }
    }
    let listed = |field, values: &Vec<String>, flag| -> Result<Option<Vec<String>>, Error> {
        Ok(match clears(field, !values.is_empty(), flag)? {
            true => Some(Vec::new()),
            false => (!values.is_empty()).then(|| values.clone()),
        })
    };
    Ok(UpdateTask {
        version: a.version,
        title: a.title.clone(),
        intent: a.intent.clone().map(Some),
        description: patch(
            clears(
                ClearField::Description,
                a.description.is_some(),
                "description",
            )?,
            a.description.clone(),
        ),
        plan: patch(
            clears(ClearField::Plan, a.plan.is_some(), "plan")?,
            a.plan.clone(),
        ),
        kind: a.kind.clone(),
        priority: a.priority,
        due_at: patch(
            clears(ClearField::Due, a.due.is_some(), "due")?,
            a.due.as_deref().map(parse_timestamp).transpose()?,
        ),
        labels: listed(ClearField::Labels, &a.labels, "label")?,
        paths: listed(ClearField::Paths, &a.paths, "path")?,
        concurrency_key: patch(
            clears(
                ClearField::ConcurrencyKey,
                a.concurrency_key.is_some(),
                "concurrency-key",
            )?,
            a.concurrency_key.clone(),
        ),
        concurrency_limit: a.concurrency_limit,
        required_capabilities: listed(ClearField::Capabilities, &a.capabilities, "capability")?,
        lease_ttl: duration(&a.lease_ttl)?,
        timeout: patch(
            clears(ClearField::Timeout, a.timeout.is_some(), "timeout")?,
            duration(&a.timeout)?,
        ),
        max_attempts: a.max_attempts,
        review_required: a.review,
        input: patch(
            clears(ClearField::Input, a.input.is_some(), "input")?,
            json_arg("input", &a.input)?,
        ),
        output_schema: patch(
            clears(
                ClearField::OutputSchema,
                a.output_schema.is_some(),
                "output-schema",
            )?,
            json_arg("output-schema", &a.output_schema)?,
        ),
        budget: patch(
            clears(ClearField::Budget, a.max_cost.is_some(), "max-cost")?,
            a.max_cost.map(|max| serde_json::json!({ "max_cost": max })),
        ),
    })
}

/// How `--clear` spells a field.
fn clear_name(field: ClearField) -> String {
    use clap::ValueEnum;
    field
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

pub(crate) fn claim(a: &ClaimArgs) -> Result<ClaimRequest, Error> {
    Ok(ClaimRequest {
        agent: a.agent.clone(),
        capabilities: a.capabilities.clone(),
        count: Some(a.count),
        lease_ttl: duration(&a.lease_ttl)?,
        wait: duration(&a.wait)?,
    })
}

pub(crate) fn heartbeat(a: &HeartbeatArgs) -> Result<Heartbeat, Error> {
    Ok(Heartbeat {
        progress: a.progress,
        message: a.message.clone(),
        usage: json_arg("usage", &a.usage)?,
        lease_ttl: duration(&a.lease_ttl)?,
    })
}

pub(crate) fn complete(a: &CompleteArgs) -> Result<Complete, Error> {
    Ok(Complete {
        output: json_arg("output", &a.output)?,
        outcome: a.outcome.clone(),
        force: a.force,
    })
}

pub(crate) fn fail(a: &FailArgs) -> Fail {
    Fail {
        error: a.error.clone(),
        class: a.class.clone(),
        no_retry: a.no_retry,
    }
}

pub(crate) fn note(a: &NoteArgs) -> AddContext {
    AddContext {
        kind: a.kind.clone(),
        content: a.content.clone(),
        supersedes: a.supersedes.clone(),
        lease: a.lease.clone(),
    }
}

/// An artifact from a file (or standard input, `-`): UTF-8 text goes as `content`, other
/// bytes (and text that JSON's escapes would make longer than base64) as `content_base64`.
/// At most one byte past the limit is read; the server refuses what is over it.
pub(crate) fn artifact(
    file: &std::path::Path,
    name: Option<&str>,
    media_type: Option<&str>,
    lease: Option<&str>,
) -> Result<AttachArtifact, Error> {
    use baton_core::ops::artifact::MAX_ARTIFACT_BYTES;
    use std::io::Read;
    let stdin = file.as_os_str() == "-";
    let name = match (name, stdin) {
        (Some(n), _) => n.to_string(),
        (None, true) => {
            return Err(Error::invalid(
                "an artifact read from standard input needs a name",
                "add --name, e.g. --name report.md",
            ))
        }
        (None, false) => file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let unreadable = |e: std::io::Error| {
        Error::invalid(
            format!("cannot read {}: {e}", file.display()),
            "give a readable file, or - for standard input",
        )
    };
    // One byte past the limit is enough to know the file is too large.
    let limit = MAX_ARTIFACT_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    if stdin {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(limit).read_to_end(&mut bytes))
            .map_err(unreadable)?;
    }
    let size = bytes.len();
    let mut media_type = media_type.map(str::to_string);
    let (mut content, mut content_base64) = baton_core::ops::artifact::text_or_base64(bytes);
    if let Some(text) = content.as_deref() {
        let escaped = serde_json::to_string(text).map_or(usize::MAX, |s| s.len());
        if escaped > size.div_ceil(3) * 4 + 2 {
            use base64::Engine as _;
            content_base64 = Some(base64::engine::general_purpose::STANDARD.encode(text));
            content = None;
            // Still text: its default type stays text's.
            let text_type = baton_core::ops::artifact::TEXT_MEDIA_TYPE;
            media_type = media_type.or(Some(text_type.to_string()));
        }
    }
    Ok(AttachArtifact {
        name,
        media_type,
        content,
        content_base64,
        lease: lease.map(str::to_string),
    })
}

/// Project settings from the command line (`killed` as given).
pub(crate) fn project_settings(
    a: &ProjectSettingsArgs,
    killed: Option<bool>,
) -> Result<ProjectSettings, Error> {
    let retry_policy = a.max_attempts.map(|max| RetryPolicy {
        max_attempts: max,
        ..RetryPolicy::default()
    });
    Ok(ProjectSettings {
        lease_ttl: a.lease_ttl.as_deref().map(Duration::parse).transpose()?,
        retry_policy,
        review_required: a.review_required,
        killed,
        exclusive_scopes: a.exclusive_scopes,
        max_concurrency: match a.unlimited {
            true => Some(None),
            false => a.max_concurrency.map(Some),
        },
    })
}

/// The kill switch from `--kill` / `--revive`.
pub(crate) fn killed(kill: bool, revive: bool) -> Option<bool> {
    match (kill, revive) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

/// What `agent update` changes: the status from `--kill` / `--disable` / `--revive` (at
/// most one), the limit from `--max-concurrency` or `--unlimited` (clap requires a change).
pub(crate) fn agent_settings(
    kill: bool,
    disable: bool,
    revive: bool,
    max_concurrency: Option<u32>,
    unlimited: bool,
) -> AgentSettings {
    let status = if kill {
        Some("killed")
    } else if disable {
        Some("disabled")
    } else {
        revive.then_some("active")
    };
    AgentSettings {
        status: status.map(str::to_string),
        max_concurrency: if unlimited {
            Some(None)
        } else {
            max_concurrency.map(Some)
        },
    }
}
