//! The package viewer's backend on real packages made by the real writer (and, for the
//! disagreements a writer never makes, by the hostile corpus's zip assembler): hostile
//! CSVs and logs, paging, sorting, filters and search.

use std::io::{Cursor, Write};

use casefile_package::corpus::{self, RawEntry};
use casefile_package::view::{
    ColumnFilter, CsvQuery, EntryKind, Listing, MAX_CELL_BYTES, MAX_CSV_PAGE_ROWS, MAX_LINE_BYTES, MAX_SORT_WINDOW,
    Package, SortBy, ViewError,
};
use casefile_package::writer::PackageMeta;
use casefile_package::{ItemOutcome, ItemSink, PackageError, PackageWriter};
use ed25519_dalek::SigningKey;
use flate2::write::GzEncoder;
use proptest::prelude::*;

/// A package holding `files` as (folder, name, bytes); no folder means the root.
fn package(files: &[(Option<&str>, &str, &[u8])]) -> Vec<u8> {
    let mut writer = PackageWriter::new(Cursor::new(Vec::new()), PackageMeta::detached("view-test"));
    for (folder, name, body) in files {
        match folder {
            Some(folder) => writer.begin_collector("test", folder),
            None => writer.end_collector(None),
        }
        let sink: &mut dyn ItemSink = &mut writer;
        sink.file(name, "fixture", |w| w.write_all(body).map(|()| ItemOutcome::ok())).unwrap();
    }
    writer.end_collector(None);
    writer.finish().unwrap().0.into_inner()
}

fn open(bytes: Vec<u8>) -> Package<Cursor<Vec<u8>>> {
    Package::open(Cursor::new(bytes)).unwrap()
}

fn one_csv(body: &[u8]) -> Package<Cursor<Vec<u8>>> {
    open(package(&[(Some("t"), "t.csv", body)]))
}

fn page(p: &mut Package<Cursor<Vec<u8>>>, query: CsvQuery) -> casefile_package::view::CsvPage {
    p.csv_page("t/t.csv", &query).unwrap()
}

fn all(limit: usize) -> CsvQuery {
    CsvQuery { limit, ..CsvQuery::default() }
}

fn cells(page: &casefile_package::view::CsvPage) -> Vec<Vec<String>> {
    page.rows.iter().map(|r| r.cells.clone()).collect()
}

fn gzip(parts: &[&[u8]]) -> Vec<u8> {
    // Several members back to back, as `cat a.gz b.gz` and some log rotations make.
    let mut out = Vec::new();
    for part in parts {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(part).unwrap();
        out.extend(e.finish().unwrap());
    }
    out
}

