//! What every collector shares: opening files without hanging on hostile ones, copying
//! files and streaming CSV into the package, reading lines of bounded length, counting
//! problems into an item outcome, and formatting UTC timestamps.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fmt::Display;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use casefile_package::{ItemOutcome, ItemSink, PackageError};
use sha2::{Digest, Sha256};

use crate::{Context, Limits};

/// Most of a configuration file that is parsed rather than copied: a planted
/// multi-gigabyte file must not exhaust memory or time.
pub(crate) const COPY_LIMIT: u64 = 32 * 1024 * 1024;

/// Longest line the line reader keeps; the rest of a longer line is dropped so a file
/// without newlines cannot exhaust memory.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Outcome note for an item cut short because the collection was cancelled.
pub(crate) const CANCELLED: &str = "collection cancelled";

/// Opens `path` for reading only if it is a regular file. `O_NONBLOCK` keeps a FIFO
/// planted where a configuration file should be from hanging the agent; the file type
/// check then rejects it (and devices, and directories).
pub(crate) fn open_regular(path: &Path) -> io::Result<File> {
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(file)
}

/// True when the error means "there is no such file" rather than "it cannot be read".
pub(crate) fn is_missing(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

/// The item outcome for a source that could not be opened: a missing source is
/// `not-applicable` on this host, any other error makes the item `failed`.
pub(crate) fn unavailable(source: &str, e: &io::Error) -> ItemOutcome {
    if is_missing(e) {
        ItemOutcome::not_applicable(format!("{source} not present"))
    } else {
        ItemOutcome::failed(format!("{source}: {e}"))
    }
}

/// Reads at most `limit` bytes of a regular file.
pub(crate) fn read_capped(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    open_regular(path)?.take(limit).read_to_end(&mut buf)?;
    Ok(buf)
}

/// A small text file (a `/proc/sys` or `/sys` value), lossily decoded and trimmed.
pub(crate) fn read_value(path: &Path) -> io::Result<String> {
    let bytes = read_capped(path, 64 * 1024)?;
    Ok(String::from_utf8_lossy(&bytes).trim().to_owned())
}

/// Opens a regular file for line-by-line reading.
pub(crate) fn open_lines(path: &Path) -> io::Result<Lines<BufReader<File>>> {
    Ok(Lines::new(BufReader::new(open_regular(path)?)))
}

/// `\n`-separated lines as bytes (file names and command lines need not be UTF-8), each
/// cut at [`MAX_LINE`] bytes.
pub(crate) struct Lines<R> {
    reader: R,
    line: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(reader: R) -> Self {
        Self { reader, line: Vec::new() }
    }

    /// The next line without its `\n`, or `None` at the end of the input.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<&[u8]>> {
        self.line.clear();
        let mut read_any = false;
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                return Ok(read_any.then_some(self.line.as_slice()));
            }
            read_any = true;
            let newline = chunk.iter().position(|&b| b == b'\n');
            let end = newline.unwrap_or(chunk.len());
            let room = MAX_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&chunk[..end.min(room)]);
            let consumed = newline.map_or(end, |i| i + 1);
            self.reader.consume(consumed);
            if newline.is_some() {
                return Ok(Some(self.line.as_slice()));
            }
        }
    }
}

/// Copies the file at `path` into the package as `name`, cut at `limit` bytes. A missing
/// file becomes a `not-applicable` item, an unreadable one a `failed` item with the reason.
pub(crate) fn copy_file(
    sink: &mut dyn ItemSink,
    name: &str,
    path: &Path,
    source: &str,
    limit: u64,
) -> Result<(), PackageError> {
    sink.file(name, source, |out| {
        let file = match open_regular(path) {
            Ok(file) => file,
            Err(e) => return Ok(unavailable(source, &e)),
        };
        Ok(copy_head(file, out, limit)?.outcome())
    })
}

