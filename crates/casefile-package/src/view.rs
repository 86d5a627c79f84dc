//! The package viewer's backend: what the web console shows of a package without the
//! analyst downloading it (the folder tree with sizes and SHA-256s, CSV files as pages of
//! a table that sort and filter, text and logs by page and by search).
//!
//! Everything in a package was written by the endpoint, which may be compromised, so
//! every byte is hostile input here:
//! - entries are opened only through [`crate::archive`] (the one zip reader), each read
//!   bounded by its manifest size and its declared size and checked against its CRC when
//!   read to the end;
//! - memory does not grow with a file: every call streams the entry once (a sorted CSV
//!   page twice), keeping only what the page returns plus, for a sorted page, a bounded
//!   heap of sort keys ([`MAX_SORT_WINDOW`] rows at most, each key cut to
//!   [`MAX_SORT_KEY_BYTES`]);
//! - cells, rows and lines are cut to fixed caps ([`MAX_CELL_BYTES`], [`MAX_ROW_BYTES`],
//!   [`MAX_COLUMNS`], [`MAX_LINE_BYTES`]) and the cut is flagged; invalid UTF-8 is decoded
//!   lossily; gzip-compressed logs (`*.gz`) are inflated on the fly, never past
//!   [`MAX_GZIP_INFLATED`] bytes;
//! - nothing here panics on any input: every refusal is a [`ViewError`].
//!
//! The console must escape everything it renders from here, and must never render the
//! package's `CollectionSummaryReport.html` as HTML (it comes from the endpoint too): the
//! summary is [`Package::manifest`] (host, collectors and their statuses).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::io::{BufRead, BufReader, Read, Seek};

use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};

use crate::archive::{Archive, Limits};
use crate::manifest::{ItemStatus, Manifest};
use crate::{MANIFEST_PATH, PackageError, SIGNATURE_PATH};

/// Largest `manifest.json` the viewer parses.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// How much of an entry's start decides its kind.
pub const SNIFF_BYTES: usize = 8 * 1024;
/// Most rows in one CSV page.
pub const MAX_CSV_PAGE_ROWS: usize = 500;
/// A sorted page must end within this many matching rows (`offset + limit`): the sort
/// keeps that many keys in memory.
pub const MAX_SORT_WINDOW: u64 = 50_000;
/// A cell is cut to this many bytes (for display, filters and sorting alike).
pub const MAX_CELL_BYTES: usize = 4 * 1024;
/// A row keeps at most this many bytes of cells; later cells are cut to nothing.
pub const MAX_ROW_BYTES: usize = 32 * 1024;
/// A row keeps at most this many cells.
pub const MAX_COLUMNS: usize = 512;
/// A sort key is the first this-many bytes of its cell.
pub const MAX_SORT_KEY_BYTES: usize = 256;
/// Most lines in one text page.
pub const MAX_TEXT_PAGE_LINES: usize = 1000;
/// Most hits one search returns.
pub const MAX_SEARCH_HITS: usize = 1000;
/// A line is cut to this many bytes for display.
pub const MAX_LINE_BYTES: usize = 4 * 1024;
/// A search looks at this many bytes of each line (a hit past [`MAX_LINE_BYTES`] is
/// shown cut, by its line number).
pub const MAX_SEARCH_LINE_BYTES: usize = 64 * 1024;
/// Longest filter or search text.
pub const MAX_NEEDLE_BYTES: usize = 1024;
/// Most bytes a compressed (`*.gz`) entry may inflate to: bounds the work one request
/// can cause (deflate reaches ~1000:1).
pub const MAX_GZIP_INFLATED: u64 = 1 << 30;
/// A text page counts the lines after it when the entry holds at most this many bytes
/// (uncompressed entries only); past it `total_lines` is only known at the end.
pub const COUNT_LINES_UP_TO: u64 = 64 << 20;

const READ_BUFFER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The package or one entry is refused by [`crate::archive`] (malformed zip, an
    /// entry that inflates past its sizes or fails its CRC), or reading failed.
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("the package holds no file {0:?}")]
    NoSuchEntry(String),
    #[error("{0:?} is not a CSV file")]
    NotCsv(String),
    #[error("column {column} does not exist (the header has {columns} columns)")]
    NoSuchColumn { column: usize, columns: usize },
    #[error("a sorted page must end within the first {max} rows; this one ends at row {requested}")]
    SortWindow { requested: u64, max: u64 },
    #[error("the search text is empty")]
    EmptyNeedle,
    #[error("the filter or search text is longer than {max} bytes")]
    NeedleTooLong { max: usize },
    #[error("{entry:?} is not a readable gzip file: {why}")]
    Gzip { entry: String, why: String },
    #[error("{entry:?} inflates past the {limit} bytes the viewer reads from a compressed file")]
    GzipTooLarge { entry: String, limit: u64 },
}

