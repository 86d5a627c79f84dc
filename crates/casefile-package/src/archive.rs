//! The one zip reader every path that opens a package uses (the server's upload and
//! import, `casefile package verify`). It is strict on purpose: a package is only ever
//! written by [`crate::PackageWriter`], so anything that writer cannot produce and that
//! an extractor could read differently from us is refused, naming the entry:
//!
//! - every byte belongs to exactly one record: local entries start at offset 0, follow
//!   each other without gaps or overlaps, and end where the central directory starts,
//!   which ends where the end record starts, which ends the file (no comment, no
//!   trailing or prepended data). This is what defeats overlapping-entry zip bombs: each
//!   compressed byte is inflated at most once, so inflating costs at most deflate's
//!   ~1032:1 ratio times the package's size;
//! - each local header repeats its central record (name, flags, method, CRC, sizes);
//! - names are relative, `/`-separated, without `..`, `.`, empty parts, backslashes,
//!   colons (drive letters, alternate streams) or control characters, and unique even
//!   after folding letter case and Unicode compatibility forms (extractors on macOS and
//!   Windows fold them, so the later entry would replace the earlier one on disk); no
//!   name is both a file and a folder;
//! - only regular files, stored or deflated, unencrypted, without data descriptors or
//!   name-overriding extra fields (Info-ZIP Unicode Path);
//! - reading an entry stops at a hard limit (its manifest size) and at its declared
//!   size, and checks its CRC: declared sizes are never trusted for allocation.
//!
//! Everything is linear in the package's bytes: one pass over the central directory,
//! one small read per local header, each entry's data inflated at most once.

use std::collections::HashMap;
use std::io::{BufReader, Read, Seek, SeekFrom};

use flate2::read::DeflateDecoder;
use unicode_normalization::UnicodeNormalization;

use crate::PackageError;

const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_RECORD: u32 = 0x0605_4b50;
const ZIP64_END_RECORD: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const END_RECORD_LEN: u64 = 22;
const ZIP64_LOCATOR_LEN: u64 = 20;
const ZIP64_END_RECORD_MIN_LEN: u64 = 56;
const CENTRAL_FIXED_LEN: usize = 46;
const LOCAL_FIXED_LEN: usize = 30;

const EXTRA_ZIP64: u16 = 0x0001;
/// Info-ZIP Unicode Path: extractors that honour it use its name instead of the header's.
const EXTRA_UNICODE_PATH: u16 = 0x7075;

const FLAG_ENCRYPTED: u16 = 1 << 0;
const FLAG_DATA_DESCRIPTOR: u16 = 1 << 3;
const FLAG_STRONG_ENCRYPTION: u16 = 1 << 6;
const FLAG_UTF8: u16 = 1 << 11;

const METHOD_STORED: u16 = 0;
const METHOD_DEFLATED: u16 = 8;

/// Longest name part: what file systems allow (the writer keeps well below it).
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Bounds on what a package may ask of its reader.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most entries in one package.
    pub max_entries: u64,
    /// Most bytes all entries together may declare once inflated.
    pub max_total_inflated: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_entries: 1 << 20, max_total_inflated: 64 << 30 }
    }
}

/// One file of the package, as its central directory and local header agree on it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    compressed: bool,
    data_start: u64,
    pub compressed_size: u64,
    /// The inflated size the zip declares; reading never goes past it.
    pub size: u64,
    crc32: u32,
}

/// A package's zip, checked whole on open; entries are then read by index.
pub struct Archive<R> {
    reader: R,
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
}

/// A central directory record, before its local header is checked.
struct Central {
    raw_name: Vec<u8>,
    name: String,
    flags: u16,
    method: u16,
    crc32: u32,
    compressed_size: u64,
    size: u64,
    header_start: u64,
}

fn malformed(why: impl Into<String>) -> PackageError {
    PackageError::Malformed(why.into())
}

fn refused(entry: &str, why: impl Into<String>) -> PackageError {
    PackageError::Refused { entry: entry.to_owned(), why: why.into() }
}

/// A read past the end of the file is a truncated package, not an I/O failure.
fn eof_is_truncation(e: std::io::Error, what: &str) -> PackageError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        malformed(format!("the zip is truncated ({what} runs past the end of the file)"))
    } else {
        PackageError::Io(e)
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(bytes)
}