/// How much of a file went into the package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Copied {
    /// Size of the file when it was opened.
    pub(crate) size: u64,
    /// Bytes written into the package.
    pub(crate) bytes: u64,
    /// Part of the file was left out.
    pub(crate) truncated: bool,
    /// What was kept of a cut file: its beginning or its newest part.
    tail: bool,
}

impl Copied {
    /// `ok`, or `partial` saying which part was kept.
    pub(crate) fn outcome(&self) -> ItemOutcome {
        match (self.truncated, self.tail) {
            (false, _) if self.bytes < self.size => {
                ItemOutcome::partial(format!("shrank while copied: {} of {} bytes", self.bytes, self.size))
            }
            (false, _) => ItemOutcome::ok(),
            (true, false) if self.bytes >= self.size => {
                ItemOutcome::partial(format!("grew while copied: kept the first {} bytes", self.bytes))
            }
            (true, false) => ItemOutcome::partial(format!("truncated at {} bytes", self.bytes)),
            (true, true) => ItemOutcome::partial(format!("kept the newest {} of {} bytes", self.bytes, self.size)),
        }
    }
}

/// Copies the first `limit` bytes of `file`.
pub(crate) fn copy_head(file: File, out: &mut dyn Write, limit: u64) -> io::Result<Copied> {
    let size = file.metadata()?.len();
    let mut limited = file.take(limit);
    let bytes = io::copy(&mut limited, out)?;
    // A file that grew while we read is cut too, whatever its size was at the start.
    let truncated = limited.into_inner().read(&mut [0u8; 1])? > 0;
    Ok(Copied { size, bytes, truncated, tail: false })
}

/// Copies the newest `limit` bytes of `file` (logs and histories grow at the end). The
/// kept part starts after the first line break inside it, so it begins with a whole
/// line; a file without line breaks near the cut is kept byte-exact.
pub(crate) fn copy_tail(file: File, out: &mut dyn Write, limit: u64) -> io::Result<Copied> {
    let size = file.metadata()?.len();
    if size <= limit {
        return copy_head(file, out, limit);
    }
    let mut reader = BufReader::new(file);
    reader.seek(SeekFrom::Start(size - limit))?;
    let mut skipped = 0u64;
    let head = reader.fill_buf()?;
    if let Some(newline) = head.iter().take(MAX_LINE).position(|&b| b == b'\n') {
        skipped = newline as u64 + 1;
        reader.consume(newline + 1);
    }
    let bytes = io::copy(&mut reader.take(limit - skipped), out)?;
    Ok(Copied { size, bytes, truncated: true, tail: true })
}

/// How many files of the per-file cap one collector may hash in total, so a host full
/// of large binaries costs bounded time.
const HASH_BUDGET_FILES: u64 = 16;

/// The outcome of hashing one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileHash {
    Sha256([u8; 32]),
    /// Larger than the per-file cap. A hash of only the first part would match no
    /// threat-intelligence lookup, so none is given.
    TooLarge {
        size: u64,
        limit: u64,
    },
    /// The collector's hashing budget is used up.
    OverBudget {
        budget: u64,
    },
    /// Not read, for the reason given.
    Skipped(String),
}

impl FileHash {
    /// The hex digest, or "" when the file was not hashed.
    pub(crate) fn hex(&self) -> String {
        match self {
            Self::Sha256(digest) => hex::encode(digest),
            _ => String::new(),
        }
    }

    /// Why there is no digest, or "".
    pub(crate) fn note(&self) -> String {
        match self {
            Self::Sha256(_) => String::new(),
            Self::TooLarge { size, limit } => format!("not hashed: {size} bytes is over the {limit}-byte cap"),
            Self::OverBudget { budget } => format!("not hashed: the {budget}-byte hashing budget is used up"),
            Self::Skipped(why) => format!("not hashed: {why}"),
        }
    }
}

/// SHA-256 of files, each up to the per-file cap, against a total budget.
#[derive(Debug)]
pub(crate) struct FileHasher {
    limit: u64,
    budget: u64,
    remaining: u64,
}

