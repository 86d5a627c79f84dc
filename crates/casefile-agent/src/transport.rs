//! The agent's side of the agent API, over HTTP(S) with reqwest.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use casefile_proto::ErrorBody;
use casefile_proto::agent::{
    ActionFailure, AgentTask, CONFIRM_PARAM, EnrollChallenge, EnrollChallengeRequest, EnrollRequest, EnrollResponse,
    HelloRequest, HelloResponse, PREFIX, SHA256_HEADER, UploadReceipt,
};
use reqwest::{StatusCode, Url};
use uuid::Uuid;

use crate::AgentError;

/// How long the agent waits on the server (issue 9 item 12: no request may hang the
/// agent). Uploads are bounded by progress rather than in total, so a large package on a
/// slow link still goes through.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Every request but the long-poll (which gets its wait on top) and uploads.
    pub request: Duration,
    /// An upload fails when the server has taken no bytes for this long.
    pub upload_stall: Duration,
    /// Once the whole package is sent, how long the server may take to check it and answer.
    pub upload_answer: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            request: Duration::from_secs(30),
            upload_stall: Duration::from_secs(60),
            upload_answer: Duration::from_secs(600),
        }
    }
}

#[derive(Clone)]
pub struct Transport {
    http: reqwest::Client,
    base: Url,
    credential: Option<String>,
    timeouts: Timeouts,
}

impl Transport {
    pub fn new(server: &str) -> Result<Self, AgentError> {
        Self::with_client_builder(server, reqwest::Client::builder())
    }

