//! Running the few programs that are the only source of something (`nft list ruleset`,
//! `rpm -qa`). Only on the live host: a binary of a mounted image or a test fixture must
//! never run here. Output streams into the package through a small bounded queue; a run
//! that outlives the time limit, the output cap or the collection is killed with its
//! whole process group; every run is recorded in the folder's `commands.csv`.

use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use casefile_package::{ItemOutcome, ItemSink, PackageError};
use tokio_util::sync::CancellationToken;

use crate::Context;

use super::common::{CANCELLED, MAX_LINE, csv_file, utc_timestamp};

/// Output is read in pieces of this size, and at most [`QUEUED`] pieces wait in memory.
const CHUNK: usize = 64 * 1024;
const QUEUED: usize = 4;
/// How much of the standard error is kept for `commands.csv`.
const STDERR_KEPT: usize = 4096;
/// How often a wait wakes up to look at the cancel token.
const CANCEL_POLL: Duration = Duration::from_millis(100);
/// How long a killed process may take to be reaped before we stop waiting for it.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// The environment programs run with: a fixed search path and the C locale, so their
/// output does not depend on the agent's environment.
const ENV: [(&str, &str); 2] = [("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), ("LC_ALL", "C")];

/// One run of a program, as `commands.csv` lists it.
#[derive(Debug, Clone, Default)]
pub(crate) struct CommandRun {
    pub(crate) command_line: String,
    /// The package file that holds the output.
    pub(crate) output: String,
    pub(crate) started_utc: String,
    pub(crate) duration: Duration,
    /// `0`, `1`, … or `signal 9`; empty when the program did not start or was not reaped.
    pub(crate) exit_status: String,
    pub(crate) timed_out: bool,
    pub(crate) cancelled: bool,
    pub(crate) output_bytes: u64,
    /// The output reached the cap and the program was stopped.
    pub(crate) truncated: bool,
    /// What the runner met: the program did not start, reading its output failed, …
    pub(crate) error: String,
    /// The beginning of the program's standard error.
    pub(crate) stderr: String,
    exit_code: Option<i32>,
}

impl CommandRun {
    /// The status of the file holding the output.
    pub(crate) fn outcome(&self, timeout: Duration) -> ItemOutcome {
        let have_output = self.output_bytes > 0;
        let keep = |why: String| if have_output { ItemOutcome::partial(why) } else { ItemOutcome::failed(why) };
        if self.cancelled {
            ItemOutcome::partial(CANCELLED)
        } else if self.timed_out {
            keep(format!("killed after the {} ms time limit", timeout.as_millis()))
        } else if self.truncated {
            ItemOutcome::partial(format!("output cut at {} bytes", self.output_bytes))
        } else if self.exit_status.is_empty() {
            ItemOutcome::failed(self.error.clone())
        } else if self.exit_code != Some(0) {
            let stderr = self.stderr.lines().next().unwrap_or_default();
            keep(format!("exit status {}: {stderr}", self.exit_status))
        } else if !self.error.is_empty() {
            keep(self.error.clone())
        } else {
            ItemOutcome::ok()
        }
    }

    fn fields(&self) -> [String; 11] {
        [
            self.command_line.clone(),
            self.output.clone(),
            self.started_utc.clone(),
            self.duration.as_millis().to_string(),
            self.exit_status.clone(),
            self.timed_out.to_string(),
            self.cancelled.to_string(),
            self.output_bytes.to_string(),
            self.truncated.to_string(),
            self.error.clone(),
            self.stderr.clone(),
        ]
    }
}

/// How long a program may run and how much of its output is kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunLimits {
    pub(crate) timeout: Duration,
    pub(crate) max_bytes: u64,
}

/// What the output reader hands over.
enum Piece {
    Data(Vec<u8>),
    End(Option<io::Error>),
}

/// Runs `program` with `args` and streams its standard output into `out`. Fails only
/// when writing to `out` fails (the package is broken); anything about the program is
/// in the returned record.
pub(crate) fn run_program(
    program: &Path,
    args: &[&str],
    limits: RunLimits,
    cancel: &CancellationToken,
    out: &mut dyn Write,
) -> io::Result<CommandRun> {
    let mut run = CommandRun {
        command_line: command_line(&program.to_string_lossy(), args),
        started_utc: utc_timestamp(now_secs()),
        ..CommandRun::default()
    };
    let started = Instant::now();
    let deadline = started + limits.timeout;
    let mut child = match Command::new(program)
        .args(args)
        .env_clear()
        .envs(ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a kill reaches what it started too.
        .process_group(0)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            run.error = format!("not started: {e}");
            run.duration = started.elapsed();
            return Ok(run);
        }
    };
    let group = child.id();
    let pieces = read_pieces(child.stdout.take().expect("stdout is piped"));
    let stderr = read_stderr(child.stderr.take().expect("stderr is piped"));
    let exited = wait_in_background(child);

    let copied = copy_output(&pieces, out, &mut run, limits.max_bytes, deadline, cancel);
    let stopped_early = run.timed_out || run.cancelled || run.truncated || copied.is_err();
    let mut status = None;
    if stopped_early {
        kill_group(group, &exited, &mut status);
    }
    copied?;
    if status.is_none() {
        status = match receive(&exited, deadline, cancel) {
            Received::Value(status) => Some(status),
            Received::Cancelled | Received::Expired => {
                // It closed its output but did not exit.
                if cancel.is_cancelled() {
                    run.cancelled = true;
                } else {
                    run.timed_out = true;
                }
                kill_group(group, &exited, &mut status);
                status
            }
            Received::Gone => None,
        };
    }
    match status {
        Some(Ok(status)) => {
            run.exit_code = status.code();
            run.exit_status = exit_text(status);
        }
        Some(Err(e)) => add_error(&mut run.error, format!("wait: {e}")),
        None => add_error(&mut run.error, "did not exit after SIGKILL".to_owned()),
    }
    // Once the program has exited its standard error ends too, unless something it
    // started still holds it: then wait no longer than the time left.
    let stderr_wait = deadline.saturating_duration_since(Instant::now()).max(CANCEL_POLL);
    run.stderr = stderr.recv_timeout(stderr_wait).unwrap_or_default();
    run.duration = started.elapsed();
    Ok(run)
}

