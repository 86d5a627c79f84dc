//! The agent's side of the agent API, over HTTP(S) with reqwest.

use std::path::Path;
use std::time::Duration;

use casefile_proto::ErrorBody;
use casefile_proto::agent::{
    ActionFailure, AgentTask, EnrollRequest, EnrollResponse, HelloRequest, HelloResponse, PREFIX, SHA256_HEADER,
    UploadReceipt,
};
use reqwest::{StatusCode, Url};
use uuid::Uuid;

use crate::AgentError;

#[derive(Clone)]
pub struct Transport {
    http: reqwest::Client,
    base: Url,
    credential: Option<String>,
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
        Ok(Self { http, base, credential: None })
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
        let builder = self.http.post(self.url("/enroll")).bearer_auth(token).json(request);
        self.decode(self.send(builder).await?).await
    }

    pub async fn hello(&self, request: &HelloRequest) -> Result<HelloResponse, AgentError> {
        let builder = self.authed(self.http.post(self.url("/hello")).json(request));
        self.decode(self.send(builder).await?).await
    }

    /// Waits up to `wait` for work; `None` when none came.
    pub async fn next_task(&self, wait: Duration) -> Result<Option<AgentTask>, AgentError> {
        let builder = self
            .authed(self.http.get(self.url("/actions/next")))
            .query(&[("wait", wait.as_secs())])
            .timeout(wait + Duration::from_secs(30));
        let response = self.send(builder).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        self.decode(response).await.map(Some)
    }

    /// Streams the package file to the server with its size and SHA-256.
    pub async fn upload_package(
        &self,
        action: Uuid,
        file: &Path,
        size: u64,
        sha256: &str,
    ) -> Result<UploadReceipt, AgentError> {
        let handle =
            tokio::fs::File::open(file).await.map_err(|source| AgentError::State { path: file.to_owned(), source })?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(handle, 256 * 1024));
        let builder = self
            .authed(self.http.put(self.url(&format!("/actions/{action}/package"))))
            .header(reqwest::header::CONTENT_TYPE, "application/zip")
            .header(reqwest::header::CONTENT_LENGTH, size)
            .header(SHA256_HEADER, sha256)
            .body(body);
        self.decode(self.send(builder).await?).await
    }

    pub async fn report_failure(&self, action: Uuid, failure: &ActionFailure) -> Result<(), AgentError> {
        let builder = self.authed(self.http.post(self.url(&format!("/actions/{action}/failure"))).json(failure));
        self.send(builder).await.map(|_| ())
    }

    /// Confirms that a cancelled collection has stopped.
    pub async fn confirm_cancel(&self, action: Uuid) -> Result<(), AgentError> {
        let builder = self.authed(self.http.post(self.url(&format!("/actions/{action}/cancelled"))));
        self.send(builder).await.map(|_| ())
    }

    async fn decode<T: serde::de::DeserializeOwned>(&self, response: reqwest::Response) -> Result<T, AgentError> {
        response.json().await.map_err(|source| AgentError::Unreachable { url: self.base.to_string(), source })
    }
}