impl FileHasher {
    pub(crate) fn new(limits: &Limits) -> Self {
        let budget = limits.max_file_bytes.saturating_mul(HASH_BUDGET_FILES);
        Self { limit: limits.max_file_bytes, budget, remaining: budget }
    }

    pub(crate) fn hash(&mut self, mut file: File) -> io::Result<FileHash> {
        let size = file.metadata()?.len();
        if size > self.limit {
            return Ok(FileHash::TooLarge { size, limit: self.limit });
        }
        if size > self.remaining {
            return Ok(FileHash::OverBudget { budget: self.budget });
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut read = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            read += n as u64;
            self.remaining = self.remaining.saturating_sub(n as u64);
            // The file grew while we read it.
            if read > self.limit {
                return Ok(FileHash::TooLarge { size: read, limit: self.limit });
            }
            hasher.update(&buf[..n]);
        }
        Ok(FileHash::Sha256(hasher.finalize().into()))
    }
}

/// A CSV file being written into the package.
pub(crate) struct Csv<'w> {
    writer: csv::Writer<&'w mut dyn Write>,
}

impl Csv<'_> {
    pub(crate) fn row<I, T>(&mut self, fields: I) -> io::Result<()>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        self.writer.write_record(fields).map_err(io::Error::from)
    }
}

/// Adds a CSV item: writes `header`, lets `rows` stream the records, and flushes even
/// when `rows` fails so that the rows written so far stay in the package.
pub(crate) fn csv_file(
    sink: &mut dyn ItemSink,
    name: &str,
    source: &str,
    header: &[&str],
    rows: impl FnOnce(&mut Csv<'_>) -> io::Result<ItemOutcome>,
) -> Result<(), PackageError> {
    sink.file(name, source, |out| {
        let mut csv = Csv { writer: csv::Writer::from_writer(out) };
        csv.row(header)?;
        let outcome = rows(&mut csv);
        let flushed = csv.writer.flush();
        let outcome = outcome?;
        flushed?;
        Ok(outcome)
    })
}

/// A file or folder name from the host (a user, a file name) made safe as one part of a
/// package path: no separators, and never empty, `.` or `..` (which the package writer
/// would drop, making two names one).
pub(crate) fn name_part(name: &str) -> String {
    let name = name.replace(['/', '\\'], "_");
    if name.is_empty() || name == "." || name == ".." { format!("_{name}") } else { name }
}

/// Passes items on, renaming any whose name was already used (`name~2`, `name~3`, …).
/// Names taken from the host can collide once made UTF-8 (`a\xff` and `a\xfe` both
/// become `a\u{fffd}`), and a zip cannot hold two files of one name.
pub(crate) struct UniqueNames<'a> {
    inner: &'a mut dyn ItemSink,
    used: HashSet<String>,
}

impl<'a> UniqueNames<'a> {
    pub(crate) fn new(inner: &'a mut dyn ItemSink) -> Self {
        Self { inner, used: HashSet::new() }
    }
}

impl ItemSink for UniqueNames<'_> {
    fn add_item(
        &mut self,
        name: &str,
        source: &str,
        fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<ItemOutcome>,
    ) -> Result<(), PackageError> {
        let mut unique = name.to_owned();
        let mut n = 1;
        while !self.used.insert(unique.clone()) {
            n += 1;
            unique = format!("{name}~{n}");
        }
        self.inner.add_item(&unique, source, fill)
    }
}

/// A CSV item made from a table file line by line (`/proc/mounts`, `/proc/modules`):
/// `row` turns a line into a record, or `None` for a line it cannot parse, which is
/// counted; blank lines are skipped. A missing file is `not-applicable`.
pub(crate) fn csv_from_lines<R, T>(
    ctx: &Context,
    sink: &mut dyn ItemSink,
    (name, abs, source): (&str, &str, &str),
    header: &[&str],
    mut row: impl FnMut(&[u8], &mut Problems) -> Option<R>,
) -> Result<(), PackageError>
where
    R: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    csv_file(sink, name, source, header, |csv| {
        let mut lines = match open_lines(&ctx.path(abs)) {
            Ok(lines) => lines,
            Err(e) => return Ok(unavailable(abs, &e)),
        };
        let mut problems = Problems::default();
        while let Some(line) = lines.next_line()? {
            if ctx.cancel.is_cancelled() {
                return Ok(ItemOutcome::partial(CANCELLED));
            }
            if trim_bytes(line).is_empty() {
                continue;
            }
            match row(line, &mut problems) {
                Some(record) => csv.row(record)?,
                None => problems.add("unparseable lines skipped", abs),
            }
        }
        Ok(problems.outcome())
    })
}

