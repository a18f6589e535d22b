//! `baton-mcp-bench`: the latency of MCP tool calls over stdio on a warm embedded store.
//! It starts `baton mcp` (the binary beside this one) as a client would, speaks JSON-RPC on
//! its stdin/stdout, and times each call from request written to response read:
//! `task_create`, then `claim` → `complete` per task. Also prints the size of `tools/list`.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let tasks: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(2000);
    let baton = std::env::current_exe()?.with_file_name("baton");
    let dir = tempfile_dir()?;
    let mut child = Command::new(baton)
        .arg("--data-dir")
        .arg(&dir)
        .args(["mcp", "--agent", "bench"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut client = Client {
        stdin: child.stdin.take().expect("stdin"),
        stdout: BufReader::new(child.stdout.take().expect("stdout")),
        next_id: 0,
    };
    client.request(
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "baton-mcp-bench", "version": "0"}}),
    )?;
    client.notify("notifications/initialized")?;
    let (list, _) = client.request("tools/list", json!({}))?;
    let list_bytes = serde_json::to_string(&list["result"])?.len();
    let mut create = Vec::with_capacity(tasks);
    for i in 0..tasks {
        let (v, ms) = client.request(
            "tools/call",
            json!({"name": "task_create", "arguments": {"title": format!("t{i}")}}),
        )?;
        anyhow::ensure!(v["result"]["isError"] != json!(true), "create: {v}");
        create.push(ms);
    }
    let (mut claim, mut complete) = (Vec::new(), Vec::new());
    loop {
        let (v, ms) = client.request("tools/call", json!({"name": "claim", "arguments": {}}))?;
        let claims = v["result"]["structuredContent"]["claims"].clone();
        let Some(task) = claims.get(0) else { break };
        claim.push(ms);
        let id = task["task"]["id"].as_str().unwrap_or_default().to_string();
        let (v, ms) = client.request(
            "tools/call",
            json!({"name": "complete", "arguments": {"task_id": id}}),
        )?;
        anyhow::ensure!(v["result"]["isError"] != json!(true), "complete: {v}");
        complete.push(ms);
    }
    drop(child.kill());
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "tools/list: {list_bytes} bytes (~{} tokens at 4 bytes each)",
        list_bytes / 4
    );
    for (name, mut samples) in [
        ("task_create", create),
        ("claim", claim),
        ("complete", complete),
    ] {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "{name:<12} n={:<6} p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms",
            samples.len(),
            at(0.5),
            at(0.9),
            at(0.99)
        );
    }
    Ok(())
}

/// A JSON-RPC client on a child's stdin/stdout, one line per message.
struct Client {
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    next_id: u64,
}

impl Client {
    /// Sends a request and waits for its answer; returns it and the round trip in ms.
    fn request(&mut self, method: &str, params: Value) -> anyhow::Result<(Value, f64)> {
        self.next_id += 1;
        let id = self.next_id;
        let started = Instant::now();
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        let mut answer = String::new();
        loop {
            answer.clear();
            if self.stdout.read_line(&mut answer)? == 0 {
                anyhow::bail!("baton mcp closed its output");
            }
            let v: Value = serde_json::from_str(&answer)?;
            if v["id"] == json!(id) {
                return Ok((v, started.elapsed().as_secs_f64() * 1000.0));
            }
        }
    }

    /// Sends a notification (no answer).
    fn notify(&mut self, method: &str) -> anyhow::Result<()> {
        writeln!(
            self.stdin,
            "{}",
            json!({"jsonrpc": "2.0", "method": method})
        )?;
        Ok(self.stdin.flush()?)
    }
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("baton-mcp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
