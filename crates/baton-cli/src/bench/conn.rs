//! One agent's own HTTP/1.1 connection, for the agents of the HTTP loop, the drain, the DAG
//! and the open loop: hyper's connection-level client over one kept-alive TCP connection,
//! as an agent on a machine of its own would hold. The pooled client the harness's setup
//! calls share (reqwest) checks a connection out of its pool, parses the URL, builds its
//! headers and spawns a task to give the connection back on every request; on these two
//! shared cores that cost the agents twice the CPU, taken from the server being measured
//! (BENCHMARKS.md, "The agents' client"). A connection the server closes is not reopened:
//! the server closes none while it runs, so that ends the run with the error.

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// An agent's connection to one replica, with its key.
pub(crate) struct AgentConn {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
    auth: HeaderValue,
}

impl AgentConn {
    /// Connects to the replica at `base` (`http://host:port`), authenticating as `token`.
    pub(crate) async fn open(base: &str, token: &str) -> anyhow::Result<Self> {
        let authority = base
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| {
                anyhow::anyhow!("--server {base}: give each replica as http://host:port")
            })?;
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .with_context(|| format!("connect to {base}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP/1.1 handshake with {base}"))?;
        let server = base.to_string();
        tokio::spawn(async move {
            // Ends when the agent drops its sender; otherwise the server closed it.
            if let Err(e) = conn.await {
                eprintln!("connection to {server} ended: {e}");
            }
        });
        Ok(AgentConn {
            sender,
            host: authority.parse()?,
            auth: format!("Bearer {token}").parse()?,
        })
    }

    /// `POST path` with `body` serialized as JSON: the status and the answer's bytes.
    pub(crate) async fn post(
        &mut self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<(u16, Bytes)> {
        let request = hyper::Request::post(path)
            .header(HOST, &self.host)
            .header(AUTHORIZATION, &self.auth)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        let sent = async {
            self.sender.ready().await?;
            let answer = self.sender.send_request(request).await?;
            let status = answer.status().as_u16();
            anyhow::Ok((status, answer.into_body().collect().await?.to_bytes()))
        };
        sent.await.with_context(|| format!("POST {path}"))
    }

    /// [`AgentConn::post`], sent again after the pause a 429 `RATE_LIMITED` asks for until
    /// it is taken: what a well-behaved agent does when the server sheds load.
    async fn post_admitted(
        &mut self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<(u16, Bytes)> {
        loop {
            let (status, answer) = self.post(path, body).await?;
            if status != 429 {
                return Ok((status, answer));
            }
            crate::REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(retry_after(&answer)).await;
        }
    }

    /// `POST path` with `body`, admitted as [`AgentConn::post_admitted`]: the answer, parsed
    /// into the fields the agent reads.
    pub(crate) async fn call<T: serde::de::DeserializeOwned>(
        &mut self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        let (status, answer) = self.post_admitted(path, body).await?;
        self::answer(path, status, &answer)
    }
}

/// The pause a 429 `RATE_LIMITED` answer asks for (`details.retry_after_ms`), a second if it
/// names none.
pub(crate) fn retry_after(answer: &[u8]) -> Duration {
    let refusal: serde_json::Value = serde_json::from_slice(answer).unwrap_or_default();
    Duration::from_millis(
        refusal["error"]["details"]["retry_after_ms"]
            .as_u64()
            .unwrap_or(1000),
    )
}

/// A successful answer to `path`, parsed; or an error naming the route and carrying the
/// refusal or the answer that did not parse.
pub(crate) fn answer<T: serde::de::DeserializeOwned>(
    path: &str,
    status: u16,
    answer: &[u8],
) -> anyhow::Result<T> {
    let text = || String::from_utf8_lossy(answer).into_owned();
    anyhow::ensure!((200..300).contains(&status), "{path}: {}", text());
    serde_json::from_slice(answer)
        .map_err(|e| anyhow::anyhow!("{path}: unexpected answer ({e}): {}", text()))
}
