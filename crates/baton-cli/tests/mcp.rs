//! MCP with a real client: the official Python SDK (installed by the test script into
//! `target/py`) drives `baton mcp` over stdio and `/mcp` on `baton serve` over streamable
//! HTTP through a whole workflow and the error cases (tests/mcp/client.py); two stdio
//! servers race for the same work; and every operation is reachable over HTTP, MCP and the
//! CLI or stands on an explained exclusion list.

use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BATON: &str = env!("CARGO_BIN_EXE_baton");

fn python() -> PathBuf {
    let venv = std::env::var_os("BATON_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/py"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/test, which installs the MCP SDK into target/py",
        python.display()
    );
    python
}

/// Runs the Python client in `mode`; returns its JSON findings.
fn client(args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py");
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .expect("run the MCP client");
    assert!(
        out.status.success(),
        "MCP client {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("one JSON line")
}

fn baton(dir: &Path, args: &[&str]) -> Value {
    let out = Command::new(BATON)
        .arg("--json")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run baton");
    assert!(
        out.status.success(),
        "baton {args:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn token(dir: &Path, role: &str, agent: Option<&str>) -> String {
    let mut args = vec!["key", "create", "--role", role];
    if let Some(a) = agent {
        args.extend(["--agent", a]);
    }
    baton(dir, &args)["key"]["token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn expected_errors() -> Value {
    serde_json::json!({
        "unknown tool": "NOT_FOUND", "wrong type": "INVALID_INPUT", "unknown id": "NOT_FOUND",
        "stale lease": "LEASE_LOST", "no lease held": "LEASE_LOST", "bad enum": "INVALID_INPUT",
        "limit out of range": "INVALID_INPUT", "overlong filter": "TOO_LARGE",
        "release of no task": "NOT_FOUND", "empty id": "INVALID_INPUT",
        "detail not a flag": "INVALID_INPUT", "negative after": "INVALID_INPUT",
        "argument a query ignores": "INVALID_INPUT", "children of no task": "NOT_FOUND",
        "fractional max_bytes": "INVALID_INPUT", "claim as another agent": "INVALID_INPUT",
        "after on the newest events": "INVALID_INPUT", "artifact without bytes": "INVALID_INPUT",
        "artifact not there": "NOT_FOUND", "idempotency key not text": "INVALID_INPUT",
    })
}

/// A planner and a worker, each its own `baton mcp` process on one store: the planner
/// creates a parent and two subtasks with a dependency and records a decision; the worker
/// claims, heartbeats, records a discovery and completes; the dependent becomes claimable;
/// the parent's briefing carries all of it. Then bad input, each a tool error with a code.
#[test]
fn stdio_workflow_with_the_python_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let found = client(&["stdio", BATON, dir.path().to_str().unwrap()]);
    assert_eq!(found["errors"], expected_errors());
    assert!(found["tools_list_bytes"].as_u64().unwrap() < 12_000);
}

/// The same workflow over streamable HTTP at `/mcp` on `baton serve`, each side with its own
/// key (the worker's bound to its agent).
#[test]
fn streamable_http_workflow_with_the_python_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let planner = token(dir.path(), "planner", None);
    let worker = token(dir.path(), "worker", Some("worker-1"));
    let (mut server, addr) = serve(dir.path());
    let found = client(&["http", &format!("http://{addr}/mcp"), &planner, &worker]);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(found["errors"], expected_errors());
}

/// `baton serve` on the store in `dir`, on a free port; the process and its address, once
/// it accepts connections.
fn serve(dir: &Path) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let server = Command::new(BATON)
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--listen", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "baton serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, addr)
}

