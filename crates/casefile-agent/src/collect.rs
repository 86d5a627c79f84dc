//! Runs the collectors into a package file: the zip is streamed to disk (never staged
//! in memory), then hashed for the upload.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use casefile_collectors::{CollectError, Collector, Context};
use casefile_package::writer::PackageMeta;
use casefile_package::{Manifest, ManifestHost, PackageWriter};
use uuid::Uuid;

use crate::{AGENT_VERSION, AgentError, host};

#[derive(Debug, Clone)]
pub struct CollectedPackage {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub manifest: Manifest,
}

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
    }
}

/// Writes a package of `collectors` to `output`. Blocking: call from a blocking thread.
/// A collector that fails or panics is recorded as such; the package still completes.
/// Cancellation stops between collectors (and inside them, where they check).
pub fn write_package(
    output: &Path,
    meta: PackageMeta,
    ctx: &Context,
    collectors: &[Box<dyn Collector>],
) -> Result<CollectedPackage, AgentError> {
    let io_error = |source| AgentError::State { path: output.to_owned(), source };
    let file = std::fs::File::create(output).map_err(io_error)?;
    let mut writer = PackageWriter::new(std::io::BufWriter::with_capacity(256 * 1024, file), meta);
    for collector in collectors {
        if ctx.cancel.is_cancelled() {
            return Err(AgentError::Collection("cancelled".to_owned()));
        }
        writer.begin_collector(collector.name(), collector.folder());
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| collector.collect(ctx, &mut writer)));
        match outcome {
            Ok(Ok(())) => writer.end_collector(None),
            Ok(Err(CollectError::Stopped(why))) => writer.end_collector(Some(why)),
            Ok(Err(CollectError::Cancelled)) => {
                return Err(AgentError::Collection("cancelled".to_owned()));
            }
            Ok(Err(CollectError::Package(e))) => return Err(AgentError::Collection(e.to_string())),
            Err(_) => writer.end_collector(Some(format!("the {} collector crashed", collector.name()))),
        }
    }
    let (out, manifest) = writer.finish().map_err(|e| AgentError::Collection(e.to_string()))?;
    let file = out.into_inner().map_err(|e| io_error(e.into_error()))?;
    file.sync_all().map_err(io_error)?;
    drop(file);
    let (sha256, size) = std::fs::File::open(output).and_then(casefile_package::hash_reader).map_err(io_error)?;
    Ok(CollectedPackage { path: output.to_owned(), size, sha256, manifest })
}