impl<R: Read + Seek> Archive<R> {
    /// Reads and checks the whole structure of the zip (no entry is inflated).
    pub fn open(mut reader: R, limits: Limits) -> Result<Self, PackageError> {
        let file_len = reader.seek(SeekFrom::End(0))?;
        let (cd_start, cd_size, count, cd_end) = read_end_records(&mut reader, file_len)?;
        if count > limits.max_entries {
            return Err(malformed(format!("it has {count} entries, more than the {} allowed", limits.max_entries)));
        }
        // Every central record takes at least 46 bytes: a count that cannot fit is a lie.
        if count.saturating_mul(CENTRAL_FIXED_LEN as u64) > cd_size {
            return Err(malformed(format!("the end record claims {count} entries in {cd_size} bytes")));
        }
        reader.seek(SeekFrom::Start(cd_start))?;
        let mut directory = BufReader::new((&mut reader).take(cd_size));
        let mut centrals = Vec::with_capacity(count as usize);
        let mut names = NameTree::default();
        let mut declared_total = 0u64;
        for _ in 0..count {
            let central = read_central(&mut directory)?;
            names.claim(&central.name)?;
            declared_total = declared_total.saturating_add(central.size);
            if declared_total > limits.max_total_inflated {
                return Err(refused(
                    &central.name,
                    format!(
                        "the entries up to it declare {declared_total} bytes inflated, more than the {} allowed",
                        limits.max_total_inflated
                    ),
                ));
            }
            centrals.push(central);
        }
        let mut rest = [0u8; 1];
        if directory.read(&mut rest)? != 0 {
            return Err(malformed("the central directory holds more than the end record counts"));
        }
        drop(directory);

        // Local records, in file order, must tile the bytes before the central directory.
        centrals.sort_by_key(|c| c.header_start);
        let mut entries = Vec::with_capacity(centrals.len());
        let mut expected_start = 0u64;
        let mut previous: Option<&str> = None;
        for central in &centrals {
            if central.header_start != expected_start {
                let why = match (previous, central.header_start < expected_start) {
                    (Some(prev), true) => format!("its local record overlaps the data of {prev:?}"),
                    (None, _) => "the zip does not start with its first entry (prepended data)".to_owned(),
                    (Some(prev), false) => format!("bytes between {prev:?} and it belong to no entry"),
                };
                return Err(refused(&central.name, why));
            }
            let entry = read_local(&mut reader, central)?;
            expected_start = entry
                .data_start
                .checked_add(entry.compressed_size)
                .ok_or_else(|| refused(&central.name, "its data runs past any file size"))?;
            previous = Some(&central.name);
            entries.push(entry);
        }
        if expected_start != cd_start {
            let why = if expected_start > cd_start {
                "its data overlaps the central directory"
            } else {
                "bytes between it and the central directory belong to no entry"
            };
            return Err(match previous {
                Some(last) => refused(last, why),
                None => malformed("data before the central directory belongs to no entry"),
            });
        }
        debug_assert!(cd_end <= file_len);
        let by_name = entries.iter().enumerate().map(|(i, e)| (e.name.clone(), i)).collect();
        Ok(Self { reader, entries, by_name })
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Streams entry `index` inflated into `sink`, refusing it as soon as it passes
    /// `limit` bytes or its declared size, and unless it ends at its declared size with
    /// its declared CRC. Returns the bytes streamed.
    pub fn stream(&mut self, index: usize, limit: u64, sink: &mut dyn FnMut(&[u8])) -> Result<u64, PackageError> {
        let mut reader = self.reader(index, limit)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(PackageError::from_entry_read)?;
            if n == 0 {
                return Ok(reader.total);
            }
            sink(&buf[..n]);
        }
    }

