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
