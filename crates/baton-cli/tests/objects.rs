//! Artifacts' bytes in an S3-compatible store: `baton serve --objects s3://BUCKET/PREFIX`
//! against a real S3 server on loopback (moto's server, installed by the test script into
//! `target/py`), spoken to over the S3 protocol by object_store's S3 client. The bytes go
//! to the bucket and only there, are checked against their hash when read, and a bucket
//! that cannot be written stops the server at start-up.

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BATON: &str = env!("CARGO_BIN_EXE_baton");

/// A process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

fn wait_for(addr: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn moto_server() -> PathBuf {
    let venv = std::env::var_os("BATON_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/py"));
    let tool = venv.join("bin/moto_server");
    assert!(
        tool.exists(),
        "{} is missing: run ./scripts/test, which installs it into target/py",
        tool.display()
    );
    tool
}

/// An S3 server on loopback; its endpoint URL.
fn start_s3() -> (Running, String) {
    let addr = free_addr();
    let (host, port) = addr.split_once(':').unwrap();
    let child = Command::new(moto_server())
        .args(["-H", host, "-p", port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let running = Running(child);
    wait_for(&addr, "the S3 server");
    (running, format!("http://{addr}"))
}

/// `baton` with the test's S3 settings in its environment, and none of the caller's (an
/// `AWS_ENDPOINT_URL_S3` or a proxy there would send it elsewhere).
fn baton_cmd(dir: &Path, endpoint: &str) -> Command {
    let mut cmd = Command::new(BATON);
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy().to_ascii_uppercase();
        if name_text.starts_with("AWS_") || name_text.ends_with("_PROXY") {
            cmd.env_remove(&name);
        }
    }
    cmd.arg("--data-dir")
        .arg(dir)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "baton-test")
        .env("AWS_SECRET_ACCESS_KEY", "baton-test-secret")
        .env("AWS_REGION", "us-east-1");
    cmd
}

fn baton(dir: &Path, endpoint: &str, args: &[&str]) -> (bool, Value) {
    let out = baton_cmd(dir, endpoint)
        .arg("--json")
        .args(args)
        .output()
        .expect("run baton");
    let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "baton {args:?} printed no JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.success(), value)
}

/// How many files are under `dir` (none if it does not exist).
fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .map(|e| e.unwrap().path())
            .map(|p| if p.is_dir() { files_under(&p) } else { 1 })
            .sum()
    })
}

/// The test's own S3 client of `bucket`, signing as the server does.
fn bucket_client(endpoint: &str, bucket: &str) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .with_access_key_id("baton-test")
        .with_secret_access_key("baton-test-secret")
        .with_region("us-east-1")
        .build()
        .unwrap()
}

