//! An S3-compatible server for tests: moto's (`pip install 'moto[server]'`), on a free
//! loopback port, with one bucket, stopped when the guard drops. The program is
//! `CASEFILE_TEST_MOTO`, else `moto_server` on the `PATH`.
//!
//! Requests to it here are plain HTTP/1.1 over a `TcpStream` (moto accepts unsigned
//! requests), so the testkit needs no HTTP client of its own.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{KillOnDrop, free_port, unavailable};

/// An `Authorization` header of the test key pair (`testing`), unsigned.
const AUTHORIZATION: &str =
    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";

/// How long moto may take to answer after it was started (it imports a lot of Python).
const START_LIMIT: Duration = Duration::from_secs(60);

/// A running moto server with one bucket; killed on drop.
pub struct S3Server {
    pub port: u16,
    pub bucket: String,
    log: PathBuf,
    _process: KillOnDrop,
    _dir: tempfile::TempDir,
}

/// The moto program to run, if there is one.
pub fn moto_program() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CASEFILE_TEST_MOTO") {
        return Some(PathBuf::from(path));
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|dir| dir.join("moto_server")).find(|p| p.is_file())
}

impl S3Server {
    /// Starts moto and creates the bucket `casefile-test`; `None` (skipped) when moto is
    /// not installed, a panic in CI.
    pub fn start() -> Option<Self> {
        let Some(program) = moto_program() else {
            return unavailable("moto_server not found: pip install 'moto[server]' or set CASEFILE_TEST_MOTO");
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("moto.log");
        let out = std::fs::File::create(&log).expect("moto's log file");
        let err = out.try_clone().expect("moto's log file");
        let port = free_port();
        let child = match Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => return unavailable(&format!("cannot run {}: {e}", program.display())),
        };
        let mut server = Self { port, bucket: "casefile-test".to_owned(), log, _process: KillOnDrop(child), _dir: dir };
        let deadline = Instant::now() + START_LIMIT;
        // Polls until moto answers the bucket's creation, or exits, or the deadline passes.
        loop {
            if let Ok(Some(status)) = server._process.0.try_wait() {
                panic!("moto_server exited at start ({status}): {}", server.log_text());
            }
            if let Ok((200, _)) = server.request("PUT", &format!("/{}", server.bucket)) {
                return Some(server);
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer within {START_LIMIT:?}: {}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The S3 endpoint (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://BUCKET/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The `AWS_*` variables a client of this server needs (moto takes any key pair).
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_REGION", "us-east-1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// The keys in the bucket below `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let (status, body) = self
            .request("GET", &format!("/{}?list-type=2&max-keys=1000&prefix={}", self.bucket, encode(prefix)))
            .expect("listing the bucket");
        assert_eq!(status, 200, "listing the bucket: {body}");
        let mut keys = elements(&body, "Key");
        keys.sort();
        keys
    }

    /// The bucket's multipart uploads that were started and neither completed nor aborted,
    /// as their keys.
    pub fn pending_uploads(&self) -> Vec<String> {
        let (status, body) = self.request("GET", &format!("/{}?uploads", self.bucket)).expect("listing uploads");
        assert_eq!(status, 200, "listing multipart uploads: {body}");
        elements(&body, "Key")
    }

    /// An object's bytes, unsigned (moto does not check), or `None` when it is not there.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        let (status, body) = self.request_bytes("GET", &format!("/{}/{key}", self.bucket)).expect("getting an object");
        match status {
            200 => Some(body),
            404 => None,
            other => panic!("getting {key} answered {other}: {}", String::from_utf8_lossy(&body)),
        }
    }

    /// What moto logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn request(&self, method: &str, target: &str) -> std::io::Result<(u16, String)> {
        self.request_bytes(method, target).map(|(s, b)| (s, String::from_utf8_lossy(&b).into_owned()))
    }

    /// One HTTP/1.1 request with `Connection: close`; the status and the body.
    fn request_bytes(&self, method: &str, target: &str) -> std::io::Result<(u16, Vec<u8>)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        // Moto checks no signature, but answers an anonymous GET of an object `PUT` with
        // credentials `403`: any `Authorization` makes the request the key pair's.
        write!(
            stream,
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\
             Authorization: {AUTHORIZATION}\r\n\r\n",
            self.port
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no end of the response header"))?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {head}")))?;
        let mut body = raw[split + 4..].to_vec();
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        Ok((status, body))
    }
}

/// The text of every `<name>…</name>` element in `xml`.
fn elements(xml: &str, name: &str) -> Vec<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    xml.split(open.as_str())
        .skip(1)
        .filter_map(|rest| rest.split_once(close.as_str()).map(|(v, _)| v.to_owned()))
        .collect()
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&body[..end]).trim(), 16).unwrap_or(0);
        if size == 0 || body.len() < end + 2 + size {
            break;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[(end + 2 + size + 2).min(body.len())..];
    }
    out
}
