//! The MCP server: lists the tools and turns each call into requests to the HTTP API
//! through a [`Gateway`]. It acts as one agent and remembers the lease tokens of its own
//! claims, so an agent may leave them out.

use crate::gateway::{ok, Gateway, Via};
use crate::tools;
use axum::http::Method;
use baton_core::{Code, Error};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CustomRequest, CustomResult,
    ErrorCode, Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One MCP session's server: a gateway, an agent identity and the leases it holds.
#[derive(Clone, Debug)]
pub struct BatonMcp {
    gateway: Gateway,
    agent: Arc<Mutex<Option<String>>>,
    leases: Arc<Mutex<Leases>>,
}

/// The lease tokens of this session's claims, by task: those it holds, and those that
/// ended under it (lost, killed), still sent with the agent's later lease operations on
/// the task so that the API says why they are refused, not that none was ever held.
#[derive(Debug, Default)]
struct Leases {
    held: HashMap<String, String>,
    ended: HashMap<String, String>,
}

/// How many ended leases a session keeps to explain; past it, the list starts over.
const ENDED_LEASES_KEPT: usize = 1_000;

type Args = Map<String, Value>;

impl BatonMcp {
    /// A server acting as `agent` (or a name derived from the client's, on first use).
    pub fn new(gateway: Gateway, agent: Option<String>) -> Self {
        BatonMcp {
            gateway,
            agent: Arc::new(Mutex::new(agent)),
            leases: Arc::new(Mutex::new(Leases::default())),
        }
    }

    /// The tool list as MCP publishes it.
    pub fn tools() -> Vec<Tool> {
        tools::all()
            .into_iter()
            .map(|t| {
                let Value::Object(schema) = t.schema else {
                    unreachable!("tool schemas are objects")
                };
                Tool::new(t.name, t.description, schema)
            })
            .collect()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        via: Via<'_>,
    ) -> Result<Value, Error> {
        ok(self.gateway.call(method, path, body, via).await?)
    }

    /// Posts a note, a step or an artifact on `task` with this session's lease on it, if it holds one
    /// and the agent named none: its own writes are no news to it (`context_changed`). A
    /// held lease that has ended is refused as the API refuses it (`LEASE_LOST`,
    /// `KILLED`), so the agent learns to stop, and forgotten: called again, the write is
    /// made without it, as anyone's.
    async fn as_holder(
        &self,
        task: &str,
        path: &str,
        mut args: Args,
        via: Via<'_>,
    ) -> Result<Value, Error> {
        let held = match args.contains_key("lease") {
            true => None,
            false => self
                .leases
                .lock()
                .map_err(poisoned)?
                .held
                .get(task)
                .cloned(),
        };
        if let Some(token) = &held {
            args.insert("lease".into(), json!(token));
        }
        let out = self
            .call(Method::POST, path, Some(Value::Object(args)), via)
            .await;
        match out {
            Err(e) if held.is_some() && matches!(e.code, Code::LeaseLost | Code::Killed) => {
                self.forget(task);
                let hint = format!(
                    "{}; this server no longer sends the lease: call again to record this \
                     as anyone's",
                    e.hint
                        .split("; to record this anyway")
                        .next()
                        .unwrap_or(&e.hint)
                );
                Err(e.with_hint(hint))
            }
            out => out,
        }
    }

