//! `casefile config check`, `casefile migrate`, `casefile store copy`, `casefile backup` and `casefile restore`:
//! the configuration and the data directory's safekeeping, through the server's admin
//! layer.

use std::io::Write;
use std::path::PathBuf;

use casefile_server::admin;
use clap::{Args, Subcommand};

use crate::settings::ConfigArgs;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration (file, `CASEFILE_*` environment, flags) as the server
    /// would, and print the effective one as TOML with secrets redacted. Exits 1 naming
    /// the settings when it is invalid.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
        /// Address to listen on [env: CASEFILE_LISTEN]
        #[arg(long)]
        listen: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Copy a SQLite database (the embedded default) into a new, empty PostgreSQL
    /// database, in one transaction, then verify it: row counts, a sample of rows field by
    /// field, and records read back through both. Stop the server first; afterwards point
    /// `[store] url` at the PostgreSQL database (packages stay where `[blobs]` keeps them).
    Copy {
        /// The SQLite database, e.g. sqlite:///var/lib/casefile/casefile.db
        #[arg(long)]
        from: String,
        /// The PostgreSQL database, e.g. postgres://casefile@db/casefile (empty, or
        /// migrated and without rows)
        #[arg(long)]
        to: String,
    },
}

/// `casefile backup`.
#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The archive to write (must not exist).
    #[arg(long, short)]
    output: PathBuf,
}

/// `casefile restore`.
#[derive(Args)]
pub struct RestoreArgs {
    /// The archive `casefile backup` wrote.
    archive: PathBuf,
    #[command(flatten)]
    config: ConfigArgs,
    /// Restore into a non-empty data directory: it is moved aside (never deleted).
    #[arg(long)]
    force: bool,
    /// The SHA-256 `casefile backup` printed: the archive must have it.
    #[arg(long)]
    sha256: Option<String>,
}

pub fn config(command: ConfigCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Check { config, listen } => {
            let config = config.load(listen.as_deref())?;
            write!(out, "{}", config.to_redacted_toml())?;
        }
    }
    Ok(())
}

pub async fn migrate(config: ConfigArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let config = config.load(None)?;
    let migrated = admin::migrate(&config).await?;
    if let Some(backup) = &migrated.backup {
        writeln!(out, "The database was copied to {} first.", backup.display())?;
    }
    match migrated.applied.as_slice() {
        [] => writeln!(out, "The database schema is up to date: nothing to migrate.")?,
        applied => writeln!(
            out,
            "Applied migrations {}.",
            applied.iter().map(|v| format!("{v:04}")).collect::<Vec<_>>().join(", ")
        )?,
    }
    Ok(())
}

pub async fn store(command: StoreCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        StoreCommand::Copy { from, to } => {
            let report = admin::store_copy(&from, &to).await?;
            writeln!(out, "{:<20} {:>10} {:>9}", "table", "rows", "verified")?;
            let mut total = 0;
            for t in &report.tables {
                writeln!(out, "{:<20} {:>10} {:>9}", t.table, t.rows, format!("{} rows", t.sampled))?;
                total += t.rows;
            }
            writeln!(
                out,
                "Copied {total} rows; every table's count matches, the sampled rows are equal field by field, \
                 and {} records read back through both stores are identical.",
                report.records_compared
            )?;
            writeln!(out, "Point [store] url (CASEFILE_STORE__URL) at the PostgreSQL database to use it.")?;
        }
    }
    Ok(())
}

pub async fn backup(args: BackupArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let admin = args.config.admin().await?;
    let report = admin.backup(&args.output, args.config.config.as_deref()).await?;
    writeln!(
        out,
        "Backed up {} files ({} packages, {} bytes) to {}",
        report.entries,
        report.packages,
        report.bytes,
        report.path.display()
    )?;
    writeln!(out, "sha256:{}", report.sha256)?;
    if let Some(bucket) = &report.packages_in {
        writeln!(
            out,
            "Package objects are NOT in this archive: they live in the bucket {bucket}. \
             Back the bucket up separately (versioning, replication)."
        )?;
    }
    Ok(())
}

pub fn restore(args: RestoreArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let config = args.config.load(None)?;
    let report = admin::restore_installation(&config, &args.archive, args.force, args.sha256.as_deref())?;
    writeln!(out, "Restored {} files into {}.", report.entries, config.data_dir.display())?;
    if let Some(replaced) = &report.replaced {
        writeln!(out, "The data directory that was there is now {}.", replaced.display())?;
    }
    if let Some(file) = &report.config {
        writeln!(out, "The archived configuration file is {} (compare it with yours).", file.display())?;
    }
    if let Some(bucket) = &report.packages_in {
        writeln!(
            out,
            "Package objects were NOT in the archive: the restored database expects them in the bucket {bucket} \
             ([blobs] url), which this restore did not touch."
        )?;
    }
    if let Some(dir) = &report.packages_from {
        writeln!(
            out,
            "The packages were stored in {} ([blobs] url) and are restored into {}: move them back there, \
             or point [blobs] url at the new place.",
            dir.display(),
            config.data_dir.join("packages").display()
        )?;
    }
    Ok(())
}
