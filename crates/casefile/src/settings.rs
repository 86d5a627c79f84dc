//! The configuration flags every command that works on a server's data directory takes,
//! and how they become the server's [`ServerConfig`]: flag > `CASEFILE_*` environment >
//! file > default, exactly as `casefile server` reads it.

use std::path::PathBuf;

use casefile_server::ServerConfig;
use casefile_server::admin::Admin;
use casefile_server::config::Layers;
use clap::Args;

#[derive(Args, Clone, Debug, Default)]
pub struct ConfigArgs {
    /// TOML configuration file (every key optional), as the server reads it.
    #[arg(long, env = "CASEFILE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory [env: CASEFILE_DATA_DIR] [default: ./casefile-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Any setting, as KEY=VALUE with KEY as in the file (`auth.issuer=https://cf.example`,
    /// `agents.poll_wait_seconds=20`); repeatable; beats the environment and the file.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl ConfigArgs {
    /// The layered configuration; `listen` is the `--listen` flag of the commands that
    /// have one. Warnings (unknown `CASEFILE_*` variables) go to the log.
    pub fn load(&self, listen: Option<&str>) -> anyhow::Result<ServerConfig> {
        let mut flags = Vec::new();
        for raw in &self.set {
            let (key, value) = raw.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("--set '{raw}': expected KEY=VALUE, e.g. auth.issuer=https://cf.example")
            })?;
            flags.push((format!("--set {}", key.trim()), key.trim().to_owned(), value.to_owned()));
        }
        if let Some(dir) = &self.data_dir {
            // A path is text, whatever it looks like: quoted as a TOML string.
            let quoted = toml_string(&dir.to_string_lossy());
            flags.push(("--data-dir".to_owned(), "data_dir".to_owned(), quoted));
        }
        if let Some(listen) = listen {
            flags.push(("--listen".to_owned(), "listen".to_owned(), listen.to_owned()));
        }
        let layers = Layers { file: self.config.clone(), env: std::env::vars().collect(), flags };
        let layered = ServerConfig::layered(&layers)?;
        for warning in &layered.warnings {
            tracing::warn!("{warning}");
        }
        Ok(layered.config)
    }

    /// The admin layer on the configured data directory.
    pub async fn admin(&self) -> anyhow::Result<Admin> {
        Ok(Admin::open(self.load(None)?).await?)
    }
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