    /// Who this server claims as: the configured name, the key's bound agent, or the
    /// client's name with a session suffix.
    async fn agent(&self, via: Via<'_>, client: Option<&str>) -> Result<String, Error> {
        if let Some(name) = self.agent.lock().map_err(poisoned)?.clone() {
            return Ok(name);
        }
        let me = self.call(Method::GET, "/v1/whoami", None, via).await?;
        let name = match me["agent"].as_str() {
            Some(bound) => bound.to_string(),
            None => {
                let client: String = client
                    .unwrap_or("mcp")
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_lowercase()
                        } else {
                            '-'
                        }
                    })
                    .collect();
                let id = baton_core::id::new_id("s");
                format!("{client}-{}", &id[id.len() - 6..])
            }
        };
        *self.agent.lock().map_err(poisoned)? = Some(name.clone());
        Ok(name)
    }

    /// The lease to send for `task`: the one given in `args` (taken out), else the one this
    /// server got from its claim (held, or ended under it), else none ([`Lease::Unheld`]).
    fn lease_for(&self, task: &str, args: &mut Args) -> Result<Lease, Error> {
        match args.remove("lease") {
            Some(Value::String(l)) => Ok(Lease::Given(l)),
            Some(Value::Null) | None => {
                let leases = self.leases.lock().map_err(poisoned)?;
                Ok(match (leases.held.get(task), leases.ended.get(task)) {
                    (Some(t), _) => Lease::Held(t.clone()),
                    (None, Some(t)) => Lease::Given(t.clone()),
                    (None, None) => Lease::Unheld,
                })
            }
            Some(_) => Err(Error::invalid(
                "lease must be a string",
                "pass the token from your claim",
            )),
        }
    }

    /// Runs a lease operation on `task` (`POST /v1/tasks/{id}/{op}`) with the lease
    /// [`BatonMcp::lease_for`] finds. The lease this server holds is dropped when the
    /// operation ends it (`ends`, on success) or the API says it is no longer current, and
    /// kept on any other refusal (bad input, a schema violation, open children): the agent
    /// still holds the task and may try again.
    async fn lease_op(
        &self,
        task: &str,
        op: &str,
        mut args: Args,
        ends: bool,
        via: Via<'_>,
    ) -> Result<Value, Error> {
        let lease = self.lease_for(task, &mut args)?;
        // Without a lease, a token no lease has: the API still checks the input and the
        // task first, so the answer says what is wrong before that the lease is.
        let token = match &lease {
            Lease::Given(t) | Lease::Held(t) => t.clone(),
            Lease::Unheld => "none".to_string(),
        };
        args.insert("lease".into(), json!(token));
        let path = format!("/v1/tasks/{}/{op}", enc(task));
        let out = self
            .call(Method::POST, &path, Some(Value::Object(args)), via)
            .await;
        match (&out, &lease) {
            // Ended, with whichever token: the one held (if any) is dead too.
            (Ok(_), _) if ends => self.forget(task),
            (Err(e), Lease::Held(_)) if matches!(e.code, Code::LeaseLost | Code::Killed) => {
                self.forget(task)
            }
            (Err(e), Lease::Unheld) if e.code == Code::LeaseLost => {
                return Err(Error::new(
                    Code::LeaseLost,
                    format!("this server holds no lease on {task}"),
                    "claim the task first, or pass the lease token you were given",
                ))
            }
            _ => {}
        }
        out
    }

    /// Moves the lease held on `task` to those ended under this session.
    fn forget(&self, task: &str) {
        if let Ok(mut leases) = self.leases.lock() {
            if let Some(token) = leases.held.remove(task) {
                if leases.ended.len() >= ENDED_LEASES_KEPT {
                    leases.ended.clear();
                }
                leases.ended.insert(task.to_string(), token);
            }
        }
    }

    /// Runs one tool: the answer's JSON, or the operation error.
    async fn run(
        &self,
        name: &str,
        mut args: Args,
        via: Via<'_>,
        client: Option<&str>,
    ) -> Result<Value, Error> {
        let detail = match args.remove("detail") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(detail)) => detail,
            Some(_) => {
                return Err(Error::invalid(
                    "detail must be true or false",
                    "pass detail: true for the full record",
                ))
            }
        };
        match name {
            "task_create" => {
                let out = self
                    .call(Method::POST, "/v1/tasks", Some(Value::Object(args)), via)
                    .await?;
                Ok(compact_task_out(out, detail))
            }
            "task_get" => {
                let id = str_arg(&mut args, "task_id")?;
                let query = whole_query(
                    &mut args,
                    "as_of",
                    "an event's sequence number",
                    "e.g. 42 (query events_since lists them)",
                )?;
                no_more(&args)?;
                let out = self
                    .call(
                        Method::GET,
                        &format!("/v1/tasks/{}{query}", enc(&id)),
                        None,
                        via,
                    )
                    .await?;
                Ok(compact_task_out(out, detail))
            }
            "task_update" => {
                let id = str_arg(&mut args, "task_id")?;
                let action = opt_str(&mut args, "action")?.unwrap_or_else(|| "update".into());
                let path = format!("/v1/tasks/{}", enc(&id));
                let out = match action.as_str() {
                    "update" => self.call(Method::PATCH, &path, Some(Value::Object(args)), via).await?,
                    "start" | "wait" | "resume" | "block" => {
                        self.lease_op(&id, &action, args, action == "block", via).await?
                    }
                    "publish" | "unblock" | "cancel" | "retry" | "approve" | "reject" => {
                        self.call(Method::POST, &format!("{path}/{action}"), Some(Value::Object(args)), via).await?
                    }
                    other => {
                        return Err(Error::invalid(
                            format!("unknown action '{other}'"),
                            "use update, publish, start, wait, resume, block, unblock, cancel, retry, approve or reject",
                        ))
                    }
                };
                Ok(compact_task_out(out, detail))
            }
            "task_brief" => {
                let id = str_arg(&mut args, "task_id")?;
                let query = whole_query(
                    &mut args,
                    "max_bytes",
                    "a whole number of bytes",
                    "e.g. 8000",
                )?;
                no_more(&args)?;
                self.call(
                    Method::GET,
                    &format!("/v1/tasks/{}/brief{query}", enc(&id)),
                    None,
                    via,
                )
                .await
            }
            "plan_apply" => {
                let mut out = self
                    .call(Method::POST, "/v1/plans", Some(Value::Object(args)), via)
                    .await?;
                if !detail {
                    if let Some(tasks) = out["tasks"].as_array_mut() {
                        for t in tasks {
                            t["task"] = compact(&t["task"]);
                        }
                    }
                }
                Ok(out)
            }
            "claim" => {
                let agent = self.agent(via, client).await?;
                match opt_str(&mut args, "agent")? {
                    Some(other) if other != agent => {
                        return Err(Error::invalid(
                            format!("this server claims as agent '{agent}', not '{other}'"),
                            "leave agent out; to claim as another agent, start a server for it",
                        ))
                    }
                    _ => {}
                }
                args.insert("agent".into(), json!(agent));
                let mut out = self
                    .call(
                        Method::POST,
                        "/v1/tasks/claim",
                        Some(Value::Object(args)),
                        via,
                    )
                    .await?;
                if let Some(claims) = out["claims"].as_array_mut() {
                    let mut leases = self.leases.lock().map_err(poisoned)?;
                    for c in claims.iter_mut() {
                        if let (Some(id), Some(token)) =
                            (c["task"]["id"].as_str(), c["lease"]["token"].as_str())
                        {
                            leases.ended.remove(id);
                            leases.held.insert(id.to_string(), token.to_string());
                        }
                        if !detail {
                            c["task"] = compact(&c["task"]);
                            if let Some(run) = c.get_mut("run") {
                                *run = json!({"id": run["id"], "attempt": run["attempt"]});
                            }
                        }
                    }
                }
                Ok(out)
            }
            "heartbeat" | "complete" | "fail" | "release" => {
                let id = str_arg(&mut args, "task_id")?;
                let out = self
                    .lease_op(&id, name, args, name != "heartbeat", via)
                    .await?;
                Ok(compact_task_out(out, detail))
            }
            "context_add" => {
                let id = str_arg(&mut args, "task_id")?;
                let path = format!("/v1/tasks/{}/context", enc(&id));
                self.as_holder(&id, &path, args, via).await
            }
            "steps" => {
                let id = str_arg(&mut args, "task_id")?;
                let action = str_arg(&mut args, "action")?;
                match action.as_str() {
                    "add" => {
                        let path = format!("/v1/tasks/{}/steps", enc(&id));
                        self.as_holder(&id, &path, args, via).await
                    }
                    "done" => {
                        let step = str_arg(&mut args, "step_id")?;
                        let path = format!("/v1/tasks/{}/steps/{}/done", enc(&id), enc(&step));
                        self.as_holder(&id, &path, args, via).await
                    }
                    other => Err(Error::invalid(
                        format!("unknown action '{other}'"),
                        "use add or done",
                    )),
                }
            }
            "artifacts" => {
                let action = str_arg(&mut args, "action")?;
                match action.as_str() {
                    "add" => {
                        let id = str_arg(&mut args, "task_id")?;
                        let path = format!("/v1/tasks/{}/artifacts", enc(&id));
                        self.as_holder(&id, &path, args, via).await
                    }
                    "list" => {
                        let id = str_arg(&mut args, "task_id")?;
                        no_more(&args)?;
                        self.get(&format!("/v1/tasks/{}/artifacts", enc(&id)), via)
                            .await
                    }
                    "get" => {
                        let art = str_arg(&mut args, "artifact_id")?;
                        args.remove("task_id"); // an artifact's id names it alone
                        no_more(&args)?;
                        self.get(&format!("/v1/artifacts/{}?content=true", enc(&art)), via)
                            .await
                    }
                    other => Err(Error::invalid(
                        format!("unknown action '{other}'"),
                        "use add, list or get",
                    )),
                }
            }
            "deps" => {
                let id = str_arg(&mut args, "task_id")?;
                let action = str_arg(&mut args, "action")?;
                let mut out = match action.as_str() {
                    "add" => {
                        self.call(
                            Method::POST,
                            &format!("/v1/tasks/{}/dependencies", enc(&id)),
                            Some(Value::Object(args)),
                            via,
                        )
                        .await?
                    }
                    "remove" => {
                        let blocker = str_arg(&mut args, "blocker_id")?;
                        let kind = opt_str(&mut args, "kind")?.unwrap_or_else(|| "blocks".into());
                        no_more(&args)?;
                        self.call(
                            Method::DELETE,
                            &format!(
                                "/v1/tasks/{}/dependencies/{}?kind={}",
                                enc(&id),
                                enc(&blocker),
                                enc(&kind)
                            ),
                            None,
                            via,
                        )
                        .await?
                    }
                    other => {
                        return Err(Error::invalid(
                            format!("unknown action '{other}'"),
                            "use add or remove",
                        ))
                    }
                };
                if !detail {
                    out["task"] = compact(&out["task"]);
                }
                Ok(out)
            }
            "query" => crate::query::run(self, args, detail, via).await,
            other => Err(Error::new(
                Code::NotFound,
                format!("no tool '{other}'"),
                "list the tools with tools/list",
            )),
        }
    }

    /// A GET for the query module.
    pub(crate) async fn get(&self, path: &str, via: Via<'_>) -> Result<Value, Error> {
        self.call(Method::GET, path, None, via).await
    }
}