/// How the viewer shows an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// `*.csv` / `*.tsv` (also gzip-compressed) without NUL bytes at its start: a table.
    /// Invalid UTF-8 does not make a CSV binary (exports in a legacy code page are
    /// common); it is decoded lossily.
    Csv,
    /// No NUL bytes and valid UTF-8 in its first [`SNIFF_BYTES`]: text or a log.
    Text,
    Binary,
}

/// How an entry and the manifest agree on a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Listing {
    /// In the zip and in the manifest.
    Listed,
    /// `manifest.json` or `manifest.sig`: the package's own files, never listed.
    PackageFile,
    /// In the zip, not in the manifest.
    NotInManifest,
    /// In the manifest, not in the zip.
    NotInZip,
}

/// One file of the package, as the tree shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TreeFile {
    pub path: String,
    /// The folder part of `path` (`""` at the root).
    pub folder: String,
    /// The last part of `path`.
    pub name: String,
    /// Folders above it.
    pub depth: usize,
    /// The manifest's size when listed, else the zip's declared size.
    pub size: u64,
    /// The inflated size the zip declares (`None` when not in the zip).
    pub zip_size: Option<u64>,
    /// SHA-256 (hex) from the manifest; the viewer does not recompute it (see
    /// [`crate::verify`]).
    pub sha256: Option<String>,
    pub collector: Option<String>,
    pub status: Option<ItemStatus>,
    pub listing: Listing,
    pub kind: EntryKind,
    /// Stored gzip-compressed (`*.gz`); the viewer inflates it.
    pub gzip: bool,
    /// Why its first bytes could not be read, when they could not (its kind is then
    /// `binary`).
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SortBy {
    /// Index in the header.
    pub column: usize,
    pub descending: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnFilter {
    /// Index in the header.
    pub column: usize,
    /// Case-insensitive substring the cell must contain.
    pub contains: String,
}

/// Which page of a CSV entry to read. Filters are case-insensitive substrings (ASCII
/// letters fold by ASCII rules, other text by Unicode lowercase); empty ones are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvQuery {
    /// Matching rows to skip.
    pub offset: u64,
    /// Rows to return, at most [`MAX_CSV_PAGE_ROWS`] (more is cut to it).
    pub limit: usize,
    /// Numbers (cells that parse as finite numbers) sort numerically and before other
    /// text, which sorts case-insensitively; equal keys keep the file's order.
    pub sort: Option<SortBy>,
    /// A row passes when any of its cells contains this.
    pub filter: Option<String>,
    /// A row passes when each named cell contains its text (missing cells are empty).
    pub column_filters: Vec<ColumnFilter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CsvRow {
    /// The row's place among the data rows of the file, from 1 (the header is 0).
    pub number: u64,
    /// Its cells as in the file: rows can be shorter or longer than the header.
    pub cells: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CsvPage {
    /// The header (the file's first record).
    pub columns: Vec<String>,
    pub rows: Vec<CsvRow>,
    /// Data rows that pass the filters, in the whole file.
    pub matched: u64,
    /// Data rows in the whole file.
    pub total_rows: u64,
    pub offset: u64,
    /// The limit applied (the query's, cut to [`MAX_CSV_PAGE_ROWS`]).
    pub limit: usize,
    /// Some cell of the header or of a returned row was cut, or a row had more than
    /// [`MAX_COLUMNS`] cells.
    pub truncated_cells: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TextLine {
    /// From 1.
    pub number: u64,
    pub text: String,
    /// The line was longer than [`MAX_LINE_BYTES`] and is cut.
    pub cut: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TextPage {
    pub lines: Vec<TextLine>,
    /// Lines in the whole entry, when known (see [`COUNT_LINES_UP_TO`]).
    pub total_lines: Option<u64>,
    /// Lines follow this page.
    pub more: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SearchResult {
    pub hits: Vec<TextLine>,
    /// Another hit follows the last one returned (search again from after it).
    pub more: bool,
    /// Lines read from `first_line` on.
    pub scanned_lines: u64,
}

/// A package opened for viewing. It verifies nothing itself (see [`crate::verify`]):
/// it shows what the zip and the manifest say, flagging where they disagree.
pub struct Package<R = std::fs::File> {
    archive: Archive<R>,
    manifest: Option<Manifest>,
    manifest_problem: Option<String>,
    /// Manifest item index by path (the first, if the manifest lists a path twice).
    listed: HashMap<String, usize>,
}

impl<R: Read + Seek> Package<R> {
    /// Opens a package under the default [`Limits`].
    pub fn open(reader: R) -> Result<Self, ViewError> {
        Self::open_with(reader, Limits::default())
    }

    /// Checks the zip's whole structure (see [`crate::archive`]) and reads the manifest.
    /// A missing or unreadable manifest does not stop the viewer: see
    /// [`Package::manifest_problem`].
    pub fn open_with(reader: R, limits: Limits) -> Result<Self, ViewError> {
        let mut archive = Archive::open(reader, limits)?;
        let (manifest, manifest_problem) = match archive.index_of(MANIFEST_PATH) {
            None => (None, Some("the package has no manifest.json".to_owned())),
            Some(index) => match archive.read_to_vec(index, MAX_MANIFEST_BYTES) {
                Err(PackageError::Io(e)) => return Err(PackageError::Io(e).into()),
                Err(e) => (None, Some(format!("manifest.json is unreadable: {e}"))),
                Ok(bytes) => match serde_json::from_slice::<Manifest>(&bytes) {
                    Ok(m) => (Some(m), None),
                    Err(e) => (None, Some(format!("manifest.json is not a manifest: {e}"))),
                },
            },
        };
        let mut listed = HashMap::new();
        let mut problem = manifest_problem;
        if let Some(m) = &manifest {
            for (i, item) in m.items.iter().enumerate() {
                if listed.contains_key(&item.path) {
                    problem.get_or_insert_with(|| format!("the manifest lists {:?} twice", item.path));
                } else {
                    listed.insert(item.path.clone(), i);
                }
            }
        }
        Ok(Self { archive, manifest, manifest_problem: problem, listed })
    }

    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// Why the manifest is missing or not trusted to list files once.
    pub fn manifest_problem(&self) -> Option<&str> {
        self.manifest_problem.as_deref()
    }

    /// Every file in the zip or the manifest, in tree order: a folder's files (by name),
    /// then its subfolders (by name), names compared case-insensitively first. Each
    /// entry's kind is sniffed from its first [`SNIFF_BYTES`].
    pub fn tree(&mut self) -> Result<Vec<TreeFile>, ViewError> {
        let mut files = Vec::with_capacity(self.archive.entries().len());
        let names: Vec<(String, u64)> = self.archive.entries().iter().map(|e| (e.name.clone(), e.size)).collect();
        for (path, zip_size) in names {
            let (kind, problem) = match self.sniff(&path) {
                Ok(kind) => (kind, None),
                Err(ViewError::Package(PackageError::Io(e))) => return Err(PackageError::Io(e).into()),
                Err(e) => (EntryKind::Binary, Some(e.to_string())),
            };
            let item = self.item(&path);
            let listing = if path == MANIFEST_PATH || path == SIGNATURE_PATH {
                Listing::PackageFile
            } else if item.is_some() {
                Listing::Listed
            } else {
                Listing::NotInManifest
            };
            files.push(tree_file(&path, Some(zip_size), item, listing, kind, problem));
        }
        if let Some(m) = &self.manifest {
            for (path, &i) in &self.listed {
                if self.archive.index_of(path).is_none() {
                    let item = Some(&m.items[i]);
                    files.push(tree_file(path, None, item, Listing::NotInZip, kind_by_name(path), None));
                }
            }
        }
        files.sort_by_cached_key(|f| tree_key(&f.path));
        Ok(files)
    }

    /// The kind of one entry (see [`EntryKind`]).
    pub fn kind(&mut self, path: &str) -> Result<EntryKind, ViewError> {
        self.sniff(path)
    }

    /// One page of a CSV entry, streamed: see [`CsvQuery`] and the module's notes.
    pub fn csv_page(&mut self, path: &str, query: &CsvQuery) -> Result<CsvPage, ViewError> {
        let delimiter = match table_delimiter(path) {
            Some(d) => d,
            None if self.archive.index_of(path).is_some() => return Err(ViewError::NotCsv(path.to_owned())),
            None => return Err(ViewError::NoSuchEntry(path.to_owned())),
        };
        let limit = query.limit.min(MAX_CSV_PAGE_ROWS);
        let filters = Filters::new(query)?;
        if query.sort.is_some() {
            let end = query.offset.saturating_add(limit as u64);
            if end > MAX_SORT_WINDOW {
                return Err(ViewError::SortWindow { requested: end, max: MAX_SORT_WINDOW });
            }
        }
        let (mut records, gzip) = self.open_entry(path).map(|(r, gzip)| (Records::new(r, delimiter), gzip))?;
        let fail = |e: std::io::Error| read_error(e, path, gzip);
        let mut row = Row::default();
        let mut page = CsvPage {
            columns: Vec::new(),
            rows: Vec::new(),
            matched: 0,
            total_rows: 0,
            offset: query.offset,
            limit,
            truncated_cells: false,
        };
        if !records.next(&mut row).map_err(fail)? {
            return Ok(page);
        }
        page.columns = row.strings();
        page.truncated_cells = row.cut;
        filters.check_columns(page.columns.len(), query.sort)?;

        let Some(sort) = query.sort else {
            let end = query.offset.saturating_add(limit as u64);
            while records.next(&mut row).map_err(fail)? {
                page.total_rows += 1;
                if filters.pass(&row) {
                    if (query.offset..end).contains(&page.matched) {
                        page.truncated_cells |= row.cut;
                        page.rows.push(CsvRow { number: page.total_rows, cells: row.strings() });
                    }
                    page.matched += 1;
                }
            }
            return Ok(page);
        };

        // Pass 1: the best `offset + limit` keys, in a max-heap whose top is the worst kept.
        let window = (query.offset as usize).saturating_add(limit);
        let mut heap: BinaryHeap<Ranked> = BinaryHeap::with_capacity(window.min(4096) + 1);
        while records.next(&mut row).map_err(fail)? {
            page.total_rows += 1;
            if !filters.pass(&row) {
                continue;
            }
            page.matched += 1;
            if window == 0 {
                continue;
            }
            let key = KeyRef::of(row.cell(sort.column));
            if heap.len() == window {
                // Later rows lose ties, so only a strictly better key displaces the worst kept.
                let better = heap.peek().is_some_and(|worst| {
                    let order = key.cmp_key(&worst.key);
                    if sort.descending { order.is_gt() } else { order.is_lt() }
                });
                if !better {
                    continue;
                }
                heap.pop();
            }
            heap.push(Ranked { key: key.to_key(), row: page.total_rows, descending: sort.descending });
        }
        let chosen: Vec<u64> = heap.into_sorted_vec().into_iter().skip(query.offset as usize).map(|r| r.row).collect();
        if chosen.is_empty() {
            return Ok(page);
        }
        drop(records);

        // Pass 2: the chosen rows' cells, up to the last of them.
        let slot: HashMap<u64, usize> = chosen.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let last = chosen.iter().copied().max().unwrap_or(0);
        let mut rows: Vec<Option<CsvRow>> = vec![None; chosen.len()];
        let (reader, _) = self.open_entry(path)?;
        let mut records = Records::new(reader, delimiter);
        let fail = |e: std::io::Error| read_error(e, path, gzip);
        records.next(&mut row).map_err(fail)?; // the header
        let mut number = 0u64;
        while number < last && records.next(&mut row).map_err(fail)? {
            number += 1;
            if let Some(&i) = slot.get(&number) {
                page.truncated_cells |= row.cut;
                rows[i] = Some(CsvRow { number, cells: row.strings() });
            }
        }
        page.rows = rows.into_iter().flatten().collect();
        Ok(page)
    }

    /// Lines `first_line..first_line + lines` (from 1; at most [`MAX_TEXT_PAGE_LINES`]).
    pub fn text_page(&mut self, path: &str, first_line: u64, lines: usize) -> Result<TextPage, ViewError> {
        let lines = lines.min(MAX_TEXT_PAGE_LINES);
        let first_line = first_line.max(1);
        let countable = !is_gzip(path)
            && self.archive.index_of(path).is_some_and(|i| self.archive.entries()[i].size <= COUNT_LINES_UP_TO);
        let (reader, gzip) = self.open_entry(path)?;
        let fail = |e: std::io::Error| read_error(e, path, gzip);
        let mut text = Lines::new(reader);
        let skipped = text.skip(first_line - 1).map_err(fail)?;
        let mut page = TextPage { lines: Vec::new(), total_lines: None, more: false };
        if skipped < first_line - 1 {
            page.total_lines = Some(skipped);
            return Ok(page);
        }
        let mut number = first_line;
        let mut line = Vec::new();
        while page.lines.len() < lines {
            let Some(cut) = text.next(&mut line).map_err(fail)? else { break };
            page.lines.push(TextLine { number, text: lossy(&line), cut });
            number += 1;
        }
        page.more = text.has_more().map_err(fail)?;
        let before = first_line - 1 + page.lines.len() as u64;
        if !page.more {
            page.total_lines = Some(before);
        } else if countable {
            page.total_lines = Some(before + text.count_rest().map_err(fail)?);
        }
        Ok(page)
    }

    /// Lines from `first_line` on (from 1) that contain `needle`, case-insensitively;
    /// at most `max_hits` (cut to [`MAX_SEARCH_HITS`]).
    pub fn text_search(
        &mut self,
        path: &str,
        needle: &str,
        max_hits: usize,
        first_line: u64,
    ) -> Result<SearchResult, ViewError> {
        if needle.is_empty() {
            return Err(ViewError::EmptyNeedle);
        }
        let needle = Needle::new(needle)?;
        let max_hits = max_hits.min(MAX_SEARCH_HITS);
        let first_line = first_line.max(1);
        let (reader, gzip) = self.open_entry(path)?;
        let fail = |e: std::io::Error| read_error(e, path, gzip);
        let mut text = Lines::new(reader);
        let mut result = SearchResult { hits: Vec::new(), more: false, scanned_lines: 0 };
        if text.skip(first_line - 1).map_err(fail)? < first_line - 1 {
            return Ok(result);
        }
        let mut line = Vec::new();
        while let Some(cut) = text.next_up_to(&mut line, MAX_SEARCH_LINE_BYTES).map_err(fail)? {
            if needle.found_in(&line) {
                if result.hits.len() == max_hits {
                    result.more = true;
                    break;
                }
                let number = first_line + result.scanned_lines;
                let shown = &line[..line.len().min(MAX_LINE_BYTES)];
                result.hits.push(TextLine { number, text: lossy(shown), cut: cut || shown.len() < line.len() });
            }
            result.scanned_lines += 1;
        }
        Ok(result)
    }

    fn item(&self, path: &str) -> Option<&crate::manifest::ManifestItem> {
        let i = *self.listed.get(path)?;
        self.manifest.as_ref().map(|m| &m.items[i])
    }

    /// The entry's bytes, inflated from gzip when its name says so. Reads are bounded by
    /// the manifest size (when listed), the declared size and, for gzip, by
    /// [`MAX_GZIP_INFLATED`].
    fn open_entry(&mut self, path: &str) -> Result<(Box<dyn Read + '_>, bool), ViewError> {
        let index = self.archive.index_of(path).ok_or_else(|| ViewError::NoSuchEntry(path.to_owned()))?;
        let limit = self.item(path).map_or(u64::MAX, |item| item.size);
        let reader = self.archive.reader(index, limit)?;
        if is_gzip(path) {
            let bounded = Bounded::new(MultiGzDecoder::new(reader), MAX_GZIP_INFLATED, path);
            Ok((Box::new(bounded), true))
        } else {
            Ok((Box::new(reader), false))
        }
    }

    fn sniff(&mut self, path: &str) -> Result<EntryKind, ViewError> {
        let (mut reader, gzip) = self.open_entry(path)?;
        let mut head = vec![0u8; SNIFF_BYTES];
        let mut filled = 0;
        while filled < head.len() {
            match reader.read(&mut head[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(e, path, gzip)),
            }
        }
        let head = &head[..filled];
        if head.contains(&0) {
            return Ok(EntryKind::Binary);
        }
        if table_delimiter(path).is_some() {
            return Ok(EntryKind::Csv);
        }
        let text = match std::str::from_utf8(head) {
            Ok(_) => true,
            // A character cut by the end of the sniffed bytes, not an invalid one.
            Err(e) => e.error_len().is_none() && filled == SNIFF_BYTES,
        };
        Ok(if text { EntryKind::Text } else { EntryKind::Binary })
    }
}

fn tree_file(
    path: &str,
    zip_size: Option<u64>,
    item: Option<&crate::manifest::ManifestItem>,
    listing: Listing,
    kind: EntryKind,
    problem: Option<String>,
) -> TreeFile {
    let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
    TreeFile {
        path: path.to_owned(),
        folder: folder.to_owned(),
        name: name.to_owned(),
        depth: path.matches('/').count(),
        size: item.map(|i| i.size).or(zip_size).unwrap_or(0),
        zip_size,
        sha256: item.map(|i| i.sha256.clone()),
        collector: item.map(|i| i.collector.clone()),
        status: item.map(|i| i.status),
        listing,
        kind,
        gzip: is_gzip(path),
        problem,
    }
}

/// Folder by folder (each part case-insensitively, then exactly), a folder's own files
/// before its subfolders: a depth-first listing.
fn tree_key(path: &str) -> (Vec<(String, String)>, (String, String)) {
    let part = |p: &str| (p.to_lowercase(), p.to_owned());
    let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
    let folders = if folder.is_empty() { Vec::new() } else { folder.split('/').map(part).collect() };
    (folders, part(name))
}

fn strip_gz(path: &str) -> &str {
    if is_gzip(path) { &path[..path.len() - 3] } else { path }
}

fn is_gzip(path: &str) -> bool {
    path.len() > 3 && path.is_char_boundary(path.len() - 3) && path[path.len() - 3..].eq_ignore_ascii_case(".gz")
}

/// The delimiter of a table entry, by its name (`.csv`, `.tsv`, each maybe `.gz`).
fn table_delimiter(path: &str) -> Option<u8> {
    let name = strip_gz(path);
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("csv") => Some(b','),
        Some("tsv") => Some(b'\t'),
        _ => None,
    }
}

/// The kind a file not in the zip would have, by its name only.
fn kind_by_name(path: &str) -> EntryKind {
    if table_delimiter(path).is_some() { EntryKind::Csv } else { EntryKind::Text }
}

/// A read error as the viewer reports it: the archive's refusal, the gzip layer's, or I/O.
fn read_error(e: std::io::Error, path: &str, gzip: bool) -> ViewError {
    if e.get_ref().is_some_and(|inner| inner.is::<ViewError>()) {
        if let Some(Ok(inner)) = e.into_inner().map(|inner| inner.downcast::<ViewError>()) {
            return *inner;
        }
        return ViewError::Gzip { entry: path.to_owned(), why: "unreadable".to_owned() };
    }
    match PackageError::from_entry_read(e) {
        PackageError::Io(e) if gzip => ViewError::Gzip { entry: path.to_owned(), why: e.to_string() },
        other => other.into(),
    }
}

/// Fails once `inner` yields more than `left` bytes (a gzip bomb stops there).
struct Bounded<R> {
    inner: R,
    left: u64,
    limit: u64,
    entry: String,
}

impl<R> Bounded<R> {
    fn new(inner: R, limit: u64, entry: &str) -> Self {
        Self { inner, left: limit, limit, entry: entry.to_owned() }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX).min(buf.len());
        let n = self.inner.read(&mut buf[..room])?;
        if n as u64 > self.left {
            let e = ViewError::GzipTooLarge { entry: self.entry.clone(), limit: self.limit };
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A case-insensitive substring test without allocating per line when the needle is
/// ASCII (the common case: names, addresses, ids).
struct Needle {
    lower: String,
    ascii: bool,
}

impl Needle {
    fn new(text: &str) -> Result<Self, ViewError> {
        if text.len() > MAX_NEEDLE_BYTES {
            return Err(ViewError::NeedleTooLong { max: MAX_NEEDLE_BYTES });
        }
        Ok(Self { lower: text.to_lowercase(), ascii: text.is_ascii() })
    }

    fn found_in(&self, hay: &[u8]) -> bool {
        let needle = self.lower.as_bytes();
        if self.ascii {
            if needle.len() > hay.len() {
                return false;
            }
            let first = needle[0];
            let upper = first.to_ascii_uppercase();
            memchr::memchr2_iter(first, upper, &hay[..=hay.len() - needle.len()])
                .any(|at| hay[at..at + needle.len()].eq_ignore_ascii_case(needle))
        } else {
            String::from_utf8_lossy(hay).to_lowercase().contains(&self.lower)
        }
    }
}

/// The query's filters, checked once.
struct Filters {
    any: Option<Needle>,
    columns: Vec<(usize, Needle)>,
}

impl Filters {
    fn new(query: &CsvQuery) -> Result<Self, ViewError> {
        let any = match query.filter.as_deref() {
            Some(text) if !text.is_empty() => Some(Needle::new(text)?),
            _ => None,
        };
        let mut columns = Vec::new();
        for f in &query.column_filters {
            if !f.contains.is_empty() {
                columns.push((f.column, Needle::new(&f.contains)?));
            }
        }
        Ok(Self { any, columns })
    }

    fn check_columns(&self, count: usize, sort: Option<SortBy>) -> Result<(), ViewError> {
        let named = self.columns.iter().map(|(c, _)| *c).chain(sort.map(|s| s.column));
        match named.into_iter().find(|&c| c >= count) {
            Some(column) => Err(ViewError::NoSuchColumn { column, columns: count }),
            None => Ok(()),
        }
    }

    fn pass(&self, row: &Row) -> bool {
        self.columns.iter().all(|(c, needle)| needle.found_in(row.cell(*c)))
            && self.any.as_ref().is_none_or(|needle| (0..row.len()).any(|c| needle.found_in(row.cell(c))))
    }
}

/// A sort key: finite numbers first (numerically), then text (case-insensitively, then
/// exactly). A total order, so sorting never meets a contradiction (a mixed
/// number-or-text comparison could be circular: 9 < 10, "10" < "1x", "1x" < "9").
#[derive(Debug)]
enum Key {
    Number(f64),
    /// `folded` is `exact` lowercased char by char, compared first.
    Text {
        folded: String,
        exact: String,
    },
}

/// A cell as a key, borrowed: what most rows are compared as without allocating.
enum KeyRef<'a> {
    Number(f64),
    Text(std::borrow::Cow<'a, str>),
}

impl<'a> KeyRef<'a> {
    fn of(cell: &'a [u8]) -> Self {
        let text = String::from_utf8_lossy(&cell[..cell.len().min(MAX_SORT_KEY_BYTES)]);
        match text.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Self::Number(n),
            _ => Self::Text(text),
        }
    }

    fn to_key(&self) -> Key {
        match self {
            Self::Number(n) => Key::Number(*n),
            Self::Text(t) => Key::Text { folded: fold(t).collect(), exact: t.clone().into_owned() },
        }
    }

    /// Compares with a stored key as [`Key::cmp`] would.
    fn cmp_key(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Self::Number(a), Key::Number(b)) => a.total_cmp(b),
            (Self::Number(_), Key::Text { .. }) => Ordering::Less,
            (Self::Text(_), Key::Number(_)) => Ordering::Greater,
            (Self::Text(a), Key::Text { folded, exact }) => {
                fold(a).cmp(folded.chars()).then_with(|| a.as_ref().cmp(exact.as_str()))
            }
        }
    }
}

fn fold(text: &str) -> impl Iterator<Item = char> + '_ {
    text.chars().flat_map(char::to_lowercase)
}

impl Key {
    #[cfg(test)]
    fn of(cell: &[u8]) -> Self {
        KeyRef::of(cell).to_key()
    }

    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Number(a), Self::Number(b)) => a.total_cmp(b),
            (Self::Number(_), Self::Text { .. }) => Ordering::Less,
            (Self::Text { .. }, Self::Number(_)) => Ordering::Greater,
            (Self::Text { folded: fa, exact: ea }, Self::Text { folded: fb, exact: eb }) => {
                fa.cmp(fb).then_with(|| ea.cmp(eb))
            }
        }
    }
}