#[test]
fn the_tree_lists_every_file_by_folder_with_manifest_sizes_hashes_and_kinds() {
    let log = b"Dec  7 10:00:00 host sshd[1]: Accepted\n".repeat(3);
    let bytes = package(&[
        (Some("Users and groups"), "users.csv", b"user,uid\nroot,0\n"),
        (Some("Users and groups"), "../../etc/shadow.csv", b"x\n"),
        (Some("Logs"), "auth.log", &log),
        (Some("Logs"), "auth.log.1.gz", &gzip(&[&log])),
        (Some("Logs"), "empty.log", b""),
        (Some("Logs"), "binary.log", b"ELF\0\x01\x02"),
        (Some("Logs"), "latin1.txt", b"caf\xe9 cr\xe8me\n"),
        (Some("Logs"), "latin1.csv", b"name\ncaf\xe9\n"),
        (Some("Logs"), "not-really.gz", b"plain text\n"),
        (Some("R\u{e9}seau/\u{65e5}\u{672c}"), "\u{1f600}.txt", "emoji \u{1f600}\n".as_bytes()),
        (Some("Logs"), "A.txt", b"upper\n"),
    ]);
    let mut p = open(bytes);
    assert!(p.manifest_problem().is_none(), "{:?}", p.manifest_problem());
    let manifest = p.manifest().unwrap().clone();
    let tree = p.tree().unwrap();
    let paths: Vec<&str> = tree.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "CollectionSummaryReport.csv",
            "CollectionSummaryReport.html",
            "manifest.json",
            "Logs/A.txt",
            "Logs/auth.log",
            "Logs/auth.log.1.gz",
            "Logs/binary.log",
            "Logs/empty.log",
            "Logs/latin1.csv",
            "Logs/latin1.txt",
            "Logs/not-really.gz",
            "R\u{e9}seau/\u{65e5}\u{672c}/\u{1f600}.txt",
            "Users and groups/users.csv",
            "Users and groups/etc/shadow.csv",
        ],
        "root files first, then each folder's files before its subfolders; `../` was made safe by the writer"
    );
    for file in &tree {
        let listed = manifest.items.iter().find(|i| i.path == file.path);
        match listed {
            Some(item) => {
                assert_eq!(file.listing, Listing::Listed, "{}", file.path);
                assert_eq!(file.sha256.as_deref(), Some(item.sha256.as_str()));
                assert_eq!((file.size, file.zip_size), (item.size, Some(item.size)));
                assert!(file.problem.is_none() || file.name == "not-really.gz", "{}: {:?}", file.path, file.problem);
            }
            None => assert_eq!((file.path.as_str(), file.listing), ("manifest.json", Listing::PackageFile)),
        }
    }
    let kind = |path: &str| {
        let f = tree.iter().find(|f| f.path == path).unwrap();
        (f.kind, f.gzip)
    };
    assert_eq!(kind("Users and groups/users.csv"), (EntryKind::Csv, false));
    assert_eq!(kind("Logs/auth.log"), (EntryKind::Text, false));
    assert_eq!(kind("Logs/auth.log.1.gz"), (EntryKind::Text, true), "sniffed inflated");
    assert_eq!(kind("Logs/empty.log"), (EntryKind::Text, false));
    assert_eq!(kind("Logs/binary.log"), (EntryKind::Binary, false), "NUL bytes");
    assert_eq!(kind("Logs/latin1.txt"), (EntryKind::Binary, false), "invalid UTF-8");
    assert_eq!(kind("Logs/latin1.csv"), (EntryKind::Csv, false), "a legacy code page CSV is still a table");
    assert_eq!(kind("R\u{e9}seau/\u{65e5}\u{672c}/\u{1f600}.txt"), (EntryKind::Text, false));
    let fake = tree.iter().find(|f| f.path == "Logs/not-really.gz").unwrap();
    assert_eq!(fake.kind, EntryKind::Binary);
    assert!(fake.problem.as_deref().is_some_and(|p| p.contains("gzip")), "{:?}", fake.problem);
    let unicode = tree.iter().find(|f| f.name == "\u{1f600}.txt").unwrap();
    assert_eq!((unicode.folder.as_str(), unicode.depth), ("R\u{e9}seau/\u{65e5}\u{672c}", 2));
    assert_eq!(p.kind("Logs/auth.log").unwrap(), EntryKind::Text);
}

#[test]
fn files_the_zip_and_the_manifest_disagree_on_are_flagged() {
    let key = SigningKey::from_bytes(&[3; 32]);
    let meta = PackageMeta::detached("forged");
    let bytes = corpus::signed_with(
        &key,
        &meta,
        vec![RawEntry::file("a/listed.csv", b"x\n1\n"), RawEntry::file("a/ghost.csv", b"y\n")],
        vec![RawEntry::file("a/extra.txt", b"smuggled\n")],
    );
    let entries: Vec<RawEntry> = corpus::entries_of(&bytes).into_iter().filter(|e| e.name != b"a/ghost.csv").collect();
    let mut p = open(corpus::assemble(&entries, None));
    let tree = p.tree().unwrap();
    let listing: Vec<(&str, Listing, Option<u64>)> =
        tree.iter().map(|f| (f.path.as_str(), f.listing, f.zip_size)).collect();
    assert_eq!(
        listing,
        [
            ("manifest.json", Listing::PackageFile, Some(listing[0].2.unwrap())),
            ("manifest.sig", Listing::PackageFile, Some(listing[1].2.unwrap())),
            ("a/extra.txt", Listing::NotInManifest, Some(9)),
            ("a/ghost.csv", Listing::NotInZip, None),
            ("a/listed.csv", Listing::Listed, Some(4)),
        ]
    );
    assert!(matches!(p.csv_page("a/ghost.csv", &all(10)), Err(ViewError::NoSuchEntry(_))));
    assert_eq!(p.text_page("a/extra.txt", 1, 10).unwrap().lines[0].text, "smuggled");
}