    /// Entry `index` as a pull-based [`Read`], with the checks of [`Archive::stream`]: it
    /// fails as soon as the entry passes `limit` bytes or its declared size, and at its
    /// end unless it ended at its declared size with its declared CRC. A caller that stops
    /// early has had no CRC check. Its errors carry a [`PackageError`] (see
    /// [`PackageError::from_entry_read`]).
    pub fn reader(&mut self, index: usize, limit: u64) -> Result<EntryReader<'_, R>, PackageError> {
        let entry = self.entries.get(index).ok_or_else(|| malformed(format!("no entry {index}")))?.clone();
        self.reader.seek(SeekFrom::Start(entry.data_start))?;
        let raw = (&mut self.reader).take(entry.compressed_size);
        let source = if entry.compressed { Source::Deflated(DeflateDecoder::new(raw)) } else { Source::Stored(raw) };
        Ok(EntryReader {
            ceiling: limit.min(entry.size),
            limit,
            entry,
            source,
            crc: crc32fast::Hasher::new(),
            total: 0,
            checked: false,
        })
    }
    /// Entry `index` read whole, refused past `limit` bytes.
    pub fn read_to_vec(&mut self, index: usize, limit: u64) -> Result<Vec<u8>, PackageError> {
        let mut out = Vec::new();
        self.stream(index, limit, &mut |chunk| out.extend_from_slice(chunk))?;
        Ok(out)
    }
}

enum Source<'a, R> {
    Stored(std::io::Take<&'a mut R>),
    Deflated(DeflateDecoder<std::io::Take<&'a mut R>>),
}

/// One entry's inflated bytes, checked as they are read (see [`Archive::reader`]).
pub struct EntryReader<'a, R> {
    entry: Entry,
    source: Source<'a, R>,
    limit: u64,
    ceiling: u64,
    crc: crc32fast::Hasher,
    total: u64,
    /// The end was reached and checked: further reads return 0.
    checked: bool,
}

impl<R> EntryReader<'_, R> {
    /// The entry being read.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    fn refuse(&self, why: String) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, refused(&self.entry.name, why))
    }
}

