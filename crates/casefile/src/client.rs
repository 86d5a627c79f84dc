//! A small client of casefile's public API, written as an MDE script would be.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use casefile_proto::machine::Machine;
use casefile_proto::odata::{Collection, Value};
use casefile_proto::{ErrorBody, MachineAction};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl ApiClient {
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        Self::with_ca(base, token, None)
    }

    /// A client that trusts only the CA certificate in `cacert` (PEM), e.g. the server's
    /// generated `<data_dir>/tls/ca.pem`; `None`: the system's roots.
    pub fn with_ca(base: &str, token: &str, cacert: Option<&Path>) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if let Some(path) = cacert {
            let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let ca = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
            builder = builder.tls_certs_only([ca]);
        }
        Ok(Self { http: builder.build()?, base: base.trim_end_matches('/').to_owned(), token: token.to_owned() })
    }

    async fn check(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        match response.json::<ErrorBody>().await {
            Ok(body) => bail!("{status}: {:?}: {}", body.error.code, body.error.message),
            Err(_) => bail!("{status}"),
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        Ok(Self::check(response).await?.json().await?)
    }

    pub async fn machines(&self) -> anyhow::Result<Vec<Machine>> {
        Ok(self.get::<Collection<Machine>>("/api/machines").await?.value)
    }

    pub async fn collect(&self, machine_id: &str, comment: &str) -> anyhow::Result<MachineAction> {
        let response = self
            .http
            .post(format!("{}/api/machines/{machine_id}/collectInvestigationPackage", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "Comment": comment }))
            .send()
            .await?;
        Ok(Self::check(response).await?.json().await?)
    }

    pub async fn action(&self, id: uuid::Uuid) -> anyhow::Result<MachineAction> {
        self.get(&format!("/api/machineactions/{id}")).await
    }

    pub async fn package_uri(&self, id: uuid::Uuid) -> anyhow::Result<String> {
        Ok(self.get::<Value<String>>(&format!("/api/machineactions/{id}/GetPackageUri")).await?.value)
    }

    /// Uploads a package file as an offline collection of `machine`.
    pub async fn import(
        &self,
        machine: &str,
        file: &Path,
        size: u64,
        sha256: &str,
        comment: Option<&str>,
    ) -> anyhow::Result<MachineAction> {
        let handle = tokio::fs::File::open(file).await.with_context(|| format!("cannot open {}", file.display()))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(handle, 256 * 1024));
        let mut request = self
            .http
            .post(format!("{}/api/machines/{machine}/importInvestigationPackage", self.base))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/zip")
            .header(reqwest::header::CONTENT_LENGTH, size)
            .header(casefile_proto::agent::SHA256_HEADER, sha256)
            .body(body);
        if let Some(comment) = comment {
            request = request.query(&[("comment", comment)]);
        }
        let response = request.send().await.with_context(|| format!("cannot reach {}", self.base))?;
        Ok(Self::check(response).await?.json().await?)
    }

    /// Streams `url` (a signed link, no bearer token) to `path`; returns the byte count.
    pub async fn download(&self, url: &str, path: &Path) -> anyhow::Result<u64> {
        let response = Self::check(self.http.get(url).send().await?).await?;
        let mut file =
            tokio::fs::File::create(path).await.with_context(|| format!("cannot create {}", path.display()))?;
        let mut stream = response.bytes_stream();
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            total += chunk.len() as u64;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(total)
    }
}