/// Where the lease sent with a lease operation comes from.
enum Lease {
    /// Given by the caller.
    Given(String),
    /// Held by this server from its claim.
    Held(String),
    /// Neither.
    Unheld,
}

fn poisoned<T>(_: T) -> Error {
    Error::new(
        Code::Internal,
        "lease table poisoned",
        "restart the MCP server",
    )
}

pub(crate) use baton_core::id::url_component as enc;

pub(crate) fn str_arg(args: &mut Args, key: &str) -> Result<String, Error> {
    match opt_str(args, key)? {
        Some(value) if !value.is_empty() => Ok(value),
        Some(_) => Err(Error::invalid(
            format!("{key} is empty"),
            format!("pass {key} as a non-empty string"),
        )),
        None => Err(Error::invalid(
            format!("{key} is required"),
            format!("pass {key} as a string"),
        )),
    }
}

/// The query string (`?key=N`) for an optional whole-number argument, or none without it;
/// anything but a whole number is refused as `what` should be.
fn whole_query(args: &mut Args, key: &str, what: &str, hint: &str) -> Result<String, Error> {
    match args.remove(key) {
        Some(Value::Number(n)) if n.is_u64() => Ok(format!("?{key}={n}")),
        None | Some(Value::Null) => Ok(String::new()),
        Some(_) => Err(Error::invalid(format!("{key} must be {what}"), hint)),
    }
}