impl<R: Read> Read for EntryReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.checked || buf.is_empty() {
            return Ok(0);
        }
        // Never ask for more than one byte past the ceiling: a bomb is stopped there.
        let room = usize::try_from((self.ceiling - self.total).saturating_add(1)).unwrap_or(usize::MAX).min(buf.len());
        let n = loop {
            let read = match &mut self.source {
                Source::Stored(r) => r.read(&mut buf[..room]),
                Source::Deflated(r) => r.read(&mut buf[..room]),
            };
            match read {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.refuse(format!("its compressed data is corrupt: {e}"))),
            }
        };
        if n == 0 {
            // `total` never passes the declared size, so any difference is a shortfall.
            if self.total != self.entry.size {
                return Err(
                    self.refuse(format!("it inflates to {} bytes, not the {} declared", self.total, self.entry.size))
                );
            }
            if self.crc.clone().finalize() != self.entry.crc32 {
                return Err(self.refuse("its CRC-32 does not match its data".to_owned()));
            }
            self.checked = true;
            return Ok(0);
        }
        self.total += n as u64;
        if self.total > self.ceiling {
            let why = if self.ceiling < self.entry.size {
                format!("it inflates past the {} bytes allowed for it", self.limit)
            } else {
                format!("it inflates past its declared size of {} bytes", self.entry.size)
            };
            return Err(self.refuse(why));
        }
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// Finds the end record (the file's last 22 bytes) and, when present, the zip64 one;
/// returns the central directory's start, size and entry count, and where it must end.
fn read_end_records<R: Read + Seek>(reader: &mut R, file_len: u64) -> Result<(u64, u64, u64, u64), PackageError> {
    if file_len < END_RECORD_LEN {
        return Err(malformed("it is too short to be a zip"));
    }
    let mut magic = [0u8; 4];
    reader.seek(SeekFrom::Start(0))?;
    reader.read_exact(&mut magic)?;
    if u32::from_le_bytes(magic) != LOCAL_HEADER && u32::from_le_bytes(magic) != END_RECORD {
        return Err(malformed("it is not a zip (it does not start with a zip record)"));
    }
    let end_start = file_len - END_RECORD_LEN;
    let mut end = [0u8; END_RECORD_LEN as usize];
    reader.seek(SeekFrom::Start(end_start))?;
    reader.read_exact(&mut end)?;
    if u32_at(&end, 0) != END_RECORD {
        return Err(malformed(
            "it is truncated, or has an archive comment or trailing data (its last 22 bytes are not the zip's end record)",
        ));
    }
    if u16_at(&end, 20) != 0 {
        return Err(malformed("the end record claims an archive comment"));
    }
    if u16_at(&end, 4) != 0 || u16_at(&end, 6) != 0 || u16_at(&end, 8) != u16_at(&end, 10) {
        return Err(malformed("multi-disk archives are not casefile packages"));
    }
    let mut count = u64::from(u16_at(&end, 10));
    let mut cd_size = u64::from(u32_at(&end, 12));
    let mut cd_start = u64::from(u32_at(&end, 16));
    let mut cd_end = end_start;

    let locator_start = end_start.checked_sub(ZIP64_LOCATOR_LEN);
    let mut locator = [0u8; ZIP64_LOCATOR_LEN as usize];
    let zip64 = match locator_start {
        Some(at) => {
            reader.seek(SeekFrom::Start(at))?;
            reader.read_exact(&mut locator)?;
            u32_at(&locator, 0) == ZIP64_LOCATOR
        }
        None => false,
    };
    if zip64 {
        let locator_start = end_start - ZIP64_LOCATOR_LEN;
        if u32_at(&locator, 4) != 0 || u32_at(&locator, 16) != 1 {
            return Err(malformed("multi-disk archives are not casefile packages"));
        }
        let record_start = u64_at(&locator, 8);
        let record_len = locator_start
            .checked_sub(record_start)
            .filter(|len| *len >= ZIP64_END_RECORD_MIN_LEN)
            .ok_or_else(|| malformed("the zip64 end record is not where its locator says"))?;
        let mut record = [0u8; ZIP64_END_RECORD_MIN_LEN as usize];
        reader.seek(SeekFrom::Start(record_start))?;
        reader.read_exact(&mut record)?;
        if u32_at(&record, 0) != ZIP64_END_RECORD || u64_at(&record, 4) != record_len - 12 {
            return Err(malformed("the zip64 end record is not where its locator says"));
        }
        if u32_at(&record, 16) != 0 || u32_at(&record, 20) != 0 || u64_at(&record, 24) != u64_at(&record, 32) {
            return Err(malformed("multi-disk archives are not casefile packages"));
        }
        count = u64_at(&record, 32);
        cd_size = u64_at(&record, 40);
        cd_start = u64_at(&record, 48);
        cd_end = record_start;
    }
    if cd_start.checked_add(cd_size) != Some(cd_end) {
        return Err(malformed(
            "the central directory does not end where the end record starts (truncated, or data outside the zip's records)",
        ));
    }
    Ok((cd_start, cd_size, count, cd_end))
}

/// Values of a zip64 extra field, present only for the 32-bit fields that are saturated.
fn apply_zip64(
    extra: &[u8],
    name: &str,
    size: &mut u64,
    compressed: &mut u64,
    offset: Option<&mut u64>,
) -> Result<(), PackageError> {
    let mut field = None;
    for (id, data) in extra_fields(extra, name)? {
        match id {
            EXTRA_ZIP64 => field = Some(data),
            EXTRA_UNICODE_PATH => {
                return Err(refused(name, "it carries a Unicode Path extra field that would rename it on extraction"));
            }
            _ => {}
        }
    }
    let mut at = 0usize;
    let mut take = |value: &mut u64| -> Result<(), PackageError> {
        if *value != u64::from(u32::MAX) {
            return Ok(());
        }
        let data = field.ok_or_else(|| refused(name, "a size or offset is saturated without a zip64 field"))?;
        if data.len() < at + 8 {
            return Err(refused(name, "its zip64 field is too short"));
        }
        *value = u64_at(data, at);
        at += 8;
        Ok(())
    };
    take(size)?;
    take(compressed)?;
    if let Some(offset) = offset {
        take(offset)?;
    }
    Ok(())
}

fn extra_fields<'a>(mut extra: &'a [u8], name: &str) -> Result<Vec<(u16, &'a [u8])>, PackageError> {
    let mut fields = Vec::new();
    while !extra.is_empty() {
        if extra.len() < 4 {
            return Err(refused(name, "its extra field is malformed"));
        }
        let (id, len) = (u16_at(extra, 0), usize::from(u16_at(extra, 2)));
        if extra.len() < 4 + len {
            return Err(refused(name, "its extra field is malformed"));
        }
        fields.push((id, &extra[4..4 + len]));
        extra = &extra[4 + len..];
    }
    Ok(fields)
}

