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

/// Runs a binary's async `body` with logging to stderr (`RUST_LOG`, default
/// `default_filter`); a failure is one line `NAME: error` and exit code 1.
pub fn run_main<F>(name: &str, default_filter: &str, body: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let outcome = tokio::runtime::Runtime::new().map_err(anyhow::Error::from).and_then(|rt| rt.block_on(body));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