/// A row's rank in a sorted page: by key, ties by the row's place in the file.
#[derive(Debug)]
struct Ranked {
    key: Key,
    row: u64,
    descending: bool,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        let by_key = if self.descending { other.key.cmp(&self.key) } else { self.key.cmp(&other.key) };
        by_key.then_with(|| self.row.cmp(&other.row))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

/// One CSV record's cells as cut bytes, reused from row to row.
#[derive(Default)]
struct Row {
    data: Vec<u8>,
    ends: Vec<usize>,
    cut: bool,
}

impl Row {
    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.cut = false;
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Cell `i`, empty past the row's end.
    fn cell(&self, i: usize) -> &[u8] {
        match self.ends.get(i) {
            Some(&end) => &self.data[if i == 0 { 0 } else { self.ends[i - 1] }..end],
            None => &[],
        }
    }

    fn strings(&self) -> Vec<String> {
        (0..self.len()).map(|i| lossy(self.cell(i))).collect()
    }
}

/// CSV records parsed field by field with `csv-core`, so a huge cell or row costs no
/// memory past the caps (the `csv` crate would buffer a whole record). Quotes, quoted
/// newlines, CRLF and ragged rows are csv-core's; a leading UTF-8 BOM is dropped.
struct Records<R> {
    src: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    started: bool,
    core: csv_core::Reader,
    out: Vec<u8>,
}

impl<R: Read> Records<R> {
    fn new(src: R, delimiter: u8) -> Self {
        Self {
            src,
            buf: vec![0; READ_BUFFER],
            pos: 0,
            len: 0,
            eof: false,
            started: false,
            core: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
            out: vec![0; 16 * 1024],
        }
    }

