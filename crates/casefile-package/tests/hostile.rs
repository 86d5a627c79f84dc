//! The hostile corpus against `verify` (issue 9 items 3–5): every case is refused, and
//! the refusal names the entry. Each case would pass or hang the old reader, which
//! trusted the central directory (last entry of a name, shared data, any name or type).

use std::io::Cursor;

use casefile_package::corpus::{self, HostileCase};
use casefile_package::writer::PackageMeta;
use casefile_package::{PackageError, verify_with};
use ed25519_dalek::SigningKey;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// Why verify refuses `bytes` (an error, or the problems of a report), or `None` when
/// it would call the package authentic.
fn refusal(bytes: &[u8]) -> Option<String> {
    match verify_with(Cursor::new(bytes), Some(&key().verifying_key())) {
        Err(e) => Some(e.to_string()),
        Ok(report) if !report.is_authentic() => {
            Some(report.problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        }
        Ok(_) => None,
    }
}

fn cases(prefixes: &[&str]) -> Vec<HostileCase> {
    let all = corpus::cases(&key(), &PackageMeta::detached("hostile"));
    let chosen: Vec<HostileCase> = all.into_iter().filter(|c| prefixes.iter().any(|p| c.name.starts_with(p))).collect();
    assert!(!chosen.is_empty());
    chosen
}

fn assert_all_refused(cases: &[HostileCase]) {
    for case in cases {
        let why = refusal(&case.bytes).unwrap_or_else(|| panic!("{} ({}) was accepted", case.name, case.defect));
        assert!(why.contains(&case.names), "{}: the refusal must name {}: {why}", case.name, case.names);
    }
}

#[test]
fn the_genuine_package_the_corpus_wraps_is_authentic() {
    let genuine = corpus::genuine(&key(), PackageMeta::detached("hostile"));
    assert_eq!(refusal(&genuine), None);
}

#[test]
fn duplicate_entry_names_in_front_of_a_signed_entry_are_refused_issue_9_item_3() {
    let cases = cases(&["duplicate-name"]);
    assert_eq!(cases.len(), 3, "exact, letter case and Unicode form");
    assert_all_refused(&cases);
}

#[test]
fn an_overlapping_entry_zip_bomb_is_refused_before_inflating_issue_9_item_4() {
    let case = &cases(&["overlapping-bomb"])[0];
    assert!(case.bytes.len() < 2 << 20, "about 1 MB for 40 GiB declared: {}", case.bytes.len());
    match verify_with(Cursor::new(&case.bytes), None) {
        Err(PackageError::Refused { entry, why }) => {
            assert_eq!(entry, "bomb/1.bin");
            assert!(why.contains("overlaps"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn sizes_are_never_trusted_issue_9_item_4() {
    // Giant declared sizes are refused from the headers; a header that lies small stops
    // inflating one byte past it; truncated and mislabelled files are no packages.
    assert_all_refused(&cases(&["giant-declared-size", "inflates-past-size", "truncated", "mislabelled"]));
}

#[test]
fn names_that_escape_and_symlinks_are_refused_issue_9_item_5() {
    let cases = cases(&["dotdot", "absolute", "drive-letter", "backslash", "symlink"]);
    assert_eq!(cases.len(), 5);
    assert_all_refused(&cases);
}

#[test]
fn an_entry_the_manifest_does_not_list_is_refused_issue_9_item_3() {
    assert_all_refused(&cases(&["unlisted"]));
}

#[test]
#[ignore]
fn print_refusals() {
    for case in corpus::cases(&key(), &PackageMeta::detached("hostile")) {
        println!("{:<22} {}", case.name, refusal(&case.bytes).unwrap_or_default());
    }
}
