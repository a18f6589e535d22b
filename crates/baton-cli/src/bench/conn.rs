//! One agent's own HTTP/1.1 connection, for the harness's hot loops (the HTTP loop and the
//! drain): hyper's connection-level client over one kept-alive TCP connection, as an agent
//! on its own machine would hold. The pooled client the other scenarios share (reqwest)
//! looks up a pooled connection, parses the URL and builds its headers on every request;
//! on these two shared cores that was CPU taken from the server being measured.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;

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
            .ok_or_else(|| anyhow::anyhow!("{base}: the harness speaks plain http://"))?
            .trim_end_matches('/');
        let stream = tokio::net::TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await; // ends when the agent drops its sender
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
        self.sender.ready().await?;
        let request = hyper::Request::post(path)
            .header(HOST, &self.host)
            .header(AUTHORIZATION, &self.auth)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        let answer = self.sender.send_request(request).await?;
        let status = answer.status().as_u16();
        Ok((status, answer.into_body().collect().await?.to_bytes()))
    }

    /// [`AgentConn::post`], sent again after the pause a 429 `RATE_LIMITED` asks for until
    /// it is taken: what a well-behaved agent does when the server sheds load.
    pub(crate) async fn post_admitted(
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
            let refusal: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
            let ms = refusal["error"]["details"]["retry_after_ms"]
                .as_u64()
                .unwrap_or(1000);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }

    /// `POST path` with `body`: the answer, parsed into the fields the agent reads, or an
    /// error naming the route and carrying the refusal.
    pub(crate) async fn call<T: serde::de::DeserializeOwned>(
        &mut self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        let (status, answer) = self.post_admitted(path, body).await?;
        let text = || String::from_utf8_lossy(&answer).into_owned();
        anyhow::ensure!((200..300).contains(&status), "{path}: {}", text());
        serde_json::from_slice(&answer)
            .map_err(|e| anyhow::anyhow!("{path}: unexpected answer ({e}): {}", text()))
    }
}
