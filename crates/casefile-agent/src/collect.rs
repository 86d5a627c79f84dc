//! Runs the collectors into a package file: the zip is streamed to disk (never staged
//! in memory), signed, then hashed for the upload.
//!
//! Governance: the collection runs on its own thread at the lowest CPU priority (nice 19;
//! the kernel derives the lowest best-effort IO priority from it), each collector on a
//! thread of its own with a deadline, and the package stops growing at a size cap. A
//! collector that hangs is abandoned at its deadline (its thread is left to finish or
//! block on its own) and recorded as timed out; the package still completes.

use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use casefile_collectors::{CollectError, Collector, Context, Limits};
use casefile_package::writer::PackageMeta;
use casefile_package::{ItemOutcome, ItemSink, Manifest, ManifestHost, PackageError, PackageWriter};
use casefile_proto::action::{Progress, ProgressPhase};
use casefile_proto::profile::{CollectorSpec, Profile};
use ed25519_dalek::SigningKey;
use uuid::Uuid;

use crate::{AGENT_VERSION, AgentError, host};

/// The collectors a collection runs, shared by every collection.
#[derive(Clone)]
pub struct Collectors(pub Arc<Vec<Box<dyn Collector>>>);

impl Collectors {
    pub fn all() -> Self {
        Self(Arc::new(casefile_collectors::all()))
    }
}

impl std::fmt::Debug for Collectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|c| c.name())).finish()
    }
}

/// Bounds of one collection, beyond the collectors' own [`casefile_collectors::Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Governance {
    /// Longest one collector may run.
    pub collector_timeout: Duration,
    /// Once the package is this large, no further file is started (one file in progress
    /// may still finish, within the collectors' file cap).
    pub max_package_bytes: u64,
    /// Run at nice 19 (lowest CPU priority, and the lowest IO priority derived from it).
    pub low_priority: bool,
}

impl Default for Governance {
    fn default() -> Self {
        Self { collector_timeout: Duration::from_secs(300), max_package_bytes: 4 << 30, low_priority: true }
    }
}

#[derive(Debug, Clone)]
pub struct CollectedPackage {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub manifest: Manifest,
}

/// What one collection runs: its collectors, each with its limits and deadline, in order.
#[derive(Debug)]
struct Plan {
    collectors: Collectors,
    steps: Vec<Step>,
    max_package_bytes: u64,
    /// The profile's collector names, for the collectors (`Context::running`).
    running: Option<Arc<[String]>>,
}

#[derive(Debug)]
struct Step {
    /// Index in [`Plan::collectors`]; `None`: the profile names a collector this agent lacks.
    index: Option<usize>,
    name: String,
    limits: Limits,
    timeout: Duration,
}

impl Plan {
    /// Every collector of `collectors`, under the collection's own limits.
    fn of(collectors: Collectors, limits: Limits, governance: &Governance) -> Self {
        let steps = (collectors.0.iter().enumerate())
            .map(|(index, c)| Step {
                index: Some(index),
                name: c.name().to_owned(),
                limits,
                timeout: governance.collector_timeout,
            })
            .collect();
        Self { collectors, steps, max_package_bytes: governance.max_package_bytes, running: None }
    }

    /// The collectors `profile` names, its budgets over the agent's defaults; the agent's
    /// package cap still holds when the profile's is larger.
    fn of_profile(profile: &Profile, limits: Limits, governance: &Governance) -> Self {
        let mut collectors = Vec::new();
        let steps = profile
            .collectors
            .iter()
            .map(|spec| {
                let index = casefile_collectors::by_name(&spec.name).map(|collector| {
                    collectors.push(collector);
                    collectors.len() - 1
                });
                Step {
                    index,
                    name: spec.name.clone(),
                    limits: spec_limits(spec, limits),
                    timeout: spec.timeout_seconds.map_or(governance.collector_timeout, Duration::from_secs),
                }
            })
            .collect();
        let max_package_bytes =
            profile.max_package_bytes.map_or(governance.max_package_bytes, |cap| cap.min(governance.max_package_bytes));
        let running = Some(profile.collectors.iter().map(|c| c.name.clone()).collect());
        Self { collectors: Collectors(Arc::new(collectors)), steps, max_package_bytes, running }
    }
}