#[test]
fn a_missing_broken_or_duplicating_manifest_does_not_stop_the_viewer() {
    let data = RawEntry::file("a/x.csv", b"h\n1\n");
    let mut p = open(corpus::assemble(std::slice::from_ref(&data), None));
    assert!(p.manifest().is_none());
    assert!(p.manifest_problem().unwrap().contains("no manifest.json"));
    let tree = p.tree().unwrap();
    assert_eq!((tree.len(), tree[0].listing, tree[0].sha256.as_deref()), (1, Listing::NotInManifest, None));
    assert_eq!(p.csv_page("a/x.csv", &all(5)).unwrap().matched, 1);

    let broken = [data.clone(), RawEntry::file("manifest.json", b"{\"format\":")];
    let p = open(corpus::assemble(&broken, None));
    assert!(p.manifest_problem().unwrap().contains("not a manifest"), "{:?}", p.manifest_problem());

    let genuine = package(&[(Some("a"), "x.csv", b"h\n1\n")]);
    let mut entries = corpus::entries_of(&genuine);
    let at = entries.iter().position(|e| e.name == b"manifest.json").unwrap();
    let mut manifest: casefile_package::Manifest = serde_json::from_slice(&entries[at].data).unwrap();
    let mut twin = manifest.items.iter().find(|i| i.path == "a/x.csv").unwrap().clone();
    twin.sha256 = "0".repeat(64);
    manifest.items.push(twin);
    entries[at] = RawEntry::file("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    let mut p = open(corpus::assemble(&entries, None));
    assert!(p.manifest_problem().unwrap().contains("twice"), "{:?}", p.manifest_problem());
    let tree = p.tree().unwrap();
    let x: Vec<_> = tree.iter().filter(|f| f.path == "a/x.csv").collect();
    assert_eq!(x.len(), 1, "listed once in the tree");
    assert_ne!(x[0].sha256.as_deref(), Some("0".repeat(64).as_str()), "the first listing counts");
}

#[test]
fn entries_refused_by_the_archive_are_errors_not_pages() {
    let key = SigningKey::from_bytes(&[3; 32]);
    let meta = PackageMeta::detached("forged");
    let bytes = corpus::signed_with(
        &key,
        &meta,
        vec![
            RawEntry::file("a/grows.csv", b"h\n1\n"),
            RawEntry::file("a/crc.log", b"line\n"),
            RawEntry::file("a/crc.log.gz", &gzip(&[b"line\n"])),
        ],
        vec![],
    );
    // The manifest lists 4 bytes; the zip now holds (and declares) 1 MiB.
    let entries: Vec<RawEntry> = corpus::entries_of(&bytes)
        .into_iter()
        .map(|e| match &e.name[..] {
            b"a/grows.csv" => RawEntry::file("a/grows.csv", &b"h\n1\n".repeat(1 << 18)),
            b"a/crc.log" | b"a/crc.log.gz" => RawEntry { crc: e.crc ^ 1, ..e },
            _ => e,
        })
        .collect();
    let mut p = open(corpus::assemble(&entries, None));
    match p.csv_page("a/grows.csv", &all(10)) {
        Err(ViewError::Package(PackageError::Refused { entry, why })) => {
            assert_eq!(entry, "a/grows.csv");
            assert!(why.contains("past the 4 bytes allowed"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    for path in ["a/crc.log", "a/crc.log.gz"] {
        match p.text_search(path, "line", 10, 1) {
            Err(ViewError::Package(PackageError::Refused { entry, why })) => {
                assert_eq!(entry, path);
                assert!(why.contains("CRC"), "{why}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    // The overlapping-entry bomb never opens.
    let bomb = corpus::overlapping_bomb(&key, &meta);
    assert!(matches!(Package::open(Cursor::new(bomb)), Err(ViewError::Package(PackageError::Refused { .. }))));
    assert!(matches!(Package::open(Cursor::new(b"not a zip".to_vec())), Err(ViewError::Package(_))));
}

#[test]
fn hostile_csv_quotes_newlines_ragged_rows_bom_crlf_invalid_utf8_and_a_10_mb_cell() {
    let mut body = b"\xEF\xBB\xBFname,value,note\r\n".to_vec();
    body.extend_from_slice(b"\"a \"\"quoted\"\" word\",1,\"two\r\nlines\"\r\n");
    body.extend_from_slice(b"short\r\n");
    body.extend_from_slice(b"long,2,x,extra1,extra2\r\n");
    body.extend_from_slice(b"caf\xe9,3,latin-1\r\n");
    body.extend_from_slice(b"huge,4,\"");
    body.extend(std::iter::repeat_n(b'z', 10 << 20));
    body.extend_from_slice(b"\"\r\n");
    body.extend_from_slice(b"last,5,no newline");
    let mut p = one_csv(&body);
    let got = page(&mut p, all(100));
    assert_eq!(got.columns, ["name", "value", "note"], "the BOM is dropped");
    assert_eq!((got.total_rows, got.matched), (6, 6));
    let rows = cells(&got);
    assert_eq!(rows[0], ["a \"quoted\" word", "1", "two\r\nlines"]);
    assert_eq!(rows[1], ["short"]);
    assert_eq!(rows[2], ["long", "2", "x", "extra1", "extra2"]);
    assert_eq!(rows[3], ["caf\u{fffd}", "3", "latin-1"]);
    assert_eq!(rows[4][2].len(), MAX_CELL_BYTES, "cut to the cap");
    assert_eq!(rows[5], ["last", "5", "no newline"]);
    assert!(got.truncated_cells);
    assert_eq!(got.rows.iter().map(|r| r.number).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    // Without the huge row, nothing is cut.
    let small = page(&mut p, CsvQuery { limit: 4, ..CsvQuery::default() });
    assert!(!small.truncated_cells);
    // Filtering sees the cut cell; the huge row sorts by its value.
    let huge = page(&mut p, CsvQuery { limit: 1, filter: Some("ZZZZ".into()), ..CsvQuery::default() });
    assert_eq!((huge.matched, huge.rows[0].number), (1, 5));
    let sorted = page(&mut p, CsvQuery { limit: 10, sort: Some(SortBy { column: 1, descending: true }), ..all(0) });
    let numbers: Vec<u64> = sorted.rows.iter().map(|r| r.number).collect();
    assert_eq!(numbers, [2, 6, 5, 4, 3, 1], "the row without a value (text sorts after numbers), then 5, 4, 3, 2, 1");
}

#[test]
fn empty_and_header_only_csvs_and_a_wide_row() {
    let mut p = one_csv(b"");
    let got = page(&mut p, all(10));
    assert!(got.columns.is_empty() && got.rows.is_empty() && got.matched == 0);
    let mut p = one_csv(b"a,b\n");
    let got = page(&mut p, CsvQuery { sort: Some(SortBy { column: 1, descending: false }), ..all(10) });
    assert_eq!((got.columns.len(), got.rows.len(), got.matched), (2, 0, 0));
    // 100,000 one-byte cells: kept to the column cap, flagged.
    let wide = vec!["x"; 100_000].join(",");
    let mut p = one_csv(format!("h\n{wide}\n").as_bytes());
    let got = page(&mut p, all(10));
    assert_eq!(got.rows[0].cells.len(), casefile_package::view::MAX_COLUMNS);
    assert!(got.truncated_cells);
}

fn numbered_csv(rows: u64) -> Vec<u8> {
    let mut body = b"id,group,name\n".to_vec();
    for i in 1..=rows {
        writeln!(body, "{i},{},name-{i}", i % 3).unwrap();
    }
    body
}

#[test]
fn paging_offset_past_the_end_limit_zero_and_limit_over_the_cap() {
    let mut p = one_csv(&numbered_csv(1200));
    let past = page(&mut p, CsvQuery { offset: 5000, limit: 10, ..CsvQuery::default() });
    assert_eq!((past.rows.len(), past.matched, past.offset), (0, 1200, 5000));
    let zero = page(&mut p, CsvQuery { offset: 0, limit: 0, filter: Some("name-1".into()), ..CsvQuery::default() });
    assert_eq!(
        (zero.rows.len(), zero.matched),
        (0, 1 + 10 + 100 + 201),
        "name-1, name-1x, name-1xx, name-1000 to name-1200"
    );
    let capped = page(&mut p, CsvQuery { offset: 1000, limit: 100_000, ..CsvQuery::default() });
    assert_eq!((capped.limit, capped.rows.len()), (MAX_CSV_PAGE_ROWS, 200));
    assert_eq!(capped.rows[0].cells[0], "1001");
    let middle = page(&mut p, CsvQuery { offset: 10, limit: 3, ..CsvQuery::default() });
    assert_eq!(cells(&middle).iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["11", "12", "13"]);
    // Sorted pages keep a bounded window; unsorted ones can go anywhere.
    let sort = Some(SortBy { column: 0, descending: false });
    match p.csv_page("t/t.csv", &CsvQuery { offset: MAX_SORT_WINDOW, limit: 1, sort, ..CsvQuery::default() }) {
        Err(ViewError::SortWindow { requested, max }) => {
            assert_eq!((requested, max), (MAX_SORT_WINDOW + 1, MAX_SORT_WINDOW))
        }
        other => panic!("{other:?}"),
    }
    let edge = CsvQuery { offset: MAX_SORT_WINDOW - 1, limit: 1, sort, ..CsvQuery::default() };
    assert_eq!(p.csv_page("t/t.csv", &edge).unwrap().rows.len(), 0);
    let far = CsvQuery { offset: u64::MAX, limit: 500, ..CsvQuery::default() };
    assert_eq!(p.csv_page("t/t.csv", &far).unwrap().rows.len(), 0);
}

#[test]
fn sorting_is_numeric_for_numbers_case_insensitive_for_text_and_stable() {
    let body = b"k,v\n10,a\n9,b\nbeta,c\n100,d\n-1.5,e\nAlpha,f\n9,g\n,h\n1e1,i\nalpha,j\nNaN,k\n";
    let mut p = one_csv(body);
    let sorted = |p: &mut Package<Cursor<Vec<u8>>>, descending: bool, offset: u64, limit: usize| {
        let q = CsvQuery { offset, limit, sort: Some(SortBy { column: 0, descending }), ..CsvQuery::default() };
        page(p, q).rows.iter().map(|r| r.cells[1].clone()).collect::<String>()
    };
    // -1.5 < 9 (b, g in file order) < 10 = 1e1 (a, i) < 100; then "" < Alpha < alpha < beta < NaN.
    assert_eq!(sorted(&mut p, false, 0, 100), "ebgaidhfjck");
    // Descending reverses keys; equal keys still keep the file's order.
    assert_eq!(sorted(&mut p, true, 0, 100), "kcjfhdaibge");
    // Pages of a sorted listing tile it.
    let tiled: String = (0..4).map(|i| sorted(&mut p, false, i * 3, 3)).collect();
    assert_eq!(tiled, "ebgaidhfjck");
    // A column past the header is an error, also for filters.
    let q = CsvQuery { sort: Some(SortBy { column: 2, descending: false }), ..all(5) };
    assert!(matches!(p.csv_page("t/t.csv", &q), Err(ViewError::NoSuchColumn { column: 2, columns: 2 })));
    let q = CsvQuery { column_filters: vec![ColumnFilter { column: 9, contains: "x".into() }], ..all(5) };
    assert!(matches!(p.csv_page("t/t.csv", &q), Err(ViewError::NoSuchColumn { column: 9, .. })));
}

#[test]
fn filters_are_case_insensitive_substrings_and_matched_counts_the_whole_file() {
    let body = "user,shell,home\nroot,/bin/bash,/root\nAlice,/bin/zsh,/home/alice\nbob,/usr/sbin/nologin,/home/bob\n\u{c9}cole,/bin/bash,/home/ecole\nmallory,/bin/BASH,/home/m\n";
    let mut p = one_csv(body.as_bytes());
    let q = |filter: Option<&str>, columns: &[(usize, &str)], sort: Option<SortBy>| CsvQuery {
        limit: 2,
        filter: filter.map(str::to_owned),
        column_filters: columns.iter().map(|(c, t)| ColumnFilter { column: *c, contains: (*t).to_owned() }).collect(),
        sort,
        ..CsvQuery::default()
    };
    let got = page(&mut p, q(Some("ALICE"), &[], None));
    assert_eq!((got.matched, got.rows[0].number), (1, 2), "any cell, any case");
    let got = page(&mut p, q(None, &[(1, "bash")], None));
    assert_eq!(got.matched, 3, "root, École, mallory (BASH)");
    assert_eq!(got.rows.iter().map(|r| r.number).collect::<Vec<_>>(), [1, 4], "the first page of 2");
    let got = page(&mut p, q(Some("home"), &[(1, "bash")], Some(SortBy { column: 0, descending: false })));
    assert_eq!(got.matched, 2, "both filters");
    assert_eq!(
        cells(&got).iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        ["mallory", "\u{c9}cole"],
        "by code point: \u{e9} > m"
    );
    let got = page(&mut p, q(Some("\u{e9}COLE"), &[], None));
    assert_eq!(got.matched, 1, "non-ASCII text folds too");
    let got = page(&mut p, q(Some(""), &[(0, "")], None));
    assert_eq!(got.matched, 5, "empty filters filter nothing");
    let long = "x".repeat(2000);
    assert!(matches!(p.csv_page("t/t.csv", &q(Some(&long), &[], None)), Err(ViewError::NeedleTooLong { .. })));
}

#[test]
fn tsv_and_gzip_csv_are_tables_and_other_entries_are_not() {
    let mut p = open(package(&[
        (Some("t"), "t.tsv", b"a\tb\n1\tx,y\n"),
        (Some("t"), "t.csv.gz", &gzip(&[b"a,b\n", b"1,2\n"])),
        (Some("t"), "t.log", b"a,b\n"),
    ]));
    assert_eq!(cells(&p.csv_page("t/t.tsv", &all(5)).unwrap()), [["1", "x,y"]]);
    assert_eq!(cells(&p.csv_page("t/t.csv.gz", &all(5)).unwrap()), [["1", "2"]]);
    assert!(matches!(p.csv_page("t/t.log", &all(5)), Err(ViewError::NotCsv(_))));
    assert!(matches!(p.csv_page("t/none.csv", &all(5)), Err(ViewError::NoSuchEntry(_))));
    assert!(matches!(p.text_page("nothing", 1, 5), Err(ViewError::NoSuchEntry(_))));
}

fn log_package() -> Package<Cursor<Vec<u8>>> {
    let mut log = Vec::new();
    for i in 1..=2500 {
        match i {
            7 => log.extend_from_slice(b"caf\xe9 ERROR latin-1\r\n"),
            8 => {
                log.extend_from_slice(b"long ");
                log.extend(std::iter::repeat_n(b'y', 10_000));
                log.extend_from_slice(b" error at the end\n");
            }
            _ if i % 500 == 0 => writeln!(log, "line {i} Error: disk").unwrap(),
            _ => writeln!(log, "line {i} ok\r").unwrap(),
        }
    }
    log.extend_from_slice(b"final error without newline");
    let rotated = gzip(&[&log[..log.len() / 2], &log[log.len() / 2..]]);
    open(package(&[(Some("Logs"), "app.log", &log), (Some("Logs"), "app.log.1.gz", &rotated)]))
}

#[test]
fn text_pages_number_lines_cut_long_ones_and_count_the_total() {
    let mut p = log_package();
    for path in ["Logs/app.log", "Logs/app.log.1.gz"] {
        let first = p.text_page(path, 1, 10).unwrap();
        assert_eq!(first.lines.len(), 10);
        assert_eq!((first.lines[0].number, first.lines[0].text.as_str()), (1, "line 1 ok"), "CRLF dropped");
        assert_eq!(first.lines[6].text, "caf\u{fffd} ERROR latin-1");
        assert!(first.lines[7].cut && first.lines[7].text.len() == MAX_LINE_BYTES);
        assert!(!first.lines[6].cut);
        assert!(first.more);
        let total = if path.ends_with(".gz") { None } else { Some(2501) };
        assert_eq!(first.total_lines, total, "{path}: counted only when cheap");
        let capped = p.text_page(path, 1000, 5000).unwrap();
        assert_eq!(capped.lines.len(), 1000);
        assert_eq!((capped.lines[0].number, capped.lines[999].number), (1000, 1999));
        let last = p.text_page(path, 2500, 10).unwrap();
        assert_eq!(
            last.lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            ["line 2500 Error: disk", "final error without newline"]
        );
        assert_eq!((last.more, last.total_lines), (false, Some(2501)));
        let past = p.text_page(path, 9999, 10).unwrap();
        assert_eq!((past.lines.len(), past.more, past.total_lines), (0, false, Some(2501)));
        let none = p.text_page(path, 0, 0).unwrap();
        assert_eq!((none.lines.len(), none.more), (0, true), "line 0 reads as line 1");
    }
    let mut empty = open(package(&[(Some("Logs"), "empty.log", b"")]));
    let page = empty.text_page("Logs/empty.log", 1, 10).unwrap();
    assert_eq!((page.lines.len(), page.more, page.total_lines), (0, false, Some(0)));
    let search = empty.text_search("Logs/empty.log", "x", 10, 1).unwrap();
    assert_eq!((search.hits.len(), search.more, search.scanned_lines), (0, false, 0));
}

#[test]
fn search_finds_lines_case_insensitively_with_their_numbers_and_pages_on() {
    let mut p = log_package();
    for path in ["Logs/app.log", "Logs/app.log.1.gz"] {
        let all_hits = p.text_search(path, "eRRoR", 1000, 1).unwrap();
        let numbers: Vec<u64> = all_hits.hits.iter().map(|h| h.number).collect();
        assert_eq!(numbers, [7, 8, 500, 1000, 1500, 2000, 2500, 2501], "{path}");
        let long = &all_hits.hits[1];
        assert!(long.cut && long.text.len() == MAX_LINE_BYTES, "found past the displayed part, shown cut");
        assert_eq!((all_hits.more, all_hits.scanned_lines), (false, 2501));
        assert_eq!(all_hits.hits[2].text, "line 500 Error: disk");
        let two = p.text_search(path, "error", 2, 1).unwrap();
        assert_eq!((two.hits.len(), two.more, two.scanned_lines), (2, true, 499), "up to the next hit");
        let next = p.text_search(path, "error", 2, 501).unwrap();
        assert_eq!(next.hits.iter().map(|h| h.number).collect::<Vec<_>>(), [1000, 1500]);
        let none = p.text_search(path, "error", 10, 3000).unwrap();
        assert_eq!((none.hits.len(), none.more), (0, false));
        let latin = p.text_search(path, "CAF\u{fffd}", 10, 1).unwrap();
        assert_eq!(latin.hits.iter().map(|h| h.number).collect::<Vec<_>>(), [7], "the lossy text is searchable");
        let zero = p.text_search(path, "error", 0, 1).unwrap();
        assert_eq!((zero.hits.len(), zero.more), (0, true));
    }
    assert!(matches!(p.text_search("Logs/app.log", "", 10, 1), Err(ViewError::EmptyNeedle)));
}

#[test]
fn a_corrupt_gzip_log_is_an_error() {
    let mut bad = gzip(&[b"hello\n".repeat(1000).as_slice()]);
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    bad.truncate(bad.len() - 4);
    let mut p = open(package(&[(Some("Logs"), "bad.log.gz", &bad)]));
    match p.text_search("Logs/bad.log.gz", "nothing", 10, 1) {
        Err(ViewError::Gzip { entry, .. }) => assert_eq!(entry, "Logs/bad.log.gz"),
        other => panic!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Nothing panics on any bytes, whatever the query.
    #[test]
    fn no_input_makes_the_viewer_panic(
        body in prop::collection::vec(prop::sample::select(b"ab,\"\r\n\t\xEF\xBB\xBF\xff\x001 ".to_vec()), 0..600),
        offset in 0u64..20,
        limit in 0usize..700,
        sort in prop::option::of((0usize..4, any::<bool>())),
        filter in prop::option::of("[a1\"]{0,2}"),
        column in 0usize..4,
        first_line in 0u64..10,
    ) {
        let mut p = open(package(&[(Some("t"), "t.csv", &body), (Some("t"), "t.log.gz", &gzip(&[&body])), (Some("t"), "raw.gz", &body)]));
        let query = CsvQuery {
            offset,
            limit,
            sort: sort.map(|(column, descending)| SortBy { column, descending }),
            filter: filter.clone(),
            column_filters: vec![ColumnFilter { column, contains: filter.unwrap_or_default() }],
        };
        match p.csv_page("t/t.csv", &query) {
            Ok(page) => prop_assert!(page.rows.len() <= limit.min(MAX_CSV_PAGE_ROWS)),
            Err(ViewError::NoSuchColumn { .. }) => {}
            Err(e) => prop_assert!(false, "{e}"),
        }
        for path in ["t/t.csv", "t/t.log.gz", "t/raw.gz"] {
            let _ = p.text_page(path, first_line, 5);
            let _ = p.text_search(path, "a", 3, first_line);
        }
        p.tree().unwrap();
    }

    /// Any grid written by a CSV writer reads back cell for cell, and a sorted page is in
    /// key order.
    #[test]
    fn written_grids_read_back_and_sort(
        grid in prop::collection::vec(prop::collection::vec("[a-c0-9 ,\"\n.-]{0,6}", 1..4), 1..40),
    ) {
        let mut w = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
        w.write_record(["c0", "c1", "c2"]).unwrap();
        for row in &grid {
            w.write_record(row).unwrap();
        }
        let body = w.into_inner().unwrap();
        let mut p = one_csv(&body);
        let expected = grid.clone();
        let got = page(&mut p, all(500));
        prop_assert_eq!(cells(&got), expected.clone());
        let sorted = page(&mut p, CsvQuery { sort: Some(SortBy { column: 0, descending: false }), ..all(500) });
        prop_assert_eq!(sorted.rows.len(), expected.len());
        let numbers: Vec<u64> = sorted.rows.iter().map(|r| r.number).collect();
        let mut unique = numbers.clone();
        unique.sort_unstable();
        unique.dedup();
        prop_assert_eq!(unique.len(), numbers.len(), "each row once");
        for pair in sorted.rows.windows(2) {
            let key = |s: &str| match s.trim().parse::<f64>() {
                Ok(n) if n.is_finite() => (0, n, String::new()),
                _ => (1, 0.0, s.to_lowercase()),
            };
            let (a, b) = (key(&pair[0].cells[0]), key(&pair[1].cells[0]));
            prop_assert!(a.0 < b.0 || (a.0 == b.0 && (a.1 < b.1 || (a.1 == b.1 && a.2 <= b.2))), "{:?} before {:?}", pair[0], pair[1]);
        }
    }
}
