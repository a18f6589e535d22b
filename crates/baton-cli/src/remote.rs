//! The CLI as an HTTP client (`--server URL`, `BATON_SERVER`): the same commands, the same
//! requests (built by [`crate::requests`]) and the same JSON output, sent to `baton serve`.

use crate::args::*;
use crate::{requests, Outcome};
use baton_core::id::url_component as seg;
use baton_core::{Code, Error};
use reqwest::Method;
use serde_json::{json, Value};

/// `base` if it is an http(s) URL with a host: `INVALID_INPUT` otherwise, where a request
/// to it would fail as if the server were down (and be retried).
pub(crate) fn check_server(base: &str) -> Result<&str, Error> {
    let url = reqwest::Url::parse(base).ok().filter(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
    });
    match url {
        Some(_) => Ok(base),
        None => Err(Error::invalid(
            format!("--server {base:?} is not an http(s) URL"),
            "give the server's URL, e.g. --server http://127.0.0.1:7300",
        )),
    }
}

/// The CLI's HTTP client. Building one reads the system's CA certificates (for
/// `https://` servers); a host without any gets an error to act on instead of reqwest's
/// panic in `Client::new`.
pub(crate) fn http_client() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder().build().map_err(|e| {
        Error::new(
            Code::Internal,
            format!("cannot set up an HTTP client: {e}"),
            "install the system's CA certificates (Debian: ca-certificates), or point \
             SSL_CERT_FILE at a bundle",
        )
    })
}