    /// [`Transport::new`] on a client builder that already knows whom to trust
    /// (`crate::trust`).
    pub fn with_client_builder(server: &str, builder: reqwest::ClientBuilder) -> Result<Self, AgentError> {
        let base = Url::parse(server.trim_end_matches('/')).map_err(|_| AgentError::BadUrl(server.to_owned()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(AgentError::BadUrl(server.to_owned()));
        }
        let http = builder
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("casefile-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AgentError::Unreachable { url: server.to_owned(), source: e })?;
        Ok(Self { http, base, credential: None, timeouts: Timeouts::default() })
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    pub fn with_credential(mut self, credential: String) -> Self {
        self.credential = Some(credential);
        self
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{PREFIX}{path}", self.base.as_str().trim_end_matches('/'))
    }

    fn authed(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credential {
            Some(c) => builder.bearer_auth(c),
            None => builder,
        }
    }

    async fn send(&self, builder: reqwest::RequestBuilder) -> Result<reqwest::Response, AgentError> {
        let response =
            builder.send().await.map_err(|source| AgentError::Unreachable { url: self.base.to_string(), source })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let message = match response.json::<ErrorBody>().await {
            Ok(body) => format!("{:?}: {}", body.error.code, body.error.message),
            Err(_) => status.canonical_reason().unwrap_or("error").to_owned(),
        };
        if status == StatusCode::UNAUTHORIZED {
            return Err(AgentError::Refused(message));
        }
        Err(AgentError::Server { status: status.as_u16(), message })
    }

    pub async fn enroll(&self, token: &str, request: &EnrollRequest) -> Result<EnrollResponse, AgentError> {
        let builder =
            self.http.post(self.url("/enroll")).bearer_auth(token).json(request).timeout(self.timeouts.request);
        self.decode(self.send(builder).await?).await
    }

    /// A challenge to prove the registered key when re-enrolling; `None` when the server
    /// knows no key for this host (a first enrollment, or after an identity reset).
    pub async fn enroll_challenge(
        &self,
        token: &str,
        request: &EnrollChallengeRequest,
    ) -> Result<Option<EnrollChallenge>, AgentError> {
        let builder = self.http.post(self.url("/enroll/challenge")).bearer_auth(token).json(request);
        match self.send(builder).await {
            Ok(response) => self.decode(response).await.map(Some),
            Err(AgentError::Server { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn hello(&self, request: &HelloRequest) -> Result<HelloResponse, AgentError> {
        let builder = self.authed(self.http.post(self.url("/hello")).json(request)).timeout(self.timeouts.request);
        self.decode(self.send(builder).await?).await
    }

    /// Waits up to `wait` for work; `None` when none came.
    pub async fn next_task(&self, wait: Duration) -> Result<Option<AgentTask>, AgentError> {
        let builder = self
            .authed(self.http.get(self.url("/actions/next")))
            .query(&[("wait", wait.as_secs().to_string()), (CONFIRM_PARAM, "1".to_owned())])
            .timeout(wait + self.timeouts.request);
        let response = self.send(builder).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        self.decode(response).await.map(Some)
    }

    /// Streams the package file to the server with its size and SHA-256. Fails when the
    /// server stops taking bytes for `upload_stall`, or does not answer within
    /// `upload_answer` once it has them all.
    pub async fn upload_package(
        &self,
        action: Uuid,
        file: &Path,
        size: u64,
        sha256: &str,
    ) -> Result<UploadReceipt, AgentError> {
        let handle =
            tokio::fs::File::open(file).await.map_err(|source| AgentError::State { path: file.to_owned(), source })?;
        let progress = Arc::new(Progress::default());
        let counted = {
            let counter = progress.clone();
            let chunks = tokio_util::io::ReaderStream::with_capacity(handle, 256 * 1024);
            futures::StreamExt::chain(
                futures::StreamExt::inspect(chunks, move |chunk| {
                    if let Ok(chunk) = chunk {
                        counter.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                }),
                futures::stream::poll_fn({
                    let done = progress.clone();
                    move |_| {
                        done.sent.store(true, Ordering::Relaxed);
                        std::task::Poll::Ready(None)
                    }
                }),
            )
        };
        let builder = self
            .authed(self.http.put(self.url(&format!("/actions/{action}/package"))))
            .header(reqwest::header::CONTENT_TYPE, "application/zip")
            .header(reqwest::header::CONTENT_LENGTH, size)
            .header(SHA256_HEADER, sha256)
            .body(reqwest::Body::wrap_stream(counted));
        let answer = async { self.decode::<UploadReceipt>(self.send(builder).await?).await };
        let mut answer = std::pin::pin!(answer);
        let mut seen = 0;
        loop {
            tokio::select! {
                answered = &mut answer => return answered,
                _ = tokio::time::sleep(self.timeouts.upload_stall) => {}
            }
            // The connection may stop reading the body once it has its length.
            if progress.sent.load(Ordering::Relaxed) || progress.bytes.load(Ordering::Relaxed) >= size {
                return tokio::time::timeout(self.timeouts.upload_answer, answer).await.unwrap_or_else(|_| {
                    Err(AgentError::TimedOut(format!(
                        "the server did not answer within {:?} after the whole package was sent",
                        self.timeouts.upload_answer
                    )))
                });
            }
            let now = progress.bytes.load(Ordering::Relaxed);
            if now == seen {
                return Err(AgentError::TimedOut(format!(
                    "the upload made no progress for {:?} ({now} of {size} bytes sent)",
                    self.timeouts.upload_stall
                )));
            }
            seen = now;
        }
    }

    pub async fn report_failure(&self, action: Uuid, failure: &ActionFailure) -> Result<(), AgentError> {
        let builder = self
            .authed(self.http.post(self.url(&format!("/actions/{action}/failure"))).json(failure))
            .timeout(self.timeouts.request);
        self.send(builder).await.map(|_| ())
    }

    /// Reports how far a running collection has got.
    pub async fn report_progress(
        &self,
        action: Uuid,
        progress: &casefile_proto::agent::ProgressReport,
    ) -> Result<(), AgentError> {
        let builder = self
            .authed(self.http.put(self.url(&format!("/actions/{action}/progress"))).json(progress))
            .timeout(self.timeouts.request);
        self.send(builder).await.map(|_| ())
    }

    /// Confirms that a cancelled collection has stopped.
    pub async fn confirm_cancel(&self, action: Uuid) -> Result<(), AgentError> {
        let builder = self
            .authed(self.http.post(self.url(&format!("/actions/{action}/cancelled"))))
            .timeout(self.timeouts.request);
        self.send(builder).await.map(|_| ())
    }

    /// Confirms that the action handed out by a poll arrived; unconfirmed, it is offered again.
    pub async fn accept(&self, action: Uuid) -> Result<(), AgentError> {
        let builder = self
            .authed(self.http.post(self.url(&format!("/actions/{action}/accepted"))))
            .timeout(self.timeouts.request);
        self.send(builder).await.map(|_| ())
    }

    async fn decode<T: serde::de::DeserializeOwned>(&self, response: reqwest::Response) -> Result<T, AgentError> {
        response.json().await.map_err(|source| AgentError::Unreachable { url: self.base.to_string(), source })
    }
}

/// How far an upload got: bytes handed to the connection, and whether all were.
#[derive(Default)]
struct Progress {
    bytes: AtomicU64,
    sent: AtomicBool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that takes connections and never answers (nor reads a byte).
    async fn mute_server() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        (base, task)
    }

    fn timeouts() -> Timeouts {
        Timeouts {
            request: Duration::from_millis(300),
            upload_stall: Duration::from_millis(300),
            upload_answer: Duration::from_millis(300),
        }
    }

    /// Issue 9 item 12: no agent request waits forever on a server that never answers
    /// (`confirm_cancel` used to hang the agent's main loop). The outer bound only turns a
    /// hang into a failure.
    #[tokio::test]
    async fn every_request_gives_up_on_a_server_that_never_answers() {
        let (base, _server) = mute_server().await;
        let transport = Transport::new(&base).unwrap().with_credential("c".into()).with_timeouts(timeouts());
        let id = Uuid::new_v4();
        let bound = Duration::from_secs(60);
        let failure = ActionFailure { error_h_result: 1, troubleshoot_info: "x".into() };
        let host = HelloRequest { host: crate::host::info(transport.base()), holding: vec![] };
        let errors = [
            tokio::time::timeout(bound, transport.confirm_cancel(id)).await.expect("confirm_cancel timed out").err(),
            tokio::time::timeout(bound, transport.report_failure(id, &failure)).await.expect("report_failure").err(),
            tokio::time::timeout(bound, transport.accept(id)).await.expect("accept").err(),
            tokio::time::timeout(bound, transport.hello(&host)).await.expect("hello").err(),
            tokio::time::timeout(bound, transport.next_task(Duration::ZERO)).await.expect("next_task").err(),
        ];
        for error in errors {
            assert!(matches!(error, Some(AgentError::Unreachable { .. })), "{error:?}");
        }
    }

    /// Issue 9 item 12: an upload to a server that takes the bytes and never answers ends
    /// with a timeout, as does one to a server that stops taking bytes.
    #[tokio::test]
    async fn uploads_give_up_when_the_server_stops_taking_bytes_or_never_answers() {
        let (base, _server) = mute_server().await;
        let transport = Transport::new(&base).unwrap().with_credential("c".into()).with_timeouts(timeouts());
        let dir = tempfile::tempdir().unwrap();
        let bound = Duration::from_secs(60);
        // Small: the socket buffers take it all, then no answer comes.
        let small = dir.path().join("small.zip");
        std::fs::write(&small, b"zip").unwrap();
        let error = tokio::time::timeout(bound, transport.upload_package(Uuid::new_v4(), &small, 3, "ab"))
            .await
            .expect("the upload gave up")
            .unwrap_err();
        assert!(matches!(&error, AgentError::TimedOut(why) if why.contains("did not answer")), "{error}");
        // Large: more than the socket buffers hold, so the upload stalls.
        let large = dir.path().join("large.zip");
        let size = 256u64 << 20;
        std::fs::File::create(&large).unwrap().set_len(size).unwrap();
        let error = tokio::time::timeout(bound, transport.upload_package(Uuid::new_v4(), &large, size, "ab"))
            .await
            .expect("the upload gave up")
            .unwrap_err();
        assert!(matches!(&error, AgentError::TimedOut(why) if why.contains("no progress")), "{error}");
    }
}