fn spec_limits(spec: &CollectorSpec, base: Limits) -> Limits {
    Limits {
        max_file_bytes: spec.max_file_bytes.unwrap_or(base.max_file_bytes),
        max_log_bytes: spec.max_log_bytes.unwrap_or(base.max_log_bytes),
        command_timeout: spec.command_timeout_seconds.map_or(base.command_timeout, Duration::from_secs),
        max_total_bytes: spec.max_total_bytes.unwrap_or(base.max_total_bytes),
    }
}

/// Where a collection tells how far it has got (the runner forwards it to the server).
pub type ProgressSender = tokio::sync::watch::Sender<Option<Progress>>;

pub fn package_meta(action_id: Option<Uuid>, machine_id: Option<String>) -> PackageMeta {
    PackageMeta {
        tool: "casefile-agent".to_owned(),
        agent_version: AGENT_VERSION.to_owned(),
        host: ManifestHost {
            hostname: host::hostname(),
            machine_id,
            os: host::os_release("PRETTY_NAME").unwrap_or_else(|| "Linux".to_owned()),
            kernel: host::kernel(),
            architecture: std::env::consts::ARCH.to_owned(),
        },
        action_id,
        profile: None,
    }
}

/// Everything a collection needs, owned, so it can run on a thread of its own.
pub struct Collection {
    pub output: PathBuf,
    pub meta: PackageMeta,
    pub ctx: Context,
    pub collectors: Collectors,
    /// What to run; `None`: every collector of `collectors` under `ctx.limits`.
    pub profile: Option<Profile>,
    pub governance: Governance,
    pub signer: SigningKey,
    /// Told how far the collection has got, as it goes.
    pub progress: Option<ProgressSender>,
}

impl Collection {
    /// Runs the collection on a dedicated thread (its priority must not leak into a
    /// shared pool) and waits for it without blocking the async runtime.
    pub async fn run(self) -> Result<CollectedPackage, AgentError> {
        let (done, result) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("casefile-collection".to_owned())
            .spawn(move || {
                let _ = done.send(self.run_blocking());
            })
            .map_err(|e| AgentError::Collection(format!("cannot start the collection thread: {e}")))?;
        result.await.map_err(|_| AgentError::Collection("the collection thread ended without a result".to_owned()))?
    }

    /// Writes the package to `output`. Blocking.
    pub fn run_blocking(self) -> Result<CollectedPackage, AgentError> {
        if self.governance.low_priority {
            lower_priority();
        }
        let output = self.output.clone();
        let io_error = |source| AgentError::State { path: output.clone(), source };
        let file = std::fs::File::create(&output).map_err(io_error)?;
        let written = Arc::new(AtomicU64::new(0));
        let counted = Counting { inner: io::BufWriter::with_capacity(256 * 1024, file), written: written.clone() };
        let plan = match &self.profile {
            Some(profile) => Plan::of_profile(profile, self.ctx.limits, &self.governance),
            None => Plan::of(self.collectors.clone(), self.ctx.limits, &self.governance),
        };
        let mut meta = self.meta.clone();
        meta.profile = self.profile.as_ref().map(|p| p.name.clone());
        let mut writer = PackageWriter::new(counted, meta);
        let total = plan.steps.len() as u32;
        for (done, step) in plan.steps.iter().enumerate() {
            if self.ctx.cancel.is_cancelled() {
                return Err(AgentError::Collection("cancelled".to_owned()));
            }
            self.report(done as u32, total, Some(&step.name), written.load(Ordering::Relaxed));
            let Some(index) = step.index else {
                writer.begin_collector(&step.name, &step.name);
                writer.end_collector(Some(format!(
                    "this agent ({AGENT_VERSION}) has no collector named {}: update the agent",
                    step.name
                )));
                continue;
            };
            let collector = &plan.collectors.0[index];
            writer.begin_collector(collector.name(), collector.folder());
            if written.load(Ordering::Relaxed) >= plan.max_package_bytes {
                writer.end_collector(Some(format!(
                    "skipped: the package reached its size cap of {} bytes",
                    plan.max_package_bytes
                )));
                continue;
            }
            let started = Instant::now();
            let ended = self.run_one(&plan, step, index, &mut writer, &written)?;
            tracing::info!(
                collector = %step.name,
                step = done + 1,
                of = total,
                seconds = started.elapsed().as_secs_f32(),
                package_bytes = written.load(Ordering::Relaxed),
                "collector finished"
            );
            writer.end_collector(ended);
        }
        self.report(total, total, None, written.load(Ordering::Relaxed));
        let (out, manifest) = writer.finish_signed(&self.signer).map_err(|e| AgentError::Collection(e.to_string()))?;
        let file = out.inner.into_inner().map_err(|e| io_error(e.into_error()))?;
        file.sync_all().map_err(io_error)?;
        drop(file);
        let (sha256, size) = std::fs::File::open(&output).and_then(casefile_package::hash_reader).map_err(io_error)?;
        Ok(CollectedPackage { path: output, size, sha256, manifest })
    }

