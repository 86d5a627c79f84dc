//! Command-line conventions shared by the `casefile` and `casefile-agent` binaries.

use clap::Parser;
use clap::error::ErrorKind;

/// Parses the command line. `--help` and `--version` print in full and exit 0; a usage
/// mistake prints one line (`NAME: what is wrong (see --help)`) and exits 2.
pub fn parse_or_exit<T: Parser>(name: &str) -> T {
    match T::try_parse() {
        Ok(parsed) => parsed,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => e.exit(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                let _ = e.print();
                std::process::exit(2)
            }
            _ => {
                let rendered = e.render().to_string();
                let first = rendered.lines().next().unwrap_or("invalid arguments");
                eprintln!("{name}: {} (see --help)", first.trim_start_matches("error: "));
                std::process::exit(2)
            }
        },
    }
}

/// How log lines are written: `text` for people, `json` (one object per line) for log
/// collectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The logging flag both binaries take (each names its own environment variable).
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format on stderr: `text`, or `json` (one object per line, with the
    /// request's correlation id) for a log collector.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CASEFILE_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// The agent's variant of [`LogArgs`], under the agent's environment prefix.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentLogArgs {
    /// Log line format on stderr: `text`, or `json` (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CASEFILE_AGENT_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// Runs a binary's async `body` with logging to stderr (`RUST_LOG`, default
/// `default_filter`) in `format`; a failure is one line `NAME: error` and exit code 1.
/// Colour codes only when stderr is a terminal.
pub fn run_main<F>(name: &str, default_filter: &str, format: LogFormat, body: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // Span fields (the correlation id) flattened into each event's object.
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
    let outcome = tokio::runtime::Runtime::new().map_err(anyhow::Error::from).and_then(|rt| rt.block_on(body));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of our output went away (`casefile enroll-token | head -n 1`): end
        // quietly with the status a shell gives a process that SIGPIPE ended (128 + 13),
        // as any Unix tool would, not with an error line about our own output.
        Err(e) if e.chain().any(StdoutClosed::is) => std::process::ExitCode::from(141),
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Standard output for a command's results: a write after the reader went away fails with
/// [`StdoutClosed`], which [`run_main`] turns into a quiet end (other broken pipes, a
/// server's connection say, stay errors with their message).
pub fn stdout() -> impl std::io::Write {
    struct Out(std::io::Stdout);
    impl std::io::Write for Out {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write(buf).map_err(StdoutClosed::mark)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.flush().map_err(StdoutClosed::mark)
        }
    }
    Out(std::io::stdout())
}

/// The reader of standard output went away.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct StdoutClosed;

impl StdoutClosed {
    fn mark(e: std::io::Error) -> std::io::Error {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe => std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed),
            _ => e,
        }
    }

    fn is(cause: &(dyn std::error::Error + 'static)) -> bool {
        cause.is::<StdoutClosed>()
            || cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<StdoutClosed>())
    }
}

/// Resolves at the first SIGTERM or SIGINT (Ctrl-C): how service managers and people
/// ask a process to stop.
pub async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
