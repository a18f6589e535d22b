//! Several `baton serve` replicas on one PostgreSQL database (the server of
//! `BATON_TEST_DATABASE_URL`, started by ./scripts/test): agents spread across replicas
//! claim and complete every task exactly once; each replica's event stream delivers every
//! event in order without gaps; a replica killed with SIGKILL mid-run loses nothing
//! acknowledged, and the leases its agents held lapse and are re-claimed elsewhere.

use serde_json::{json, Value};
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BATON: &str = env!("CARGO_BIN_EXE_baton");
const TASKS: usize = 300;

fn database() -> String {
    let admin = std::env::var("BATON_TEST_DATABASE_URL").expect(
        "BATON_TEST_DATABASE_URL is not set: run ./scripts/test, which starts a throwaway PostgreSQL",
    );
    let name = format!(
        "baton_replicas_{}",
        baton_core::id::new_id("db").trim_start_matches("db_")
    );
    baton_store_postgres::PgStore::create_database(&admin, &name).expect("create database")
}

fn replica(db: &str) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(BATON)
        .args(["--database", db, "serve", "--listen", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a replica");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "replica did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, format!("http://{addr}"))
}

/// Reads a replica's SSE stream from the start, collecting sequence numbers until `stop`.
async fn follow(http: reqwest::Client, base: String, token: String, seen: Arc<Mutex<Vec<u64>>>) {
    let Ok(mut res) = http
        .get(format!("{base}/v1/events/stream?after=0"))
        .bearer_auth(&token)
        .send()
        .await
    else {
        return;
    };
    let mut buffer = String::new();
    while let Ok(Some(chunk)) = res.chunk().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if let Some(id) = frame.lines().find_map(|l| l.strip_prefix("id: ")) {
                seen.lock().unwrap().push(id.trim().parse().unwrap());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_work_exactly_once() {
    let db = database();
    // Three replicas start at once on the empty database: one creates the schema and the
    // default workspace, the others find them.
    let mut replicas: Vec<(Child, String)> = std::thread::scope(|s| {
        let starting: Vec<_> = (0..3).map(|_| s.spawn(|| replica(&db))).collect();
        starting.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let key = Command::new(BATON)
        .args([
            "--json",
            "--database",
            &db,
            "key",
            "create",
            "--role",
            "admin",
        ])
        .output()
        .unwrap();
    let token = serde_json::from_slice::<Value>(&key.stdout).unwrap()["key"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let bases: Vec<String> = replicas.iter().map(|r| r.1.clone()).collect();
    let http = reqwest::Client::new();

    // Streams on every replica, from the start.
    let streams: Vec<Arc<Mutex<Vec<u64>>>> = (0..3).map(|_| Arc::default()).collect();
    for (base, seen) in bases.iter().zip(&streams) {
        tokio::spawn(follow(
            http.clone(),
            base.clone(),
            token.clone(),
            seen.clone(),
        ));
    }

    // The tasks, created through all three replicas; a short lease so lost ones come back.
    let mut created = Vec::new();
    for chunk in 0..(TASKS / 50) {
        let items: Vec<Value> = (0..50)
            .map(|i| json!({"ref": format!("t{i}"), "title": format!("task {chunk}-{i}"), "lease_ttl": "2s"}))
            .collect();
        let res = http
            .post(format!("{}/v1/tasks/batch", bases[chunk % 3]))
            .bearer_auth(&token)
            .json(&json!({ "tasks": items }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.unwrap();
        for t in body["tasks"].as_array().unwrap() {
            created.push(t["task"]["id"].as_str().unwrap().to_string());
        }
    }

    // Six agents, two per replica: claim (long-poll) → complete, until the queue is dry.
    let completed: Arc<Mutex<Vec<String>>> = Arc::default();
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut agents = Vec::new();
    for a in 0..6 {
        let (http, token, completed, killed) = (
            http.clone(),
            token.clone(),
            completed.clone(),
            killed.clone(),
        );
        let home = a % 3;
        let bases = bases.clone();
        agents.push(tokio::spawn(async move {
            let mut idle = 0;
            loop {
                // Agents of the killed replica move to the others once it is gone.
                let replica = if home == 2 && killed.load(std::sync::atomic::Ordering::SeqCst) {
                    a % 2
                } else {
                    home
                };
                let base = &bases[replica];
                let Ok(res) = http
                    .post(format!("{base}/v1/tasks/claim"))
                    .bearer_auth(&token)
                    .json(&json!({"agent": format!("agent-{a}"), "wait": "1s"}))
                    .send()
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(claims) = res.json::<Value>().await else {
                    continue;
                };
                let Some(claim) = claims["claims"].as_array().and_then(|c| c.first()).cloned()
                else {
                    idle += 1;
                    if idle >= 4 {
                        return; // four empty waits in a row: nothing left, leases lapsed included
                    }
                    continue;
                };
                idle = 0;
                let id = claim["task"]["id"].as_str().unwrap().to_string();
                let lease = claim["lease"]["token"].as_str().unwrap().to_string();
                let done = http
                    .post(format!("{base}/v1/tasks/{id}/complete"))
                    .bearer_auth(&token)
                    .json(&json!({"lease": lease}))
                    .send()
                    .await;
                if let Ok(r) = done {
                    if r.status() == 200 {
                        completed.lock().unwrap().push(id);
                    }
                }
            }
        }));
    }
    // Kill replica 3 with SIGKILL while the agents are busy.
    while completed.lock().unwrap().len() < TASKS / 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replicas[2].0.kill().unwrap();
    replicas[2].0.wait().unwrap();
    killed.store(true, std::sync::atomic::Ordering::SeqCst);
    for agent in agents {
        tokio::time::timeout(Duration::from_secs(120), agent)
            .await
            .expect("agents finish")
            .unwrap();
    }

    // Every task done; no completion acknowledged twice. (A completion the killed replica
    // committed but never answered is done without being in `completed`.)
    let completed = completed.lock().unwrap().clone();
    let unique: HashSet<&String> = completed.iter().collect();
    assert_eq!(unique.len(), completed.len(), "a task was completed twice");
    let all: HashSet<&String> = created.iter().collect();
    assert!(unique.is_subset(&all));
    assert_eq!(all.len(), TASKS, "every acknowledged create is there");
    for id in &created {
        let t: Value = http
            .get(format!("{}/v1/tasks/{id}", bases[0]))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(t["task"]["status"], "done", "{id}");
    }

    // The surviving replicas' streams: every event, in order, no gaps, up to the last one.
    let last: Value = http
        .get(format!("{}/v1/events?last=1", bases[0]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let last_seq = last["events"][0]["seq"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for seen in &streams[..2] {
        loop {
            let got = seen.lock().unwrap().clone();
            if got.len() as u64 >= last_seq || Instant::now() > deadline {
                let expected: Vec<u64> = (1..=last_seq).collect();
                assert_eq!(
                    &got[..last_seq as usize],
                    &expected[..],
                    "a stream skipped or reordered"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for (mut child, _) in replicas.into_iter().take(2) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Migrations from an empty database, by several processes at once (as replicas starting
/// together), then again: every run succeeds and the store works.
#[test]
fn migrations_are_safe_to_run_at_once_and_again() {
    let db = database();
    let runs: Vec<Child> = (0..3)
        .map(|_| {
            Command::new(BATON)
                .args(["--json", "--database", &db, "migrate"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let again = Command::new(BATON)
        .args(["--json", "--database", &db, "migrate"])
        .output()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&again.stdout).unwrap(),
        json!({"migrated": "postgres"})
    );
    let created = Command::new(BATON)
        .args([
            "--json",
            "--database",
            &db,
            "task",
            "create",
            "--title",
            "t",
        ])
        .output()
        .unwrap();
    assert!(created.status.success());
    let replay = Command::new(BATON)
        .args(["--json", "--database", &db, "replay", "--verify"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(report["replay"]["equal"], true, "{report}");
}

/// A CLI command on PostgreSQL ends right after its answer, and still tells the replicas of
/// its commit (their long-polls wake on it): the store sends the notification it owes as
/// it closes. The notifier thread alone would not
/// have had the time to connect.
#[tokio::test]
async fn a_cli_command_notifies_the_replicas_before_it_ends() {
    let db = database();
    let migrated = Command::new(BATON)
        .args(["--database", &db, "migrate"])
        .output()
        .expect("migrate");
    assert!(migrated.status.success(), "{migrated:?}");
    let mut listener = sqlx::postgres::PgListener::connect(&db)
        .await
        .expect("listen");
    listener.listen("baton_commits").await.expect("listen");
    let created = Command::new(BATON)
        .args([
            "--database",
            &db,
            "--json",
            "task",
            "create",
            "--title",
            "t",
        ])
        .output()
        .expect("create");
    assert!(created.status.success(), "{created:?}");
    let heard = tokio::time::timeout(Duration::from_secs(10), listener.recv()).await;
    let notification = heard.expect("a notification").expect("the listener");
    assert_eq!(notification.channel(), "baton_commits");
}
