//! `baton serve` as a real process: clients write over HTTP while the server is killed with
//! SIGKILL; every write it acknowledged is there afterwards and the log replays.

use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BATON: &str = env!("CARGO_BIN_EXE_baton");

fn baton(dir: &std::path::Path, args: &[&str]) -> Value {
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
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `baton serve` on the store in `dir`; returns the process and its address. Its
/// standard error (its log) goes to `dir/serve.log`.
fn start_server(dir: &std::path::Path) -> (std::process::Child, String) {
    start_server_with(dir, &[])
}

/// [`start_server`] with more arguments for `serve`.
fn start_server_with(dir: &std::path::Path, args: &[&str]) -> (std::process::Child, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("serve.log")).expect("serve.log");
    let server = Command::new(BATON)
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--listen", &addr])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start baton serve");
    (server, addr)
}

/// A new key's secret, with `role`.
fn token(dir: &std::path::Path, role: &str) -> String {
    baton(dir, &["key", "create", "--role", role])["key"]["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Returns once the server at `addr` answers.
async fn wait_until_up(http: &reqwest::Client, addr: &str) {
    let started = Instant::now();
    while http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Four clients create tasks as fast as they can; the server is killed -9 mid-stream. Every
/// task whose creation was answered 201 exists afterwards, and `replay --verify` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_http_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let token = token(dir.path(), "planner");
    let (mut server, addr) = start_server(dir.path());
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    wait_until_up(&http, &addr).await;
    let started = Instant::now();

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (http, base, token, acked, stop) = (
            http.clone(),
            base.clone(),
            token.clone(),
            acked.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let sent = http
                    .post(format!("{base}/v1/tasks"))
                    .bearer_auth(&token)
                    .json(&json!({"title": format!("c{c}-{i}")}))
                    .send()
                    .await;
                let Ok(resp) = sent else { break };
                if resp.status() != reqwest::StatusCode::CREATED {
                    break;
                }
                let Ok(body) = resp.json::<Value>().await else {
                    break;
                };
                acked
                    .lock()
                    .unwrap()
                    .push(body["task"]["id"].as_str().unwrap().to_string());
            }
        }));
    }
    while acked.lock().unwrap().len() < 300 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "too slow to acknowledge writes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill().expect("SIGKILL the server");
    server.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);
    let listed = baton(dir.path(), &["task", "list", "--limit", "1000"]);
    let mut present: Vec<String> = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    let mut cursor = listed["next_cursor"].as_str().map(String::from);
    while let Some(after) = cursor {
        let page = baton(
            dir.path(),
            &["task", "list", "--limit", "1000", "--after", &after],
        );
        present.extend(
            page["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string()),
        );
        cursor = page["next_cursor"].as_str().map(String::from);
    }
    for id in &acked {
        assert!(present.contains(id), "acknowledged task {id} was lost");
    }
    let replay = baton(dir.path(), &["replay", "--verify"]);
    assert_eq!(replay["replay"]["equal"], true, "{replay}");
}

