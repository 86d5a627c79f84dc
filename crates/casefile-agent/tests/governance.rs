//! Collection governance on real package files: a collector that hangs is abandoned at
//! its deadline, one that crashes is recorded, the size cap stops the package growing,
//! and in every case the package completes, signed, and verifies.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use casefile_agent::collect::{Collection, Collectors, Governance, package_meta};
use casefile_collectors::{CollectError, Collector, Context};
use casefile_package::{ItemOutcome, ItemSink, ItemStatus, Manifest};
use ed25519_dalek::SigningKey;
use tokio_util::sync::CancellationToken;

/// What a test collector does.
enum Behaviour {
    /// Writes `bytes` of incompressible data into one file.
    Write(usize),
    /// Writes a file, then blocks on a channel nobody ever sends to.
    HangAfterFile(Mutex<mpsc::Receiver<()>>),
    /// Blocks in the middle of writing a file.
    HangInFile(Mutex<mpsc::Receiver<()>>),
    Panic,
}

struct Scripted {
    name: &'static str,
    behaviour: Behaviour,
}

impl Collector for Scripted {
    fn name(&self) -> &'static str {
        self.name
    }

    fn folder(&self) -> &'static str {
        self.name
    }

    fn collect(&self, _ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        match &self.behaviour {
            Behaviour::Write(n) => {
                let mut state = 0x9e37_79b9_7f4a_7c15_u64;
                let noise: Vec<u8> = (0..*n)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect();
                sink.file("data.bin", "test", |w| w.write_all(&noise).map(|()| ItemOutcome::ok()))?;
            }
            Behaviour::HangAfterFile(never) => {
                sink.file("before.txt", "test", |w| {
                    w.write_all(b"written before the hang").map(|()| ItemOutcome::ok())
                })?;
                let _ = never.lock().unwrap().recv();
            }
            Behaviour::HangInFile(never) => {
                sink.file("half.txt", "test", |w| {
                    w.write_all(&[b'x'; 200_000])?;
                    w.flush()?;
                    let _ = never.lock().unwrap().recv();
                    Ok(ItemOutcome::ok())
                })?;
            }
            Behaviour::Panic => panic!("a collector bug"),
        }
        Ok(())
    }
}

struct Run {
    manifest: Manifest,
    bytes: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn collect(collectors: Vec<Scripted>, governance: Governance) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("package.zip");
    let signer = SigningKey::from_bytes(&[7; 32]);
    let collectors: Vec<Box<dyn Collector>> =
        collectors.into_iter().map(|c| Box::new(c) as Box<dyn Collector>).collect();
    let package = Collection {
        output: output.clone(),
        meta: package_meta(None, None),
        ctx: Context::live(CancellationToken::new()),
        collectors: Collectors(Arc::new(collectors)),
        profile: None,
        governance,
        signer: signer.clone(),
        progress: None,
    }
    .run_blocking()
    .unwrap();
    let bytes = std::fs::read(&output).unwrap();
    let report = casefile_package::verify_with(std::io::Cursor::new(&bytes), Some(&signer.verifying_key())).unwrap();
    assert!(report.is_authentic(), "{:?} {}", report.problems, report.signature);
    Run { manifest: package.manifest, bytes, _dir: dir }
}

fn run_of<'a>(manifest: &'a Manifest, name: &str) -> &'a casefile_package::CollectorRun {
    manifest.collectors.iter().find(|c| c.name == name).unwrap()
}

fn quick(timeout_ms: u64) -> Governance {
    Governance { collector_timeout: Duration::from_millis(timeout_ms), ..Governance::default() }
}

#[test]
fn a_hanging_collector_is_abandoned_and_the_package_completes() {
    let (_keep, never) = mpsc::channel();
    let (_keep2, never2) = mpsc::channel();
    let run = collect(
        vec![
            Scripted { name: "hangs", behaviour: Behaviour::HangAfterFile(Mutex::new(never)) },
            Scripted { name: "stalls", behaviour: Behaviour::HangInFile(Mutex::new(never2)) },
            Scripted { name: "after", behaviour: Behaviour::Write(100) },
        ],
        quick(300),
    );
    let hangs = run_of(&run.manifest, "hangs");
    assert_eq!(hangs.status, ItemStatus::Partial, "what it wrote before the hang is kept");
    assert!(hangs.error.as_deref().unwrap().contains("timed out"), "{:?}", hangs.error);
    let stalls = run_of(&run.manifest, "stalls");
    assert_eq!(stalls.status, ItemStatus::Partial);
    let half = run.manifest.items.iter().find(|i| i.path == "stalls/half.txt").unwrap();
    assert_eq!((half.status, half.size), (ItemStatus::Partial, 200_000), "the bytes that arrived are kept");
    assert_eq!(run_of(&run.manifest, "after").status, ItemStatus::Ok, "later collectors still run");
    assert!(!run.bytes.is_empty());
}

#[test]
fn a_crashing_collector_is_recorded_and_the_others_run() {
    let run = collect(
        vec![
            Scripted { name: "buggy", behaviour: Behaviour::Panic },
            Scripted { name: "fine", behaviour: Behaviour::Write(10) },
        ],
        Governance::default(),
    );
    let buggy = run_of(&run.manifest, "buggy");
    assert_eq!(buggy.status, ItemStatus::Failed);
    assert!(buggy.error.as_deref().unwrap().contains("crashed"));
    assert_eq!(run_of(&run.manifest, "fine").status, ItemStatus::Ok);
}

#[test]
fn the_size_cap_stops_the_package_growing() {
    let cap = 64 * 1024;
    let run = collect(
        vec![
            Scripted { name: "big", behaviour: Behaviour::Write(256 * 1024) },
            Scripted { name: "skipped", behaviour: Behaviour::Write(256 * 1024) },
        ],
        Governance { max_package_bytes: cap, ..Governance::default() },
    );
    assert_eq!(run_of(&run.manifest, "big").status, ItemStatus::Ok, "a file already started is finished");
    let skipped = run_of(&run.manifest, "skipped");
    assert_eq!((skipped.status, skipped.items), (ItemStatus::Failed, 0));
    assert!(skipped.error.as_deref().unwrap().contains("size cap"));
    assert!((run.bytes.len() as u64) < cap + 256 * 1024 + 16 * 1024, "at most one file past the cap");
}

#[test]
fn a_cancelled_collection_stops_without_a_package() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let result = Collection {
        output: dir.path().join("package.zip"),
        meta: package_meta(None, None),
        ctx: Context::live(cancel),
        collectors: Collectors(Arc::new(vec![Box::new(Scripted { name: "never", behaviour: Behaviour::Write(1) })])),
        profile: None,
        governance: Governance::default(),
        signer: SigningKey::from_bytes(&[7; 32]),
        progress: None,
    }
    .run_blocking();
    assert!(result.is_err());
}
