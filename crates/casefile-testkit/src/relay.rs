//! A TCP relay in front of a server that cuts connections at chosen points of the bytes
//! it passes upstream (client to server), and can be pointed at another server while it
//! runs (a restarted server on a new port, another replica). For tests of uploads that
//! break off and resume. Stopped when dropped.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What the relay passed and where it cuts next.
#[derive(Default)]
struct Tally {
    /// Bytes passed upstream, over every connection.
    passed: u64,
    /// Upstream byte counts at which the connection passing them is cut, ascending.
    cuts: VecDeque<u64>,
    /// Connections cut so far.
    cut: u32,
    /// Where new connections go after the next cut.
    after_cut: Option<SocketAddr>,
}

pub struct CuttingRelay {
    pub addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    tally: Arc<Mutex<Tally>>,
    passed: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttingRelay {
    /// Relays to `upstream`, cutting the connection that passes the `cuts`-th upstream
    /// byte (counted over all connections) at each of `cuts`.
    pub async fn start(upstream: SocketAddr, mut cuts: Vec<u64>) -> Self {
        cuts.sort_unstable();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a local port");
        let addr = listener.local_addr().expect("bound");
        let upstream = Arc::new(Mutex::new(upstream));
        let tally = Arc::new(Mutex::new(Tally { cuts: cuts.into(), ..Tally::default() }));
        let (report, passed) = tokio::sync::watch::channel(0u64);
        let report = Arc::new(report);
        let task = tokio::spawn({
            let (upstream, tally) = (upstream.clone(), tally.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let to = *upstream.lock().unwrap_or_else(|e| e.into_inner());
                    tokio::spawn(relay(client, to, upstream.clone(), tally.clone(), report.clone()));
                }
            }
        });
        Self { addr, upstream, tally, passed, task }
    }

    /// New connections go to `upstream` from now on.
    pub fn retarget(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap_or_else(|e| e.into_inner()) = upstream;
    }

    /// New connections go to `upstream` once the next cut happened (another replica takes
    /// over exactly where the first one lost the client).
    pub fn retarget_at_next_cut(&self, upstream: SocketAddr) {
        self.tally.lock().unwrap_or_else(|e| e.into_inner()).after_cut = Some(upstream);
    }

    /// Bytes passed upstream so far.
    pub fn passed_upstream(&self) -> u64 {
        self.tally.lock().unwrap_or_else(|e| e.into_inner()).passed
    }

    /// Connections cut so far.
    pub fn cuts_made(&self) -> u32 {
        self.tally.lock().unwrap_or_else(|e| e.into_inner()).cut
    }

    /// Waits until at least `bytes` passed upstream.
    pub async fn wait_passed(&self, bytes: u64) {
        let mut passed = self.passed.clone();
        let _ = passed.wait_for(|p| *p >= bytes).await;
    }
}

impl Drop for CuttingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    client: tokio::net::TcpStream,
    upstream: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    tally: Arc<Mutex<Tally>>,
    report: Arc<tokio::sync::watch::Sender<u64>>,
) {
    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { return };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let (take, cut) = {
                let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
                let room = tally.cuts.front().map_or(n as u64, |at| at.saturating_sub(tally.passed));
                let take = (n as u64).min(room) as usize;
                tally.passed += take as u64;
                let cut = tally.cuts.front().is_some_and(|at| tally.passed >= *at);
                if cut {
                    tally.cuts.pop_front();
                    tally.cut += 1;
                    if let Some(next) = tally.after_cut.take() {
                        *target.lock().unwrap_or_else(|e| e.into_inner()) = next;
                    }
                }
                report.send_replace(tally.passed);
                (take, cut)
            };
            if server_write.write_all(&buffer[..take]).await.is_err() || cut {
                return;
            }
        }
    };
    let down = tokio::io::copy(&mut server_read, &mut client_write);
    // Either side ending ends both: a cut closes the client's and the server's connections.
    tokio::select! {
        () = up => {}
        _ = down => {}
    }
}