fn read_central(directory: &mut impl Read) -> Result<Central, PackageError> {
    let mut fixed = [0u8; CENTRAL_FIXED_LEN];
    directory.read_exact(&mut fixed).map_err(|e| eof_is_truncation(e, "the central directory"))?;
    if u32_at(&fixed, 0) != CENTRAL_HEADER {
        return Err(malformed("the central directory holds something other than entry records"));
    }
    let version_made_by = u16_at(&fixed, 4);
    let flags = u16_at(&fixed, 8);
    let method = u16_at(&fixed, 10);
    let crc32 = u32_at(&fixed, 16);
    let mut compressed_size = u64::from(u32_at(&fixed, 20));
    let mut size = u64::from(u32_at(&fixed, 24));
    let (name_len, extra_len, comment_len) =
        (usize::from(u16_at(&fixed, 28)), usize::from(u16_at(&fixed, 30)), usize::from(u16_at(&fixed, 32)));
    let disk = u16_at(&fixed, 34);
    let external = u32_at(&fixed, 38);
    let mut header_start = u64::from(u32_at(&fixed, 42));
    let mut variable = vec![0u8; name_len + extra_len + comment_len];
    directory.read_exact(&mut variable).map_err(|e| eof_is_truncation(e, "the central directory"))?;
    let raw_name = variable[..name_len].to_vec();
    let name = decode_name(&raw_name, flags)?;
    apply_zip64(
        &variable[name_len..name_len + extra_len],
        &name,
        &mut size,
        &mut compressed_size,
        Some(&mut header_start),
    )?;
    check_name(&name)?;
    if disk != 0 && disk != u16::MAX {
        return Err(refused(&name, "it lives on another disk of a multi-disk archive"));
    }
    check_kind(&name, version_made_by, external)?;
    check_flags_and_method(&name, flags, method)?;
    if method == METHOD_STORED && compressed_size != size {
        return Err(refused(&name, "it is stored uncompressed yet declares two different sizes"));
    }
    Ok(Central { raw_name, name, flags, method, crc32, compressed_size, size, header_start })
}

fn read_local<R: Read + Seek>(reader: &mut R, central: &Central) -> Result<Entry, PackageError> {
    let name = central.name.as_str();
    let mut fixed = [0u8; LOCAL_FIXED_LEN];
    reader.seek(SeekFrom::Start(central.header_start))?;
    reader.read_exact(&mut fixed).map_err(|e| eof_is_truncation(e, "a local header"))?;
    if u32_at(&fixed, 0) != LOCAL_HEADER {
        return Err(refused(name, "its central record points at no local header"));
    }
    let (name_len, extra_len) = (usize::from(u16_at(&fixed, 26)), usize::from(u16_at(&fixed, 28)));
    let mut variable = vec![0u8; name_len + extra_len];
    reader.read_exact(&mut variable).map_err(|e| eof_is_truncation(e, "a local header"))?;
    if variable[..name_len] != central.raw_name[..] {
        return Err(refused(
            name,
            format!(
                "its local header names it {:?}: extractors that read local headers would see another file",
                String::from_utf8_lossy(&variable[..name_len])
            ),
        ));
    }
    let mut compressed_size = u64::from(u32_at(&fixed, 18));
    let mut size = u64::from(u32_at(&fixed, 22));
    apply_zip64(&variable[name_len..], name, &mut size, &mut compressed_size, None)?;
    let same = u16_at(&fixed, 6) == central.flags
        && u16_at(&fixed, 8) == central.method
        && u32_at(&fixed, 14) == central.crc32
        && compressed_size == central.compressed_size
        && size == central.size;
    if !same {
        return Err(refused(name, "its local header disagrees with its central record (flags, method, CRC or sizes)"));
    }
    Ok(Entry {
        name: central.name.clone(),
        compressed: central.method == METHOD_DEFLATED,
        data_start: central.header_start + (LOCAL_FIXED_LEN + name_len + extra_len) as u64,
        compressed_size,
        size,
        crc32: central.crc32,
    })
}

