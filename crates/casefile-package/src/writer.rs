//! Streaming package writer: collectors add files one at a time, each hashed as it is
//! written into the zip; `finish` appends the summary reports and the manifest.

use std::collections::HashSet;
use std::io::{self, Seek, Write};
use std::time::Instant;

use chrono::{DateTime, Datelike, Timelike, Utc};
use ed25519_dalek::SigningKey;
use uuid::Uuid;
use zip::ZipWriter;
use zip::write::SimpleFileOptions;

use crate::hashing::HashingWriter;
use crate::manifest::{CollectorRun, FORMAT_VERSION, ItemStatus, Manifest, ManifestHost, ManifestItem};
use crate::{MANIFEST_PATH, PackageError, SIGNATURE_PATH, SUMMARY_CSV_PATH, SUMMARY_HTML_PATH, summary};

/// How one file's collection went, as its `fill` closure reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemOutcome {
    pub status: ItemStatus,
    pub error: Option<String>,
}

impl ItemOutcome {
    pub fn ok() -> Self {
        Self { status: ItemStatus::Ok, error: None }
    }
    pub fn partial(why: impl Into<String>) -> Self {
        Self { status: ItemStatus::Partial, error: Some(why.into()) }
    }
    pub fn failed(why: impl Into<String>) -> Self {
        Self { status: ItemStatus::Failed, error: Some(why.into()) }
    }
    pub fn not_applicable(why: impl Into<String>) -> Self {
        Self { status: ItemStatus::NotApplicable, error: Some(why.into()) }
    }
}

/// Where collectors put files. `name` is relative to the collector's folder.
pub trait ItemSink {
    fn add_item(
        &mut self,
        name: &str,
        source: &str,
        fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<ItemOutcome>,
    ) -> Result<(), PackageError>;
}

impl dyn ItemSink + '_ {
    /// Adds one file whose content `fill` streams. An error `fill` returns marks the
    /// file `failed` (keeping what was written); only a failure of the package itself
    /// (disk full) is returned, and it ends the collection.
    pub fn file(
        &mut self,
        name: &str,
        source: &str,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<ItemOutcome>,
    ) -> Result<(), PackageError> {
        let mut fill = Some(fill);
        self.add_item(name, source, &mut |w| match fill.take() {
            Some(f) => f(w),
            None => Err(io::Error::other("fill called twice")),
        })
    }
}

/// Who and what the package describes; goes into the manifest.
#[derive(Debug, Clone)]
pub struct PackageMeta {
    pub tool: String,
    pub agent_version: String,
    pub host: ManifestHost,
    pub action_id: Option<Uuid>,
    /// The collection profile that runs.
    pub profile: Option<String>,
}

impl PackageMeta {
    /// A package made by `tool` that describes no particular host: for tests and tools
    /// that package fixtures rather than a live system.
    pub fn detached(tool: &str) -> Self {
        Self {
            tool: tool.to_owned(),
            agent_version: "0".to_owned(),
            host: ManifestHost {
                hostname: "unknown".to_owned(),
                machine_id: None,
                os: "linux".to_owned(),
                kernel: "unknown".to_owned(),
                architecture: std::env::consts::ARCH.to_owned(),
            },
            action_id: None,
            profile: None,
        }
    }
}

/// Files kept as they are: deflating compressed data again costs CPU and saves nothing.
fn already_compressed(path: &str) -> bool {
    const EXTENSIONS: [&str; 9] = [".gz", ".xz", ".bz2", ".zst", ".lz4", ".zip", ".jar", ".tgz", ".lzma"];
    let lower = path.to_ascii_lowercase();
    EXTENSIONS.iter().any(|ext| lower.ends_with(ext))
}

struct OpenCollector {
    name: String,
    folder: String,
    started: Instant,
    first_item: usize,
}

pub struct PackageWriter<W: Write + Seek> {
    zip: ZipWriter<W>,
    options: SimpleFileOptions,
    meta: PackageMeta,
    started: DateTime<Utc>,
    items: Vec<ManifestItem>,
    collectors: Vec<CollectorRun>,
    current: Option<OpenCollector>,
    names: EntryNames,
}

