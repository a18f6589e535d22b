//! The HTTP API against a real server on loopback, driven by a real HTTP client (reqwest):
//! the agent loop, the error classes with their statuses, If-Match, Idempotency-Key and the
//! long-poll claim.

use baton_conformance::{on_every_backend, open_store, Backend};
use baton_core::time::SystemClock;
use baton_core::Baton;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running server on a fresh store: its base URL and a client.
struct Server {
    base: String,
    http: Client,
    baton: Baton,
    /// An admin key of the default workspace, sent unless a call says otherwise.
    token: String,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    async fn start(backend: Backend) -> Server {
        let (store, dir) = open_store(backend);
        let blobs = baton_core::blobs::Blobs::local(&dir.path().join("objects")).unwrap();
        let baton = Baton::new(store, Arc::new(SystemClock)).with_blobs(blobs);
        let admin = baton.actor("default", "admin").await.unwrap();
        let token = baton
            .create_key(&admin, "admin", None)
            .await
            .unwrap()
            .key
            .token;
        let mut server = Server::over(baton, token).await;
        server._dir = Some(dir);
        server
    }

    /// A server for an engine over an existing store, calling with `token`.
    async fn over(baton: Baton, token: String) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let serving =
            baton_server::serve(listener, baton.clone(), "default", std::future::pending());
        tokio::spawn(serving);
        Server {
            base,
            http: Client::new(),
            baton,
            token,
            _dir: None,
        }
    }

    /// A new key of the default workspace.
    async fn key(&self, role: &str, agent: Option<&str>) -> String {
        let admin = self.baton.actor("default", "admin").await.unwrap();
        self.baton
            .create_key(&admin, role, agent.map(String::from))
            .await
            .unwrap()
            .key
            .token
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.parse().unwrap(), url);
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            req = req.bearer_auth(&self.token);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
        (status, value)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(body), &[]).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, None, &[]).await
    }

    /// Sends `body` as it is (not necessarily JSON), with `authorization` if given.
    async fn raw(
        &self,
        method: &str,
        path: &str,
        body: &str,
        authorization: Option<&str>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(value) = authorization {
            req = req.header("authorization", value);
        }
        let resp = req.body(body.to_string()).send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
        (status, value)
    }
}

fn error_code(v: &Value) -> &str {
    assert!(
        v["error"]["message"].is_string()
            && v["error"]["hint"].is_string()
            && v["error"]["retryable"].is_boolean(),
        "{v}"
    );
    v["error"]["code"].as_str().unwrap_or("")
}