/// Runs one command against the server at `base`.
pub(crate) async fn run(cli: &Cli, base: &str) -> Result<Outcome, Error> {
    check_server(base)?;
    // Over HTTP the key decides the workspace and the actor; a flag that would be ignored
    // is refused rather than silently dropped.
    if cli.workspace != "default" || cli.actor != "cli" {
        return Err(Error::invalid(
            "--workspace and --as (BATON_WORKSPACE, BATON_ACTOR) apply to the embedded store; \
             over --server the key decides both",
            "leave them out, and use a key of the workspace (and bound to the agent) to act as",
        ));
    }
    let client = Client {
        http: http_client()?,
        base: base.trim_end_matches('/').to_string(),
        cli,
    };
    let value =
        match &cli.command {
            Command::Task(TaskCmd::Create(a)) => {
                client
                    .send(Method::POST, "/v1/tasks", Some(json!(requests::create(a)?)))
                    .await?
            }
            Command::Task(TaskCmd::Get { id, as_of }) => {
                let query = as_of.map(|seq| format!("?as_of={seq}")).unwrap_or_default();
                client
                    .send(Method::GET, &format!("/v1/tasks/{}{query}", seg(id)), None)
                    .await?
            }
            Command::Task(TaskCmd::List {
                status,
                parent,
                label,
                limit,
                after,
            }) => {
                let mut query = vec![("limit", limit.to_string())];
                for (k, v) in [
                    ("status", status),
                    ("parent", parent),
                    ("label", label),
                    ("cursor", after),
                ] {
                    if let Some(v) = v {
                        query.push((k, v.clone()));
                    }
                }
                client
                    .send_query(Method::GET, "/v1/tasks", &query, None)
                    .await?
            }
            Command::Task(TaskCmd::Update(a)) => {
                client
                    .send(
                        Method::PATCH,
                        &format!("/v1/tasks/{}", seg(&a.id)),
                        Some(json!(requests::update(a)?)),
                    )
                    .await?
            }
            Command::Task(TaskCmd::Cancel {
                id,
                reason,
                if_version,
            }) => {
                let body = json!({ "reason": reason, "version": if_version });
                client.op(id, "cancel", body).await?
            }
            Command::Task(TaskCmd::Publish { id, if_version }) => {
                let body = json!({ "version": if_version });
                client.op(id, "publish", body).await?
            }
            Command::Task(TaskCmd::Retry { id, if_version }) => {
                client
                    .op(id, "retry", json!({ "version": if_version }))
                    .await?
            }
            Command::Task(TaskCmd::Unblock { id, if_version }) => {
                let body = json!({ "version": if_version });
                client.op(id, "unblock", body).await?
            }
            Command::Ready { limit } => {
                client
                    .send_query(
                        Method::GET,
                        "/v1/tasks/ready",
                        &[("limit", limit.to_string())],
                        None,
                    )
                    .await?
            }
            Command::Claim(a) => {
                client
                    .send(
                        Method::POST,
                        "/v1/tasks/claim",
                        Some(json!(requests::claim(a)?)),
                    )
                    .await?
            }
            Command::Start(a) => {
                client
                    .op(&a.id, "start", json!({ "lease": a.lease }))
                    .await?
            }
            Command::Release(a) => {
                client
                    .op(&a.id, "release", json!({ "lease": a.lease }))
                    .await?
            }
            Command::Resume(a) => {
                client
                    .op(&a.id, "resume", json!({ "lease": a.lease }))
                    .await?
            }
            Command::Heartbeat(a) => {
                client
                    .op(
                        &a.id,
                        "heartbeat",
                        with_lease(json!(requests::heartbeat(a)?), &a.lease),
                    )
                    .await?
            }
            Command::Complete(a) => {
                client
                    .op(
                        &a.id,
                        "complete",
                        with_lease(json!(requests::complete(a)?), &a.lease),
                    )
                    .await?
            }
            Command::Fail(a) => {
                client
                    .op(
                        &a.id,
                        "fail",
                        with_lease(json!(requests::fail(a)), &a.lease),
                    )
                    .await?
            }
            Command::Block(a) => {
                client
                    .op(
                        &a.id,
                        "block",
                        json!({ "lease": a.lease, "reason": a.reason }),
                    )
                    .await?
            }
            Command::Wait(a) => {
                client
                    .op(
                        &a.id,
                        "wait",
                        json!({ "lease": a.lease, "reason": a.reason }),
                    )
                    .await?
            }
            Command::Approve {
                id,
                comment,
                if_version,
            } => {
                let body = json!({ "comment": comment, "version": if_version });
                client.op(id, "approve", body).await?
            }
            Command::Reject {
                id,
                reason,
                if_version,
            } => {
                let body = json!({ "reason": reason, "version": if_version });
                client.op(id, "reject", body).await?
            }
            Command::Note(a) => {
                client
                    .send(
                        Method::POST,
                        &format!("/v1/tasks/{}/context", seg(&a.id)),
                        Some(json!(requests::note(a))),
                    )
                    .await?
            }
            Command::Step(StepCmd::Add {
                id,
                title,
                details,
                lease,
            }) => {
                client
                    .send(
                        Method::POST,
                        &format!("/v1/tasks/{}/steps", seg(id)),
                        Some(json!({ "title": title, "details": details, "lease": lease })),
                    )
                    .await?
            }
            Command::Step(StepCmd::Done {
                id,
                step_id,
                notes,
                lease,
            }) => {
                client
                    .send(
                        Method::POST,
                        &format!("/v1/tasks/{}/steps/{}/done", seg(id), seg(step_id)),
                        Some(json!({ "notes": notes, "lease": lease })),
                    )
                    .await?
            }
            Command::Dep(DepCmd::Add {
                blocker,
                blocked,
                kind,
            }) => {
                let body = json!({ "blocker_id": blocker, "kind": kind });
                client
                    .send(
                        Method::POST,
                        &format!("/v1/tasks/{}/dependencies", seg(blocked)),
                        Some(body),
                    )
                    .await?
            }
            Command::Dep(DepCmd::Rm {
                blocker,
                blocked,
                kind,
            }) => {
                let path = format!("/v1/tasks/{}/dependencies/{}", seg(blocked), seg(blocker));
                client
                    .send_query(Method::DELETE, &path, &[("kind", kind.clone())], None)
                    .await?
            }
            Command::Artifact(ArtifactCmd::Add {
                id,
                file,
                name,
                media_type,
                lease,
            }) => {
                let req = requests::artifact(
                    file,
                    name.as_deref(),
                    media_type.as_deref(),
                    lease.as_deref(),
                )?;
                client
                    .send(
                        Method::POST,
                        &format!("/v1/tasks/{}/artifacts", seg(id)),
                        Some(json!(req)),
                    )
                    .await?
            }
            Command::Artifact(ArtifactCmd::List { id }) => {
                client
                    .send(
                        Method::GET,
                        &format!("/v1/tasks/{}/artifacts", seg(id)),
                        None,
                    )
                    .await?
            }
            Command::Artifact(ArtifactCmd::Get { id, output }) => {
                let out = client
                    .send(
                        Method::GET,
                        &format!("/v1/artifacts/{}?content=true", seg(id)),
                        None,
                    )
                    .await?;
                let out = serde_json::from_value(out)
                    .map_err(|e| Error::storage(format!("unreadable response: {e}")))?;
                return crate::artifact_output(out, output.as_deref(), cli.json);
            }
            Command::Brief { id, max_bytes } => {
                let query: Vec<(&str, String)> = max_bytes
                    .iter()
                    .map(|m| ("max_bytes", m.to_string()))
                    .collect();
                client
                    .send_query(
                        Method::GET,
                        &format!("/v1/tasks/{}/brief", seg(id)),
                        &query,
                        None,
                    )
                    .await?
            }
            Command::Plan(PlanCmd::Apply { file }) => {
                let doc = crate::read_plan(file)?;
                client
                    .send(Method::POST, "/v1/plans", Some(json!(doc)))
                    .await?
            }
            Command::Events { after, limit } => {
                client
                    .send_query(
                        Method::GET,
                        "/v1/events",
                        &[("after", after.to_string()), ("limit", limit.to_string())],
                        None,
                    )
                    .await?
            }
            Command::Project(ProjectCmd::Create { name, settings }) => {
                let mut body = json!(requests::project_settings(settings, None)?);
                body["name"] = json!(name);
                if let Some(b) = body.as_object_mut() {
                    b.remove("killed");
                    b.retain(|_, v| !v.is_null());
                }
                client
                    .send(Method::POST, "/v1/projects", Some(body))
                    .await?
            }
            Command::Project(ProjectCmd::List) => {
                client.send(Method::GET, "/v1/projects", None).await?
            }
            Command::Project(ProjectCmd::Get { id }) => {
                client
                    .send(Method::GET, &format!("/v1/projects/{}", seg(id)), None)
                    .await?
            }
            Command::Project(ProjectCmd::Update {
                id,
                settings,
                kill,
                revive,
            }) => {
                let body = json!(requests::project_settings(
                    settings,
                    requests::killed(*kill, *revive)
                )?);
                client
                    .send(
                        Method::PATCH,
                        &format!("/v1/projects/{}", seg(id)),
                        Some(body),
                    )
                    .await?
            }
            Command::Agent(AgentCmd::Register {
                name,
                capabilities,
                max_concurrency,
            }) => {
                let body = baton_core::api::RegisterAgent {
                    agent: name.clone(),
                    capabilities: capabilities.clone(),
                    max_concurrency: *max_concurrency,
                };
                client
                    .send(Method::POST, "/v1/agents/register", Some(json!(body)))
                    .await?
            }
            Command::Agent(AgentCmd::Heartbeat { name }) => {
                client
                    .send(
                        Method::POST,
                        "/v1/agents/heartbeat",
                        Some(json!({ "agent": name })),
                    )
                    .await?
            }
            Command::Agent(AgentCmd::List) => client.send(Method::GET, "/v1/agents", None).await?,
            Command::Agent(AgentCmd::Get { name }) => {
                client
                    .send(Method::GET, &format!("/v1/agents/{}", seg(name)), None)
                    .await?
            }
            Command::Agent(AgentCmd::Update {
                name,
                kill,
                disable,
                revive,
                max_concurrency,
                unlimited,
            }) => {
                let body = json!(requests::agent_settings(
                    *kill,
                    *disable,
                    *revive,
                    *max_concurrency,
                    *unlimited
                ));
                client
                    .send(
                        Method::PATCH,
                        &format!("/v1/agents/{}", seg(name)),
                        Some(body),
                    )
                    .await?
            }
            Command::Key(KeyCmd::Create { role, agent }) => {
                // In the admin key's own workspace, as the route requires.
                let id = client.own_workspace().await?;
                let path = format!("/v1/workspaces/{}/keys", seg(&id));
                let body = json!({ "role": role, "agent": agent });
                client.send(Method::POST, &path, Some(body)).await?
            }
            Command::Workspace(cmd) => {
                // The key's own workspace: the only one it may name.
                let id = client.own_workspace().await?;
                let path = format!("/v1/workspaces/{}", seg(&id));
                match cmd {
                    WorkspaceCmd::Get => client.send(Method::GET, &path, None).await?,
                    WorkspaceCmd::Update { kill, revive } => {
                        let body = json!({ "killed": requests::killed(*kill, *revive) });
                        client.send(Method::PATCH, &path, Some(body)).await?
                    }
                }
            }
            _ => return Err(Error::invalid(
                "this command works on the embedded store only",
                "run it without --server / BATON_SERVER, with --data-dir on the server's machine",
            )),
        };
    Ok(Outcome::Value(value))
}