/// With `--server` the CLI is an HTTP client: the same commands give the same JSON shapes,
/// and errors the same `{"error": …}` with exit status 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_speaks_http_with_the_same_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let token = token(dir.path(), "admin");
    let (mut server, addr) = start_server(dir.path());
    let url = format!("http://{addr}");
    let remote = |args: &[&str]| {
        Command::new(BATON)
            .args(["--json", "--server", &url, "--token", &token])
            .args(args)
            .output()
            .expect("run baton against the server")
    };
    let started = Instant::now();
    while !remote(&["ready"]).status.success() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let json = |out: std::process::Output| -> (Option<i32>, Value) {
        (
            out.status.code(),
            serde_json::from_slice(&out.stdout).expect("one JSON object"),
        )
    };
    let (code, t) = json(remote(&[
        "task",
        "create",
        "--title",
        "over http",
        "--priority",
        "3",
    ]));
    assert_eq!(code, Some(0), "{t}");
    let id = t["task"]["id"].as_str().unwrap().to_string();
    assert!(
        id.starts_with("tsk_") && t["task"]["version"] == 1 && t["task"]["parent_id"].is_null()
    );
    let (_, claims) = json(remote(&["claim", "--agent", "w1"]));
    let token_of = claims["claims"][0]["lease"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(claims["claims"][0]["task"]["id"], id.as_str());
    let (_, hb) = json(remote(&[
        "heartbeat",
        &id,
        "--lease",
        &token_of,
        "--progress",
        "0.5",
    ]));
    assert_eq!(hb["signals"], json!([]));
    let (_, done) = json(remote(&[
        "complete",
        &id,
        "--lease",
        &token_of,
        "--output",
        "{\"ok\":true}",
    ]));
    assert_eq!(done["task"]["status"], "done");
    let (_, list) = json(remote(&["task", "list", "--status", "done"]));
    assert_eq!(list["tasks"][0]["id"], id.as_str());
    // An admin key makes keys over HTTP too, in its own workspace; a cancel can be
    // conditional on the version read.
    let (code, k) = json(remote(&[
        "key", "create", "--role", "worker", "--agent", "w9",
    ]));
    assert_eq!(code, Some(0), "{k}");
    assert!(
        k["key"]["token"].is_string() && k["key"]["agent"] == "w9",
        "{k}"
    );
    let (_, t2) = json(remote(&["task", "create", "--title", "to cancel"]));
    let id2 = t2["task"]["id"].as_str().unwrap();
    let (code, err) = json(remote(&["task", "cancel", id2, "--if-version", "7"]));
    assert_eq!(
        (code, err["error"]["code"].as_str()),
        (Some(1), Some("VERSION_CONFLICT"))
    );
    let (code, c) = json(remote(&["task", "cancel", id2, "--if-version", "1"]));
    assert_eq!(
        (code, c["task"]["status"].as_str()),
        (Some(0), Some("canceled")),
        "{c}"
    );
    let (code, err) = json(remote(&["task", "get", "tsk_missing"]));
    assert_eq!(
        (code, err["error"]["code"].as_str()),
        (Some(1), Some("NOT_FOUND"))
    );
    let (code, err) = json(remote(&["complete", &id, "--lease", &token_of]));
    assert_eq!(
        (code, err["error"]["code"].as_str()),
        (Some(1), Some("LEASE_LOST"))
    );
    // An id is one path segment, as on the store: it cannot reach another route or task.
    for args in [
        &["task", "get", "../whoami"][..],
        &["task", "cancel", &format!("nope/../{id}")],
    ] {
        let (code, err) = json(remote(args));
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            matches!(
                err["error"]["code"].as_str(),
                Some("NOT_FOUND" | "INVALID_INPUT")
            ),
            "{args:?}: {err}"
        );
    }
    // Projects and agents, over HTTP and then on the store: the same shapes.
    let (code, p) = json(remote(&["project", "create", "web", "--lease-ttl", "45s"]));
    assert_eq!(
        (code, p["project"]["lease_ttl"].as_str()),
        (Some(0), Some("45s")),
        "{p}"
    );
    let (_, killed) = json(remote(&["project", "update", "web", "--kill"]));
    assert_eq!(killed["project"]["killed"], true);
    let (_, a) = json(remote(&[
        "agent",
        "register",
        "w2",
        "--capabilities",
        "rust,review",
    ]));
    assert_eq!(a["agent"]["capabilities"], json!(["rust", "review"]));
    let (_, agents) = json(remote(&["agent", "list"]));
    assert_eq!(
        agents["agents"].as_array().unwrap().len(),
        2,
        "w1 (by its claim) and w2"
    );
    assert_eq!(baton(dir.path(), &["project", "get", "web"]), killed);
    assert_eq!(baton(dir.path(), &["agent", "get", "w2"]), a);
    let revived = baton(dir.path(), &["project", "update", "web", "--revive"]);
    assert_eq!(revived["project"]["killed"], false);
    // The same task read directly from the store has the same shape.
    let direct = baton(dir.path(), &["task", "get", &id]);
    let (_, over_http) = json(remote(&["task", "get", &id]));
    assert_eq!(direct, over_http);
    // Artifacts: attached over HTTP, read back over HTTP and on the store, byte for byte.
    let file = dir.path().join("chart.bin");
    let bytes: Vec<u8> = (0..=255u8).rev().collect();
    std::fs::write(&file, &bytes).unwrap();
    let file = file.to_str().unwrap();
    let (code, art) = json(remote(&[
        "artifact",
        "add",
        &id,
        file,
        "--media-type",
        "image/x-test",
    ]));
    assert_eq!(code, Some(0), "{art}");
    assert_eq!(
        (&art["artifact"]["name"], &art["artifact"]["size"]),
        (&json!("chart.bin"), &json!(256))
    );
    let art_id = art["artifact"]["id"].as_str().unwrap().to_string();
    let (_, listed) = json(remote(&["artifact", "list", &id]));
    assert_eq!(listed, baton(dir.path(), &["artifact", "list", &id]));
    assert_eq!(listed["artifacts"][0], art["artifact"]);
    let copy = dir.path().join("copy.bin");
    let copy_path = copy.to_str().unwrap();
    let (code, written) = json(remote(&["artifact", "get", &art_id, "-o", copy_path]));
    assert_eq!(code, Some(0), "{written}");
    assert_eq!(std::fs::read(&copy).unwrap(), bytes);
    let (_, with_bytes) = json(remote(&["artifact", "get", &art_id]));
    assert_eq!(with_bytes, baton(dir.path(), &["artifact", "get", &art_id]));
    assert!(with_bytes["content_base64"].is_string(), "{with_bytes}");
    // Without --json the bytes go to standard output as they are.
    let raw = Command::new(BATON)
        .args([
            "--server", &url, "--token", &token, "artifact", "get", &art_id,
        ])
        .output()
        .unwrap();
    assert_eq!(raw.stdout, bytes);
    let (code, err) = json(remote(&["artifact", "add", &id, "/nonexistent/file"]));
    assert_eq!(
        (code, err["error"]["code"].as_str()),
        (Some(1), Some("INVALID_INPUT"))
    );
    // Agent and workspace switches, over HTTP as on the store.
    let (_, a) = json(remote(&["agent", "update", "w2", "--disable"]));
    assert_eq!(a["agent"]["status"], "disabled", "{a}");
    let (_, ws) = json(remote(&["workspace", "get"]));
    assert_eq!(ws["workspace"]["killed"], false, "{ws}");
    // The key decides the workspace and the actor: flags that would be ignored are refused;
    // and an empty id is refused, not sent as another route.
    for args in [
        &["--workspace", "other", "task", "list"][..],
        &["--as", "someone", "task", "list"],
        &["task", "get", ""],
    ] {
        let (code, err) = json(remote(args));
        assert_eq!(
            (code, err["error"]["code"].as_str()),
            (Some(1), Some("INVALID_INPUT")),
            "{args:?}: {err}"
        );
    }
    // The embedded store refuses an empty id as the remote CLI does.
    for args in [
        &["task", "get", ""][..],
        &["brief", ""],
        &["artifact", "get", ""],
    ] {
        let out = Command::new(BATON)
            .args(["--json", "--data-dir"])
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        let (code, err) = json(out);
        assert_eq!(
            (code, err["error"]["code"].as_str()),
            (Some(1), Some("INVALID_INPUT")),
            "embedded {args:?}: {err}"
        );
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

/// The Python tools the test script installs into a throwaway venv (`target/py`).
fn python_tool(name: &str) -> std::path::PathBuf {
    let venv = std::env::var_os("BATON_TEST_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/py")
        });
    let tool = venv.join("bin").join(name);
    assert!(
        tool.exists(),
        "{} is missing: run ./scripts/test, which installs the Python test tools into target/py",
        tool.display()
    );
    tool
}