/// Plan, claim, heartbeat, record, complete: the dependent is released; the events tell it.
async fn agent_loop_over_http(backend: Backend) {
    let s = Server::start(backend).await;
    assert_eq!(
        s.http
            .get(format!("{}/healthz", s.base))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let (st, a) = s
        .post(
            "/v1/tasks",
            json!({"title": "design", "intent": "why", "priority": 5}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{a}");
    let a_id = a["task"]["id"].as_str().unwrap().to_string();
    let (_, b) = s
        .post("/v1/tasks", json!({"title": "build", "blocked_by": [a_id]}))
        .await;
    assert_eq!(b["task"]["status"], "blocked");
    let b_id = b["task"]["id"].as_str().unwrap().to_string();

    let (st, claims) = s
        .post(
            "/v1/tasks/claim",
            json!({"agent": "w1", "lease_ttl": "30s"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{claims}");
    let claim = &claims["claims"][0];
    assert_eq!(claim["task"]["id"], a_id.as_str());
    let token = claim["lease"]["token"].as_str().unwrap().to_string();

    let (st, hb) = s
        .post(
            &format!("/v1/tasks/{a_id}/heartbeat"),
            json!({"lease": token, "progress": 0.5}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{hb}");
    assert_eq!(hb["signals"], json!([]));
    let (st, ctx) = s
        .post(
            &format!("/v1/tasks/{a_id}/context"),
            json!({"type": "decision", "content": "use sqlite", "lease": token}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{ctx}");
    let (st, done) = s
        .post(
            &format!("/v1/tasks/{a_id}/complete"),
            json!({"lease": token, "output": {"ok": true}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{done}");
    assert_eq!(done["task"]["status"], "done");
    let (_, b) = s.get(&format!("/v1/tasks/{b_id}")).await;
    assert_eq!(b["task"]["status"], "ready");
    let (_, brief) = s.get(&format!("/v1/tasks/{a_id}/brief")).await;
    assert_eq!(brief["brief"]["context"][0]["content"], "use sqlite");
    let (_, list) = s.get("/v1/tasks?status=ready").await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1);
    let (_, events) = s.get("/v1/events?after=0&limit=1000").await;
    let seqs: Vec<u64> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gap-free"
    );
    assert!(
        !serde_json::to_string(&list).unwrap().contains(&token),
        "tokens never appear in reads"
    );
}

/// Every class of bad input gets a structured error with the right status and writes nothing.
async fn errors_have_codes_and_statuses(backend: Backend) {
    let s = Server::start(backend).await;
    let (_, t) = s.post("/v1/tasks", json!({"title": "t"})).await;
    let id = t["task"]["id"].as_str().unwrap().to_string();
    let (_, before) = s.get("/v1/events?limit=1000").await;

    let raw = s
        .http
        .post(format!("{}/v1/tasks", s.base))
        .bearer_auth(&s.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let v: Value = raw.json().await.unwrap();
    assert_eq!(error_code(&v), "INVALID_INPUT");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("at line 1 column 2"), "{message}");

    let cases = [
        (
            "POST",
            "/v1/tasks".to_string(),
            Some(json!({"title": "x", "colour": "red"})),
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/v1/tasks".to_string(),
            Some(json!({"title": 7})),
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/v1/tasks".to_string(),
            Some(json!({"title": "x".repeat(2000)})),
            StatusCode::PAYLOAD_TOO_LARGE,
            "TOO_LARGE",
        ),
        (
            "POST",
            "/v1/tasks".to_string(),
            Some(json!({"title": "x", "lease_ttl": "5x"})),
            StatusCode::BAD_REQUEST,
            "INVALID_DURATION",
        ),
        (
            "POST",
            "/v1/tasks".to_string(),
            Some(json!({"title": "x", "timeout": true})),
            StatusCode::BAD_REQUEST,
            "INVALID_DURATION",
        ),
        (
            "POST",
            "/v1/tasks".to_string(),
            Some(json!({"title": "x", "lease_ttl": "500ms"})),
            StatusCode::BAD_REQUEST,
            "INVALID_DURATION",
        ),
        (
            "GET",
            "/v1/tasks/tsk_nope".to_string(),
            None,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "GET",
            "/v1/nowhere".to_string(),
            None,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "GET",
            "/v1/tasks?limit=lots".to_string(),
            None,
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "POST",
            format!("/v1/tasks/{id}/complete"),
            Some(json!({"lease": "lse_forged"})),
            StatusCode::CONFLICT,
            "LEASE_LOST",
        ),
        (
            "POST",
            format!("/v1/tasks/{id}/complete"),
            Some(json!({})),
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "POST",
            format!("/v1/tasks/{id}/approve"),
            Some(json!({})),
            StatusCode::CONFLICT,
            "INVALID_TRANSITION",
        ),
        (
            "POST",
            format!("/v1/tasks/{id}/explode"),
            Some(json!({})),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "POST",
            format!("/v1/tasks/{id}/dependencies"),
            Some(json!({"blocker_id": id})),
            StatusCode::CONFLICT,
            "CYCLE",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (st, v) = s.call(method, &path, body, &[]).await;
        assert_eq!((st, error_code(&v)), (status, code), "{method} {path}: {v}");
    }
    // A field of the wrong type or name is named by its path, not by a line and column of
    // JSON that an MCP tool's or the CLI's caller never wrote; malformed JSON keeps them.
    let messages = [
        (
            "/v1/tasks",
            json!({"title": "A", "priority": "high"}),
            "invalid request body: priority: invalid type: string \"high\", expected i64",
        ),
        (
            "/v1/tasks",
            json!({"title": "A", "lease_ttl": "5x"}),
            "invalid request body: lease_ttl: '5x' is not a duration",
        ),
        (
            "/v1/tasks/batch",
            json!({"tasks": [{"ref": "a", "title": "A"}, {"ref": "b", "title": "B", "priority": "high"}]}),
            "invalid request body: tasks[1]: invalid type: string \"high\"",
        ),
        (
            "/v1/plans",
            json!({"tasks": [{"ref": "a", "title": "A", "labels": "x"}]}),
            "not a valid plan: invalid request body: tasks[0].labels: invalid type",
        ),
    ];
    for (path, body, start) in messages {
        let (st, v) = s.post(path, body).await;
        assert!(st.is_client_error(), "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(start), "{message}");
        assert!(!message.contains("line 1"), "{message}");
    }
    // A page that ends the listing says so, even when it is exactly full; filters that
    // can match nothing are refused.
    let (_, page) = s.get("/v1/tasks?limit=1").await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1, "{page}");
    assert!(page.get("next_cursor").is_none(), "{page}");
    for query in ["label=", "parent=", "label=a,b"] {
        let (st, v) = s.get(&format!("/v1/tasks?{query}")).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
            "{query}"
        );
    }
    // A plan file's YAML is taken as it is, with its content type; bad YAML is INVALID_PLAN.
    let yaml = |text: &'static str| {
        let request = s.http.post(format!("{}/v1/plans", s.base));
        let request = request
            .bearer_auth(&s.token)
            .header("content-type", "application/yaml; charset=utf-8");
        async move {
            let resp = request.body(text).send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    let (st, v) = yaml("tasks: [unclosed\n").await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "INVALID_PLAN"),
        "{v}"
    );
    let big = "x".repeat(baton_server::MAX_BODY + 10);
    let resp = s
        .http
        .post(format!("{}/v1/tasks", s.base))
        .bearer_auth(&s.token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (_, after) = s.get("/v1/events?limit=1000").await;
    assert_eq!(before, after, "bad input wrote nothing");
    let (st, v) = yaml("name: yaml\ntasks:\n  - ref: a\n    title: From YAML\n").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["tasks"][0]["task"]["title"], "From YAML", "{v}");
}

/// `If-Match` carries the version; a stale one is 409 VERSION_CONFLICT. `Idempotency-Key`
/// replays the stored answer, and refuses a different body under the same key.
async fn if_match_and_idempotency_keys(backend: Backend) {
    let s = Server::start(backend).await;
    let (_, t) = s.post("/v1/tasks", json!({"title": "t"})).await;
    let id = t["task"]["id"].as_str().unwrap().to_string();
    let path = format!("/v1/tasks/{id}");
    let (st, v) = s
        .call(
            "PATCH",
            &path,
            Some(json!({"title": "t2"})),
            &[("if-match", "1")],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = s
        .call(
            "PATCH",
            &path,
            Some(json!({"title": "t3"})),
            &[("if-match", "1")],
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::CONFLICT, "VERSION_CONFLICT")
    );
    assert_eq!(v["error"]["details"]["current_version"], 2);
    // Two If-Match headers say two things: refused, as two Idempotency-Keys are.
    let (st, v) = s
        .call(
            "PATCH",
            &path,
            Some(json!({"title": "t4"})),
            &[("if-match", "2"), ("if-match", "7")],
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "INVALID_INPUT")
    );
    assert_eq!(s.get(&path).await.1["task"]["title"], "t2");

    // Transitions are conditional too (If-Match or version): a cancel decided on version 1
    // is not applied to version 2. A lease operation refuses If-Match (the lease fences it).
    let cancel = format!("{path}/cancel");
    for (body, headers) in [
        (json!({}), &[("if-match", "1")][..]),
        (json!({"version": 1}), &[][..]),
    ] {
        let (st, v) = s.call("POST", &cancel, Some(body), headers).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::CONFLICT, "VERSION_CONFLICT"),
            "{v}"
        );
        assert_eq!(v["error"]["details"]["current_version"], 2);
    }
    let (st, v) = s
        .call(
            "POST",
            &cancel,
            Some(json!({"version": 3})),
            &[("if-match", "2")],
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
        "{v}"
    );
    assert_eq!(
        s.get(&path).await.1["task"]["status"],
        "ready",
        "refusals changed nothing"
    );
    let (st, c) = s.post("/v1/tasks/claim", json!({"agent": "im"})).await;
    assert_eq!(c["claims"][0]["task"]["id"], id.as_str(), "{st} {c}");
    let beat = json!({"lease": c["claims"][0]["lease"]["token"]});
    let lease = beat["lease"].clone();
    let (st, v) = s
        .call(
            "POST",
            &format!("{path}/heartbeat"),
            Some(beat),
            &[("if-match", "3")],
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
        "{v}"
    );
    // Nor is it ignored on any other write: claims, notes, creations refuse it too.
    for (path, body) in [
        ("/v1/tasks/claim".to_string(), json!({"agent": "im"})),
        (
            format!("{path}/context"),
            json!({"type": "note", "content": "x"}),
        ),
        ("/v1/tasks".to_string(), json!({"title": "x"})),
    ] {
        let (st, v) = s
            .call("POST", &path, Some(body), &[("if-match", "3")])
            .await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
            "{path}: {v}"
        );
    }
    let stranger = [("authorization", "Bearer nope"), ("if-match", "3")];
    let (st, v) = s
        .call("POST", "/v1/tasks", Some(json!({})), &stranger)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "the key first: {v}");
    let many = json!({"completions": [{"id": id, "lease": lease}]});
    let (st, v) = s
        .call(
            "POST",
            "/v1/tasks/complete",
            Some(many),
            &[("if-match", "3")],
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
        "{v}"
    );
    let (st, v) = s
        .call("POST", &cancel, Some(json!({})), &[("if-match", "3")])
        .await;
    assert_eq!(
        (st, v["task"]["status"].as_str()),
        (StatusCode::OK, Some("canceled")),
        "{v}"
    );

    let create = |title: &str| json!({"title": title});
    let (st1, a) = s
        .call(
            "POST",
            "/v1/tasks",
            Some(create("once")),
            &[("idempotency-key", "k-1")],
        )
        .await;
    let (st2, b) = s
        .call(
            "POST",
            "/v1/tasks",
            Some(create("once")),
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!((st1, st2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(a, b);
    let (st, v) = s
        .call(
            "POST",
            "/v1/tasks",
            Some(create("other")),
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_MISMATCH")
    );
}

/// A waiting claim returns as soon as a matching task is created, woken by the commit.
async fn long_poll_claim_wakes_on_creation(backend: Backend) {
    let s = Arc::new(Server::start(backend).await);
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move {
            let (_, v) = s
                .post("/v1/tasks/claim", json!({"agent": "w", "wait": "20s"}))
                .await;
            (v, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, t) = s.post("/v1/tasks", json!({"title": "late"})).await;
    let created = Instant::now();
    let (v, returned) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v["claims"][0]["task"]["id"], t["task"]["id"]);
    let woke = returned.saturating_duration_since(created);
    assert!(
        woke < Duration::from_secs(5),
        "woke {woke:?} after the commit, not at the end of the wait"
    );
}

/// An SSE reader over a live response: frames as (id, event, data).
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn open(s: &Server, query: &str, last_id: Option<u64>) -> Sse {
        let mut req = s
            .http
            .get(format!("{}/v1/events/stream{query}", s.base))
            .bearer_auth(&s.token);
        if let Some(id) = last_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Sse {
            resp,
            buf: String::new(),
        }
    }

    /// The next event frame (keep-alives skipped), within 10 s.
    async fn next(&mut self) -> (u64, String, Value) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut kind, mut data) = (None, String::new(), Value::Null);
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        kind = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(v).unwrap();
                    }
                }
                if let Some(id) = id {
                    return (id, kind, data);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.resp.chunk())
                .await
                .expect("an event in time");
            let chunk = chunk.unwrap().expect("stream still open");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

/// The SSE stream replays from `after`, resumes after `Last-Event-ID` with nothing skipped
/// or repeated, filters by type, and delivers new events live.
async fn event_stream_replays_resumes_filters_and_follows(backend: Backend) {
    let s = Server::start(backend).await;
    for i in 0..3 {
        s.post("/v1/tasks", json!({"title": format!("t{i}")})).await;
    }
    let (_, all) = s.get("/v1/events?limit=1000").await;
    let total = all["events"].as_array().unwrap().len() as u64;

    let mut sse = Sse::open(&s, "?after=0", None).await;
    for expected in 1..=total {
        let (id, _, data) = sse.next().await;
        assert_eq!(id, expected, "in order, from the start");
        assert_eq!(data["seq"], expected);
    }
    drop(sse);

    let mut resumed = Sse::open(&s, "", Some(2)).await;
    assert_eq!(
        resumed.next().await.0,
        3,
        "resumes right after Last-Event-ID"
    );

    let mut created = Sse::open(&s, "?after=0&type=task.created", None).await;
    for _ in 0..3 {
        assert_eq!(created.next().await.1, "task.created");
    }

    let mut live = Sse::open(&s, "", None).await;
    let (_, t) = s.post("/v1/tasks", json!({"title": "live"})).await;
    let (id, kind, data) = live.next().await;
    assert_eq!((id, kind.as_str()), (total + 1, "task.created"));
    assert_eq!(data["task_id"], t["task"]["id"]);

    // A project's stream carries its tasks' events and its own (the kill switch, say),
    // not another project's.
    let mut project = Sse::open(&s, "?project=default", None).await;
    s.post("/v1/projects", json!({"name": "other"})).await;
    s.post(
        "/v1/tasks",
        json!({"title": "elsewhere", "project": "other"}),
    )
    .await;
    s.call(
        "PATCH",
        "/v1/projects/default",
        Some(json!({"killed": true})),
        &[],
    )
    .await;
    let (_, here) = s.post("/v1/tasks", json!({"title": "here"})).await;
    let (_, kind, data) = project.next().await;
    assert_eq!(kind, "project.updated", "{data}");
    assert_eq!(data["data"]["project"]["killed"], true, "{data}");
    let (_, kind, data) = project.next().await;
    assert_eq!(kind, "task.created", "{data}");
    assert_eq!(data["data"]["task"]["title"], "here", "{data}");
    // Dependency events carry no task, and are the project's of the task that waits.
    let (_, elsewhere2) = s
        .post(
            "/v1/tasks",
            json!({"title": "elsewhere 2", "project": "other"}),
        )
        .await;
    let (here, elsewhere2) = (&here["task"]["id"], &elsewhere2["task"]["id"]);
    let (_, first) = s.post("/v1/tasks", json!({"title": "first"})).await;
    let first = &first["task"]["id"];
    for (blocked, blocker) in [(elsewhere2, first), (here, first)] {
        let path = format!("/v1/tasks/{}/dependencies", blocked.as_str().unwrap());
        let (st, v) = s.post(&path, json!({"blocker_id": blocker})).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    let (_, kind, data) = project.next().await;
    assert_eq!(kind, "task.created", "{data}");
    assert_eq!(data["data"]["task"]["title"], "first", "{data}");
    let (_, kind, data) = project.next().await;
    assert_eq!(kind, "dependency.added", "{data}");
    assert_eq!(
        &data["task_id"], here,
        "the other project's edge is left out: {data}"
    );

    // An agent's stream follows its runs, whoever sends their heartbeats (this key is an
    // admin's, not the agent's).
    s.post("/v1/agents/register", json!({"agent": "w9"})).await;
    let mut agent = Sse::open(&s, "?actor=w9", None).await;
    let (_, c) = s.post("/v1/tasks/claim", json!({"agent": "w9"})).await;
    let id = c["claims"][0]["task"]["id"].as_str().unwrap().to_string();
    let lease = c["claims"][0]["lease"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, _) = s
        .post(
            &format!("/v1/tasks/{id}/heartbeat"),
            json!({"lease": lease}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    for kind in ["task.claimed", "task.heartbeat"] {
        let (_, got, data) = agent.next().await;
        assert_eq!(got, kind, "{data}");
        assert_eq!(data["task_id"], id.as_str(), "{data}");
    }
    // An agent registered after the stream opened (here by its first claim): its runs'
    // events are followed from its registration on.
    let mut later = Sse::open(&s, "?actor=w10", None).await;
    let for_w10 = json!({"title": "for w10", "project": "other"}); // default is killed
    s.post("/v1/tasks", for_w10).await;
    let (_, c) = s.post("/v1/tasks/claim", json!({"agent": "w10"})).await;
    let id = c["claims"][0]["task"]["id"].as_str().unwrap().to_string();
    let lease = c["claims"][0]["lease"]["token"].as_str().unwrap();
    let beat = json!({"lease": lease});
    let (st, _) = s.post(&format!("/v1/tasks/{id}/heartbeat"), beat).await;
    assert_eq!(st, StatusCode::OK);
    let (_, got, _) = later.next().await;
    assert_eq!(got, "agent.registered", "the claim acts as the agent");
    // The heartbeat was sent with an admin's key: kept as an event of the agent's run.
    for kind in ["task.claimed", "task.heartbeat"] {
        let (_, got, data) = later.next().await;
        assert_eq!(got, kind, "{data}");
        assert_eq!(data["task_id"], id.as_str(), "{data}");
    }
    let (_, v) = s.call("GET", "/v1/events/stream?after=x", None, &[]).await;
    assert_eq!(error_code(&v), "INVALID_INPUT");
}

/// Keys and roles: no key is 401, a bad key 401, a role that may not is 403; a worker key
/// claims only as its agent; a key of another workspace sees nothing of this one (404).
async fn keys_roles_and_workspace_isolation(backend: Backend) {
    let s = Server::start(backend).await;
    let (_, t) = s.post("/v1/tasks", json!({"title": "secret plans"})).await;
    let id = t["task"]["id"].as_str().unwrap().to_string();

    let resp = s
        .http
        .get(format!("{}/v1/tasks/{id}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&resp.json().await.unwrap()), "UNAUTHORIZED");
    let (st, v) = s
        .call(
            "GET",
            &format!("/v1/tasks/{id}"),
            None,
            &[("authorization", "Bearer btn_forged")],
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );

    let observer = format!("Bearer {}", s.key("observer", None).await);
    let as_observer = [("authorization", observer.as_str())];
    let (st, _) = s
        .call("GET", &format!("/v1/tasks/{id}"), None, &as_observer)
        .await;
    assert_eq!(st, StatusCode::OK, "observers read");
    let (st, v) = s
        .call(
            "POST",
            "/v1/tasks",
            Some(json!({"title": "x"})),
            &as_observer,
        )
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let (st, v) = s
        .call(
            "POST",
            "/v1/tasks/claim",
            Some(json!({"agent": "o"})),
            &as_observer,
        )
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::FORBIDDEN, "FORBIDDEN"));

    let worker = format!("Bearer {}", s.key("worker", Some("w1")).await);
    let as_worker = [("authorization", worker.as_str())];
    let (st, v) = s
        .call(
            "POST",
            "/v1/tasks/claim",
            Some(json!({"agent": "someone-else"})),
            &as_worker,
        )
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let (st, v) = s
        .call(
            "POST",
            &format!("/v1/tasks/{id}/approve"),
            Some(json!({})),
            &as_worker,
        )
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::FORBIDDEN, "FORBIDDEN"));

    // Another workspace, made by an admin, with its own admin key.
    let (st, ws) = s.post("/v1/workspaces", json!({"name": "other"})).await;
    assert_eq!(st, StatusCode::CREATED, "{ws}");
    let other = format!("Bearer {}", ws["key"]["token"].as_str().unwrap());
    let as_other = [("authorization", other.as_str())];
    for (method, path) in [
        ("GET", format!("/v1/tasks/{id}")),
        ("GET", format!("/v1/tasks/{id}/brief")),
        ("POST", format!("/v1/tasks/{id}/cancel")),
        ("PATCH", format!("/v1/tasks/{id}")),
    ] {
        let (st, v) = s.call(method, &path, Some(json!({})), &as_other).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::NOT_FOUND, "NOT_FOUND"),
            "{method} {path}"
        );
    }
    let (_, list) = s.call("GET", "/v1/tasks", None, &as_other).await;
    assert_eq!(list["tasks"], json!([]));
    let (_, events) = s
        .call("GET", "/v1/events?limit=1000", None, &as_other)
        .await;
    assert!(
        !serde_json::to_string(&events).unwrap().contains(&id),
        "no event of another workspace"
    );
    let default_ws = t["task"]["workspace_id"].as_str().unwrap();
    let (st, _) = s
        .call(
            "POST",
            &format!("/v1/workspaces/{default_ws}/keys"),
            Some(json!({"role": "admin"})),
            &as_other,
        )
        .await;
    assert_eq!(
        st,
        StatusCode::NOT_FOUND,
        "no keys for a workspace it cannot see"
    );
    for name in ["default", "other"] {
        let (st, v) = s
            .call(
                "POST",
                "/v1/workspaces",
                Some(json!({"name": name})),
                &as_other,
            )
            .await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::CONFLICT, "ALREADY_EXISTS"),
            "a workspace's name is no way into it: {v}"
        );
        assert!(v.get("key").is_none() && v.get("workspace").is_none());
    }
    let (st, k) = s
        .call(
            "POST",
            &format!("/v1/workspaces/{default_ws}/keys"),
            Some(json!({"role": "worker", "agent": "w2"})),
            &[],
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{k}");
    assert!(
        k["key"]["token"].is_string() && k["key"]["id"].is_string() && k["key"]["role"] == "worker"
    );
}

/// A batch creates a graph in one call: refs resolve to ids for parents and blockers, the
/// answer is in request order with each ref; a ref cycle writes nothing.
async fn batch_creates_a_graph_by_refs(backend: Backend) {
    let s = Server::start(backend).await;
    let body = json!({"tasks": [
        {"ref": "api", "title": "API", "blocked_by": ["model"], "parent_id": "epic"},
        {"ref": "epic", "title": "Epic", "type": "epic"},
        {"ref": "model", "title": "Model", "parent_id": "epic", "priority": 3},
    ]});
    let (st, out) = s.post("/v1/tasks/batch", body).await;
    assert_eq!(st, StatusCode::CREATED, "{out}");
    let refs: Vec<&str> = out["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["ref"].as_str().unwrap())
        .collect();
    assert_eq!(refs, ["api", "epic", "model"]);
    let (api, epic, model) = (
        &out["tasks"][0]["task"],
        &out["tasks"][1]["task"],
        &out["tasks"][2]["task"],
    );
    assert_eq!(api["parent_id"], epic["id"]);
    assert_eq!(model["parent_id"], epic["id"]);
    assert_eq!(api["status"], "blocked");
    let (_, before) = s.get("/v1/events?limit=1000").await;
    let cyclic = json!({"tasks": [{"ref": "a", "title": "a", "blocked_by": ["b"]}, {"ref": "b", "title": "b", "blocked_by": ["a"]}]});
    let (st, v) = s.post("/v1/tasks/batch", cyclic).await;
    assert_eq!((st, error_code(&v)), (StatusCode::CONFLICT, "CYCLE"));
    let unknown = json!({"tasks": [{"ref": "a", "title": "a", "colour": "red"}]});
    let (st, v) = s.post("/v1/tasks/batch", unknown).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "INVALID_INPUT")
    );
    let (_, after) = s.get("/v1/events?limit=1000").await;
    assert_eq!(before, after);
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next event message on a WebSocket (pings skipped), within 10 s.
async fn next_event(socket: &mut Ws) -> Value {
    use futures_util::StreamExt;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message in time");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = msg.unwrap().unwrap() {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// The WebSocket stream: events in order, one JSON message each, resumable with `after`;
/// a connection without a key is refused.
async fn websocket_stream_delivers_in_order_and_resumes(backend: Backend) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = Server::start(backend).await;
    for i in 0..3 {
        s.post("/v1/tasks", json!({"title": format!("t{i}")})).await;
    }
    let ws_url = format!("{}/v1/ws", s.base.replace("http://", "ws://"));
    let connect = |query: &str| {
        let mut req = format!("{ws_url}{query}").into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", s.token).parse().unwrap(),
        );
        tokio_tungstenite::connect_async(req)
    };
    let (mut socket, _) = connect("?after=0").await.expect("connect");
    let mut seqs = Vec::new();
    for _ in 0..3 {
        seqs.push(next_event(&mut socket).await["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, [1, 2, 3]);
    drop(socket);
    let (mut resumed, _) = connect("?after=3&type=task.").await.expect("connect");
    let e = next_event(&mut resumed).await;
    assert_eq!(e["seq"], 4, "resumes after 3, nothing skipped or repeated");
    let (_, t) = s.post("/v1/tasks", json!({"title": "live"})).await;
    let mut live = next_event(&mut resumed).await;
    while live["task_id"] != t["task"]["id"] {
        live = next_event(&mut resumed).await;
    }
    assert_eq!(live["type"], "task.created");
    let anonymous = tokio_tungstenite::connect_async(ws_url.as_str()).await;
    assert!(anonymous.is_err(), "no key, no stream");
}

/// Every route, table-driven: without a key 401; with a key of another workspace, anything
/// naming this workspace's task is 404; with an observer key, every mutation is 403.
async fn every_route_checks_keys_roles_and_workspaces(backend: Backend) {
    let s = Server::start(backend).await;
    let (_, t) = s.post("/v1/tasks", json!({"title": "t"})).await;
    let id = t["task"]["id"].as_str().unwrap().to_string();
    let ws = t["task"]["workspace_id"].as_str().unwrap().to_string();
    let (_, other) = s.post("/v1/workspaces", json!({"name": "elsewhere"})).await;
    let other = format!("Bearer {}", other["key"]["token"].as_str().unwrap());
    let observer = format!("Bearer {}", s.key("observer", None).await);
    let project = t["task"]["project_id"].as_str().unwrap().to_string();
    let (_, agent) = s.post("/v1/agents/register", json!({"agent": "a"})).await;
    let agent = agent["agent"]["id"].as_str().unwrap().to_string();
    let (_, art) = s
        .post(
            &format!("/v1/tasks/{id}/artifacts"),
            json!({"name": "a.txt", "content": "a"}),
        )
        .await;
    let art = art["artifact"]["id"].as_str().unwrap().to_string();
    // (method, path, body, mutates, names an entity of this workspace)
    let routes: Vec<(&str, String, Value, bool, bool)> = vec![
        (
            "POST",
            "/v1/tasks".into(),
            json!({"title": "x"}),
            true,
            false,
        ),
        (
            "POST",
            "/v1/tasks/batch".into(),
            json!({"tasks": [{"ref": "a", "title": "a"}]}),
            true,
            false,
        ),
        ("GET", "/v1/tasks".into(), json!(null), false, false),
        ("GET", "/v1/tasks/ready".into(), json!(null), false, false),
        (
            "POST",
            "/v1/tasks/claim".into(),
            json!({"agent": "a"}),
            true,
            false,
        ),
        (
            "POST",
            "/v1/tasks/complete".into(),
            json!({"completions": [{"id": id, "lease": "lse_not_yours"}]}),
            true,
            false,
        ),
        ("GET", format!("/v1/tasks/{id}"), json!(null), false, true),
        (
            "PATCH",
            format!("/v1/tasks/{id}"),
            json!({"title": "y"}),
            true,
            true,
        ),
        (
            "GET",
            format!("/v1/tasks/{id}/brief"),
            json!(null),
            false,
            true,
        ),
        (
            "POST",
            format!("/v1/tasks/{id}/context"),
            json!({"type": "note", "content": "c"}),
            true,
            true,
        ),
        (
            "POST",
            format!("/v1/tasks/{id}/steps"),
            json!({"title": "s"}),
            true,
            true,
        ),
        (
            "POST",
            format!("/v1/tasks/{id}/steps/stp_x/done"),
            json!({}),
            true,
            true,
        ),
        (
            "POST",
            format!("/v1/tasks/{id}/dependencies"),
            json!({"blocker_id": id}),
            true,
            true,
        ),
        (
            "DELETE",
            format!("/v1/tasks/{id}/dependencies/{id}"),
            json!(null),
            true,
            true,
        ),
        (
            "POST",
            "/v1/plans".into(),
            json!({"tasks": [{"ref": "p", "title": "p"}]}),
            true,
            false,
        ),
        (
            "POST",
            format!("/v1/tasks/{id}/artifacts"),
            json!({"name": "b.txt", "content": "b"}),
            true,
            true,
        ),
        (
            "GET",
            format!("/v1/tasks/{id}/artifacts"),
            json!(null),
            false,
            true,
        ),
        (
            "GET",
            format!("/v1/artifacts/{art}"),
            json!(null),
            false,
            true,
        ),
        (
            "GET",
            format!("/v1/artifacts/{art}/content"),
            json!(null),
            false,
            true,
        ),
        ("GET", "/v1/events".into(), json!(null), false, false),
        (
            "POST",
            "/v1/workspaces".into(),
            json!({"name": "n"}),
            true,
            false,
        ),
        (
            "POST",
            format!("/v1/workspaces/{ws}/keys"),
            json!({"role": "observer"}),
            true,
            true,
        ),
        (
            "POST",
            "/v1/projects".into(),
            json!({"name": "p2"}),
            true,
            false,
        ),
        ("GET", "/v1/projects".into(), json!(null), false, false),
        (
            "GET",
            format!("/v1/projects/{project}"),
            json!(null),
            false,
            true,
        ),
        (
            "PATCH",
            format!("/v1/projects/{project}"),
            json!({"review_required": false}),
            true,
            true,
        ),
        (
            "POST",
            "/v1/agents/register".into(),
            json!({"agent": "b"}),
            true,
            false,
        ),
        (
            "POST",
            "/v1/agents/heartbeat".into(),
            json!({"agent": "a"}),
            true,
            false,
        ),
        ("GET", "/v1/agents".into(), json!(null), false, false),
        (
            "GET",
            format!("/v1/agents/{agent}"),
            json!(null),
            false,
            true,
        ),
        (
            "PATCH",
            format!("/v1/agents/{agent}"),
            json!({"status": "active"}),
            true,
            true,
        ),
        (
            "GET",
            format!("/v1/workspaces/{ws}"),
            json!(null),
            false,
            true,
        ),
        (
            "PATCH",
            format!("/v1/workspaces/{ws}"),
            json!({"killed": false}),
            true,
            true,
        ),
        ("GET", "/v1/events/stream".into(), json!(null), false, false),
        ("GET", "/v1/ws".into(), json!(null), false, false),
        ("GET", "/v1/whoami".into(), json!(null), false, false),
        ("GET", "/metrics".into(), json!(null), false, false),
    ];
    let mut ops: Vec<(&str, String, Value, bool, bool)> = Vec::new();
    let lease = |extra: Value| {
        let mut body = json!({"lease": "lse_not_yours"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    for (op, body) in [
        ("start", lease(json!({}))),
        ("heartbeat", lease(json!({}))),
        ("release", lease(json!({}))),
        ("complete", lease(json!({}))),
        ("fail", lease(json!({"error": "e"}))),
        ("block", lease(json!({"reason": "r"}))),
        ("wait", lease(json!({"reason": "r"}))),
        ("resume", lease(json!({}))),
        ("publish", json!({})),
        ("cancel", json!({})),
        ("retry", json!({})),
        ("unblock", json!({})),
        ("approve", json!({})),
        ("reject", json!({"reason": "r"})),
    ] {
        ops.push(("POST", format!("/v1/tasks/{id}/{op}"), body, true, true));
    }
    // The table covers every route of the OpenAPI document (which is generated from the
    // router), so a new route cannot skip these checks.
    let template = |path: &str| {
        path.replace(&format!("dependencies/{id}"), "dependencies/{blocker}")
            .replace(&id, "{id}")
            .replace(&ws, "{id}")
            .replace(&project, "{id}")
            .replace(&agent, "{name}")
            .replace(&art, "{id}")
            .replace("stp_x", "{step}")
    };
    let covered: std::collections::BTreeSet<String> = routes
        .iter()
        .chain(&ops)
        .map(|(method, path, ..)| format!("{method} {}", template(path)))
        .collect();
    let document = serde_json::to_value(baton_server::openapi()).unwrap();
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if !["/healthz", "/readyz", "/openapi.json"].contains(&path.as_str()) {
                documented.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    assert_eq!(
        covered, documented,
        "the table must walk every documented route"
    );
    for (method, path, body, mutates, names_task) in routes.into_iter().chain(ops) {
        let body = (!body.is_null()).then_some(body);
        let (st, v) = s
            .call(method, &path, body.clone(), &[("authorization", "")])
            .await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            "no key: {method} {path}"
        );
        if names_task {
            let (st, v) = s
                .call(
                    method,
                    &path,
                    body.clone(),
                    &[("authorization", other.as_str())],
                )
                .await;
            assert_eq!(
                (st, error_code(&v)),
                (StatusCode::NOT_FOUND, "NOT_FOUND"),
                "other workspace: {method} {path}: {v}"
            );
        }
        if mutates {
            let (st, v) = s
                .call(method, &path, body, &[("authorization", observer.as_str())])
                .await;
            assert_eq!(
                (st, error_code(&v)),
                (StatusCode::FORBIDDEN, "FORBIDDEN"),
                "observer: {method} {path}"
            );
        }
    }
}

/// A subscriber that stops reading does not hold writers up: thousands of writes complete
/// while it sleeps, and when it reads again it gets every event, in order, none repeated.
async fn slow_stream_consumer_never_blocks_writers(backend: Backend) {
    let s = Server::start(backend).await;
    let mut stalled = Sse::open(&s, "?after=0", None).await;
    let first = stalled.next().await.0;
    // The subscriber now reads nothing while 1,500 tasks are written (far past its buffer).
    let planner = s.baton.actor("default", "planner").await.unwrap();
    let mut writers = Vec::new();
    for w in 0..3 {
        let (baton, actor) = (s.baton.clone(), planner.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..500 {
                let req = baton_core::api::CreateTask {
                    title: format!("w{w}-{i}"),
                    ..Default::default()
                };
                baton.create_task(&actor, None, req).await.unwrap();
            }
        }));
    }
    for w in writers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("writers finish while the reader stalls")
            .unwrap();
    }
    let (_, last) = s.get("/v1/events?after=1500&limit=1000").await;
    let newest = last["events"].as_array().unwrap().last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    let mut expected = first + 1;
    while expected <= newest {
        let (id, _, _) = stalled.next().await;
        assert_eq!(id, expected, "every event once, in order");
        expected += 1;
    }
}

/// Projects carry default policies and a kill switch; agents register, heartbeat and list.
async fn projects_and_agents(backend: Backend) {
    let s = Server::start(backend).await;
    let (st, p) = s
        .post(
            "/v1/projects",
            json!({"name": "web", "lease_ttl": "45s", "review_required": true}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    assert_eq!(p["project"]["lease_ttl"], "45s");
    let pid = p["project"]["id"].as_str().unwrap().to_string();
    let (st, dup) = s.post("/v1/projects", json!({"name": "web"})).await;
    assert_eq!(
        (st, error_code(&dup)),
        (StatusCode::CONFLICT, "ALREADY_EXISTS")
    );
    let (_, t) = s
        .post("/v1/tasks", json!({"title": "page", "project": "web"}))
        .await;
    assert_eq!(t["task"]["project_id"], pid.as_str());
    assert_eq!(t["task"]["lease_ttl"], "45s", "the project's default");
    assert_eq!(t["task"]["review_required"], true);
    let (_, list) = s.get("/v1/projects").await;
    let names: Vec<&str> = list["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "web"]);

    // The kill switch: nothing of the project is claimable while it is set.
    let (st, killed) = s
        .call(
            "PATCH",
            "/v1/projects/web",
            Some(json!({"killed": true})),
            &[],
        )
        .await;
    assert_eq!(
        (st, killed["project"]["killed"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (_, none) = s.post("/v1/tasks/claim", json!({"agent": "w"})).await;
    assert_eq!(none["claims"], json!([]));
    s.call(
        "PATCH",
        &format!("/v1/projects/{pid}"),
        Some(json!({"killed": false})),
        &[],
    )
    .await;
    let (_, one) = s.post("/v1/tasks/claim", json!({"agent": "w"})).await;
    assert_eq!(one["claims"].as_array().unwrap().len(), 1);
    let (st, bad) = s
        .call(
            "PATCH",
            "/v1/projects/web",
            Some(json!({"lease_ttl": "10ms"})),
            &[],
        )
        .await;
    assert_eq!(
        (st, error_code(&bad)),
        (StatusCode::BAD_REQUEST, "INVALID_DURATION")
    );

    // Agents: register with capabilities, heartbeat, list, read; unknown agents are 404.
    let (st, a) = s
        .post(
            "/v1/agents/register",
            json!({"agent": "reviewer-1", "capabilities": ["review", "rust"]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{a}");
    assert_eq!(a["agent"]["capabilities"], json!(["review", "rust"]));
    let (_, hb) = s
        .post("/v1/agents/heartbeat", json!({"agent": "reviewer-1"}))
        .await;
    assert_eq!(hb["agent"]["name"], "reviewer-1");
    // An Idempotency-Key holds here as on every write: the same key for another agent is
    // refused.
    let keyed = [("idempotency-key", "hb-1")];
    let body = |agent: &str| Some(json!({"agent": agent}));
    let (st, first) = s
        .call("POST", "/v1/agents/heartbeat", body("reviewer-1"), &keyed)
        .await;
    assert_eq!(st, StatusCode::OK, "{first}");
    let (st, v) = s
        .call("POST", "/v1/agents/heartbeat", body("w"), &keyed)
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_MISMATCH")
    );
    let (_, all) = s.get("/v1/agents").await;
    assert_eq!(
        all["agents"].as_array().unwrap().len(),
        2,
        "w (by its claim) and reviewer-1"
    );
    let (_, one) = s.get("/v1/agents/reviewer-1").await;
    assert_eq!(one["agent"]["id"], a["agent"]["id"]);
    let (st, missing) = s
        .post("/v1/agents/heartbeat", json!({"agent": "ghost"}))
        .await;
    assert_eq!(
        (st, error_code(&missing)),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
    // A worker key bound to an agent registers only as that agent.
    let bound = format!("Bearer {}", s.key("worker", Some("w")).await);
    let (st, v) = s
        .call(
            "POST",
            "/v1/agents/register",
            Some(json!({"agent": "someone-else"})),
            &[("authorization", bound.as_str())],
        )
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::FORBIDDEN, "FORBIDDEN"));

    // An agent's kill switch: its lease is revoked at once, its claims are refused.
    let (_, t) = s.post("/v1/tasks", json!({"title": "agent work"})).await;
    let (_, c) = s.post("/v1/tasks/claim", json!({"agent": "w2"})).await;
    let claimed = &c["claims"][0];
    assert_eq!(claimed["task"]["id"], t["task"]["id"], "{c}");
    let token = claimed["lease"]["token"].as_str().unwrap();
    let (st, bad) = s
        .call(
            "PATCH",
            "/v1/agents/w2",
            Some(json!({"status": "gone"})),
            &[],
        )
        .await;
    assert_eq!(
        (st, error_code(&bad)),
        (StatusCode::BAD_REQUEST, "INVALID_INPUT")
    );
    let (st, killed) = s
        .call(
            "PATCH",
            "/v1/agents/w2",
            Some(json!({"status": "killed"})),
            &[],
        )
        .await;
    assert_eq!(
        (st, killed["agent"]["status"].as_str()),
        (StatusCode::OK, Some("killed"))
    );
    let task_path = format!("/v1/tasks/{}", t["task"]["id"].as_str().unwrap());
    let (st, hb) = s
        .post(&format!("{task_path}/heartbeat"), json!({"lease": token}))
        .await;
    assert_eq!(
        (st, error_code(&hb)),
        (StatusCode::FORBIDDEN, "KILLED"),
        "{hb}"
    );
    let (st, refused) = s.post("/v1/tasks/claim", json!({"agent": "w2"})).await;
    assert_eq!(
        (st, error_code(&refused)),
        (StatusCode::FORBIDDEN, "KILLED")
    );
    assert!(refused["error"]["hint"].is_string(), "{refused}");
    let (_, task) = s.get(&task_path).await;
    assert_eq!(task["task"]["status"], "ready", "back in the queue");

    // The workspace's: an admin sets it; every claim is refused until it is lifted.
    let (_, me) = s.get("/v1/whoami").await;
    let ws_path = format!("/v1/workspaces/{}", me["workspace_id"].as_str().unwrap());
    let planner = format!("Bearer {}", s.key("planner", None).await);
    let (st, v) = s
        .call(
            "PATCH",
            &ws_path,
            Some(json!({"killed": true})),
            &[("authorization", planner.as_str())],
        )
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let (st, ws) = s
        .call("PATCH", &ws_path, Some(json!({"killed": true})), &[])
        .await;
    assert_eq!(
        (st, ws["workspace"]["killed"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (_, read) = s.get(&ws_path).await;
    assert_eq!(read["workspace"]["killed"], true);
    let (st, refused) = s.post("/v1/tasks/claim", json!({"agent": "w3"})).await;
    assert_eq!(
        (st, error_code(&refused)),
        (StatusCode::FORBIDDEN, "KILLED")
    );
    s.call("PATCH", &ws_path, Some(json!({"killed": false})), &[])
        .await;
    let (st, again) = s.post("/v1/tasks/claim", json!({"agent": "w3"})).await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(again["claims"].as_array().map(Vec::len), Some(1), "{again}");

    // Every change above is in the log, so a replay rebuilds the same projects and agents.
    let (_, events) = s.get("/v1/events?limit=1000").await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for kind in [
        "project.updated",
        "agent.registered",
        "agent.updated",
        "workspace.updated",
        "task.lease_revoked",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
}

/// The OpenAPI document is 3.1, served at `/openapi.json` without a key, and names every
/// error response and the bearer scheme on every authenticated operation.
async fn openapi_document_is_served_and_complete(backend: Backend) {
    let s = Server::start(backend).await;
    let (st, doc) = s
        .call("GET", "/openapi.json", None, &[("authorization", "")])
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc, serde_json::to_value(baton_server::openapi()).unwrap());
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            assert!(op["summary"].is_string(), "{method} {path} has no summary");
            if ["/healthz", "/readyz", "/openapi.json"].contains(&path.as_str()) {
                continue;
            }
            for status in ["400", "401", "403", "404", "413", "429", "503"] {
                assert_eq!(
                    op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
    }
    assert!(operations >= 40, "{operations} operations");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let codes = &doc["components"]["schemas"]["Code"]["enum"];
    assert!(codes.as_array().unwrap().contains(&json!("LEASE_LOST")));
    let (st, v) = s.call("PUT", "/v1/tasks", Some(json!({})), &[]).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
    );
}

/// `POST /v1/tasks/complete`: each completion stands or fails alone, answers come in
/// request order, bad bodies change nothing, and an idempotency key covers the whole call.
async fn complete_many_answers_each_item(backend: Backend) {
    let s = Server::start(backend).await;
    let mut ids = Vec::new();
    for title in ["a", "b", "c", "d", "e", "f"] {
        let (_, t) = s.post("/v1/tasks", json!({"title": title})).await;
        ids.push(t["task"]["id"].as_str().unwrap().to_string());
    }
    let (_, claims) = s
        .post("/v1/tasks/claim", json!({"agent": "w", "count": 6}))
        .await;
    let lease = |id: &str| {
        claims["claims"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["task"]["id"] == id)
            .unwrap()["lease"]["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a, b, c, d) = (&ids[0], &ids[1], &ids[2], &ids[3]);

    // Bad bodies: a structured 4xx, nothing completed.
    let too_many: Vec<Value> = (0..101)
        .map(|_| json!({"id": a, "lease": lease(a)}))
        .collect();
    for body in [
        json!({"completions": []}),
        json!({"completions": too_many}),
        json!({"completions": [{"id": a, "lease": lease(a), "colour": "red"}]}),
        json!({"completions": [{"id": a}]}),
        json!({"items": []}),
    ] {
        let (st, v) = s.post("/v1/tasks/complete", body.clone()).await;
        assert!(st.is_client_error(), "{body}: {st} {v}");
        error_code(&v);
    }
    let (_, t) = s.get(&format!("/v1/tasks/{a}")).await;
    assert_eq!(
        t["task"]["status"], "claimed",
        "a refused call changed nothing"
    );

    // One lost lease among good ones: only that item is refused.
    let (st, out) = s
        .post(
            "/v1/tasks/complete",
            json!({"completions": [
                {"id": a, "lease": lease(a), "outcome": "ok"},
                {"id": b, "lease": "lse_not_yours"},
                {"id": c, "lease": lease(c), "output": {"n": 1}},
            ]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{out}");
    let results = out["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["task"]["id"], *a);
    assert_eq!(results[0]["task"]["status"], "done");
    assert_eq!(error_code(&results[1]), "LEASE_LOST", "{out}");
    assert_eq!(results[2]["task"]["status"], "done");
    assert_eq!(results[2]["task"]["output"], json!({"n": 1}));
    let (_, t) = s.get(&format!("/v1/tasks/{b}")).await;
    assert_eq!(
        t["task"]["status"], "claimed",
        "the refused item is untouched"
    );

    // Another workspace's key sees nothing of these tasks.
    let (_, ws) = s.post("/v1/workspaces", json!({"name": "other"})).await;
    let other = format!("Bearer {}", ws["key"]["token"].as_str().unwrap());
    let (st, out) = s
        .call(
            "POST",
            "/v1/tasks/complete",
            Some(json!({"completions": [{"id": b, "lease": lease(b)}]})),
            &[("authorization", other.as_str())],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{out}");
    assert_eq!(error_code(&out["results"][0]), "NOT_FOUND");

    // Idempotency: a repeat returns the stored answers; another body is refused whole.
    let body = json!({"completions": [
        {"id": b, "lease": lease(b)},
        {"id": d, "lease": lease(d)},
    ]});
    let key = [("idempotency-key", "complete-b-d")];
    let (st, first) = s
        .call("POST", "/v1/tasks/complete", Some(body.clone()), &key)
        .await;
    assert_eq!(st, StatusCode::OK, "{first}");
    assert_eq!(first["results"][0]["task"]["status"], "done");
    assert_eq!(first["results"][1]["task"]["status"], "done");
    let (st, again) = s.call("POST", "/v1/tasks/complete", Some(body), &key).await;
    assert_eq!((st, &again), (StatusCode::OK, &first), "the stored answers");
    let (st, v) = s
        .call(
            "POST",
            "/v1/tasks/complete",
            Some(json!({"completions": [{"id": b, "lease": lease(b), "outcome": "x"}]})),
            &key,
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_MISMATCH")
    );

    // A key whose first call committed only its second item is still bound to that call:
    // another body under it is refused whole and writes nothing.
    let (e, f) = (&ids[4], &ids[5]);
    let key = [("idempotency-key", "half-done")];
    let (st, out) = s
        .call(
            "POST",
            "/v1/tasks/complete",
            Some(json!({"completions": [{"id": e, "lease": "lse_not_yours"}, {"id": f, "lease": lease(f)}]})),
            &key,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{out}");
    assert_eq!(error_code(&out["results"][0]), "LEASE_LOST");
    assert_eq!(out["results"][1]["task"]["status"], "done");
    let (st, v) = s
        .call(
            "POST",
            "/v1/tasks/complete",
            Some(json!({"completions": [{"id": e, "lease": lease(e)}]})),
            &key,
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_MISMATCH")
    );
    let (_, t) = s.get(&format!("/v1/tasks/{e}")).await;
    assert_eq!(
        t["task"]["status"], "claimed",
        "the refused call wrote nothing"
    );
}

/// `POST /v1/tasks/complete` with `next`: the completions and the agent's next claim in one
/// call. Bad input in `next` refuses the whole call with nothing written; a key bound to
/// another agent is 403; an idempotency key covers the claim too (a repeat returns the same
/// lease).
async fn complete_with_next_claims_in_the_same_call(backend: Backend) {
    let s = Server::start(backend).await;
    let create = |title: &'static str| {
        let s = &s;
        async move {
            let (st, t) = s.post("/v1/tasks", json!({"title": title})).await;
            assert_eq!(st, StatusCode::CREATED, "{t}");
            t["task"]["id"].as_str().unwrap().to_string()
        }
    };
    let claim = |agent: &'static str| {
        let s = &s;
        async move {
            let (_, c) = s.post("/v1/tasks/claim", json!({"agent": agent})).await;
            let c = &c["claims"][0];
            (
                c["task"]["id"].as_str().unwrap().to_string(),
                c["lease"]["token"].as_str().unwrap().to_string(),
            )
        }
    };
    let status = |id: String| {
        let s = &s;
        async move { s.get(&format!("/v1/tasks/{id}")).await.1["task"]["status"].clone() }
    };
    let t1 = create("one").await;
    let t2 = create("two").await;
    let (id, lease) = claim("w").await;
    assert_eq!(id, t1, "oldest first");

    // The completion stands and the next task comes back with a lease of its own.
    let (st, out) = s
        .post(
            "/v1/tasks/complete",
            json!({"completions": [{"id": t1, "lease": lease}], "next": {"agent": "w"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{out}");
    assert_eq!(out["results"][0]["task"]["status"], "done", "{out}");
    let next = out["next"]["claims"].as_array().unwrap();
    assert_eq!(next.len(), 1, "{out}");
    assert_eq!(next[0]["task"]["id"], t2.as_str());
    assert_eq!(next[0]["task"]["status"], "claimed");
    let lease2 = next[0]["lease"]["token"].as_str().unwrap().to_string();
    assert_eq!(status(t2.clone()).await, "claimed");
    let (_, agent) = s.get("/v1/agents/w").await;
    assert_eq!(
        next[0]["run"]["agent_id"], agent["agent"]["id"],
        "claimed as w"
    );

    // Nothing left to claim: an empty list, the completion still made.
    let (st, out) = s
        .post(
            "/v1/tasks/complete",
            json!({"completions": [{"id": t2, "lease": lease2}], "next": {"agent": "w"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{out}");
    assert_eq!(out["results"][0]["task"]["status"], "done");
    assert_eq!(out["next"], json!({"claims": []}));

    // Bad input in `next`: a structured 4xx for the whole call, nothing completed.
    create("three").await;
    let (t3, lease3) = claim("w").await;
    let worker_w = format!("Bearer {}", s.key("worker", Some("w")).await);
    let as_w = [("authorization", worker_w.as_str())];
    for (body, headers) in [
        (json!({"agent": "w", "count": 0}), &[][..]),
        (json!({"agent": "w", "wait": "61s"}), &[][..]),
        (json!({"agent": "w", "lease_ttl": "10ms"}), &[][..]),
        (json!({"agent": " "}), &[][..]),
        (json!({"agent": "w", "capabilities": ["a,b"]}), &[][..]),
        (json!({"agent": "w", "colour": "red"}), &[][..]),
        (json!({"count": 1}), &[][..]),
        // A worker key bound to agent w may not claim as another agent.
        (json!({"agent": "v"}), &as_w[..]),
    ] {
        let req = json!({"completions": [{"id": t3, "lease": lease3}], "next": body});
        let (st, v) = s
            .call("POST", "/v1/tasks/complete", Some(req), headers)
            .await;
        assert!(st.is_client_error(), "{body}: {st} {v}");
        if !headers.is_empty() {
            assert_eq!((st, error_code(&v)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
        }
        error_code(&v);
    }
    assert_eq!(
        status(t3.clone()).await,
        "claimed",
        "refused calls changed nothing"
    );

    // An idempotency key covers the claim: a repeat returns the same lease; another `next`
    // under the key is refused whole.
    let t4 = create("four").await;
    let body = json!({"completions": [{"id": t3, "lease": lease3}], "next": {"agent": "w"}});
    let key = [("idempotency-key", "finish-three")];
    let (st, first) = s
        .call("POST", "/v1/tasks/complete", Some(body.clone()), &key)
        .await;
    assert_eq!(st, StatusCode::OK, "{first}");
    assert_eq!(first["next"]["claims"][0]["task"]["id"], t4.as_str());
    let (st, again) = s.call("POST", "/v1/tasks/complete", Some(body), &key).await;
    assert_eq!((st, &again), (StatusCode::OK, &first), "the stored answers");
    let other =
        json!({"completions": [{"id": t3, "lease": lease3}], "next": {"agent": "w", "count": 2}});
    let (st, v) = s
        .call("POST", "/v1/tasks/complete", Some(other), &key)
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_MISMATCH")
    );
    let (_, events) = s.get("/v1/events?limit=1000").await;
    let claimed_t4 = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "task.claimed" && e["task_id"] == t4.as_str())
        .count();
    assert_eq!(claimed_t4, 1, "the repeat claimed nothing more");

    // A dependent freed by the completion: on the embedded store the claim runs after the
    // completion in its transaction, so it is offered at once; on PostgreSQL the claim may
    // run beside it, so it is claimable at the latest right after.
    let lease4 = first["next"]["claims"][0]["lease"]["token"]
        .as_str()
        .unwrap();
    let (_, dependent) = s
        .post(
            "/v1/tasks",
            json!({"title": "after four", "blocked_by": [t4]}),
        )
        .await;
    let dependent = dependent["task"]["id"].as_str().unwrap().to_string();
    let (st, out) = s
        .post(
            "/v1/tasks/complete",
            json!({"completions": [{"id": t4, "lease": lease4}], "next": {"agent": "w"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{out}");
    let offered = out["next"]["claims"][0]["task"]["id"].as_str();
    match backend {
        Backend::Sqlite => assert_eq!(offered, Some(dependent.as_str()), "{out}"),
        Backend::Postgres => {
            if offered.is_none() {
                assert_eq!(claim("w").await.0, dependent);
            }
        }
    }
    assert_eq!(status(dependent).await, "claimed");

    // Many completions at once (more than a small join handles in place): the claim still
    // comes after every one of them, so the dependent of the last is offered to it.
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(create("many").await);
    }
    let (_, many) = s
        .post("/v1/tasks/claim", json!({"agent": "w", "count": 40}))
        .await;
    let completions: Vec<Value> = many["claims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| json!({"id": c["task"]["id"], "lease": c["lease"]["token"]}))
        .collect();
    assert_eq!(completions.len(), 40);
    let (_, last) = s
        .post(
            "/v1/tasks",
            json!({"title": "after many", "blocked_by": [ids[39]]}),
        )
        .await;
    let last = last["task"]["id"].as_str().unwrap().to_string();
    let (st, out) = s
        .post(
            "/v1/tasks/complete",
            json!({"completions": completions, "next": {"agent": "w"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{out}");
    assert!(out["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["task"]["status"] == "done"));
    if backend == Backend::Sqlite {
        assert_eq!(
            out["next"]["claims"][0]["task"]["id"],
            last.as_str(),
            "{}",
            out["next"]
        );
    }
}

/// A store far behind refuses new work first: claims and creation get 429 `RATE_LIMITED`
/// with when to come back (body and `Retry-After`) and write nothing, while the operations
/// on a held lease still go through.
async fn a_store_far_behind_refuses_new_work_first(backend: Backend) {
    let s = Server::start(backend).await;
    for title in ["in hand", "also in hand"] {
        s.post("/v1/tasks", json!({"title": title})).await;
    }
    let (_, claims) = s
        .post("/v1/tasks/claim", json!({"agent": "w1", "count": 2}))
        .await;
    let held = |i: usize, field: &str| {
        let c = &claims["claims"][i];
        let v = if field == "id" {
            &c["task"]["id"]
        } else {
            &c["lease"]["token"]
        };
        v.as_str().unwrap().to_string()
    };
    let (id, lease) = (held(0, "id"), held(0, "lease"));
    let (id2, lease2) = (held(1, "id"), held(1, "lease"));
    // A second server on the same store whose backlog is always past the new-work limit.
    let limits = baton_core::admission::WriteLimits {
        new_work: 0,
        held_work: 64,
    };
    let behind =
        Baton::new(s.baton.store().clone(), Arc::new(SystemClock)).with_write_limits(limits);
    let b = Server::over(behind, s.token.clone()).await;
    for (path, body) in [
        ("/v1/tasks", json!({"title": "more"})),
        ("/v1/tasks/claim", json!({"agent": "w2"})),
    ] {
        let resp = b
            .http
            .post(format!("{}{path}", b.base))
            .bearer_auth(&b.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        let retry_after: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry_after >= 1, "{path}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(error_code(&v), "RATE_LIMITED", "{v}");
        assert_eq!(v["error"]["retryable"], true);
        assert!(
            v["error"]["details"]["retry_after_ms"].as_u64().unwrap() >= 100,
            "{v}"
        );
    }
    let (_, list) = s.get("/v1/tasks").await;
    assert_eq!(
        list["tasks"].as_array().unwrap().len(),
        2,
        "nothing written"
    );
    let (st, hb) = b
        .post(
            &format!("/v1/tasks/{id}/heartbeat"),
            json!({"lease": lease}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{hb}");
    let (st, done) = b
        .post(&format!("/v1/tasks/{id}/complete"), json!({"lease": lease}))
        .await;
    assert_eq!(st, StatusCode::OK, "{done}");
    assert_eq!(done["task"]["status"], "done");
    // A completion that asks for the next claim: the completion is taken, the claim is
    // refused in `next` with when to come back.
    let (st, done) = b
        .post(
            "/v1/tasks/complete",
            json!({"completions": [{"id": id2, "lease": lease2}], "next": {"agent": "w1"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{done}");
    assert_eq!(done["results"][0]["task"]["status"], "done", "{done}");
    assert_eq!(error_code(&done["next"]), "RATE_LIMITED", "{done}");
    assert!(
        done["next"]["error"]["details"]["retry_after_ms"].is_u64(),
        "{done}"
    );
}

/// Artifacts over HTTP: attached as text or base64 (by its holder, under its run), listed,
/// read back as JSON or as the bytes themselves with their media type and hash; bad input
/// is refused with a structured error and attaches nothing.
async fn artifacts_over_http(backend: Backend) {
    let s = Server::start(backend).await;
    let (_, t) = s.post("/v1/tasks", json!({"title": "chart it"})).await;
    let id = t["task"]["id"].as_str().unwrap().to_string();
    let path = format!("/v1/tasks/{id}/artifacts");
    let (st, text) = s
        .post(
            &path,
            json!({"name": "notes.md", "media_type": "text/markdown", "content": "# hi"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{text}");
    assert_eq!(text["artifact"]["size"], 4);
    let worker = format!("Bearer {}", s.key("worker", Some("w1")).await);
    let as_worker = [("authorization", worker.as_str())];
    let (_, claimed) = s
        .call(
            "POST",
            "/v1/tasks/claim",
            Some(json!({"agent": "w1"})),
            &as_worker,
        )
        .await;
    let lease = claimed["claims"][0]["lease"]["token"].as_str().unwrap();
    let run = claimed["claims"][0]["run"]["id"].as_str().unwrap();
    let bytes: Vec<u8> = (0..=255u8).collect();
    let encoded = base64_encode(&bytes);
    let body = json!({"name": "all.bin", "content_base64": encoded, "lease": lease});
    let (st, binary) = s.call("POST", &path, Some(body), &as_worker).await;
    assert_eq!(st, StatusCode::CREATED, "{binary}");
    assert_eq!(binary["artifact"]["run_id"], run);
    assert_eq!(binary["artifact"]["media_type"], "application/octet-stream");
    let bin_id = binary["artifact"]["id"].as_str().unwrap();

    let (_, listed) = s.get(&path).await;
    let names: Vec<&str> = listed["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["notes.md", "all.bin"]);
    let text_id = text["artifact"]["id"].as_str().unwrap();
    let (_, read) = s
        .get(&format!("/v1/artifacts/{text_id}?content=true"))
        .await;
    assert_eq!(read["content"], "# hi", "{read}");
    let (_, read) = s.get(&format!("/v1/artifacts/{bin_id}?content=true")).await;
    assert_eq!(read["content_base64"], encoded.as_str());
    let (_, described) = s.get(&format!("/v1/artifacts/{bin_id}")).await;
    assert!(described.get("content_base64").is_none(), "{described}");
    let raw = s
        .http
        .get(format!("{}/v1/artifacts/{bin_id}/content", s.base))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::OK);
    assert_eq!(raw.headers()["content-type"], "application/octet-stream");
    assert_eq!(raw.headers()["content-disposition"], "attachment");
    let sha = binary["artifact"]["sha256"].as_str().unwrap();
    assert_eq!(raw.headers()["etag"], format!("\"{sha}\"").as_str());
    assert_eq!(raw.bytes().await.unwrap().to_vec(), bytes);
    let raw = s
        .http
        .get(format!("{}/v1/artifacts/{text_id}/content", s.base))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-type"], "text/markdown");
    assert_eq!(raw.text().await.unwrap(), "# hi");

    // Refused, attaching nothing, storing no bytes.
    let objects = s._dir.as_ref().unwrap().path().join("objects");
    let files = || count_files(&objects);
    let stored = files();
    assert_eq!(stored, 2);
    let (_, before) = s.get("/v1/events").await;
    let refused = [
        (
            json!({"name": "x"}),
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            json!({"name": "x", "content_base64": "%%%"}),
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            json!({"name": "x", "content": "x", "content_base64": "eA=="}),
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            json!({"name": "x", "content": "x", "media_type": "text"}),
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            json!({"name": "a\nb", "content": "x"}),
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            json!({"name": "x", "content": "x", "size": 1}),
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            json!({"name": "x", "content": "x".repeat(2 * 1024 * 1024 + 1)}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "TOO_LARGE",
        ),
        (
            json!({"name": "x", "content": "x", "lease": "lse_1_stale"}),
            StatusCode::CONFLICT,
            "LEASE_LOST",
        ),
    ];
    for (body, status, code) in refused {
        let (st, v) = s.post(&path, body.clone()).await;
        assert_eq!((st, error_code(&v)), (status, code), "{v}");
    }
    let (st, v) = s
        .post(
            "/v1/tasks/tsk_nope/artifacts",
            json!({"name": "x", "content": "x"}),
        )
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    let (st, v) = s.get(&format!("/v1/artifacts/{text_id}?content=yes")).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "INVALID_INPUT")
    );
    let (st, v) = s.get("/v1/artifacts/art_nope/content").await;
    assert_eq!((st, error_code(&v)), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    let (_, after) = s.get("/v1/events").await;
    assert_eq!(before["events"], after["events"], "nothing was written");
    assert_eq!(files(), stored, "no bytes were stored");
    let (_, listed) = s.get(&path).await;
    assert_eq!(listed["artifacts"].as_array().unwrap().len(), 2);
}

/// The files under `dir`, however deep.
fn count_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => count_files(&e.path()),
                    _ => 1,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Standard base64 with padding, for the test's own bodies.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// PATCH with null clears what a task may be without (merge-patch style), keeps what is
/// left out, and refuses null for a field the task needs, writing nothing.
async fn patch_null_clears_optional_fields(backend: Backend) {
    let s = Server::start(backend).await;
    let (_, t) = s
        .post(
            "/v1/tasks",
            json!({"title": "t", "description": "d", "due_at": "2031-01-01T00:00:00Z",
                   "timeout": "1h", "input": {"n": 1}, "budget": {"max_cost": 1.5},
                   "labels": ["x"]}),
        )
        .await;
    let path = format!("/v1/tasks/{}", t["task"]["id"].as_str().unwrap());
    let (st, v) = s
        .call(
            "PATCH",
            &path,
            Some(json!({"description": null, "due_at": null, "timeout": null,
                        "input": null, "labels": null, "priority": 4})),
            &[],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let task = &v["task"];
    for gone in ["description", "due_at", "timeout", "input"] {
        assert!(task.get(gone).is_none(), "{gone} still set: {task}");
    }
    assert_eq!(task["labels"], json!([]));
    assert_eq!(task["budget"], json!({"max_cost": 1.5}), "left out is kept");
    assert_eq!(task["priority"], 4);
    let (_, before) = s.get("/v1/events?limit=1000").await;
    for field in ["title", "priority", "type", "lease_ttl", "review_required"] {
        let (st, v) = s
            .call(
                "PATCH",
                &path,
                Some(json!({ field: null, "budget": null })),
                &[],
            )
            .await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
            "{field}: {v}"
        );
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("cannot be without"), "{message}");
    }
    let (_, after) = s.get("/v1/events?limit=1000").await;
    assert_eq!(before, after, "a refused null wrote nothing");
    assert_eq!(
        s.get(&path).await.1["task"]["budget"],
        json!({"max_cost": 1.5})
    );
}

/// Concurrency limits over HTTP: a keyed task waits while its key's limit is leased, an
/// agent at its max_concurrency is 409 AT_CAPACITY (structured, not retryable), PATCH
/// null lifts the limit, and a limit out of range is 400 INVALID_INPUT.
async fn concurrency_limits_over_http(backend: Backend) {
    let s = Server::start(backend).await;
    let (st, v) = s
        .post(
            "/v1/agents/register",
            json!({"agent": "w", "max_concurrency": 1}),
        )
        .await;
    assert_eq!(
        (st, &v["agent"]["max_concurrency"]),
        (StatusCode::OK, &json!(1)),
        "{v}"
    );
    for title in ["a", "b"] {
        let task = json!({"title": title, "concurrency_key": "area:db"});
        let (st, v) = s.post("/v1/tasks", task).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        assert_eq!(v["task"]["concurrency_limit"], 1, "{v}");
    }
    let (st, v) = s.post("/v1/tasks/claim", json!({"agent": "w"})).await;
    assert_eq!(
        (st, v["claims"].as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );
    let (st, v) = s.post("/v1/tasks/claim", json!({"agent": "w"})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(error_code(&v), "AT_CAPACITY");
    assert_eq!(v["error"]["retryable"], false);
    assert_eq!(v["error"]["details"]["held"], 1, "{v}");
    let (st, v) = s.post("/v1/tasks/claim", json!({"agent": "other"})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["claims"], json!([]), "b waits for the key");
    let unlimited = json!({"max_concurrency": null});
    let (st, v) = s.call("PATCH", "/v1/agents/w", Some(unlimited), &[]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["agent"].get("max_concurrency").is_none(), "{v}");
    let bad = json!({"title": "c", "concurrency_key": "k", "concurrency_limit": 0});
    let (st, v) = s.post("/v1/tasks", bad).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "INVALID_INPUT")
    );
    // A worker registers itself, but may not set (or lift) its own limit.
    let worker = s.key("worker", Some("w")).await;
    let register = |body: Value| {
        let request = s.http.post(format!("{}/v1/agents/register", s.base));
        let request = request.bearer_auth(&worker).json(&body);
        async move {
            let resp = request.send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    let (st, v) = register(json!({"agent": "w", "max_concurrency": 10000})).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::FORBIDDEN, "FORBIDDEN"),
        "{v}"
    );
    let (_, v) = s.get("/v1/agents/w").await;
    assert!(v["agent"].get("max_concurrency").is_none(), "{v}");
    let (st, v) = register(json!({"agent": "w"})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

/// Every response carries its request's id: the caller's `X-Request-Id`, or one the server
/// made up; the events a request appends record it. A malformed id is 400 INVALID_INPUT
/// (after the key check) and changes nothing.
async fn request_ids_are_answered_and_recorded(backend: Backend) {
    let s = Server::start(backend).await;
    let send = |id: Option<&str>, body: Value| {
        let mut request = s.http.post(format!("{}/v1/tasks", s.base));
        request = request.bearer_auth(&s.token).json(&body);
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        async move {
            let resp = request.send().await.unwrap();
            let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
            (resp.status(), id, resp.json::<Value>().await.unwrap())
        }
    };
    let (st, id, v) = send(Some("agent-7/call-1"), json!({"title": "given"})).await;
    assert_eq!(
        (st, id.as_str()),
        (StatusCode::CREATED, "agent-7/call-1"),
        "{v}"
    );
    let given = v["task"]["id"].as_str().unwrap().to_string();
    let (st, made_up, v) = send(None, json!({"title": "made up"})).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert!(made_up.starts_with("req_"), "{made_up}");
    let other = v["task"]["id"].as_str().unwrap().to_string();
    // A claim's events name the claim's request, not the creation's.
    let claim = s.http.post(format!("{}/v1/tasks/claim", s.base));
    let claim = claim
        .bearer_auth(&s.token)
        .json(&json!({"agent": "w", "count": 2}));
    let resp = claim
        .header("x-request-id", "claim-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, v) = s.get("/v1/events").await;
    let request_of = |kind: &str, task: &str| -> Value {
        let events = v["events"].as_array().unwrap();
        let event = events
            .iter()
            .find(|e| e["type"] == kind && e["task_id"] == task)
            .unwrap_or_else(|| panic!("no {kind} of {task} in {v}"));
        event.get("request_id").cloned().unwrap_or(Value::Null)
    };
    assert_eq!(request_of("task.created", &given), "agent-7/call-1");
    assert_eq!(request_of("task.created", &other), made_up.as_str());
    assert_eq!(request_of("task.claimed", &given), "claim-1");
    assert_eq!(request_of("task.claimed", &other), "claim-1");
    // Malformed ids: refused whole, nothing created; the answer still has an id to quote.
    let long = "x".repeat(201);
    for bad in ["two words", "caf\u{e9}", long.as_str()] {
        let (st, id, v) = send(Some(bad), json!({"title": "refused"})).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
            "{bad}: {v}"
        );
        assert!(
            v["error"]["hint"]
                .as_str()
                .unwrap()
                .contains("X-Request-Id"),
            "{v}"
        );
        assert!(id.starts_with("req_"), "{id}");
    }
    let twice = s
        .http
        .post(format!("{}/v1/tasks", s.base))
        .bearer_auth(&s.token);
    let twice = twice
        .header("x-request-id", "a")
        .header("x-request-id", "b");
    let resp = twice
        .json(&json!({"title": "refused"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let unkeyed = s
        .http
        .post(format!("{}/v1/tasks", s.base))
        .header("x-request-id", "a b");
    let resp = unkeyed
        .json(&json!({"title": "refused"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "the key is checked first"
    );
    // A new workspace's first events name the request that made it.
    let made = s
        .http
        .post(format!("{}/v1/workspaces", s.base))
        .bearer_auth(&s.token);
    let made = made
        .header("x-request-id", "ws-1")
        .json(&json!({"name": "traced"}));
    let made: Value = made.send().await.unwrap().json().await.unwrap();
    let its_key = made["key"]["token"].as_str().unwrap();
    let events = s
        .http
        .get(format!("{}/v1/events", s.base))
        .bearer_auth(its_key);
    let events: Value = events.send().await.unwrap().json().await.unwrap();
    let events = events["events"].as_array().unwrap();
    assert!(events.len() >= 3, "{events:?}");
    assert!(
        events.iter().all(|e| e["request_id"] == "ws-1"),
        "{events:?}"
    );
    let (_, v) = s.get("/v1/tasks").await;
    let titles: Vec<&str> = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert!(!titles.contains(&"refused"), "{titles:?}");
}

/// `/metrics` is Prometheus's text format for the key's workspace: open tasks and agents
/// by status, the events this server committed (a refused call counts nothing) and how
/// long its claims took. Another workspace's key sees its own figures only.
async fn metrics_count_what_was_committed(backend: Backend) {
    let s = Server::start(backend).await;
    for title in ["a", "b", "c"] {
        s.post("/v1/tasks", json!({ "title": title })).await;
    }
    let (_, c) = s.post("/v1/tasks/claim", json!({"agent": "w"})).await;
    let id = c["claims"][0]["task"]["id"].as_str().unwrap().to_string();
    let lease = c["claims"][0]["lease"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let forged = json!({"lease": "lse_1_forged"});
    let (st, _) = s.post(&format!("/v1/tasks/{id}/complete"), forged).await;
    assert_eq!(st, StatusCode::CONFLICT);
    // Cost is counted by its increases (a counter never goes down): 0.5, then a total
    // lowered to 0.25 (nothing), then 0.5 more: 1.0.
    for cost in [0.5, 0.25, 0.75] {
        let beat = json!({"lease": lease, "usage": {"cost": cost}});
        let (st, v) = s.post(&format!("/v1/tasks/{id}/heartbeat"), beat).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    let (st, _) = s
        .post(
            &format!("/v1/tasks/{id}/complete"),
            json!({ "lease": lease }),
        )
        .await;
    assert_eq!(st, StatusCode::OK);

    let scrape = |auth: String| {
        let request = s.http.get(format!("{}/metrics", s.base));
        async move {
            let resp = request.header("authorization", auth).send().await.unwrap();
            let status = resp.status();
            let kind = resp.headers()["content-type"].to_str().unwrap().to_string();
            (status, kind, resp.text().await.unwrap())
        }
    };
    let (st, kind, text) = scrape(format!("Bearer {}", s.key("observer", None).await)).await;
    assert_eq!(st, StatusCode::OK, "{text}");
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let value = |text: &str, series: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    assert_eq!(
        value(&text, "baton_tasks{status=\"ready\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "baton_tasks{status=\"claimed\"}"),
        None,
        "{text}"
    );
    assert_eq!(
        value(&text, "baton_agents{status=\"active\"}"),
        Some(1.0),
        "{text}"
    );
    for (kind, n) in [
        ("task.created", 3.0),
        ("task.claimed", 1.0),
        ("task.completed", 1.0),
    ] {
        let series = format!("baton_events_total{{type=\"{kind}\"}}");
        assert_eq!(value(&text, &series), Some(n), "{series}: {text}");
    }
    assert_eq!(
        value(&text, "baton_claim_seconds_count"),
        Some(1.0),
        "{text}"
    );
    let inf = "baton_claim_seconds_bucket{le=\"+Inf\"}";
    assert_eq!(value(&text, inf), Some(1.0), "{text}");
    // One run completed (the refused completion counts nothing), and the cost reported.
    assert_eq!(
        value(&text, "baton_cycle_seconds_count"),
        Some(1.0),
        "{text}"
    );
    let day = "baton_cycle_seconds_bucket{le=\"86400\"}";
    assert_eq!(value(&text, day), Some(1.0), "{text}");
    assert_eq!(value(&text, "baton_cost_total"), Some(1.0), "{text}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, number) = line.rsplit_once(' ').unwrap();
        assert!(number.parse::<f64>().is_ok(), "{line}");
    }

    let (_, ws) = s.post("/v1/workspaces", json!({"name": "metered"})).await;
    let other = format!("Bearer {}", ws["key"]["token"].as_str().unwrap());
    let (st, _, text) = scrape(other).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        value(&text, "baton_tasks{status=\"ready\"}"),
        None,
        "{text}"
    );
    assert_eq!(
        value(&text, "baton_claim_seconds_count"),
        Some(0.0),
        "{text}"
    );
    assert!(!text.contains("task.created"), "{text}");
    let (st, _, text) = scrape(String::new()).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{text}");
    let (st, v) = s.call("GET", "/metrics?format=json", None, &[]).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "INVALID_INPUT")
    );
}

on_every_backend!(
    backend:
    artifacts_over_http,
    patch_null_clears_optional_fields,
    metrics_count_what_was_committed,
    concurrency_limits_over_http,
    request_ids_are_answered_and_recorded,
    a_store_far_behind_refuses_new_work_first,
    agent_loop_over_http,
    errors_have_codes_and_statuses,
    if_match_and_idempotency_keys,
    long_poll_claim_wakes_on_creation,
    event_stream_replays_resumes_filters_and_follows,
    keys_roles_and_workspace_isolation,
    batch_creates_a_graph_by_refs,
    websocket_stream_delivers_in_order_and_resumes,
    every_route_checks_keys_roles_and_workspaces,
    slow_stream_consumer_never_blocks_writers,
    projects_and_agents,
    openapi_document_is_served_and_complete,
    complete_many_answers_each_item,
    complete_with_next_claims_in_the_same_call,
    odd_input_is_refused_in_order_and_changes_nothing,
    probed_input_is_refused_and_the_log_stays_readable,
    probed_reads_and_edits_are_refused,
    a_worker_lifts_the_block_it_set,
);

/// A key bound to an agent works only under that agent's leases. The agent that blocked a
/// task may unblock it once the blocker is resolved (DESIGN §3): a key bound to another
/// agent may not, nor may a worker override a failed dependency
/// (a planner's call). `reason` and `comment` are one field: both at once is refused.
async fn a_worker_lifts_the_block_it_set(backend: Backend) {
    let s = Server::start(backend).await;
    let (w1, w2) = (
        s.key("worker", Some("w1")).await,
        s.key("worker", Some("w2")).await,
    );
    let (w1, w2) = (format!("Bearer {w1}"), format!("Bearer {w2}"));
    let (as_w1, as_w2) = (
        [("authorization", w1.as_str())],
        [("authorization", w2.as_str())],
    );
    let (_, t) = s.post("/v1/tasks", json!({"title": "needs creds"})).await;
    let id = t["task"]["id"].as_str().unwrap().to_string();
    // A key bound to an agent claims as it without naming it; a claim by another key must.
    let (st, v) = s.post("/v1/tasks/claim", json!({})).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("agent is required"),
        "{v}"
    );
    let (st, c) = s
        .call("POST", "/v1/tasks/claim", Some(json!({})), &as_w1)
        .await;
    assert_eq!(st, StatusCode::OK, "{c}"); // as w1: w2's heartbeat below names w1 the holder
    let lease = c["claims"][0]["lease"]["token"].as_str().unwrap();
    // A key bound to another agent may not work under w1's lease, token or not.
    let beat = Some(json!({"lease": lease, "message": "me too"}));
    let heartbeat = format!("/v1/tasks/{id}/heartbeat");
    let (st, v) = s.call("POST", &heartbeat, beat, &as_w2).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::FORBIDDEN, "FORBIDDEN"),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("held by agent w1"),
        "{v}"
    );
    let note = Some(json!({"type": "discovery", "content": "x", "lease": lease}));
    let (st, v) = s
        .call("POST", &format!("/v1/tasks/{id}/context"), note, &as_w2)
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::FORBIDDEN, "FORBIDDEN"),
        "{v}"
    );
    let block = json!({"lease": lease, "reason": "no credentials"});
    let path = format!("/v1/tasks/{id}/block");
    let (st, v) = s.call("POST", &path, Some(block), &as_w1).await;
    assert_eq!(
        (st, v["task"]["status"].as_str()),
        (StatusCode::OK, Some("blocked"))
    );

    let unblock = format!("/v1/tasks/{id}/unblock");
    let (st, v) = s.call("POST", &unblock, Some(json!({})), &as_w2).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::FORBIDDEN, "FORBIDDEN"),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("blocked by agent w1"),
        "{v}"
    );
    let both = json!({"reason": "a", "comment": "b"});
    let (st, v) = s.call("POST", &unblock, Some(both), &as_w1).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
        "{v}"
    );
    let (_, v) = s.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(v["task"]["status"], "blocked", "refusals changed nothing");
    let (st, v) = s.call("POST", &unblock, Some(json!({})), &as_w1).await;
    assert_eq!(
        (st, v["task"]["status"].as_str()),
        (StatusCode::OK, Some("ready")),
        "{v}"
    );

    // A failed dependency is the planner's to override.
    let (_, gone) = s.post("/v1/tasks", json!({"title": "gone"})).await;
    let gone = gone["task"]["id"].as_str().unwrap().to_string();
    s.post(&format!("/v1/tasks/{gone}/cancel"), json!({})).await;
    let (st, d) = s
        .post("/v1/tasks", json!({"title": "after", "blocked_by": [gone]}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{d}");
    assert_eq!(d["task"]["blocked_reason"], "dependency_failed", "{d}");
    let after = d["task"]["id"].as_str().unwrap();
    let path = format!("/v1/tasks/{after}/unblock");
    let (st, v) = s.call("POST", &path, Some(json!({})), &as_w1).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::FORBIDDEN, "FORBIDDEN"),
        "{v}"
    );
    let (st, v) = s.post(&path, json!({})).await;
    assert_eq!(
        (st, v["task"]["status"].as_str()),
        (StatusCode::OK, Some("ready")),
        "{v}"
    );
}

/// Odd input found by probing the API: each is a structured 4xx, the key and role are
/// checked before the body, and nothing refused is written.
async fn odd_input_is_refused_in_order_and_changes_nothing(backend: Backend) {
    let s = Server::start(backend).await;
    let bearer = format!("Bearer {}", s.token);
    let auth = Some(bearer.as_str());
    let (_, t) = s.post("/v1/tasks", json!({"title": "held"})).await;
    let id = t["task"]["id"].as_str().unwrap().to_string();
    let (_, o) = s.post("/v1/tasks", json!({"title": "other"})).await;
    let other = o["task"]["id"].as_str().unwrap().to_string();
    let (st, c) = s
        .post("/v1/tasks/claim", json!({"agent": "a1", "count": 1}))
        .await;
    assert_eq!(st, StatusCode::OK, "{c}");
    assert_eq!(
        c["claims"][0]["task"]["id"],
        id.as_str(),
        "claims the oldest"
    );
    let lease = c["claims"][0]["lease"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let observer = format!("Bearer {}", s.key("observer", None).await);
    let (_, before) = s.get("/v1/events?limit=1000").await;

    // The key first, then the role, then the body.
    let too_big = "x".repeat(baton_server::MAX_BODY + 10);
    for (body, authorization, status, code) in [
        ("{bad", None, StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        (
            too_big.as_str(),
            None,
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        ),
        (
            "{bad",
            Some(observer.as_str()),
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
        ),
        (
            "{}",
            Some(observer.as_str()),
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
        ),
        ("{bad", auth, StatusCode::BAD_REQUEST, "INVALID_INPUT"),
        // serde would read an array field by field into the request's struct.
        (
            r#"["t", "i"]"#,
            auth,
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
    ] {
        let (st, v) = s.raw("POST", "/v1/tasks", body, authorization).await;
        assert_eq!(
            (st, error_code(&v)),
            (status, code),
            "{authorization:?}: {v}"
        );
    }
    let lower = format!("bearer {}", s.token);
    let (st, _) = s.raw("GET", "/v1/tasks", "", Some(&lower)).await;
    assert_eq!(st, StatusCode::OK, "the scheme's name is case-insensitive");
    let (st, v) = s
        .raw(
            "PATCH",
            &format!("/v1/tasks/{other}"),
            r#"[null, "x"]"#,
            auth,
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "INVALID_INPUT")
    );

    let huge = "18446744073709551615";
    let cases = [
        ("GET", "/v1/tasks/%FF".to_string(), None),
        ("GET", "/v1/tasks/tsk_%00".to_string(), None),
        (
            "GET",
            "/v1/events?after=9223372036854775808".to_string(),
            None,
        ),
        ("GET", format!("/v1/events/stream?after={huge}"), None),
        ("GET", "/v1/tasks?limit=0".to_string(), None),
        ("GET", "/v1/tasks?limit=1001".to_string(), None),
        ("GET", "/v1/tasks?cursor=garbage".to_string(), None),
        ("GET", "/v1/tasks/ready?limit=0".to_string(), None),
        ("GET", "/v1/events?limit=0".to_string(), None),
        ("GET", "/v1/events?last=1001".to_string(), None),
        (
            "POST",
            "/v1/tasks".to_string(),
            Some(json!({"title": "x", "retry_policy": {"max_attempts": 3,
                "backoff_initial": "1s", "backoff_multiplier": -2.0, "backoff_max": "5m"}})),
        ),
        (
            "POST",
            "/v1/tasks".to_string(),
            Some(json!({"title": "x", "retry_policy": {"max_attempts": 3,
                "backoff_initial": "10m", "backoff_multiplier": 2.0, "backoff_max": "1s"}})),
        ),
        (
            "POST",
            "/v1/tasks".to_string(),
            Some(json!({"title": "x", "timeout": 0})),
        ),
        (
            "POST",
            "/v1/tasks".to_string(),
            Some(json!({"title": "x", "budget": "lots"})),
        ),
        (
            "POST",
            "/v1/tasks".to_string(),
            Some(json!({"title": "x", "budget": {"max_cost": "lots"}})),
        ),
        (
            "POST",
            "/v1/tasks".to_string(),
            Some(json!({"title": "a\u{0}b"})),
        ),
        (
            "POST",
            format!("/v1/tasks/{id}/heartbeat"),
            Some(json!({"lease": lease, "usage": "lots"})),
        ),
        (
            "POST",
            "/v1/agents/register".to_string(),
            Some(json!({"agent": "a\u{0}b"})),
        ),
        (
            "POST",
            format!("/v1/tasks/{other}/cancel"),
            Some(json!({"reason": "a\u{0}b"})),
        ),
        (
            "POST",
            "/v1/projects".to_string(),
            Some(json!({"name": "two\nlines"})),
        ),
        (
            "POST",
            "/v1/workspaces".to_string(),
            Some(json!({"name": "\u{0}"})),
        ),
    ];
    for (method, path, body) in cases {
        let (st, v) = s.call(method, &path, body, &[]).await;
        assert!(
            st.is_client_error() && !error_code(&v).is_empty(),
            "{method} {path}: {st} {v}"
        );
    }
    // An id longer than any names nothing: bad input (400), not a large payload (413).
    let x300 = "x".repeat(300);
    for (method, path) in [
        ("GET", format!("/v1/tasks/tsk_{x300}")),
        ("GET", format!("/v1/agents/{x300}")),
        ("GET", format!("/v1/workspaces/ws_{x300}")),
        ("DELETE", format!("/v1/tasks/{id}/dependencies/tsk_{x300}")),
        ("POST", format!("/v1/tasks/{id}/steps/{x300}/done")),
    ] {
        let body = (method != "GET").then(|| json!({}));
        let (st, v) = s.call(method, &path, body, &[]).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
            "{path}: {v}"
        );
    }
    // Without a key, a bad query is 401 like any other call: the key is checked first.
    for path in [
        "/v1/tasks?limit=x",
        "/v1/tasks/ready?limit=x",
        "/v1/events?after=x",
        "/v1/events/stream?after=x",
        "/v1/tasks/tsk_x?as_of=x",
        "/v1/artifacts/art_x?content=x",
        "/v1/whoami?x=1",
        "/v1/agents?x=1",
        "/metrics?x=1",
    ] {
        let (st, v) = s.raw("GET", path, "", None).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            "{path}: {v}"
        );
    }
    // A struct inside a body is an object: serde's derive would also read an array of its
    // fields in declaration order.
    let arrays = [
        (
            "/v1/tasks".to_string(),
            json!({"title": "x", "retry_policy": [3, "1s", 2.0, "5m"]}),
        ),
        (
            "/v1/projects".to_string(),
            json!({"name": "arrays", "retry_policy": [3, "1s", 2.0, "5m"]}),
        ),
        (
            "/v1/tasks/complete".to_string(),
            json!({"completions": [[id, lease]]}),
        ),
        (
            "/v1/tasks/complete".to_string(),
            json!({"completions": [{"id": id, "lease": lease}], "next": ["a1", 1]}),
        ),
        ("/v1/plans".to_string(), json!({"tasks": [["r", "title"]]})),
        (
            "/v1/plans".to_string(),
            json!({"tasks": [{"ref": "r", "title": "t", "steps": [["s", "more"]]}]}),
        ),
        // A field no step has, as every other struct of a plan refuses one.
        (
            "/v1/plans".to_string(),
            json!({"tasks": [{"ref": "r", "title": "t", "steps": [{"title": "s", "done": true}]}]}),
        ),
    ];
    for (path, body) in arrays {
        let (st, v) = s.call("POST", &path, Some(body.clone()), &[]).await;
        // A plan that does not parse is INVALID_PLAN, as `baton plan apply` says of the
        // same file.
        let expected = if path == "/v1/plans" {
            (StatusCode::UNPROCESSABLE_ENTITY, "INVALID_PLAN")
        } else {
            (StatusCode::BAD_REQUEST, "INVALID_INPUT")
        };
        assert_eq!((st, error_code(&v)), expected, "{path} {body}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("sequence") || message.contains("PlanStep"),
            "{path}: {v}"
        );
    }
    // A NUL in a filter or in an id the body names is the caller's error on both stores,
    // with Baton's own message (PostgreSQL's driver would otherwise refuse it its own way).
    let nul_cases = [
        ("GET", "/v1/tasks?parent=tsk_%00".to_string(), None),
        ("GET", "/v1/tasks?label=a%00".to_string(), None),
        ("GET", "/v1/tasks?cursor=tsk_%00".to_string(), None),
        (
            "POST",
            "/v1/tasks".to_string(),
            Some(json!({"title": "x", "blocked_by": ["tsk_\u{0}"]})),
        ),
        (
            "POST",
            "/v1/tasks".to_string(),
            Some(json!({"title": "x", "parent_id": "tsk_\u{0}"})),
        ),
        (
            "POST",
            "/v1/tasks".to_string(),
            Some(json!({"title": "x", "project": "a\u{0}"})),
        ),
        ("GET", "/v1/tasks/tsk_%00".to_string(), None),
        (
            "POST",
            format!("/v1/tasks/{other}/dependencies"),
            Some(json!({"blocker_id": "tsk_\u{0}"})),
        ),
    ];
    for (method, path, body) in nul_cases {
        let (st, v) = s.call(method, &path, body, &[]).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
            "{method} {path}: {v}"
        );
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("NUL"), "{method} {path}: {v}");
    }
    let (st, v) = s
        .call(
            "GET",
            "/v1/events/stream",
            None,
            &[("last-event-id", huge), ("authorization", bearer.as_str())],
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "INVALID_INPUT")
    );
    let (st, v) = s
        .call(
            "PATCH",
            &format!("/v1/tasks/{other}"),
            Some(json!({"title": "y", "version": 6})),
            &[("if-match", "1"), ("authorization", bearer.as_str())],
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
        "two versions that disagree"
    );
    let (st, v) = s
        .post(
            &format!("/v1/tasks/{other}/cancel"),
            json!({"reason": "x".repeat(300_000)}),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "TOO_LARGE"),
        "{v}"
    );
    let (st, v) = s
        .post(
            &format!("/v1/tasks/{id}/context"),
            json!({"type": "note", "content": "c", "lease": "lse_garbage"}),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::CONFLICT, "LEASE_LOST"),
        "a lease that is not the task's is no proof: {v}"
    );
    let (_, after) = s.get("/v1/events?limit=1000").await;
    let new_events =
        &after["events"].as_array().unwrap()[before["events"].as_array().unwrap().len()..];
    assert!(
        new_events.is_empty(),
        "nothing refused was written: {new_events:?}"
    );

    // A change to what the task already is: no new version, no event.
    let version = o["task"]["version"].clone();
    for body in [json!({}), json!({"title": "other"})] {
        let (st, v) = s
            .call("PATCH", &format!("/v1/tasks/{other}"), Some(body), &[])
            .await;
        assert_eq!(
            (st, &v["task"]["version"]),
            (StatusCode::OK, &version),
            "{v}"
        );
    }
    let (_, after) = s.get("/v1/events?limit=1000").await;
    assert_eq!(before, after, "a change to nothing is no event");

    // A finished task takes no new blocker and no new step.
    let (st, v) = s
        .post(&format!("/v1/tasks/{id}/complete"), json!({"lease": lease}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, before) = s.get("/v1/events?limit=1000").await;
    for (path, body) in [
        ("dependencies", json!({"blocker_id": other})),
        ("steps", json!({"title": "one more"})),
    ] {
        let (st, v) = s.post(&format!("/v1/tasks/{id}/{path}"), body).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::CONFLICT, "INVALID_TRANSITION"),
            "{path}: {v}"
        );
    }
    let (_, after) = s.get("/v1/events?limit=1000").await;
    assert_eq!(before, after, "nothing refused was written");
}

/// JSON nested `depth` levels: arrays around an empty one.
fn nested(depth: usize) -> Value {
    (1..depth).fold(json!([]), |inner, _| json!([inner]))
}

/// Input found by the second probe of the API: values nested deeper than the event log can
/// hold, an unreadable `Idempotency-Key`, a plan applied again under another project, a
/// batch ref shaped like a task id. Each is a structured 4xx and writes nothing; the
/// deepest value accepted still reads back from the log.
async fn probed_input_is_refused_and_the_log_stays_readable(backend: Backend) {
    let s = Server::start(backend).await;
    let (_, before) = s.get("/v1/events?limit=1000").await;
    for body in [
        json!({"title": "deep", "input": nested(65)}),
        json!({"title": "deep", "budget": {"x": nested(64)}}),
        json!({"title": "deep", "output_schema": {"type": "object", "x": nested(64)}}),
    ] {
        let (st, v) = s.post("/v1/tasks", body).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
            "{v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains("64"),
            "{v}"
        );
    }
    let (_, after) = s.get("/v1/events?limit=1000").await;
    assert_eq!(before, after, "nothing refused was written");

    // As deep as allowed: stored, and every reader of it still reads.
    let (st, t) = s
        .post("/v1/tasks", json!({"title": "deep", "input": nested(64)}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    let id = t["task"]["id"].as_str().unwrap().to_string();
    let (st, c) = s.post("/v1/tasks/claim", json!({"agent": "a1"})).await;
    assert_eq!(st, StatusCode::OK, "{c}");
    let lease = c["claims"][0]["lease"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, v) = s
        .post(
            &format!("/v1/tasks/{id}/complete"),
            json!({"lease": lease, "output": nested(65)}),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
        "{v}"
    );
    let (st, v) = s
        .post(
            &format!("/v1/tasks/{id}/complete"),
            json!({"lease": lease, "output": nested(64)}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, events) = s.get("/v1/events?limit=1000").await;
    assert_eq!(st, StatusCode::OK, "{events}");
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["task_id"] == id.as_str())
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["task.created", "task.claimed", "task.completed"]);
    let (st, brief) = s.get(&format!("/v1/tasks/{id}/brief")).await;
    assert_eq!(st, StatusCode::OK, "{brief}");

    // An Idempotency-Key that is not printable ASCII, or two of them: refused, not ignored.
    let url = format!("{}/v1/tasks", s.base);
    let (_, before) = s.get("/v1/events?limit=1000").await;
    for keys in [
        &[b"k\xc3\xa9y".as_slice()][..],
        &[b"\xff\xfeabc"],
        &[b"a", b"b"],
    ] {
        let mut req = s
            .http
            .post(&url)
            .bearer_auth(&s.token)
            .json(&json!({"title": "x"}));
        for key in keys {
            let value = reqwest::header::HeaderValue::from_bytes(key).unwrap();
            req = req.header("idempotency-key", value);
        }
        let resp = req.send().await.unwrap();
        let st = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
            "{v}"
        );
    }
    // The routes that show a new key's secret once cannot be replayed: a key is refused.
    let (_, me) = s.get("/v1/whoami").await;
    let ws = me["workspace_id"].as_str().unwrap();
    for (path, body) in [
        ("/v1/workspaces".to_string(), json!({"name": "keyed"})),
        (
            format!("/v1/workspaces/{ws}/keys"),
            json!({"role": "worker"}),
        ),
    ] {
        let (st, v) = s
            .call("POST", &path, Some(body), &[("idempotency-key", "once")])
            .await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
            "{path}: {v}"
        );
    }
    let (_, after) = s.get("/v1/events?limit=1000").await;
    assert_eq!(before, after, "nothing refused was written");

    // A plan applied again: its project must exist; the tasks it created before stay where
    // they are.
    let plan = json!({"name": "p", "tasks": [{"ref": "a", "title": "a"}]});
    let (st, v) = s.post("/v1/plans", plan.clone()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let project = v["tasks"][0]["task"]["project_id"].clone();
    let (st, v) = s.post("/v1/projects", json!({"name": "p2"})).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (_, before) = s.get("/v1/events?limit=1000").await;
    let mut again = plan.clone();
    again["project"] = json!("nope");
    let (st, v) = s.post("/v1/plans", again.clone()).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::NOT_FOUND, "NOT_FOUND"),
        "{v}"
    );
    again["project"] = json!("p2");
    let (st, v) = s.post("/v1/plans", again).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["tasks"][0]["result"], "unchanged", "{v}");
    assert_eq!(v["tasks"][0]["task"]["project_id"], project, "{v}");
    let (_, after) = s.get("/v1/events?limit=1000").await;
    assert_eq!(before, after, "nothing refused or unchanged was written");

    // A batch ref shaped like a task id would hide that task from the batch's blockers.
    let long = "r".repeat(201);
    for reference in [id.as_str(), "", "x\u{0}", "x\ny", long.as_str()] {
        let batch = json!({"tasks": [
            {"ref": reference, "title": "b"},
            {"ref": "c", "title": "c", "blocked_by": [reference]},
        ]});
        let (st, v) = s.post("/v1/tasks/batch", batch).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
            "{reference:?}: {v}"
        );
    }
    let (_, after) = s.get("/v1/events?limit=1000").await;
    assert_eq!(before, after, "nothing refused was written");
}

/// A request (method, path, body, headers) and the status and code it gets.
type Case<'a> = (
    &'a str,
    String,
    Option<Value>,
    Vec<(&'a str, &'a str)>,
    StatusCode,
    &'a str,
);

/// The rest of the second probe: reads of the log that would pass events over unseen or
/// filter on nothing, query strings a route does not take, a blocker added to a task
/// already claimed, names with spaces around them, an attempt limit no client can hold, two
/// keys in one request, and a batch's cycle told in its refs. Each is a structured 4xx.
async fn probed_reads_and_edits_are_refused(backend: Backend) {
    let s = Server::start(backend).await;
    let (_, t) = s.post("/v1/tasks", json!({"title": "t"})).await;
    let id = t["task"]["id"].as_str().unwrap().to_string();
    let (_, o) = s.post("/v1/tasks", json!({"title": "o"})).await;
    let other = o["task"]["id"].as_str().unwrap().to_string();
    let (st, c) = s.post("/v1/tasks/claim", json!({"agent": "a1"})).await;
    assert_eq!(st, StatusCode::OK, "{c}");
    let lease = c["claims"][0]["lease"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, before) = s.get("/v1/events?limit=1000").await;
    let last = before["events"].as_array().unwrap().last().unwrap()["seq"]
        .as_u64()
        .unwrap();

    let beyond = (last + 1000).to_string();
    let cases: Vec<Case> = vec![
        (
            "GET",
            "/v1/events?after=1&last=2".into(),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "GET",
            "/v1/events?last=2&limit=5".into(),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "GET",
            format!("/v1/events?after={beyond}"),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "GET",
            "/v1/events/stream".into(),
            None,
            vec![("last-event-id", beyond.as_str())],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "GET",
            format!("/v1/events/stream?after={beyond}"),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "GET",
            "/v1/events/stream?project=nope".into(),
            None,
            vec![],
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "GET",
            "/v1/events/stream?type=".into(),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "GET",
            "/v1/events/stream?actor=%00".into(),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "GET",
            "/v1/agents/a%00b".into(),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/v1/agents/heartbeat".into(),
            Some(json!({"agent": "a\u{0}b"})),
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "GET",
            "/v1/projects/a%00b".into(),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "GET",
            "/v1/agents?limit=-1".into(),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "GET",
            "/v1/projects?limit=abc".into(),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "GET",
            "/v1/projects/default?x=1".into(),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "GET",
            format!("/v1/tasks/{id}?detail=1"),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "GET",
            "/v1/whoami?x=1".into(),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "POST",
            format!("/v1/tasks/{id}/dependencies"),
            Some(json!({"blocker_id": other})),
            vec![],
            StatusCode::CONFLICT,
            "INVALID_TRANSITION",
        ),
        (
            "POST",
            "/v1/agents/register".into(),
            Some(json!({"agent": " a1 "})),
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/v1/tasks/claim".into(),
            Some(json!({"agent": "a1 "})),
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/v1/tasks".into(),
            Some(json!({"title": "x", "max_attempts": 2147483648u64})),
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/v1/tasks".into(),
            Some(json!({"title": "x", "max_attempts": 1001})),
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
        (
            "PATCH",
            format!("/v1/tasks/{other}"),
            Some(json!({"max_attempts": 0})),
            vec![],
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
        ),
    ];
    for (method, path, body, headers, status, code) in cases {
        let (st, v) = s.call(method, &path, body, &headers).await;
        assert_eq!((st, error_code(&v)), (status, code), "{method} {path}: {v}");
    }
    let (st, v) = s
        .post(
            &format!("/v1/tasks/{id}/dependencies"),
            json!({"blocker_id": other}),
        )
        .await;
    assert_eq!(v["error"]["details"]["status"], "claimed", "{st}: {v}");

    // A misspelt field of a lease operation: the fields it names include the lease.
    let (st, v) = s
        .post(
            &format!("/v1/tasks/{id}/start"),
            json!({"lease": lease, "error": "x"}),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expected `lease`"),
        "{v}"
    );

    // Two keys in one request: neither is taken.
    let resp = s
        .http
        .get(format!("{}/v1/whoami", s.base))
        .header("authorization", format!("Bearer {}", s.token))
        .header("authorization", format!("Bearer {}", s.token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let (_, after) = s.get("/v1/events?limit=1000").await;
    assert_eq!(before, after, "nothing refused was written");

    // A child blocked by its own parent: the cycle's path names the batch's refs, not the
    // ids the refusal undid.
    let batch = json!({"tasks": [
        {"ref": "a", "title": "a"},
        {"ref": "c", "title": "c", "parent_id": "a", "blocked_by": ["a"]},
    ]});
    let (st, v) = s.post("/v1/tasks/batch", batch).await;
    assert_eq!((st, error_code(&v)), (StatusCode::CONFLICT, "CYCLE"), "{v}");
    let path: Vec<&str> = v["error"]["details"]["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(path.contains(&"a") && path.contains(&"c"), "{v}");
    assert!(path.iter().all(|p| !p.starts_with("tsk_")), "{v}");
    let (_, after) = s.get("/v1/events?limit=1000").await;
    assert_eq!(before, after, "nothing refused was written");

    // A title that ends in a newline (a YAML block scalar) or holds a tab is one line still.
    let (st, v) = s
        .post(
            "/v1/tasks",
            json!({"title": "Write it\n", "description": "x"}),
        )
        .await;
    assert_eq!(
        (st, &v["task"]["title"]),
        (StatusCode::CREATED, &json!("Write it")),
        "{v}"
    );
    let (st, v) = s.post("/v1/tasks", json!({"title": "a\tb"})).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (_, now) = s.get("/v1/events?limit=1000").await;
    let last = now["events"].as_array().unwrap().last().unwrap()["seq"]
        .as_u64()
        .unwrap();

    // The newest event is still where a reader may resume.
    let (st, v) = s.get(&format!("/v1/events?after={last}")).await;
    assert_eq!(
        (st, v["events"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0)),
        "{v}"
    );
}

/// Sends `request` as raw bytes and reads the answer's status line and body, within 30 s.
async fn raw_exchange(base: &str, request: &[u8]) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if std::str::from_utf8(&answer).is_ok_and(|a| a.contains("}}")) {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 30 s");
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer.lines().next().unwrap_or("").to_string();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// A body that says it is larger than the limit is refused at once; one that never arrives
/// in full is answered after the body timeout; a malformed chunked body is bad input, not
/// "too large". Each is a structured error.
#[tokio::test]
async fn bodies_that_lie_or_stall_are_answered() {
    let s = Server::start(Backend::Sqlite).await;
    let head = |length: &str| {
        format!(
            "POST /v1/tasks HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\n{length}\r\n",
            s.token
        )
    };
    let started = Instant::now();
    let (status, body) =
        raw_exchange(&s.base, head("content-length: 99999999999\r\n").as_bytes()).await;
    assert!(status.contains(" 413 "), "{status} {body}");
    assert!(body.contains("TOO_LARGE"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once"
    );

    let stalled = format!("{}{{\"title\"", head("content-length: 100\r\n"));
    let started = Instant::now();
    let (status, body) = raw_exchange(&s.base, stalled.as_bytes()).await;
    assert!(status.contains(" 400 "), "{status} {body}");
    assert!(
        body.contains("INVALID_INPUT") && body.contains("did not arrive"),
        "{body}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "after the body timeout"
    );

    let chunked = format!(
        "{}ZZ\r\n{{}}\r\n0\r\n\r\n",
        head("transfer-encoding: chunked\r\n")
    );
    let (status, body) = raw_exchange(&s.base, chunked.as_bytes()).await;
    assert!(status.contains(" 400 "), "{status} {body}");
    assert!(body.contains("INVALID_INPUT"), "{body}");
    let (_, tasks) = s.get("/v1/tasks").await;
    assert_eq!(tasks["tasks"], json!([]), "nothing was written");
}