/// Adds the lease token to an operation's body.
fn with_lease(mut body: Value, lease: &str) -> Value {
    body["lease"] = json!(lease);
    body
}

struct Client<'a> {
    http: reqwest::Client,
    base: String,
    cli: &'a Cli,
}

impl Client<'_> {
    /// The id of the key's own workspace (the only one it may name).
    async fn own_workspace(&self) -> Result<String, Error> {
        let me = self.send(Method::GET, "/v1/whoami", None).await?;
        Ok(me["workspace_id"].as_str().unwrap_or_default().to_string())
    }

    async fn op(&self, id: &str, op: &str, body: Value) -> Result<Value, Error> {
        self.send(
            Method::POST,
            &format!("/v1/tasks/{}/{op}", seg(id)),
            Some(body),
        )
        .await
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, Error> {
        self.send_query(method, path, &[], body).await
    }

    async fn send_query(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, Error> {
        // An empty id would name another route (`/v1/tasks/` is not a task): refused here,
        // as the store refuses it.
        if path.ends_with('/') || path.contains("//") {
            return Err(Error::invalid(
                "an id or name in the command is empty",
                "give the id (tsk_…, agt_…) or name the command asks for",
            ));
        }
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .query(query);
        if let Some(token) = &self.cli.token {
            req = req.bearer_auth(token);
        }
        if let Some(key) = &self.cli.idempotency_key {
            req = req.header("idempotency-key", key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| {
            Error::new(
                Code::Unavailable,
                format!("cannot reach {}: {e}", self.base),
                "check --server / BATON_SERVER and that baton serve runs",
            )
        })?;
        let status = resp.status();
        let request_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body: Value = resp
            .json()
            .await
            .map_err(|e| Error::storage(format!("unreadable response: {e}")))?;
        if status.is_success() {
            return Ok(body);
        }
        let mut error = Error::from_json(&body)
            .unwrap_or_else(|| Error::new(Code::Internal, format!("server answered {status}"), ""));
        // A failure of the server's own: the id its log line for the request carries.
        if let Some(id) = request_id.filter(|_| status.is_server_error()) {
            error.hint = match error.hint.is_empty() {
                true => format!("the server logged it as request {id}"),
                false => format!("{}; the server logged it as request {id}", error.hint),
            };
        }
        Err(error)
    }
}