/// schemathesis, from PyPI, generates requests from `/openapi.json` (valid and invalid) and
/// checks every answer: no 5xx, every status, content type, header and body as documented.
/// The streams are left out: they never end, so a generated request would only time out.
#[test]
fn schemathesis_finds_nothing_against_the_openapi_document() {
    let schemathesis = python_tool("schemathesis");
    let dir = tempfile::tempdir().unwrap();
    let token = token(dir.path(), "admin");
    let (mut server, addr) = start_server(dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "baton serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let seed = std::env::var("BATON_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261124".into());
    let out = Command::new(schemathesis)
        .args(["run", &format!("http://{addr}/openapi.json")])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance",
        ])
        .args([
            "--exclude-path",
            "/v1/events/stream",
            "--exclude-path",
            "/v1/ws",
        ])
        .args(["--max-examples", "30", "--seed", &seed])
        // One worker: with several, hypothesis parses sources with `ast` from several
        // threads, which CPython 3.11 can fail at ("AST constructor recursion depth mismatch").
        .args([
            "--generation-database",
            "none",
            "--no-color",
            "--workers",
            "1",
        ])
        .args(["--request-timeout", "65"])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(dir.path())
        .output()
        .expect("run schemathesis");
    let _ = server.kill();
    let _ = server.wait();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems (seed {seed}):\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("passed") && !report.contains("failed,"),
        "unexpected schemathesis report:\n{report}"
    );
}