    /// Tells the progress watcher, if any, where the collection stands.
    fn report(&self, done: u32, total: u32, collector: Option<&str>, package_bytes: u64) {
        if let Some(progress) = &self.progress {
            progress.send_replace(Some(Progress {
                phase: ProgressPhase::Collecting,
                collectors_done: done,
                collectors_total: total,
                collector: collector.map(str::to_owned),
                package_bytes,
                uploaded_bytes: 0,
                updated_date_time_utc: None,
            }));
        }
    }

    /// Runs collector `index` of the plan on its own thread, writing what it streams.
    /// Returns why it stopped early, if it did; `Err` only when the package itself cannot
    /// be written or the collection was cancelled.
    fn run_one<W: Write + Seek>(
        &self,
        plan: &Plan,
        step: &Step,
        index: usize,
        writer: &mut PackageWriter<W>,
        written: &AtomicU64,
    ) -> Result<Option<String>, AgentError> {
        let name = plan.collectors.0[index].name();
        let (tx, rx) = sync_channel::<Message>(CHANNEL_CHUNKS);
        let ctx = Context {
            cancel: self.ctx.cancel.child_token(),
            limits: step.limits,
            running: plan.running.clone(),
            ..self.ctx.clone()
        };
        let stop = ctx.cancel.clone();
        let collectors = plan.collectors.clone();
        std::thread::Builder::new()
            .name(format!("collector-{name}"))
            .spawn(move || {
                let mut sink = ChannelSink { tx: tx.clone() };
                let result = collectors.0[index].collect(&ctx, &mut sink);
                let _ = tx.send(Message::Done(result));
            })
            .map_err(|e| AgentError::Collection(format!("cannot start the {name} collector: {e}")))?;

        // A deadline past what an `Instant` holds is a year away: the profile was checked, this
        // is only so that no value can panic.
        let deadline = Instant::now().checked_add(step.timeout);
        let deadline = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 86_400));
        let mut pump = Pump { rx, deadline, cancel: &self.ctx.cancel, stopped: None };
        let ended = loop {
            match pump.next() {
                // The cap is checked as each file starts: a file in progress is finished.
                Next::Message(Message::Begin { .. }) if written.load(Ordering::Relaxed) >= plan.max_package_bytes => {
                    break Some(format!(
                        "stopped: the package reached its size cap of {} bytes",
                        plan.max_package_bytes
                    ));
                }
                Next::Message(Message::Begin { name, source }) => {
                    let sink: &mut dyn ItemSink = writer;
                    sink.add_item(&name, &source, &mut |out| pump.copy_item(out)).map_err(package_error)?;
                    if let Some(why) = pump.stopped.take() {
                        break Some(why);
                    }
                }
                Next::Message(Message::Done(Ok(()))) => break None,
                Next::Message(Message::Done(Err(CollectError::Stopped(why)))) => break Some(why),
                Next::Message(Message::Done(Err(CollectError::Cancelled))) | Next::Cancelled => {
                    stop.cancel();
                    return Err(AgentError::Collection("cancelled".to_owned()));
                }
                Next::Message(Message::Done(Err(CollectError::Package(e)))) => {
                    break Some(format!("the {name} collector failed: {e}"));
                }
                Next::Message(Message::Data(_) | Message::End(_)) => {
                    break Some(format!("the {name} collector wrote outside a file"));
                }
                Next::TimedOut => break Some(timed_out(name, step.timeout)),
                Next::Gone => break Some(format!("the {name} collector crashed")),
            }
        };
        // Whatever still runs of it is told to stop; its writes go nowhere from now on.
        stop.cancel();
        Ok(ended)
    }
}

fn timed_out(name: &str, limit: Duration) -> String {
    format!("the {name} collector timed out after {} s and was abandoned", limit.as_secs())
}

fn package_error(e: PackageError) -> AgentError {
    AgentError::Collection(e.to_string())
}

/// Chunks in flight between a collector and the writer: memory stays a few chunks.
const CHANNEL_CHUNKS: usize = 4;
const CHUNK: usize = 64 * 1024;
/// How often a waiting writer looks at the cancellation token.
const CANCEL_CHECK: Duration = Duration::from_millis(100);