/// `baton mcp --server` checks its key at start: one the server refuses, or one bound to
/// another agent than `--agent`, stops it there with the reason (not at the agent's first
/// call); the right pairing starts and serves.
#[test]
fn mcp_over_a_server_checks_its_key_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let bound = token(dir.path(), "worker", Some("w1"));
    let (mut server, addr) = serve(dir.path());
    let url = format!("http://{addr}");
    let start = |token: &str, agent: &str| {
        Command::new(BATON)
            .args([
                "--json", "--server", &url, "--token", token, "mcp", "--agent", agent,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    for (token, agent, code) in [
        ("btn_not_a_key", "w1", "UNAUTHORIZED"),
        (bound.as_str(), "w2", "FORBIDDEN"),
    ] {
        let out = start(token, agent).wait_with_output().unwrap();
        assert!(!out.status.success(), "{agent}: started");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(code), "{agent}: {text}");
    }
    let mut good = start(&bound, "w1");
    let mut stdin = good.stdin.take().unwrap();
    writeln!(stdin, "{INITIALIZE}").unwrap();
    let mut line = String::new();
    BufReader::new(good.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("\"result\""), "{line}");
    let _ = good.kill();
    let _ = good.wait();
    let _ = server.kill();
    let _ = server.wait();
}

/// The first request of every session.
const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

/// `baton mcp` on the store in `dir`, its stdin and stdout piped.
fn stdio_server(dir: &Path) -> std::process::Child {
    Command::new(BATON)
        .arg("--data-dir")
        .arg(dir)
        .arg("mcp")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// What the streamable HTTP transport refuses before any tool runs (no valid key, a body
/// that is not JSON-RPC, no session, an `Accept` without SSE, an unknown session) is
/// answered as a JSON-RPC error without an id, with a hint, under an HTTP status that says
/// what is wrong (401 for the key, checked first; 400 for JSON that does not parse).
#[test]
fn transport_refusals_are_json_rpc_errors() {
    let dir = tempfile::tempdir().unwrap();
    baton(dir.path(), &["init"]);
    let key = format!("Bearer {}", token(dir.path(), "worker", None));
    let (mut server, addr) = serve(dir.path());
    let url = format!("http://{addr}/mcp");
    let both = "application/json, text/event-stream";
    let list = r#"{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}"#;
    let init = INITIALIZE;
    let cases = [
        ("no key", "POST", both, Some(""), None, init, 401, -32600),
        (
            "an unknown key",
            "POST",
            both,
            Some("Bearer nope"),
            None,
            init,
            401,
            -32600,
        ),
        (
            "no key, no SSE accepted",
            "POST",
            "application/json",
            Some(""),
            None,
            init,
            401,
            -32600,
        ),
        (
            "not JSON",
            "POST",
            both,
            None,
            None,
            "{not json",
            400,
            -32700,
        ),
        ("no session", "POST", both, None, None, list, 400, -32600),
        (
            "no SSE accepted",
            "POST",
            "application/json",
            None,
            None,
            list,
            406,
            -32600,
        ),
        (
            "unknown session",
            "POST",
            both,
            None,
            Some("nope"),
            list,
            404,
            -32600,
        ),
        (
            "a stream without SSE",
            "GET",
            "application/json",
            None,
            None,
            "",
            406,
            -32600,
        ),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    for (case, method, accept, auth, session, body, status, code) in cases {
        let mut req = http
            .request(method.parse().unwrap(), &url)
            .header("content-type", "application/json")
            .header("accept", accept)
            .body(body);
        match auth {
            None => req = req.header("authorization", &key),
            Some("") => {}
            Some(other) => req = req.header("authorization", other),
        }
        if let Some(id) = session {
            req = req.header("mcp-session-id", id);
        }
        let (got, kind, text) = rt.block_on(async {
            let res = req.send().await.unwrap();
            let kind = res.headers()["content-type"].to_str().unwrap().to_string();
            (res.status().as_u16(), kind, res.text().await.unwrap())
        });
        assert_eq!(got, status, "{case}: {text}");
        assert_eq!(kind, "application/json", "{case}");
        let answer: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{case}: {e}: {text}"));
        assert_eq!(answer["jsonrpc"], "2.0", "{case}: {answer}");
        assert!(answer["id"].is_null(), "{case}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{case}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{case}: {answer}"
        );
        assert!(
            answer["error"]["data"]["hint"]
                .as_str()
                .is_some_and(|h| !h.is_empty()),
            "{case}: {answer}"
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}

/// A line on stdin that is not one JSON value (not JSON, two messages, not UTF-8, nested
/// deeper than any reader takes) is answered with a JSON-RPC parse error without an id,
/// where rmcp would drop it and leave its sender waiting; the server goes on.
#[test]
fn stdio_answers_lines_that_are_not_json() {
    use std::io::{BufRead as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let mut server = stdio_server(dir.path());
    let mut input = server.stdin.take().unwrap();
    let bad: Vec<Vec<u8>> = vec![
        b"this is not json".to_vec(),
        br#"{"jsonrpc":"2.0","id":7,"method":"ping"}{"jsonrpc":"2.0","id":8,"method":"ping"}"#
            .to_vec(),
        b"{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\",\"x\":\"\xff\"}".to_vec(),
        format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes(),
    ];
    for line in &bad {
        input.write_all(line).unwrap();
        input.write_all(b"\n").unwrap();
    }
    for line in [
        INITIALIZE,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
    ] {
        writeln!(input, "{line}").unwrap();
    }
    drop(input);
    let output = std::io::BufReader::new(server.stdout.take().unwrap());
    let answers: Vec<Value> = output
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let _ = server.wait();
    // Answers to different messages may come in any order (JSON-RPC matches them by id).
    let (refusals, replies): (Vec<&Value>, Vec<&Value>) =
        answers.iter().partition(|a| a["id"].is_null());
    assert_eq!(refusals.len(), bad.len(), "{answers:?}");
    for refusal in refusals {
        assert_eq!(refusal["error"]["code"], -32700, "{refusal}");
        assert!(refusal["error"]["data"]["hint"].is_string(), "{refusal}");
    }
    assert_eq!(replies.len(), 2, "{answers:?}");
    assert_eq!(replies[0]["id"], 1, "{answers:?}");
    assert_eq!(
        *replies[1],
        json!({"jsonrpc": "2.0", "id": 2, "result": {}})
    );
}

/// Requests Baton cannot serve, each with the code and the message start of its answer:
/// envelopes rmcp cannot read, params that do not fit a method, unknown methods. Every
/// answer carries its request's id (a client matches answers by id), a message and a hint.
fn unservable_requests() -> Vec<(Value, i64, &'static str)> {
    vec![
        (
            json!({"id": 11, "method": "tools/list"}),
            -32600,
            "Invalid request",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 12}),
            -32600,
            "Invalid request",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 13, "method": 5}),
            -32600,
            "Invalid request",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 14, "method": "tools/list", "params": 5}),
            -32602,
            "Invalid params",
        ),
        (
            json!({"jsonrpc": "2.0", "id": "s15", "method": "tools/call"}),
            -32602,
            "Invalid params of tools/call",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 16, "method": "tools/call", "params": {"name": 5}}),
            -32602,
            "Invalid params of tools/call",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 17, "method": "tools/call",
                   "params": {"name": "task_get", "arguments": [1]}}),
            -32602,
            "Invalid params of tools/call",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 18, "method": "nosuch/method"}),
            -32601,
            "Method not found: nosuch/method",
        ),
    ]
}