/// Problems met while writing one item, counted per kind with the first example of each,
/// so that 3,000 unreadable processes make one short note and not 3,000.
#[derive(Debug, Default, Clone)]
pub(crate) struct Problems {
    kinds: BTreeMap<String, (usize, String)>,
}

impl Problems {
    pub(crate) fn add(&mut self, kind: &str, example: impl Display) {
        self.kinds.entry(kind.to_owned()).or_insert_with(|| (0, example.to_string())).0 += 1;
    }

    pub(crate) fn merge(&mut self, other: &Problems) {
        for (kind, (count, example)) in &other.kinds {
            self.kinds.entry(kind.clone()).or_insert_with(|| (0, example.clone())).0 += count;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// `ok` without problems, otherwise `partial` with e.g.
    /// "processes with unreadable fields: 3 (first: exe: Permission denied)".
    pub(crate) fn outcome(&self) -> ItemOutcome {
        if self.is_empty() {
            return ItemOutcome::ok();
        }
        let notes: Vec<String> =
            self.kinds.iter().map(|(kind, (count, example))| format!("{kind}: {count} (first: {example})")).collect();
        ItemOutcome::partial(notes.join("; "))
    }
}

/// The outcome of an item read from several sources (tables, files): `not-applicable`
/// when none exists, `failed` when none could be read, otherwise what the problems say.
pub(crate) fn table_outcome(tables_read: usize, problems: Problems, none_why: &str) -> ItemOutcome {
    if tables_read == 0 && problems.is_empty() {
        ItemOutcome::not_applicable(none_why)
    } else if tables_read == 0 {
        ItemOutcome::failed(problems.outcome().error.unwrap_or_default())
    } else {
        problems.outcome()
    }
}

/// Most entries of one directory listed; a directory of a million planted files costs
/// no more than this.
pub(crate) const MAX_DIR_ENTRIES: usize = 10_000;

/// The names in directory `abs` (a host path below the root), sorted, at most
/// [`MAX_DIR_ENTRIES`]. A missing directory has none; an unreadable or cut one is
/// counted in `problems`.
pub(crate) fn dir_entries(ctx: &Context, abs: &str, problems: &mut Problems) -> Vec<OsString> {
    let entries = match std::fs::read_dir(ctx.path(abs)) {
        Ok(entries) => entries,
        Err(e) if is_missing(&e) => return Vec::new(),
        Err(e) => {
            problems.add("unreadable directories", format!("{abs}: {e}"));
            return Vec::new();
        }
    };
    let mut names: Vec<OsString> =
        entries.filter_map(|e| e.ok()).map(|e| e.file_name()).take(MAX_DIR_ENTRIES + 1).collect();
    if names.len() > MAX_DIR_ENTRIES {
        names.truncate(MAX_DIR_ENTRIES);
        problems.add("directories listed only in part", format!("{abs}: first {MAX_DIR_ENTRIES} entries"));
    }
    names.sort();
    names
}

/// `2024-05-01T12:34:56Z` for seconds since the Unix epoch.
pub(crate) fn utc_timestamp(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", in_day / 3600, in_day % 3600 / 60, in_day % 60)
}

/// A file's modification time as [`utc_timestamp`].
pub(crate) fn mtime_utc(meta: &std::fs::Metadata) -> String {
    utc_timestamp(std::os::unix::fs::MetadataExt::mtime(meta))
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Trims ASCII whitespace at both ends of a byte string.
pub(crate) fn trim_bytes(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Splits off the first `n` whitespace-separated fields of `line` and returns them with
/// the remainder (leading whitespace removed), which may itself contain spaces (a socket
/// path). `None` when the line has fewer than `n` fields.
pub(crate) fn split_fields(line: &[u8], n: usize) -> Option<(Vec<&[u8]>, &[u8])> {
    let mut fields = Vec::with_capacity(n);
    let mut rest = line;
    for _ in 0..n {
        let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        rest = &rest[start..];
        let end = rest.iter().position(|b| b.is_ascii_whitespace()).unwrap_or(rest.len());
        fields.push(&rest[..end]);
        rest = &rest[end..];
    }
    let start = rest.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(rest.len());
    Some((fields, &rest[start..]))
}

/// Text of a byte field; `None` when it is not UTF-8 (fields that must be numbers).
pub(crate) fn ascii_str(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_iso8601() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc_timestamp(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(utc_timestamp(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn lines_are_cut_at_the_limit_and_the_last_line_needs_no_newline() {
        let mut input = vec![b'a'; MAX_LINE + 10];
        input.extend_from_slice(b"\nsecond\nlast");
        let mut lines = Lines::new(io::Cursor::new(input));
        assert_eq!(lines.next_line().unwrap().unwrap().len(), MAX_LINE);
        assert_eq!(lines.next_line().unwrap(), Some(&b"second"[..]));
        assert_eq!(lines.next_line().unwrap(), Some(&b"last"[..]));
        assert_eq!(lines.next_line().unwrap(), None);
    }

    #[test]
    fn fields_keep_the_remainder_with_its_spaces() {
        let (fields, rest) = split_fields(b"  a  b c d e", 2).unwrap();
        assert_eq!(fields, vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(rest, b"c d e");
        assert!(split_fields(b"a", 2).is_none());
    }

    #[test]
    fn a_file_that_shrank_or_grew_while_copied_is_partial() {
        let shrank = Copied { size: 10, bytes: 4, truncated: false, tail: false };
        assert_eq!(shrank.outcome(), ItemOutcome::partial("shrank while copied: 4 of 10 bytes"));
        let grew = Copied { size: 10, bytes: 10, truncated: true, tail: false };
        assert_eq!(grew.outcome(), ItemOutcome::partial("grew while copied: kept the first 10 bytes"));
        let cut = Copied { size: 10, bytes: 4, truncated: true, tail: false };
        assert_eq!(cut.outcome(), ItemOutcome::partial("truncated at 4 bytes"));
        assert_eq!(Copied { size: 10, bytes: 10, truncated: false, tail: false }.outcome(), ItemOutcome::ok());
    }

    #[test]
    fn a_fifo_is_refused_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("hosts");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::RUSR).unwrap();
        let err = open_regular(&fifo).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn host_names_become_safe_unique_package_names() {
        assert_eq!(name_part("alice"), "alice");
        assert_eq!(name_part(".."), "_..");
        assert_eq!(name_part(""), "_");
        assert_eq!(name_part("a/b\\c"), "a_b_c");
        let mut memory = crate::collectors::test_support::MemorySink::default();
        let mut unique = UniqueNames::new(&mut memory);
        let sink: &mut dyn ItemSink = &mut unique;
        for _ in 0..3 {
            sink.file("a\u{fffd}", "src", |_| Ok(ItemOutcome::ok())).unwrap();
        }
        assert_eq!(memory.names(), ["a\u{fffd}", "a\u{fffd}~2", "a\u{fffd}~3"]);
    }

    #[test]
    fn problems_count_per_kind_and_keep_the_first_example() {
        let mut problems = Problems::default();
        assert_eq!(problems.outcome(), ItemOutcome::ok());
        problems.add("unreadable", "first");
        problems.add("unreadable", "second");
        assert_eq!(problems.outcome(), ItemOutcome::partial("unreadable: 2 (first: first)"));
    }
}