/// Copies the output pieces into `out` until the end, the cap, the deadline or a cancel.
fn copy_output(
    pieces: &Receiver<Piece>,
    out: &mut dyn Write,
    run: &mut CommandRun,
    max_bytes: u64,
    deadline: Instant,
    cancel: &CancellationToken,
) -> io::Result<()> {
    loop {
        match receive(pieces, deadline, cancel) {
            Received::Value(Piece::Data(data)) => {
                let room = max_bytes - run.output_bytes;
                let kept = &data[..data.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
                out.write_all(kept)?;
                run.output_bytes += kept.len() as u64;
                if kept.len() < data.len() {
                    run.truncated = true;
                    return Ok(());
                }
            }
            Received::Value(Piece::End(error)) => {
                if let Some(e) = error {
                    add_error(&mut run.error, format!("reading the output: {e}"));
                }
                return Ok(());
            }
            Received::Gone => return Ok(()),
            Received::Expired => {
                run.timed_out = true;
                return Ok(());
            }
            Received::Cancelled => {
                run.cancelled = true;
                return Ok(());
            }
        }
    }
}

enum Received<T> {
    Value(T),
    Gone,
    Expired,
    Cancelled,
}

/// The next value of `rx`, waking up now and then to look at the cancel token.
fn receive<T>(rx: &Receiver<T>, deadline: Instant, cancel: &CancellationToken) -> Received<T> {
    loop {
        if cancel.is_cancelled() {
            return Received::Cancelled;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return match rx.try_recv() {
                Ok(value) => Received::Value(value),
                Err(_) => Received::Expired,
            };
        }
        match rx.recv_timeout(left.min(CANCEL_POLL)) {
            Ok(value) => return Received::Value(value),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Received::Gone,
        }
    }
}

/// Kills the program's process group unless the program has already been reaped (its
/// pid could then belong to someone else), and collects its exit status.
fn kill_group(group: u32, exited: &Receiver<io::Result<ExitStatus>>, status: &mut Option<io::Result<ExitStatus>>) {
    if let Ok(done) = exited.try_recv() {
        *status = Some(done);
        return;
    }
    if let Some(pid) = i32::try_from(group).ok().and_then(rustix::process::Pid::from_raw) {
        // Fails only when the group is already gone.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    *status = exited.recv_timeout(KILL_GRACE).ok();
}

/// Reads standard output on a thread of its own, so that the time limit holds while a
/// read blocks. The queue is bounded: a fast program waits for the package.
fn read_pieces(mut stdout: ChildStdout) -> Receiver<Piece> {
    let (tx, rx) = mpsc::sync_channel(QUEUED);
    thread::spawn(move || {
        loop {
            let mut buf = vec![0u8; CHUNK];
            match stdout.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(Piece::Data(buf)).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Piece::End(Some(e)));
                    return;
                }
            }
        }
        let _ = tx.send(Piece::End(None));
    });
    rx
}