/// SIGTERM while a client follows the event stream, another waits in a long-poll claim, an
/// MCP client holds its session's stream open and waits in a claim tool call, and a
/// connection has sent half a request: the server answers both claims at once (no
/// claims), ends the streams and exits, rather than waiting for the clients to leave (the
/// half-sent request within the drain limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_and_waiting_claims() {
    let dir = tempfile::tempdir().unwrap();
    let bearer = format!("Bearer {}", token(dir.path(), "admin"));
    let (mut server, addr) = start_server(dir.path());
    let http = reqwest::Client::new();
    wait_until_up(&http, &addr).await;
    let mut stream = http
        .get(format!("http://{addr}/v1/events/stream?after=0"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let init = http
        .post(format!("http://{addr}/mcp"))
        .header("authorization", &bearer)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#)
        .send()
        .await
        .unwrap();
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    drop(init);
    let mcp = |body: &'static str| {
        http.post(format!("http://{addr}/mcp"))
            .header("authorization", &bearer)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session)
            .body(body)
    };
    mcp(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .send()
        .await
        .unwrap();
    let tool_claim = tokio::spawn(
        mcp(r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"claim","arguments":{"wait":"60s"}}}"#)
            .send(),
    );
    // Half a request line, and then nothing.
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut half, b"G")
        .await
        .unwrap();
    let mut mcp_stream = http
        .get(format!("http://{addr}/mcp"))
        .header("authorization", &bearer)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(mcp_stream.status(), 200);
    let claim = tokio::spawn({
        let (http, bearer) = (http.clone(), bearer.clone());
        let url = format!("http://{addr}/v1/tasks/claim");
        async move {
            let res = http
                .post(url)
                .header("authorization", &bearer)
                .json(&json!({"agent": "w1", "wait": "60s"}))
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    });
    // The claim is waiting (nothing is ready) when the signal comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!claim.is_finished());
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let (status, answer) = tokio::time::timeout(Duration::from_secs(20), claim)
        .await
        .expect("the waiting claim is answered at shutdown")
        .unwrap();
    assert_eq!((status, answer), (200, json!({"claims": []})));
    let tool_answer = tokio::time::timeout(Duration::from_secs(20), async {
        tool_claim.await.unwrap().unwrap().text().await.unwrap()
    })
    .await
    .expect("the tool call is answered at shutdown");
    assert!(
        tool_answer.contains(r#""id":9"#) && tool_answer.contains("claims"),
        "{tool_answer}"
    );
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while stream.chunk().await.is_ok_and(|c| c.is_some()) {}
        while mcp_stream.chunk().await.is_ok_and(|c| c.is_some()) {}
    })
    .await;
    assert!(ended.is_ok(), "the streams ended at shutdown");
    // Within the drain limit, though one connection never finished its request.
    let deadline = Instant::now() + baton_server::DRAIN_LIMIT + Duration::from_secs(10);
    let exit = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "baton serve did not exit on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(!log.contains("panicked"), "a clean shutdown: {log}");
    drop(half);
}

