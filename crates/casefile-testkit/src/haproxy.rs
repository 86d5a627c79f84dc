//! HAProxy (Debian's package) in front of several `casefile server` replicas.
//!
//! TLS is passed through (`mode tcp`): each replica terminates TLS itself with the same
//! certificate and CA, so an agent's pinned CA is checked end to end against the replica
//! that answers, and the balancer holds no key and sees no token or package. (Terminating
//! and re-encrypting in `mode http` would need the server's private key on the balancer
//! and make it a party every agent has to trust.) Health checks ask each replica's
//! `/readyz` over TLS, verifying it against the same CA; timeouts outlast long-polls.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::{free_port, unavailable};

/// How long HAProxy gets to start.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A running HAProxy, stopped (with its worker) when dropped.
pub struct HaProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The configuration it runs, for tests and docs to show.
    pub config: String,
    child: Child,
    _dir: tempfile::TempDir,
}

/// The HAProxy configuration casefile's README describes: round-robin over `backends`,
/// TLS passed through, `/readyz` checked over TLS against `ca_file`.
pub fn config(listen: SocketAddr, backends: &[SocketAddr], ca_file: &Path) -> String {
    let mut cfg = format!(
        "global
    log stderr format raw local0 info
    # Health checks verify each replica's certificate with the CA agents pin.
    ca-base /

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    # Longer than any long-poll (agents.poll_wait_seconds) and any pause in an upload.
    timeout client 10m
    timeout server 10m
    # A replica that refuses or drops the connection attempt: try again, on another one.
    retries 3
    option redispatch 1

frontend casefile
    bind {listen}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host casefile
    http-check expect status 200
    default-server check check-ssl verify required ca-file {ca} inter 1s fall 2 rise 1
",
        ca = ca_file.display()
    );
    for (i, backend) in backends.iter().enumerate() {
        cfg.push_str(&format!("    server replica{} {backend}\n", i + 1));
    }
    cfg
}

impl HaProxy {
    /// Starts HAProxy on a free loopback port in front of `backends`; `None` (skipped with
    /// a reason) when `haproxy` is not installed, except in CI.
    pub fn start(backends: &[SocketAddr], ca_file: &Path) -> Option<Self> {
        Self::start_at(([127, 0, 0, 1], free_port()).into(), backends, ca_file)
    }

    /// [`HaProxy::start`] on `addr` (reserved by the caller, e.g. as the replicas' public URL).
    pub fn start_at(addr: SocketAddr, backends: &[SocketAddr], ca_file: &Path) -> Option<Self> {
        let Some(program) = program() else {
            return unavailable("haproxy is not installed (apt-get install haproxy)");
        };
        let dir = tempfile::tempdir().expect("a temporary directory for haproxy");
        let config = config(addr, backends, ca_file);
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, &config).expect("the haproxy configuration written");
        let checked = Command::new(&program).arg("-c").arg("-f").arg(&path).output().expect("haproxy -c runs");
        assert!(
            checked.status.success(),
            "haproxy refuses its configuration:\n{}\n{config}",
            String::from_utf8_lossy(&checked.stderr)
        );
        // Master-worker mode (-W) in the foreground (-db): the master says "Loading
        // success." once the worker has bound the frontend, so the test starts no sooner.
        // The kernel sends TERM to the master when the thread that started it ends, so a
        // test process that dies (`kill -9` included) leaves no HAProxy behind; setpriv
        // sets that and becomes haproxy (same pid). Start it from the test's own thread.
        let mut child = Command::new("setpriv")
            .args(["--pdeathsig", "TERM", "--"])
            .arg(&program)
            .args(["-W", "-db", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("haproxy starts");
        let stderr = BufReader::new(child.stderr.take().expect("haproxy's stderr"));
        let (ready, started) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if line.contains("Loading success.") {
                    let _ = ready.send(());
                }
                eprintln!("haproxy: {line}");
            }
        });
        let proxy = Self { addr, config, child, _dir: dir };
        if started.recv_timeout(START_LIMIT).is_err() {
            panic!("haproxy did not start within {START_LIMIT:?}");
        }
        Some(proxy)
    }

    /// The master process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `https://ADDR`, as agents and clients reach the replicas.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        // SIGTERM: the master stops its worker and reaps it before exiting.
        let terminated = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        if !terminated.is_ok_and(|s| s.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Where `haproxy` is, if it is installed.
pub fn installed() -> Option<PathBuf> {
    program()
}

/// `haproxy` on the PATH, else where Debian puts it (`/usr/sbin`, often not on a user's PATH).
fn program() -> Option<PathBuf> {
    let on_path = Command::new("haproxy").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if on_path.is_ok_and(|s| s.success()) {
        return Some(PathBuf::from("haproxy"));
    }
    let debian = PathBuf::from("/usr/sbin/haproxy");
    debian.exists().then_some(debian)
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use super::*;

    /// A CA certificate whose key was thrown away: enough for HAProxy to load `ca-file`.
    const CA: &str = include_str!("../testdata/throwaway-ca.pem");

    #[test]
    fn starts_listening_and_leaves_nothing_running() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca.path(), CA).unwrap();
        let backends: Vec<SocketAddr> =
            vec![([127, 0, 0, 1], free_port()).into(), ([127, 0, 0, 1], free_port()).into()];
        let Some(proxy) = HaProxy::start(&backends, ca.path()) else { return };
        for (i, backend) in backends.iter().enumerate() {
            assert!(proxy.config.contains(&format!("server replica{} {backend}", i + 1)), "{}", proxy.config);
        }
        // "Loading success." came after the frontend was bound: it accepts at once.
        TcpStream::connect(proxy.addr).expect("haproxy listens once started");
        let master = proxy.child.id();
        let config_path = proxy._dir.path().join("haproxy.cfg").display().to_string();
        drop(proxy);
        assert!(!Path::new(&format!("/proc/{master}")).exists(), "the master is gone and reaped");
        // The worker (same command line) stopped with its master.
        let listed = Command::new("ps").args(["-eo", "args="]).output().unwrap();
        let ps = String::from_utf8_lossy(&listed.stdout);
        assert!(!ps.lines().any(|l| l.contains(&config_path)), "{ps}");
    }
}