/// Names are UTF-8 when flagged so; otherwise only ASCII reads the same everywhere (the
/// default code page, CP437, differs from Latin-1 and UTF-8 above 127).
fn decode_name(raw: &[u8], flags: u16) -> Result<String, PackageError> {
    let lossy = || String::from_utf8_lossy(raw).into_owned();
    if flags & FLAG_UTF8 != 0 {
        String::from_utf8(raw.to_vec()).map_err(|_| refused(&lossy(), "its name is flagged UTF-8 but is not"))
    } else if raw.is_ascii() {
        Ok(String::from_utf8_lossy(raw).into_owned())
    } else {
        Err(refused(&lossy(), "its name is neither ASCII nor flagged UTF-8, so extractors disagree on it"))
    }
}

/// Why `name` could land outside the extraction folder or be read differently by
/// extractors, if it could.
pub fn unsafe_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("its name is empty".to_owned());
    }
    if name.starts_with('/') {
        return Some("its name is an absolute path".to_owned());
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Some(format!("its name holds the control character U+{:04X}", u32::from(c)));
    }
    if name.contains('\\') {
        return Some("its name holds a backslash (a folder separator on Windows)".to_owned());
    }
    if name.contains(':') {
        return Some("its name holds a colon (a drive letter or an alternate data stream on Windows)".to_owned());
    }
    for part in name.split('/') {
        match part {
            "" => return Some("its name has an empty part (a folder entry, or `//`)".to_owned()),
            "." | ".." => return Some(format!("its name has a `{part}` part")),
            _ if part.len() > MAX_SEGMENT_BYTES => {
                return Some(format!("a part of its name is longer than {MAX_SEGMENT_BYTES} bytes"));
            }
            _ => {}
        }
        if let Some(c) = part.chars().find(|c| folds_unsafe(*c)) {
            return Some(format!(
                "its name holds {c:?}, which folds (NFKC) to a separator, a colon or a control character"
            ));
        }
        if folds_to_dots(part) {
            return Some("its name has a part that folds (NFKC) to `.` or `..`".to_owned());
        }
    }
    None
}

/// A character that reads as a separator, a colon or a control character once folded
/// to its compatibility form (fullwidth `／`, `＼`, `：`).
pub fn folds_unsafe(c: char) -> bool {
    std::iter::once(c).nfkc().any(|f| matches!(f, '/' | '\\' | ':') || f.is_control())
}

/// A name part that folds to `.` or `..` (`‥`, fullwidth full stops).
pub fn folds_to_dots(part: &str) -> bool {
    let folded: String = part.nfkc().collect();
    folded == "." || folded == ".."
}

fn check_name(name: &str) -> Result<(), PackageError> {
    unsafe_name(name).map_or(Ok(()), |why| Err(refused(name, why)))
}

/// Only regular files: Unix type bits (when the entry was made on Unix) and the MS-DOS
/// directory attribute.
fn check_kind(name: &str, version_made_by: u16, external: u32) -> Result<(), PackageError> {
    const UNIX: u16 = 3;
    const TYPE_MASK: u32 = 0o170_000;
    if version_made_by >> 8 == UNIX {
        let kind = (external >> 16) & TYPE_MASK;
        let what = match kind {
            0 | 0o100_000 => None,
            0o120_000 => Some("a symbolic link"),
            0o040_000 => Some("a directory"),
            0o060_000 | 0o020_000 => Some("a device"),
            0o010_000 => Some("a FIFO"),
            0o140_000 => Some("a socket"),
            _ => Some("not a regular file"),
        };
        if let Some(what) = what {
            return Err(refused(name, format!("it is {what}; packages hold regular files only")));
        }
    }
    if external & 0x10 != 0 {
        return Err(refused(name, "it is a directory; packages hold regular files only"));
    }
    Ok(())
}

fn check_flags_and_method(name: &str, flags: u16, method: u16) -> Result<(), PackageError> {
    if flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION) != 0 {
        return Err(refused(name, "it is encrypted"));
    }
    if flags & FLAG_DATA_DESCRIPTOR != 0 {
        return Err(refused(name, "it uses a data descriptor, which the package writer never does"));
    }
    if method != METHOD_STORED && method != METHOD_DEFLATED {
        return Err(refused(name, format!("its compression method {method} is not stored or deflate")));
    }
    Ok(())
}