/// `serve --log-format json --log-level debug` writes one JSON object a line to stderr: a
/// line per request naming its request id (the caller's `X-Request-Id`, or the one the
/// response carries), the task its path names and the refusal's code; and start and stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let bearer = format!("Bearer {}", token(dir.path(), "admin"));
    let args = ["--log-format", "json", "--log-level", "debug"];
    let (mut server, addr) = start_server_with(dir.path(), &args);
    let http = reqwest::Client::new();
    wait_until_up(&http, &addr).await;
    let created = http
        .post(format!("http://{addr}/v1/tasks"))
        .header("authorization", &bearer)
        .header("x-request-id", "trace-me-1")
        .json(&json!({"title": "logged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.headers()["x-request-id"], "trace-me-1");
    let task: Value = created.json().await.unwrap();
    let task = task["task"]["id"].as_str().unwrap().to_string();
    let missing = "tsk_0000000000000000000000000000000f";
    let refused = http
        .post(format!("http://{addr}/v1/tasks/{missing}/cancel"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    let refused_id = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(refused_id.starts_with("req_"), "{refused_id}");
    // /mcp answers with the request's id too.
    let init = http
        .post(format!("http://{addr}/mcp"))
        .header("authorization", &bearer)
        .header("x-request-id", "mcp-1")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(init.headers()["x-request-id"], "mcp-1");
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    drop(init);
    // A tool call's requests carry its MCP request's id: the events name it.
    let mcp = |id: &str, body: &'static str| {
        http.post(format!("http://{addr}/mcp"))
            .header("authorization", &bearer)
            .header("x-request-id", id)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session)
            .body(body)
            .send()
    };
    mcp(
        "mcp-2",
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .await
    .unwrap();
    let call = mcp(
        "mcp-call-1",
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"task_create","arguments":{"title":"by a tool"}}}"#,
    );
    let answer = call.await.unwrap().text().await.unwrap();
    assert!(answer.contains("by a tool"), "{answer}");
    let events: Value = http
        .get(format!("http://{addr}/v1/events?last=5"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "task.created" && e["data"]["task"]["title"] == "by a tool")
        .cloned()
        .unwrap_or_else(|| panic!("no task.created in {events}"));
    assert_eq!(created["request_id"], "mcp-call-1", "{created}");
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let find = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id} in {log}"))
    };
    let line = find("trace-me-1");
    assert_eq!(
        (
            &line["level"],
            &line["method"],
            &line["path"],
            &line["status"]
        ),
        (
            &json!("DEBUG"),
            &json!("POST"),
            &json!("/v1/tasks"),
            &json!(201)
        ),
        "{line}"
    );
    let line = find(&refused_id);
    assert_eq!(
        (&line["task_id"], &line["code"], &line["status"]),
        (&json!(missing), &json!("NOT_FOUND"), &json!(404)),
        "{line}"
    );
    let said = |m: &str| {
        lines
            .iter()
            .any(|l| l["message"].as_str().is_some_and(|s| s.starts_with(m)))
    };
    assert!(said("serving") && said("stopped"), "{log}");
    assert!(task.starts_with("tsk_"));
    find("mcp-1");
    // Baton's own lines only: the MCP library's (sessions, whole tool calls) stay out.
    let ours = ["serving", "request", "shutting down", "stopped", "expired"];
    for line in &lines {
        let message = line["message"].as_str().unwrap_or_default();
        assert!(ours.iter().any(|m| message.starts_with(m)), "{line}");
    }
}
