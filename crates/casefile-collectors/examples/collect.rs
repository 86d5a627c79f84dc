//! Collects a package of this host with every collector and writes it to the path given
//! (default `casefile-package.zip`), then prints per-collector statuses, the package
//! size and its file count. For trying the collectors out, without the agent.
//!
//! `cargo run -p casefile-collectors --example collect -- /tmp/host.zip`

use std::fs::File;
use std::io::BufWriter;
use std::time::Instant;

use casefile_collectors::{Context, all};
use casefile_package::writer::PackageMeta;
use casefile_package::{ManifestHost, PackageWriter};
use tokio_util::sync::CancellationToken;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "casefile-package.zip".to_owned());
    let uname = rustix::system::uname();
    let meta = PackageMeta {
        tool: "casefile-collectors example".into(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        host: ManifestHost {
            hostname: uname.nodename().to_string_lossy().into_owned(),
            machine_id: std::fs::read_to_string("/etc/machine-id").ok().map(|id| id.trim().to_owned()),
            os: "linux".into(),
            kernel: uname.release().to_string_lossy().into_owned(),
            architecture: uname.machine().to_string_lossy().into_owned(),
        },
        action_id: None,
        profile: None,
    };
    let started = Instant::now();
    let ctx = Context::live(CancellationToken::new());
    let mut writer = PackageWriter::new(BufWriter::new(File::create(&path)?), meta);
    for collector in all() {
        writer.begin_collector(collector.name(), collector.folder());
        let error = collector.collect(&ctx, &mut writer).err().map(|e| e.to_string());
        writer.end_collector(error);
    }
    let (_, manifest) = writer.finish()?;
    for run in &manifest.collectors {
        println!(
            "{:<12} {:?} {} files {} ms {}",
            run.name,
            run.status,
            run.items,
            run.duration_ms,
            run.error.as_deref().unwrap_or("")
        );
    }
    let size = std::fs::metadata(&path)?.len();
    println!("{path}: {size} bytes, {} files, {} ms", manifest.items.len(), started.elapsed().as_millis());
    Ok(())
}