    fn fill(&mut self) -> std::io::Result<()> {
        self.pos = 0;
        self.len = 0;
        // At the start, enough bytes to see a BOM whole.
        let want = if self.started { 1 } else { 3 };
        while self.len < want {
            match self.src.read(&mut self.buf[self.len..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if !self.started {
            self.started = true;
            if self.buf[..self.len].starts_with(b"\xEF\xBB\xBF") {
                self.pos = 3;
            }
        }
        Ok(())
    }

    /// The next record into `row`; `false` at the end.
    fn next(&mut self, row: &mut Row) -> std::io::Result<bool> {
        row.clear();
        let mut cell_len = 0usize;
        loop {
            if self.pos == self.len && !self.eof {
                self.fill()?;
            }
            let (result, read, written) = self.core.read_field(&self.buf[self.pos..self.len], &mut self.out);
            self.pos += read;
            let kept = if row.ends.len() < MAX_COLUMNS {
                written.min(MAX_CELL_BYTES - cell_len).min(MAX_ROW_BYTES - row.data.len())
            } else {
                0
            };
            row.data.extend_from_slice(&self.out[..kept]);
            cell_len += kept;
            row.cut |= kept < written;
            match result {
                csv_core::ReadFieldResult::InputEmpty | csv_core::ReadFieldResult::OutputFull => {}
                csv_core::ReadFieldResult::Field { record_end } => {
                    if row.ends.len() < MAX_COLUMNS {
                        row.ends.push(row.data.len());
                    } else {
                        row.cut = true;
                    }
                    cell_len = 0;
                    if record_end {
                        return Ok(true);
                    }
                }
                csv_core::ReadFieldResult::End => return Ok(false),
            }
        }
    }
}

/// Lines split on `\n` (a `\r` before it dropped), each cut to a cap. A last
/// line without `\n` counts; an empty entry has no lines.
struct Lines<R> {
    src: BufReader<R>,
}

impl<R: Read> Lines<R> {
    fn new(src: R) -> Self {
        Self { src: BufReader::with_capacity(READ_BUFFER, src) }
    }

    /// The next line into `line`: `Some(cut)`, or `None` at the end.
    fn next(&mut self, line: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
        self.next_up_to(line, MAX_LINE_BYTES)
    }

    /// [`Lines::next`], keeping up to `cap` bytes.
    fn next_up_to(&mut self, line: &mut Vec<u8>, cap: usize) -> std::io::Result<Option<bool>> {
        line.clear();
        let mut cut = false;
        let mut any = false;
        loop {
            let buf = self.src.fill_buf()?;
            if buf.is_empty() {
                return Ok(any.then_some(cut));
            }
            any = true;
            let (part, used, done) = match memchr::memchr(b'\n', buf) {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            let kept = part.len().min(cap - line.len());
            line.extend_from_slice(&part[..kept]);
            cut |= kept < part.len();
            self.src.consume(used);
            if done {
                if !cut && line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(cut));
            }
        }
    }

    /// Skips up to `n` lines; returns how many there were.
    fn skip(&mut self, n: u64) -> std::io::Result<u64> {
        let mut skipped = 0u64;
        let mut last = b'\n';
        while skipped < n {
            let buf = self.src.fill_buf()?;
            let Some(&end) = buf.last() else {
                // A last line without a newline counts.
                return Ok(skipped + u64::from(last != b'\n'));
            };
            let (mut used, mut tail) = (buf.len(), end);
            for at in memchr::memchr_iter(b'\n', buf) {
                skipped += 1;
                if skipped == n {
                    (used, tail) = (at + 1, b'\n');
                    break;
                }
            }
            last = tail;
            self.src.consume(used);
        }
        Ok(skipped)
    }

    fn has_more(&mut self) -> std::io::Result<bool> {
        Ok(!self.src.fill_buf()?.is_empty())
    }

    /// Lines left (from the start of a line).
    fn count_rest(&mut self) -> std::io::Result<u64> {
        let mut count = 0u64;
        let mut last = b'\n';
        loop {
            let buf = self.src.fill_buf()?;
            let Some(&end) = buf.last() else { break };
            count += memchr::memchr_iter(b'\n', buf).count() as u64;
            last = end;
            let used = buf.len();
            self.src.consume(used);
        }
        Ok(count + u64::from(last != b'\n'))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn a_gzip_member_stops_one_byte_past_its_bound() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&[0u8; 1 << 20]).unwrap();
        let gz = gz.finish().unwrap();
        let mut out = Vec::new();
        let mut exact = Bounded::new(MultiGzDecoder::new(&gz[..]), 1 << 20, "x.gz");
        assert_eq!(exact.read_to_end(&mut out).unwrap(), 1 << 20);
        let mut small = Bounded::new(MultiGzDecoder::new(&gz[..]), 1000, "x.gz");
        let e = small.read_to_end(&mut Vec::new()).unwrap_err();
        match read_error(e, "x.gz", true) {
            ViewError::GzipTooLarge { entry, limit } => assert_eq!((entry.as_str(), limit), ("x.gz", 1000)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_order_numbers_before_text_totally() {
        let cells = ["10", "9", "1x", "-0", "0", "", "B", "a", "1e400", "inf", " 7 ", "\u{3a3}a", "\u{3c3}A", "\u{ff}"];
        let keys = cells.map(|k| Key::of(k.as_bytes()));
        for (cell, a) in cells.iter().zip(&keys) {
            for b in &keys {
                assert_eq!(a.cmp(b), b.cmp(a).reverse(), "{a:?} {b:?}");
                assert_eq!(KeyRef::of(cell.as_bytes()).cmp_key(b), a.cmp(b), "{a:?} {b:?}: borrowed as stored");
                for c in &keys {
                    if a.cmp(b).is_le() && b.cmp(c).is_le() {
                        assert!(a.cmp(c).is_le(), "{a:?} <= {b:?} <= {c:?}");
                    }
                }
            }
        }
        assert!(Key::of(b"9").cmp(&Key::of(b"10")).is_lt());
        assert!(Key::of(b"10").cmp(&Key::of(b"1x")).is_lt());
        assert!(Key::of(b" 7 ").cmp(&Key::of(b"9")).is_lt(), "numbers are trimmed");
    }
}