pub(crate) fn opt_str(args: &mut Args, key: &str) -> Result<Option<String>, Error> {
    match args.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::invalid(
            format!("{key} must be a string"),
            format!("pass {key} as a JSON string"),
        )),
    }
}

pub(crate) fn no_more(args: &Args) -> Result<(), Error> {
    match args.keys().next() {
        None => Ok(()),
        Some(k) => Err(Error::invalid(
            format!("unknown argument '{k}'"),
            "see the tool's input schema",
        )),
    }
}

/// The fields of a task an agent needs at a glance.
pub(crate) fn compact(task: &Value) -> Value {
    let mut out = Map::new();
    for k in [
        "id",
        "title",
        "type",
        "status",
        "priority",
        "parent_id",
        "blocked_reason",
        "reason",
        "attempts",
        "version",
        "outcome",
    ] {
        match task.get(k) {
            Some(Value::Null) | None => {}
            Some(v) => {
                out.insert(k.into(), v.clone());
            }
        }
    }
    if let Some(exp) = task.get("lease").and_then(|l| l.get("expires_at")) {
        out.insert("lease_expires_at".into(), exp.clone());
    }
    Value::Object(out)
}

fn compact_task_out(mut out: Value, detail: bool) -> Value {
    if !detail && out.get("task").is_some() {
        out["task"] = compact(&out["task"]);
    }
    out
}