impl<W: Write + Seek> PackageWriter<W> {
    pub fn new(out: W, meta: PackageMeta) -> Self {
        let started = Utc::now();
        // Deflate's fastest level: a package of gigabytes of logs is packed at disk speed
        // instead of at level 6's tenth of it, for a package a few tens of percent larger.
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(1))
            .last_modified_time(zip_time(started));
        Self {
            zip: ZipWriter::new(out),
            options,
            meta,
            started,
            items: Vec::new(),
            collectors: Vec::new(),
            current: None,
            names: EntryNames::reserving(&[MANIFEST_PATH, SIGNATURE_PATH, SUMMARY_HTML_PATH, SUMMARY_CSV_PATH]),
        }
    }

    /// Starts the files of one collector, stored under `folder/`.
    pub fn begin_collector(&mut self, name: &str, folder: &str) {
        self.current = Some(OpenCollector {
            name: name.to_owned(),
            folder: folder.to_owned(),
            started: Instant::now(),
            first_item: self.items.len(),
        });
    }

    /// Closes the current collector. Its status is the worst of its files'; an `error`
    /// (the collector stopped early) makes it `partial`, or `failed` if it wrote nothing.
    pub fn end_collector(&mut self, error: Option<String>) {
        let Some(open) = self.current.take() else {
            return;
        };
        let own = &self.items[open.first_item..];
        let mut status = own.iter().fold(ItemStatus::Ok, |acc, i| acc.worst(i.status));
        if !own.is_empty() && own.iter().all(|i| i.status == ItemStatus::NotApplicable) {
            status = ItemStatus::NotApplicable;
        }
        if error.is_some() {
            let stopped = if own.is_empty() { ItemStatus::Failed } else { ItemStatus::Partial };
            status = status.worst(stopped);
        }
        let error = error.or_else(|| own.iter().find_map(|i| i.error.clone()));
        self.collectors.push(CollectorRun {
            name: open.name,
            folder: open.folder,
            status,
            error,
            items: own.len() as u32,
            duration_ms: open.started.elapsed().as_millis() as u64,
        });
    }

    fn write_item(
        &mut self,
        path: String,
        source: &str,
        collector: String,
        fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<ItemOutcome>,
    ) -> Result<(), PackageError> {
        let started = Instant::now();
        let options = if already_compressed(&path) {
            self.options.compression_method(zip::CompressionMethod::Stored).compression_level(None)
        } else {
            self.options
        };
        self.zip.start_file(path.as_str(), options)?;
        let mut sink = HashingWriter::new(&mut self.zip);
        let outcome = match fill(&mut sink) {
            Ok(outcome) => outcome,
            Err(e) if sink.sink_error => return Err(PackageError::Io(e)),
            Err(e) => ItemOutcome::failed(e.to_string()),
        };
        let (sha256, size) = sink.finish();
        self.items.push(ManifestItem {
            path,
            source: source.to_owned(),
            sha256,
            size,
            collector,
            status: outcome.status,
            error: outcome.error,
            duration_ms: started.elapsed().as_millis() as u64,
        });
        Ok(())
    }

    /// Writes the summary reports and the manifest, closes the zip and hands back the
    /// output and the manifest. Unsigned: see [`PackageWriter::finish_signed`].
    pub fn finish(self) -> Result<(W, Manifest), PackageError> {
        self.finish_with(None)
    }

    /// [`PackageWriter::finish`], adding `manifest.sig` signed by `key`.
    pub fn finish_signed(self, key: &SigningKey) -> Result<(W, Manifest), PackageError> {
        self.finish_with(Some(key))
    }

    fn finish_with(mut self, key: Option<&SigningKey>) -> Result<(W, Manifest), PackageError> {
        self.end_collector(None);
        let finished = Utc::now();
        let mut manifest = Manifest {
            format: FORMAT_VERSION,
            tool: self.meta.tool.clone(),
            agent_version: self.meta.agent_version.clone(),
            host: self.meta.host.clone(),
            action_id: self.meta.action_id,
            profile: self.meta.profile.clone(),
            started_utc: self.started,
            finished_utc: finished,
            collectors: std::mem::take(&mut self.collectors),
            items: Vec::new(),
        };
        // The reports summarise the collectors; they are items of the manifest themselves.
        for (path, body) in
            [(SUMMARY_HTML_PATH, summary::html(&manifest)), (SUMMARY_CSV_PATH, summary::csv(&manifest)?)]
        {
            self.write_item(path.to_owned(), "casefile summary", "casefile".to_owned(), &mut |w| {
                w.write_all(body.as_bytes())?;
                Ok(ItemOutcome::ok())
            })?;
        }
        manifest.items = std::mem::take(&mut self.items);

        // Signed as the exact bytes stored, so no canonical JSON form is needed.
        let manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
        self.zip.start_file(MANIFEST_PATH, self.options)?;
        self.zip.write_all(&manifest_bytes)?;
        if let Some(key) = key {
            let signature =
                serde_json::to_vec_pretty(&crate::signature::sign(&manifest_bytes, key)).map_err(io::Error::other)?;
            self.zip.start_file(SIGNATURE_PATH, self.options)?;
            self.zip.write_all(&signature)?;
        }
        let out = self.zip.finish()?;
        Ok((out, manifest))
    }
}