enum Message {
    Begin { name: String, source: String },
    Data(Vec<u8>),
    End(Result<ItemOutcome, String>),
    Done(Result<(), CollectError>),
}

enum Next {
    Message(Message),
    TimedOut,
    Cancelled,
    /// The collector thread ended without saying so: it panicked.
    Gone,
}

/// The writer's end of a collector's channel.
struct Pump<'a> {
    rx: Receiver<Message>,
    deadline: Instant,
    cancel: &'a tokio_util::sync::CancellationToken,
    /// Set when the collector stopped in the middle of a file.
    stopped: Option<String>,
}

impl Pump<'_> {
    fn next(&mut self) -> Next {
        loop {
            if self.cancel.is_cancelled() {
                return Next::Cancelled;
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::TimedOut;
            }
            match self.rx.recv_timeout(left.min(CANCEL_CHECK)) {
                Ok(message) => return Next::Message(message),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Next::Gone,
            }
        }
    }

    /// Copies one file's chunks into `out` until its end; a collector that stops in the
    /// middle leaves the file `partial` and `stopped` set.
    fn copy_item(&mut self, out: &mut dyn Write) -> io::Result<ItemOutcome> {
        loop {
            match self.next() {
                Next::Message(Message::Data(bytes)) => out.write_all(&bytes)?,
                Next::Message(Message::End(Ok(outcome))) => return Ok(outcome),
                Next::Message(Message::End(Err(why))) => return Err(io::Error::other(why)),
                Next::TimedOut => {
                    self.stopped = Some("timed out while writing a file".to_owned());
                    return Ok(ItemOutcome::partial("the collector timed out while writing this file"));
                }
                other => {
                    self.stopped = Some(match other {
                        Next::Cancelled => "cancelled".to_owned(),
                        Next::Gone => "crashed while writing a file".to_owned(),
                        _ => "stopped while writing a file".to_owned(),
                    });
                    return Ok(ItemOutcome::partial("the collector stopped while writing this file"));
                }
            }
        }
    }
}

/// The collector's end: files become a `Begin`, bounded `Data` chunks and an `End`.
struct ChannelSink {
    tx: SyncSender<Message>,
}

impl ItemSink for ChannelSink {
    fn add_item(
        &mut self,
        name: &str,
        source: &str,
        fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<ItemOutcome>,
    ) -> Result<(), PackageError> {
        let gone = |_| PackageError::Cancelled;
        self.tx.send(Message::Begin { name: name.to_owned(), source: source.to_owned() }).map_err(gone)?;
        let mut chunks = Chunks { tx: &self.tx, buf: Vec::with_capacity(CHUNK), abandoned: false };
        let result = fill(&mut chunks).and_then(|outcome| chunks.flush().map(|()| outcome));
        if chunks.abandoned {
            return Err(PackageError::Cancelled);
        }
        self.tx.send(Message::End(result.map_err(|e| e.to_string()))).map_err(gone)
    }
}

struct Chunks<'a> {
    tx: &'a SyncSender<Message>,
    buf: Vec<u8>,
    /// The writer stopped reading this collector (timeout, size cap, cancellation).
    abandoned: bool,
}

impl Write for Chunks<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let take = bytes.len().min(room);
        self.buf.extend_from_slice(&bytes[..take]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.send(Message::Data(full)).map_err(|_| {
            self.abandoned = true;
            io::Error::other("the collection stopped reading this collector")
        })
    }
}

/// Counts the bytes the package has on disk, for the size cap.
struct Counting<W> {
    inner: W,
    written: Arc<AtomicU64>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(bytes)?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Seek> Seek for Counting<W> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        self.inner.seek(to)
    }
}

/// Nice 19 for this thread and the threads it starts.
fn lower_priority() {
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
        tracing::warn!("could not lower the collection's priority: {e}");
    }
}

/// Writes a package of `collectors` to `output` on the calling thread, with the default
/// governance. For the offline collector and tests.
pub fn write_package(
    output: &Path,
    meta: PackageMeta,
    ctx: &Context,
    collectors: Collectors,
    signer: &SigningKey,
) -> Result<CollectedPackage, AgentError> {
    Collection {
        output: output.to_owned(),
        meta,
        ctx: ctx.clone(),
        collectors,
        profile: None,
        governance: Governance::default(),
        signer: signer.clone(),
        progress: None,
    }
    .run_blocking()
}