/// An operation error as an MCP tool error: the HTTP error body as structured content, and
/// `CODE: message (hint: …)` as text. A refused request body is the tool's arguments, and
/// is said so: the caller never saw the HTTP request its arguments became.
pub(crate) fn tool_error(e: &Error) -> CallToolResult {
    let reworded;
    let e = match e.message.strip_prefix("invalid request body: ") {
        Some(what) => {
            let mut e = e.clone();
            e.message = format!("invalid arguments: {what}");
            e.hint = "check the arguments against the tool's input schema".into();
            reworded = e;
            &reworded
        }
        None => e,
    };
    let mut result = CallToolResult::structured_error(e.to_json());
    result.content = vec![rmcp::model::ContentBlock::text(e.to_string())];
    result
}

impl ServerHandler for BatonMcp {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        info.server_info = Implementation::new("baton", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "Baton coordinates work between agents. Find work with claim, read task_brief before \
             starting, record decisions and discoveries with context_add, heartbeat while working, \
             then complete or fail. Plan with plan_apply or task_create."
                .into(),
        );
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(Self::tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // Over streamable HTTP the caller's own key is forwarded; over stdio there is none.
        let parts = context.extensions.get::<axum::http::request::Parts>();
        let header = |name: &str| {
            parts
                .and_then(|p| p.headers.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let bearer = header("authorization");
        // The MCP request's own id (checked, or made up, by the server's outer layer); over
        // stdio, one for the call: every request the call makes carries it.
        let request_id =
            header(baton_server::request::HEADER).unwrap_or_else(|| baton_core::id::new_id("req"));
        let client = context.peer.peer_info().map(|i| i.client_info.name.clone());
        let mut args = request.arguments.unwrap_or_default();
        let result = match idempotency_key(&mut args) {
            Ok(key) => {
                let writes = std::sync::atomic::AtomicU32::new(0);
                let via = Via {
                    bearer: bearer.as_deref(),
                    idempotency_key: key.as_deref(),
                    writes: Some(&writes),
                    request_id: Some(&request_id),
                };
                self.run(&request.name, args, via, client.as_deref()).await
            }
            Err(e) => Err(e),
        };
        let result = match result {
            Ok(value) => {
                let text = serde_json::to_string(&value).unwrap_or_default();
                let mut r = CallToolResult::structured(value);
                r.content = vec![rmcp::model::ContentBlock::text(text)];
                r
            }
            Err(e) => tool_error(&e),
        };
        Ok(result.into())
    }

    /// rmcp hands over a request of a method it knows when its params do not fit the
    /// method's (a `tools/call` without a `name`), as for a method it does not know, and
    /// would answer both "method not found" with the bare method as the message. An agent
    /// needs to tell the two apart and see what to change.
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        let method = request.method;
        let hint = |hint: &str| Some(json!({ "hint": hint }));
        if method == "tools/call" {
            let why = match request.params {
                None | Some(Value::Null) => "no params".to_string(),
                Some(params) => serde_json::from_value::<CallToolRequestParams>(params)
                    .err()
                    .map_or_else(|| "unreadable".to_string(), |e| e.to_string()),
            };
            return Err(ErrorData::invalid_params(
                format!("Invalid params of tools/call: {why}"),
                hint("send {\"name\": a tool from tools/list, \"arguments\": an object}"),
            ));
        }
        if KNOWN_METHODS.contains(&method.as_str()) {
            return Err(ErrorData::invalid_params(
                format!("Invalid params of {method}"),
                hint("check the params against the MCP specification"),
            ));
        }
        Err(ErrorData::new(
            ErrorCode::METHOD_NOT_FOUND,
            format!("Method not found: {method}"),
            hint("Baton serves initialize, ping, tools/list and tools/call"),
        ))
    }
}

/// The requests rmcp reads into typed params: one of these handed over as a custom request
/// had params that did not fit.
const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
];

/// Takes the call's `idempotency_key` out of its arguments: printable ASCII, at most
/// [`crate::tools::MAX_IDEMPOTENCY_KEY`] characters. A read takes it and ignores it.
fn idempotency_key(args: &mut Args) -> Result<Option<String>, Error> {
    let max = crate::tools::MAX_IDEMPOTENCY_KEY;
    match args.remove("idempotency_key") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(k))
            if !k.is_empty()
                && k.len() <= max
                && k.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) =>
        {
            Ok(Some(k))
        }
        Some(_) => Err(Error::invalid(
            format!("idempotency_key must be 1 to {max} characters of printable ASCII"),
            "pass a UUID, or a short string unique to this call",
        )),
    }
}