impl<W: Write + Seek> ItemSink for PackageWriter<W> {
    fn add_item(
        &mut self,
        name: &str,
        source: &str,
        fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<ItemOutcome>,
    ) -> Result<(), PackageError> {
        let (collector, path) = match &self.current {
            Some(open) => (open.name.clone(), format!("{}/{}", safe_name(&open.folder), safe_name(name))),
            None => ("casefile".to_owned(), safe_name(name)),
        };
        let path = self.names.claim(path);
        self.write_item(path, source, collector, fill)
    }
}

/// The entry names taken so far. Names from a host can coincide (two file names that are
/// the same after lossy UTF-8 conversion, or that differ only in letter case or Unicode
/// form, which extractors on macOS and Windows fold) or collide with a folder (`firewall`
/// beside `firewall/rules`); the reader refuses a zip with either, so later ones get `~2`,
/// `~3`, ... on the clashing part. Names are compared folded as the reader folds them.
/// The manifest records each file's exact source.
#[derive(Default)]
struct EntryNames {
    files: HashSet<String>,
    folders: HashSet<String>,
}

/// `path` folded part by part, as [`crate::archive`] compares names.
fn folded(path: &str) -> String {
    path.split('/').map(crate::archive::fold).collect::<Vec<_>>().join("/")
}

impl EntryNames {
    /// Names the writer adds itself at the package root: no collector file may take them.
    fn reserving(names: &[&str]) -> Self {
        let mut taken = Self::default();
        for name in names {
            taken.files.insert(folded(name));
        }
        taken
    }

    fn claim(&mut self, wanted: String) -> String {
        let mut path = wanted;
        while let Some(end) = self.clash(&path) {
            let (head, tail) = path.split_at(end);
            // A free name for the clashing part: no file, and no folder either when it is
            // the file's own name.
            let free = |h: &String| {
                let key = folded(h);
                !self.files.contains(&key) && (!tail.is_empty() || !self.folders.contains(&key))
            };
            let head = (2..).map(|n| format!("{head}~{n}")).find(free).unwrap_or_default();
            path = format!("{head}{tail}");
        }
        for (i, _) in path.match_indices('/') {
            self.folders.insert(folded(&path[..i]));
        }
        self.files.insert(folded(&path));
        path
    }

    /// Where `path` clashes: the end of a prefix that is a file, or of the whole path when
    /// it is a file or folder already.
    fn clash(&self, path: &str) -> Option<usize> {
        if let Some((i, _)) = path.match_indices('/').find(|(i, _)| self.files.contains(&folded(&path[..*i]))) {
            return Some(i);
        }
        let key = folded(path);
        (self.files.contains(&key) || self.folders.contains(&key)).then_some(path.len())
    }
}

/// Longest name part the writer keeps, leaving room for a `~N` suffix below the
/// reader's limit.
const KEPT_SEGMENT_BYTES: usize = 200;