fn assert_refused_with_id(request: &Value, answer: &Value, code: i64, message: &str) {
    assert_eq!(answer["jsonrpc"], "2.0", "{request} → {answer}");
    assert_eq!(answer["id"], request["id"], "{request} → {answer}");
    assert_eq!(answer["error"]["code"], code, "{request} → {answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(message)),
        "{request} → {answer}"
    );
    assert!(
        answer["error"]["data"]["hint"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "{request} → {answer}"
    );
}

/// Over stdio each request Baton cannot serve is answered with its id, where rmcp answered
/// an unreadable envelope without one and a `tools/call` whose params do not fit as an
/// unknown method; a batch is refused as such; the server goes on serving.
#[test]
fn stdio_answers_requests_it_cannot_serve_with_their_id() {
    use std::io::{BufRead as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let mut server = stdio_server(dir.path());
    let mut input = server.stdin.take().unwrap();
    writeln!(input, "{INITIALIZE}").unwrap();
    writeln!(
        input,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .unwrap();
    let cases = unservable_requests();
    for (request, _, _) in &cases {
        writeln!(input, "{request}").unwrap();
    }
    writeln!(input, r#"[{{"jsonrpc":"2.0","id":19,"method":"ping"}}]"#).unwrap();
    writeln!(input, r#"{{"jsonrpc":"2.0","id":2,"method":"ping"}}"#).unwrap();
    drop(input);
    let output = std::io::BufReader::new(server.stdout.take().unwrap());
    let answers: Vec<Value> = output
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let _ = server.wait();
    // One answer per request, each found by its id (answers may come in any order).
    assert_eq!(answers.len(), cases.len() + 3, "{answers:?}");
    for (request, code, message) in &cases {
        let answer = answers
            .iter()
            .find(|a| a["id"] == request["id"])
            .unwrap_or_else(|| panic!("no answer to {request}: {answers:?}"));
        assert_refused_with_id(request, answer, *code, message);
    }
    let batch = answers.iter().find(|a| a["id"].is_null()).unwrap();
    assert_eq!(batch["error"]["code"], -32600, "{batch}");
    assert!(batch["error"]["message"]
        .as_str()
        .unwrap()
        .contains("batch"));
    let ping = answers.iter().find(|a| a["id"] == 2).unwrap();
    assert_eq!(*ping, json!({"jsonrpc": "2.0", "id": 2, "result": {}}));
}

/// Over streamable HTTP the same requests are answered with their id too: an unreadable
/// envelope 400 as JSON, the others in the session's answer as rmcp sends it.
#[test]
fn http_answers_requests_it_cannot_serve_with_their_id() {
    let dir = tempfile::tempdir().unwrap();
    baton(dir.path(), &["init"]);
    let key = format!("Bearer {}", token(dir.path(), "worker", None));
    let (mut server, addr) = serve(dir.path());
    let url = format!("http://{addr}/mcp");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let post = |body: String, session: Option<&str>| {
        let mut req = http
            .post(&url)
            .header("authorization", &key)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(id) = session {
            req = req.header("mcp-session-id", id);
        }
        rt.block_on(async {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let session = res
                .headers()
                .get("mcp-session-id")
                .map(|v| v.to_str().unwrap().to_string());
            let text = res.text().await.unwrap();
            // A JSON body, or the last `data:` line of an SSE answer that holds JSON.
            let answer = serde_json::from_str(&text).unwrap_or_else(|_| {
                text.lines()
                    .rev()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .find_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                    .unwrap_or(Value::Null)
            });
            (status, session, answer)
        })
    };
    let (status, session, answer) = post(INITIALIZE.to_string(), None);
    assert_eq!(status, 200, "{answer}");
    let session = session.expect("a session id");
    let (status, _, _) = post(
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_string(),
        Some(&session),
    );
    assert_eq!(status, 202);
    for (request, code, message) in unservable_requests() {
        let (status, _, answer) = post(request.to_string(), Some(&session));
        let envelope = matches!(code, -32600) || request["params"].is_number();
        assert_eq!(
            status,
            if envelope { 400 } else { 200 },
            "{request} → {answer}"
        );
        assert_refused_with_id(&request, &answer, code, message);
    }
    let (status, _, answer) = post(
        r#"[{"jsonrpc":"2.0","id":19,"method":"ping"}]"#.to_string(),
        Some(&session),
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    let (status, _, answer) = post(
        r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#.to_string(),
        Some(&session),
    );
    assert_eq!(
        (status, answer),
        (200, json!({"jsonrpc": "2.0", "id": 2, "result": {}}))
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// A session over HTTP is its opening key's: another key of the workspace (or of another
/// workspace) that presents its id is answered as if it did not exist, and cannot end it;
/// ending a session, or one never opened, twice, is 404.
#[test]
fn a_session_belongs_to_the_key_that_opened_it() {
    let dir = tempfile::tempdir().unwrap();
    baton(dir.path(), &["init"]);
    let owner = format!("Bearer {}", token(dir.path(), "worker", Some("w1")));
    let other = format!("Bearer {}", token(dir.path(), "worker", Some("w2")));
    let (mut server, addr) = serve(dir.path());
    let url = format!("http://{addr}/mcp");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let send = |method: &str, key: &str, session: Option<&str>, body: &str| {
        let mut req = http
            .request(method.parse().unwrap(), &url)
            .header("authorization", key)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        if let Some(id) = session {
            req = req.header("mcp-session-id", id);
        }
        rt.block_on(async {
            let res = req.send().await.unwrap();
            let session = res
                .headers()
                .get("mcp-session-id")
                .map(|v| v.to_str().unwrap().to_string());
            (res.status().as_u16(), session, res.text().await.unwrap())
        })
    };
    let (status, session, text) = send("POST", &owner, None, INITIALIZE);
    assert_eq!(status, 200, "{text}");
    let session = session.expect("a session id");
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    assert_eq!(send("POST", &owner, Some(&session), initialized).0, 202);
    let ping = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    let (status, _, text) = send("POST", &other, Some(&session), ping);
    assert_eq!(status, 404, "another key's request in the session: {text}");
    let refusal: Value = serde_json::from_str(&text).expect("a JSON-RPC error");
    assert_eq!(refusal["error"]["code"], -32600, "{refusal}");
    assert_eq!(send("DELETE", &other, Some(&session), "").0, 404);
    assert_eq!(send("POST", &owner, Some(&session), ping).0, 200);
    assert_eq!(send("DELETE", &owner, Some("nope"), "").0, 404);
    let (status, _, text) = send("DELETE", &owner, Some(&session), "");
    assert!((200..300).contains(&status), "{status}: {text}");
    assert_eq!(send("DELETE", &owner, Some(&session), "").0, 404);
    assert_eq!(send("POST", &owner, Some(&session), ping).0, 404);
    let _ = server.kill();
    let _ = server.wait();
}

/// Two stdio MCP servers (two agents) on one store claim and complete until nothing is
/// left: every task is claimed exactly once.
#[test]
fn two_stdio_agents_race_and_each_task_is_claimed_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut refs = Vec::new();
    for i in 0..40 {
        refs.push(serde_json::json!({"ref": format!("t{i}"), "title": format!("task {i}")}));
    }
    let plan = dir.path().join("plan.json");
    std::fs::write(&plan, serde_json::json!({ "tasks": refs }).to_string()).unwrap();
    baton(dir.path(), &["plan", "apply", plan.to_str().unwrap()]);
    let found = client(&["race", BATON, dir.path().to_str().unwrap()]);
    let per_agent: Vec<Vec<String>> = serde_json::from_value(found["claimed"].clone()).unwrap();
    let all: Vec<&String> = per_agent.iter().flatten().collect();
    let unique: HashSet<&String> = all.iter().copied().collect();
    assert_eq!(all.len(), 40, "every task claimed: {per_agent:?}");
    assert_eq!(unique.len(), 40, "no task claimed twice");
    assert!(
        per_agent.iter().all(|a| !a.is_empty()),
        "both agents got work: {per_agent:?}"
    );
}

/// Every public operation of the engine (read from its source, so a new one cannot be
/// missed) is reachable over HTTP, MCP and the CLI, or is excluded here with the reason.
#[test]
fn every_operation_is_reachable_over_http_mcp_and_cli() {
    let source = include_str!("../../baton-core/src/engine.rs");
    let impl_start = source.find("impl Baton {").expect("impl Baton");
    let mut operations = BTreeSet::new();
    for line in source[impl_start..].lines() {
        let line = line.trim_start();
        for prefix in ["pub async fn ", "pub fn "] {
            if let Some(rest) = line.strip_prefix(prefix) {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                operations.insert(name);
            }
        }
        if line.starts_with("impl ") && !line.starts_with("impl Baton") {
            break;
        }
    }
    // (operation, HTTP "METHOD path", MCP tool, CLI command); "-" = excluded below.
    let table: &[(&str, &str, &str, &str)] = &[
        (
            "create_task",
            "POST /v1/tasks",
            "task_create",
            "task create",
        ),
        ("create_batch", "POST /v1/tasks/batch", "-", "-"),
        ("get_task", "GET /v1/tasks/{id}", "task_get", "task get"),
        (
            "get_task_as_of",
            "GET /v1/tasks/{id}",
            "task_get",
            "task get",
        ),
        ("list_tasks", "GET /v1/tasks", "query", "task list"),
        ("ready", "GET /v1/tasks/ready", "query", "ready"),
        (
            "update_task",
            "PATCH /v1/tasks/{id}",
            "task_update",
            "task update",
        ),
        (
            "transition",
            "POST /v1/tasks/{id}/publish",
            "task_update",
            "task publish",
        ),
        (
            "transition_at",
            "POST /v1/tasks/{id}/cancel",
            "task_update",
            "task cancel",
        ),
        (
            "unblock_as_worker",
            "POST /v1/tasks/{id}/unblock",
            "task_update",
            "task unblock",
        ),
        ("claim", "POST /v1/tasks/claim", "claim", "claim"),
        (
            "lease_op",
            "POST /v1/tasks/{id}/complete",
            "complete",
            "complete",
        ),
        ("complete_many", "POST /v1/tasks/complete", "-", "-"),
        (
            "add_context",
            "POST /v1/tasks/{id}/context",
            "context_add",
            "note",
        ),
        ("add_step", "POST /v1/tasks/{id}/steps", "steps", "step"),
        (
            "done_step",
            "POST /v1/tasks/{id}/steps/{step}/done",
            "steps",
            "step",
        ),
        (
            "dependency",
            "POST /v1/tasks/{id}/dependencies",
            "deps",
            "dep",
        ),
        ("brief", "GET /v1/tasks/{id}/brief", "task_brief", "brief"),
        (
            "attach_artifact",
            "POST /v1/tasks/{id}/artifacts",
            "artifacts",
            "artifact add",
        ),
        (
            "artifacts",
            "GET /v1/tasks/{id}/artifacts",
            "artifacts",
            "artifact list",
        ),
        (
            "artifact",
            "GET /v1/artifacts/{id}",
            "artifacts",
            "artifact get",
        ),
        (
            "artifact_bytes",
            "GET /v1/artifacts/{id}/content",
            "artifacts",
            "artifact get",
        ),
        ("apply_plan", "POST /v1/plans", "plan_apply", "plan apply"),
        ("events", "GET /v1/events", "query", "events"),
        ("last_seq", "GET /v1/events", "query", "events"),
        ("check_resume", "GET /v1/events", "query", "events"),
        (
            "create_key",
            "POST /v1/workspaces/{id}/keys",
            "-",
            "key create",
        ),
        ("create_new_workspace", "POST /v1/workspaces", "-", "-"),
        ("authenticate", "GET /v1/whoami", "-", "-"),
        ("create_project", "POST /v1/projects", "-", "project create"),
        (
            "update_project",
            "PATCH /v1/projects/{id}",
            "-",
            "project update",
        ),
        ("projects", "GET /v1/projects", "-", "project list"),
        ("project", "GET /v1/projects/{id}", "-", "project get"),
        (
            "register_agent",
            "POST /v1/agents/register",
            "claim",
            "agent register",
        ),
        (
            "agent_heartbeat",
            "POST /v1/agents/heartbeat",
            "heartbeat",
            "agent heartbeat",
        ),
        ("metrics", "GET /metrics", "-", "-"),
        ("agents", "GET /v1/agents", "-", "agent list"),
        ("agent", "GET /v1/agents/{name}", "-", "agent get"),
        (
            "update_agent",
            "PATCH /v1/agents/{name}",
            "-",
            "agent update",
        ),
        ("workspace", "GET /v1/workspaces/{id}", "-", "workspace get"),
        (
            "update_workspace",
            "PATCH /v1/workspaces/{id}",
            "-",
            "workspace update",
        ),
        ("reap", "-", "-", "reap"),
        ("reap_all", "-", "-", "reap"),
    ];
    // Why each "-" above is fine:
    // - create_batch: MCP and the CLI create graphs with plan_apply / `plan apply`, which
    //   is the same one-transaction, ref-based creation (and idempotent on re-apply).
    // - complete_many: the throughput path of programmatic workers that claim in batches
    //   over HTTP; an MCP or CLI agent finishes one task at a time with `complete`.
    // - keys, workspaces, whoami: admin and bootstrap acts; over MCP an agent acts with the
    //   key it was given, and `baton key create` bootstraps on the store.
    // - projects, agents and the workspace over MCP (their kill switches among them):
    //   set-up and fleet supervision are for a human or an admin tool (CLI, HTTP); an MCP agent registers by claiming and stays alive by
    //   heartbeating.
    // - metrics: a Prometheus scraper's route, counting what one server process did; an
    //   agent or a human reads the queue with ready, task list or the query tool.
    // - reap: the server's reaper and every claim expire lapsed leases; the CLI keeps
    //   `baton reap` for stores without a server.
    // Plumbing, not operations: the constructor, its write limits and object store (and its
    // accessor for the start-up probe), the store handle,
    // the generic write/read runners and the durability barrier of streams, actor
    // resolution (with the default workspace's get-or-create), the readiness probe, and the
    // shutdown signal a server gives its waits.
    let plumbing = [
        "close",
        "closing",
        "create_workspace",
        "new",
        "with_write_limits",
        "with_blobs",
        "objects",
        "store",
        "write_tx",
        "sync",
        "write",
        "read",
        "actor",
        "ready_check",
    ];
    let listed: BTreeSet<String> = table
        .iter()
        .map(|r| r.0.to_string())
        .chain(plumbing.iter().map(|p| p.to_string()))
        .collect();
    assert_eq!(
        operations, listed,
        "add new engine operations to this table"
    );

    let doc = serde_json::to_value(baton_server::openapi()).unwrap();
    let tools: HashSet<String> = baton_mcp::BatonMcp::tools()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    for (op, http, tool, cli) in table {
        if *http != "-" {
            let (method, path) = http.split_once(' ').unwrap();
            assert!(
                doc["paths"][path][method.to_lowercase()].is_object(),
                "{op}: {http} is not a route"
            );
        }
        if *tool != "-" {
            assert!(tools.contains(*tool), "{op}: no MCP tool {tool}");
        }
        if *cli != "-" {
            let mut args: Vec<&str> = cli.split(' ').collect();
            args.push("--help");
            let ok = Command::new(BATON)
                .args(&args)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "{op}: no CLI command `baton {cli}`");
        }
    }
}

/// The tool list stays inside its budget of the agent's context window.
#[test]
fn tools_list_is_under_12000_bytes() {
    let bytes = baton_mcp::tools_list_bytes();
    assert!(bytes < 12_000, "tools/list is {bytes} bytes");
}
