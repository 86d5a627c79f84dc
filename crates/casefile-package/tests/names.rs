//! The writer can produce none of the names the reader refuses (issue 9 items 3 and 5):
//! whatever names a host hands it, the package it writes opens, every name is safe, and
//! no two names fold to the same file.

use std::collections::HashSet;
use std::io::Cursor;

use casefile_package::archive::{Archive, Limits, fold, unsafe_name};
use casefile_package::writer::PackageMeta;
use casefile_package::{ItemOutcome, ItemSink, PackageWriter, verify};
use proptest::prelude::*;

/// Characters that make names hostile: separators, dots, drive colons, control
/// characters, case and Unicode-form twins (é composed and decomposed, the Kelvin sign,
/// fullwidth letters, ß).
const ALPHABET: &[char] = &[
    'a', 'A', 'b', '/', '\\', '.', ':', '\0', '\n', '\u{7f}', 'é', 'e', '\u{301}', '~', '2', ' ', 'Ａ', 'ß', 'S', 'K',
    '\u{212a}', 'C', '\u{ff0f}', '\u{ff3c}', '\u{ff1a}', '\u{2025}', '\u{ff0e}', '\u{2024}',
];

fn hostile_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(prop::sample::select(ALPHABET), 0..14).prop_map(|c| c.into_iter().collect()),
        1 => (1usize..400).prop_map(|n| "é".repeat(n)),
        1 => prop::sample::select(vec!["manifest.json", "MANIFEST.JSON", "manifest.sig", "CollectionSummaryReport.html"])
            .prop_map(str::to_owned),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_writer_never_writes_a_name_the_reader_refuses_issue_9_items_3_and_5(
        files in prop::collection::vec((prop::option::of(hostile_name()), hostile_name()), 1..24),
    ) {
        let mut writer = PackageWriter::new(Cursor::new(Vec::new()), PackageMeta::detached("proptest"));
        for (folder, name) in &files {
            match folder {
                Some(folder) => writer.begin_collector("c", folder),
                None => writer.end_collector(None),
            }
            let sink: &mut dyn ItemSink = &mut writer;
            sink.file(name, "random", |w| w.write_all(name.as_bytes()).map(|()| ItemOutcome::ok())).unwrap();
        }
        let (out, manifest) = writer.finish().unwrap();
        let bytes = out.into_inner();

        let zip = Archive::open(Cursor::new(&bytes[..]), Limits::default());
        let zip = match zip { Ok(zip) => zip, Err(e) => panic!("{e}") };
        let mut folded = HashSet::new();
        for entry in zip.entries() {
            prop_assert_eq!(unsafe_name(&entry.name), None, "{:?}", entry.name);
            let key: Vec<String> = entry.name.split('/').map(fold).collect();
            prop_assert!(folded.insert(key), "{:?} folds like another name", entry.name);
        }
        let report = verify(Cursor::new(&bytes[..])).unwrap();
        prop_assert!(report.is_ok(), "{:?}", report.problems);
        prop_assert_eq!(manifest.items.len(), files.len() + 2, "every file kept, plus the two reports");
    }
}