/// Reads standard error to its end (a full pipe would block the program), keeping the
/// first [`STDERR_KEPT`] bytes.
fn read_stderr(stderr: ChildStderr) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut kept = Vec::new();
        let mut reader = stderr;
        let _ = (&mut reader).take(STDERR_KEPT as u64).read_to_end(&mut kept);
        let _ = io::copy(&mut reader, &mut io::sink());
        let _ = tx.send(String::from_utf8_lossy(&kept).trim().to_owned());
    });
    rx
}

fn wait_in_background(mut child: Child) -> Receiver<io::Result<ExitStatus>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    rx
}

fn exit_text(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => code.to_string(),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

fn add_error(errors: &mut String, error: String) {
    if !errors.is_empty() {
        errors.push_str("; ");
    }
    errors.push_str(&error);
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The command as a shell would be given it: arguments with anything but plain
/// characters are single-quoted.
pub(crate) fn command_line(program: &str, args: &[&str]) -> String {
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    std::iter::once(program)
        .chain(args.iter().copied())
        .map(|s| if plain(s) { s.to_owned() } else { format!("'{}'", s.replace('\'', r"'\''")) })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first of `candidates` (absolute host paths) present on the live host; otherwise
/// the `not-applicable` outcome saying why nothing runs.
pub(crate) fn find_program(ctx: &Context, candidates: &[&str]) -> Result<PathBuf, ItemOutcome> {
    if ctx.root != Path::new("/") {
        return Err(ItemOutcome::not_applicable("programs run only on the live host, not below another root"));
    }
    candidates
        .iter()
        .map(|abs| ctx.path(abs))
        .find(|path| path.is_file())
        .ok_or_else(|| ItemOutcome::not_applicable(format!("{} not installed", candidates.join(" or "))))
}

/// The runs of one folder, written as its `commands.csv`. A handful per folder.
#[derive(Debug, Default)]
pub(crate) struct CommandLog {
    runs: Vec<CommandRun>,
}

const COMMANDS_HEADER: [&str; 11] = [
    "command_line",
    "output",
    "started_utc",
    "duration_ms",
    "exit_status",
    "timed_out",
    "cancelled",
    "output_bytes",
    "truncated",
    "error",
    "stderr",
];

impl CommandLog {
    /// Runs the first of `candidates` found on the live host, streaming at most
    /// `max_bytes` of its standard output into `out` (package file `output`), and
    /// records the run.
    pub(crate) fn run(
        &mut self,
        ctx: &Context,
        (candidates, args): (&[&str], &[&str]),
        output: &str,
        max_bytes: u64,
        out: &mut dyn Write,
    ) -> io::Result<ItemOutcome> {
        let program = match find_program(ctx, candidates) {
            Ok(program) => program,
            Err(outcome) => return Ok(outcome),
        };
        let limits = RunLimits { timeout: ctx.limits.command_timeout, max_bytes };
        let mut run = run_program(&program, args, limits, &ctx.cancel, out)?;
        run.output = output.to_owned();
        let outcome = run.outcome(limits.timeout);
        self.runs.push(run);
        Ok(outcome)
    }

    /// A package file `name` holding the standard output of the first of `candidates`.
    pub(crate) fn output_file(
        &mut self,
        ctx: &Context,
        sink: &mut dyn ItemSink,
        name: &str,
        candidates: &[&str],
        args: &[&str],
    ) -> Result<(), PackageError> {
        self.listing(ctx, sink, name, (candidates, args), false)
    }

    /// [`Self::output_file`] for the client of a service that may not run here (a
    /// container runtime's daemon): see [`Self::service_outcome`].
    pub(crate) fn service_listing(
        &mut self,
        ctx: &Context,
        sink: &mut dyn ItemSink,
        name: &str,
        candidates: &[&str],
        args: &[&str],
    ) -> Result<(), PackageError> {
        self.listing(ctx, sink, name, (candidates, args), true)
    }

    fn listing(
        &mut self,
        ctx: &Context,
        sink: &mut dyn ItemSink,
        name: &str,
        (candidates, args): (&[&str], &[&str]),
        service: bool,
    ) -> Result<(), PackageError> {
        let source = command_line(candidates[0], args);
        sink.file(name, &source, |out| {
            let outcome = self.run(ctx, (candidates, args), name, ctx.limits.max_file_bytes, out)?;
            Ok(if service { self.service_outcome(outcome) } else { outcome })
        })
    }

    /// The outcome of the last run as a service's listing: a client that exited non-zero
    /// without output (a daemon that is not running) says the service is absent here,
    /// `not-applicable`, not that the collection failed; `commands.csv` keeps its exit
    /// status and error.
    pub(crate) fn service_outcome(&self, outcome: ItemOutcome) -> ItemOutcome {
        match self.runs.last() {
            Some(run)
                if outcome.status == casefile_package::ItemStatus::Failed
                    && run.exit_code.is_some_and(|code| code != 0)
                    && run.output_bytes == 0
                    && !run.timed_out =>
            {
                let stderr = run.stderr.lines().next().unwrap_or_default();
                ItemOutcome::not_applicable(format!(
                    "the service did not answer (exit status {}: {stderr})",
                    run.exit_status
                ))
            }
            _ => outcome,
        }
    }

    /// Writes `commands.csv`; `not-applicable` when nothing ran.
    pub(crate) fn write(&self, sink: &mut dyn ItemSink) -> Result<(), PackageError> {
        csv_file(sink, "commands.csv", "programs run by casefile", &COMMANDS_HEADER, |csv| {
            for run in &self.runs {
                csv.row(run.fields())?;
            }
            Ok(if self.runs.is_empty() { ItemOutcome::not_applicable("no program was run") } else { ItemOutcome::ok() })
        })
    }
}

/// Hands each line of a program's output to `line` as it streams, so the output can
/// become CSV rows. A line longer than [`MAX_LINE`] is cut there.
pub(crate) struct LineSplitter<F: FnMut(&[u8]) -> io::Result<()>> {
    partial: Vec<u8>,
    line: F,
}

impl<F: FnMut(&[u8]) -> io::Result<()>> LineSplitter<F> {
    pub(crate) fn new(line: F) -> Self {
        Self { partial: Vec::new(), line }
    }

    /// Hands over the last line when the output did not end with a line break.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        if !self.partial.is_empty() {
            (self.line)(&self.partial)?;
        }
        Ok(())
    }
}

impl<F: FnMut(&[u8]) -> io::Result<()>> Write for LineSplitter<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            let room = MAX_LINE.saturating_sub(self.partial.len());
            self.partial.extend_from_slice(&rest[..newline.min(room)]);
            (self.line)(&self.partial)?;
            self.partial.clear();
            rest = &rest[newline + 1..];
        }
        let room = MAX_LINE.saturating_sub(self.partial.len());
        self.partial.extend_from_slice(&rest[..rest.len().min(room)]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::MemorySink;
    use crate::{Limits, collectors::test_support::Fixture};
    use casefile_package::ItemStatus;

    fn limits(timeout: Duration) -> RunLimits {
        RunLimits { timeout, max_bytes: 1 << 20 }
    }

    #[test]
    fn a_command_past_its_time_limit_is_killed_and_recorded() {
        let mut out = Vec::new();
        let run = run_program(
            Path::new("/bin/sleep"),
            &["10"],
            limits(Duration::from_millis(200)),
            &CancellationToken::new(),
            &mut out,
        )
        .unwrap();
        assert!(run.timed_out);
        assert_eq!(run.exit_status, "signal 9");
        assert_eq!(run.command_line, "/bin/sleep 10");
        assert_eq!(run.outcome(Duration::from_millis(200)).status, ItemStatus::Failed);
    }

    #[test]
    fn output_is_captured_with_the_exit_status() {
        let mut out = Vec::new();
        let run = run_program(
            Path::new("/bin/sh"),
            &["-c", "printf 'a,b\\n\"q\"\\n'; echo oops >&2; exit 3"],
            limits(Duration::from_secs(30)),
            &CancellationToken::new(),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"a,b\n\"q\"\n");
        assert_eq!(run.output_bytes, 8);
        assert_eq!(run.exit_status, "3");
        assert_eq!(run.stderr, "oops");
        assert!(!run.timed_out);
        let outcome = run.outcome(Duration::from_secs(30));
        assert_eq!(outcome, ItemOutcome::partial("exit status 3: oops"));
        assert_eq!(run.command_line, r#"/bin/sh -c 'printf '\''a,b\n"q"\n'\''; echo oops >&2; exit 3'"#);
    }

    #[test]
    fn output_past_the_cap_stops_the_program() {
        let mut out = Vec::new();
        let cap = RunLimits { timeout: Duration::from_secs(30), max_bytes: 100_000 };
        let run = run_program(Path::new("/bin/cat"), &["/dev/zero"], cap, &CancellationToken::new(), &mut out).unwrap();
        assert_eq!(out.len(), 100_000);
        assert!(run.truncated);
        assert!(!run.timed_out);
        assert_eq!(run.outcome(cap.timeout), ItemOutcome::partial("output cut at 100000 bytes"));
    }

    #[test]
    fn a_cancelled_collection_stops_the_program() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let run =
            run_program(Path::new("/bin/sleep"), &["10"], limits(Duration::from_secs(30)), &cancel, &mut Vec::new())
                .unwrap();
        assert!(run.cancelled);
        assert_eq!(run.outcome(Duration::from_secs(30)), ItemOutcome::partial(CANCELLED));
    }

    #[test]
    fn a_missing_program_is_recorded_as_not_started() {
        let run = run_program(
            Path::new("/nonexistent/nft"),
            &[],
            limits(Duration::from_secs(1)),
            &CancellationToken::new(),
            &mut Vec::new(),
        )
        .unwrap();
        assert!(run.error.starts_with("not started: "), "{}", run.error);
        assert_eq!(run.outcome(Duration::from_secs(1)).status, ItemStatus::Failed);
    }

    #[test]
    fn programs_never_run_below_a_fixture_root() {
        let f = Fixture::new();
        f.write("/bin/sh", "#!/bin/sh\necho ran\n");
        let ctx = Context {
            root: f.root().to_path_buf(),
            cancel: CancellationToken::new(),
            limits: Limits::default(),
            running: None,
        };
        let mut log = CommandLog::default();
        let mut sink = MemorySink::default();
        log.output_file(&ctx, &mut sink, "out.txt", &["/bin/sh"], &["-c", "echo ran"]).unwrap();
        log.write(&mut sink).unwrap();
        assert_eq!(sink.item("out.txt").status(), ItemStatus::NotApplicable);
        assert_eq!(sink.item("out.txt").source, "/bin/sh -c 'echo ran'");
        assert_eq!(sink.item("commands.csv").status(), ItemStatus::NotApplicable);
    }

    #[test]
    fn a_service_that_does_not_answer_is_absent_not_a_failed_collection() {
        let ctx = Context::live(CancellationToken::new());
        let mut log = CommandLog::default();
        let mut sink = MemorySink::default();
        let down = ["-c", "echo 'Cannot connect to the Docker daemon' >&2; exit 1"];
        log.service_listing(&ctx, &mut sink, "down.txt", &["/bin/sh"], &down).unwrap();
        let half = ["-c", "echo one row; exit 1"];
        log.service_listing(&ctx, &mut sink, "half.txt", &["/bin/sh"], &half).unwrap();
        log.output_file(&ctx, &mut sink, "plain.txt", &["/bin/sh"], &down).unwrap();
        let down = sink.item("down.txt");
        assert_eq!(down.status(), ItemStatus::NotApplicable);
        assert!(
            down.outcome.error.as_deref().unwrap().contains("Cannot connect to the Docker daemon"),
            "{:?}",
            down.outcome
        );
        assert_eq!(sink.item("half.txt").status(), ItemStatus::Partial, "what it printed is kept, the exit noted");
        assert_eq!(sink.item("plain.txt").status(), ItemStatus::Failed, "other commands are unchanged");
    }

    #[test]
    fn live_runs_are_listed_in_commands_csv() {
        let ctx = Context::live(CancellationToken::new());
        let mut log = CommandLog::default();
        let mut sink = MemorySink::default();
        log.output_file(&ctx, &mut sink, "echo.txt", &["/nonexistent/echo", "/bin/echo"], &["a,b", "\"c\"\nd"])
            .unwrap();
        log.output_file(&ctx, &mut sink, "missing.txt", &["/nonexistent/tool"], &[]).unwrap();
        log.write(&mut sink).unwrap();
        assert_eq!(sink.item("echo.txt").text(), "a,b \"c\"\nd\n");
        assert_eq!(sink.item("echo.txt").status(), ItemStatus::Ok);
        assert_eq!(sink.item("missing.txt").status(), ItemStatus::NotApplicable);
        let commands = sink.item("commands.csv");
        assert_eq!(commands.header(), COMMANDS_HEADER);
        let rows = commands.rows();
        assert_eq!(rows.len(), 1, "only programs that ran are listed");
        assert_eq!(rows[0]["command_line"], "/bin/echo a,b '\"c\"\nd'");
        assert_eq!(rows[0]["output"], "echo.txt");
        assert_eq!(rows[0]["exit_status"], "0");
        assert_eq!(rows[0]["timed_out"], "false");
        assert_eq!(rows[0]["output_bytes"], "10");
    }

    #[test]
    fn lines_are_split_across_writes_and_the_last_needs_no_newline() {
        let mut lines = Vec::new();
        let mut splitter = LineSplitter::new(|line: &[u8]| {
            lines.push(line.to_vec());
            Ok(())
        });
        splitter.write_all(b"one\ntw").unwrap();
        splitter.write_all(b"o\n\nthree").unwrap();
        splitter.finish().unwrap();
        assert_eq!(lines, [&b"one"[..], b"two", b"", b"three"]);
    }
}