/// One name part as extractors on case-insensitive or normalizing file systems see it.
pub fn fold(part: &str) -> String {
    let lower: String = part.nfkc().collect::<String>().to_lowercase();
    lower.nfkc().collect()
}

/// The names taken so far as a tree of folded parts, so a duplicate (`A.csv` after
/// `a.csv`, or NFC after NFD) or a file that is also a folder is found in time linear in
/// the names' length.
#[derive(Default)]
pub(crate) struct NameTree {
    /// (parent folder, folded part) -> the node and the first name that made it.
    nodes: HashMap<(u32, String), Node>,
    next_folder: u32,
    /// Each name claimed, once (nodes point here, so memory stays linear).
    names: Vec<String>,
}

struct Node {
    folder: Option<u32>,
    /// Index in `names` of the first name through this node.
    first: usize,
}

impl NameTree {
    /// Takes `name` (already checked safe), refusing it if it clashes.
    pub(crate) fn claim(&mut self, name: &str) -> Result<(), PackageError> {
        self.try_claim(name).map_err(|why| refused(name, why))
    }

    /// `Err` says why `name` cannot be taken.
    pub(crate) fn try_claim(&mut self, name: &str) -> Result<(), String> {
        let mut parent = 0u32;
        let index = self.names.len();
        let mut parts = name.split('/').peekable();
        while let Some(part) = parts.next() {
            let key = (parent, fold(part));
            let last = parts.peek().is_none();
            match self.nodes.get(&key) {
                Some(node) if last => {
                    let what = if node.folder.is_some() { "also the folder of" } else { "a duplicate of" };
                    return Err(format!(
                        "it is {what} {:?} once letter case and Unicode forms are folded, as extractors do",
                        self.names[node.first]
                    ));
                }
                Some(Node { folder: Some(id), .. }) => parent = *id,
                Some(node) => {
                    return Err(format!("a part of its name is the file {:?}", self.names[node.first]));
                }
                None => {
                    let folder = if last {
                        None
                    } else {
                        self.next_folder += 1;
                        Some(self.next_folder)
                    };
                    self.nodes.insert(key, Node { folder, first: index });
                    if let Some(id) = folder {
                        parent = id;
                    }
                }
            }
        }
        self.names.push(name.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::writer::PackageMeta;
    use crate::{ItemOutcome, ItemSink, PackageWriter};

    #[test]
    fn a_package_past_the_classic_zip_entry_count_opens_through_zip64() {
        let mut writer = PackageWriter::new(Cursor::new(Vec::new()), PackageMeta::detached("test"));
        writer.begin_collector("many", "Many");
        for i in 0..66_000 {
            let sink: &mut dyn ItemSink = &mut writer;
            sink.file(&format!("{i}"), "x", |w| w.write_all(b"x").map(|()| ItemOutcome::ok())).unwrap();
        }
        writer.end_collector(None);
        let bytes = writer.finish().unwrap().0.into_inner();
        let end = &bytes[bytes.len() - 22..];
        assert_eq!(u16_at(end, 10), u16::MAX, "the classic end record is saturated: zip64 is in use");
        let report = crate::verify(Cursor::new(&bytes[..])).unwrap();
        assert!(report.is_ok(), "{:?}", &report.problems[..report.problems.len().min(3)]);
        assert_eq!(report.files_checked, 66_002);
    }

    #[test]
    fn names_are_folded_per_part_and_files_are_not_folders() {
        let mut tree = NameTree::default();
        tree.try_claim("a/b.csv").unwrap();
        assert!(tree.try_claim("A/B.CSV").unwrap_err().contains("duplicate"));
        assert!(tree.try_claim("a").unwrap_err().contains("folder"));
        assert!(tree.try_claim("a/b.csv/c").unwrap_err().contains("file"));
        tree.try_claim("a/\u{212a}elvin").unwrap();
        assert!(tree.try_claim("a/kelvin").unwrap_err().contains("duplicate"), "the Kelvin sign folds to k");
    }
}