/// The keys the bucket holds, sorted.
async fn keys(bucket: &AmazonS3) -> Vec<String> {
    let mut keys: Vec<String> = bucket
        .list(None)
        .map(|meta| meta.unwrap().location.to_string())
        .collect()
        .await;
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_live_in_an_s3_bucket() {
    let (_s3, endpoint) = start_s3();
    let http = reqwest::Client::new();
    let created = http
        .put(format!("{endpoint}/artifacts"))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{:?}", created.status());

    let dir = tempfile::tempdir().unwrap();
    let objects = "s3://artifacts/team-a";
    let (ok, key) = baton(dir.path(), &endpoint, &["key", "create", "--role", "admin"]);
    assert!(ok, "{key}");
    let token = key["key"]["token"].as_str().unwrap().to_string();
    let addr = free_addr();
    let server = baton_cmd(dir.path(), &endpoint)
        .args(["--objects", objects, "serve", "--listen", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start baton serve");
    let server = Running(server);
    wait_for(&addr, "baton serve");
    let base = format!("http://{addr}/v1");
    let auth = format!("Bearer {token}");
    let task: Value = http
        .post(format!("{base}/tasks"))
        .header("authorization", &auth)
        .json(&json!({"title": "report"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let task_id = task["task"]["id"].as_str().unwrap().to_string();
    let ws = task["task"]["workspace_id"].as_str().unwrap().to_string();

    // Attaches the report; its answer, once it is 201.
    let attach = || {
        let request = http
            .post(format!("{base}/tasks/{task_id}/artifacts"))
            .header("authorization", &auth)
            .json(&json!({"name": "report.md", "content": "# Findings\n"}));
        async move {
            let attached = request.send().await.unwrap();
            assert_eq!(attached.status(), reqwest::StatusCode::CREATED);
            attached.json::<Value>().await.unwrap()
        }
    };

    // The server wrote its probe at start-up; an attached artifact's bytes go to the bucket
    // under the prefix, by workspace and hash, and nowhere on the local disk.
    let art = attach().await;
    let sha = art["artifact"]["sha256"].as_str().unwrap().to_string();
    let art_id = art["artifact"]["id"].as_str().unwrap().to_string();
    let object_key = format!("team-a/{ws}/{}/{sha}", &sha[..2]);
    let bucket = bucket_client(&endpoint, "artifacts");
    let stored = keys(&bucket).await;
    assert_eq!(
        stored,
        vec!["team-a/baton-probe".to_string(), object_key.clone()],
        "bucket holds {stored:?}"
    );
    assert_eq!(
        files_under(&dir.path().join("objects")),
        0,
        "bytes were written to the local disk too"
    );
    let content = |http: reqwest::Client| {
        let (url, auth) = (format!("{base}/artifacts/{art_id}/content"), auth.clone());
        async move {
            let resp = http
                .get(url)
                .header("authorization", auth)
                .send()
                .await
                .unwrap();
            (resp.status(), resp.bytes().await.unwrap())
        }
    };
    let (status, bytes) = content(http.clone()).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(&bytes[..], b"# Findings\n");

    // Bytes damaged in the bucket are never served as the artifact; attaching the same
    // content again repairs them.
    bucket
        .put(
            &object_key.as_str().into(),
            PutPayload::from_static(b"# Forged\n"),
        )
        .await
        .unwrap();
    let (status, body) = content(http.clone()).await;
    assert_eq!(status, reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "INTERNAL", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("do not match"),
        "{error}"
    );
    attach().await;
    assert_eq!(&content(http.clone()).await.1[..], b"# Findings\n");
    drop(server);

    // The CLI on the same store reads the bytes from the bucket.
    let (ok, got) = baton(
        dir.path(),
        &endpoint,
        &["--objects", objects, "artifact", "get", &art_id],
    );
    assert!(ok, "{got}");
    assert_eq!(got["content"], "# Findings\n", "{got}");

    // A bucket that does not exist: a read says so (not "the bytes are missing"), and the
    // server stops at start-up, saying which; a URL without a bucket, or of another
    // scheme, is refused before anything is sent.
    let (ok, missing) = baton(
        dir.path(),
        &endpoint,
        &[
            "--objects",
            "s3://no-such-bucket",
            "artifact",
            "get",
            &art_id,
        ],
    );
    assert!(!ok);
    assert_eq!(
        (
            missing["error"]["code"].as_str(),
            missing["error"]["retryable"].as_bool()
        ),
        (Some("INTERNAL"), Some(false)),
        "{missing}"
    );
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the bucket does not exist"),
        "{missing}"
    );
    let refused = baton_cmd(dir.path(), &endpoint)
        .args(["--objects", "s3://no-such-bucket", "serve", "--listen"])
        .arg(free_addr())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("INTERNAL")
            && said.contains("s3://no-such-bucket")
            && said.contains("does not exist"),
        "{said}"
    );
    for location in ["s3://", "gs://artifacts"] {
        let (ok, bad) = baton(
            dir.path(),
            &endpoint,
            &["--objects", location, "artifact", "list", &task_id],
        );
        assert!(!ok);
        assert_eq!(bad["error"]["code"], "INVALID_INPUT", "{location}: {bad}");
    }
}