/// Keeps entry names inside the package and readable alike by every extractor (see
/// [`crate::archive::unsafe_name`]): no absolute paths, no `..` or `.`, no empty parts;
/// backslashes separate parts; colons, control characters and characters that fold to
/// either or to a separator become `_`; a part that folds to `..` gets a `_` in front;
/// long parts are cut. Deterministic: the same name always gives the same entry.
fn safe_name(name: &str) -> String {
    let parts: Vec<String> = name
        .split(['/', '\\'])
        .filter(|p| !p.is_empty() && *p != "." && *p != "..")
        .map(|p| {
            let unsafe_char = |c: char| c == ':' || c.is_control() || crate::archive::folds_unsafe(c);
            let mut part: String = p.chars().map(|c| if unsafe_char(c) { '_' } else { c }).collect();
            if part.len() > KEPT_SEGMENT_BYTES {
                let cut = (0..=KEPT_SEGMENT_BYTES).rev().find(|i| part.is_char_boundary(*i)).unwrap_or(0);
                part.truncate(cut);
            }
            if crate::archive::folds_to_dots(&part) {
                part.insert(0, '_');
            }
            part
        })
        .collect();
    if parts.is_empty() { "_".to_owned() } else { parts.join("/") }
}

fn zip_time(t: DateTime<Utc>) -> zip::DateTime {
    zip::DateTime::from_date_and_time(
        t.year().clamp(1980, 2107) as u16,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
    )
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clashing_entry_names_get_a_suffix() {
        let mut names = EntryNames::default();
        assert_eq!(names.claim("a/b".into()), "a/b");
        assert_eq!(names.claim("a/b".into()), "a/b~2");
        assert_eq!(names.claim("a/b".into()), "a/b~3");
        assert_eq!(names.claim("a".into()), "a~2", "a file cannot take a folder's name");
        assert_eq!(names.claim("a/b/c".into()), "a/b~4/c", "nor sit below a file");
        assert_eq!(names.claim("a/b~4/d".into()), "a/b~4/d", "folders are shared");
    }
    use crate::verify::verify;
    use std::io::Cursor;

    #[test]
    fn compressed_files_are_stored_as_they_are_and_the_rest_deflated() {
        let mut w = PackageWriter::new(Cursor::new(Vec::new()), PackageMeta::detached("test"));
        w.begin_collector("logs", "Logs");
        let noise: Vec<u8> = (0..64 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for name in ["syslog.2.GZ", "syslog"] {
            let sink: &mut dyn ItemSink = &mut w;
            sink.file(name, "/var/log", |out| {
                out.write_all(&noise)?;
                Ok(ItemOutcome::ok())
            })
            .unwrap();
        }
        let (out, _) = w.finish().unwrap();
        let bytes = out.into_inner();
        let mut zip = zip::ZipArchive::new(Cursor::new(&bytes)).unwrap();
        let method = |zip: &mut zip::ZipArchive<_>, name| zip.by_name(name).unwrap().compression();
        assert_eq!(method(&mut zip, "Logs/syslog.2.GZ"), zip::CompressionMethod::Stored);
        assert_eq!(method(&mut zip, "Logs/syslog"), zip::CompressionMethod::Deflated);
        assert!(verify(Cursor::new(bytes)).unwrap().is_ok());
    }

    #[test]
    fn items_are_hashed_and_statuses_roll_up() {
        let mut w = PackageWriter::new(Cursor::new(Vec::new()), PackageMeta::detached("test"));
        w.begin_collector("users", "Users and groups");
        let sink: &mut dyn ItemSink = &mut w;
        sink.file("passwd.csv", "/etc/passwd", |out| {
            out.write_all(b"a,b\n")?;
            Ok(ItemOutcome::ok())
        })
        .unwrap();
        sink.file("../../etc/evil", "x", |out| {
            out.write_all(b"partial")?;
            Err(io::Error::other("source vanished"))
        })
        .unwrap();
        w.end_collector(None);
        let (out, manifest) = w.finish().unwrap();

        assert_eq!(manifest.collectors.len(), 1);
        assert_eq!(manifest.collectors[0].status, ItemStatus::Failed);
        let evil = manifest.items.iter().find(|i| i.path.ends_with("evil")).unwrap();
        assert_eq!(evil.path, "Users and groups/etc/evil");
        assert_eq!(evil.status, ItemStatus::Failed);
        assert_eq!(evil.error.as_deref(), Some("source vanished"));
        let passwd = &manifest.items[0];
        assert_eq!(passwd.size, 4);
        use sha2::Digest;
        assert_eq!(passwd.sha256, hex::encode(sha2::Sha256::digest(b"a,b\n")));

        let report = verify(Cursor::new(out.into_inner())).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(report.files_checked, manifest.items.len());
    }
}
