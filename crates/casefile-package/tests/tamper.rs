//! A signed package verifies; any change to it is named: an altered, removed or added
//! file, an edited manifest, a signature by another key, a missing signature.

use std::io::Cursor;

use casefile_package::corpus::{self, RawEntry};
use casefile_package::writer::PackageMeta;
use casefile_package::{ItemOutcome, ItemSink, PackageWriter, Problem, SignatureCheck, verify_with};
use ed25519_dalek::SigningKey;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn package(signer: Option<&SigningKey>) -> Vec<u8> {
    let meta = PackageMeta::detached("test");
    let mut writer = PackageWriter::new(Cursor::new(Vec::new()), meta);
    writer.begin_collector("users", "Users and groups");
    for (name, body) in [("users.csv", "user,uid\nroot,0\n"), ("groups.csv", "group,gid\nroot,0\n")] {
        let sink: &mut dyn ItemSink = &mut writer;
        sink.file(name, "/etc", |w| w.write_all(body.as_bytes()).map(|()| ItemOutcome::ok())).unwrap();
    }
    writer.end_collector(None);
    let (out, _) = match signer {
        Some(key) => writer.finish_signed(key).unwrap(),
        None => writer.finish().unwrap(),
    };
    out.into_inner()
}

/// The package with entries replaced (`Some(bytes)`), dropped (`None`) or added.
fn rewrite(original: &[u8], change: &dyn Fn(&str) -> Option<Option<Vec<u8>>>, add: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in corpus::entries_of(original) {
        let name = String::from_utf8(entry.name.clone()).unwrap();
        match change(&name) {
            None => out.push(entry),
            Some(None) => {}
            Some(Some(replacement)) => out.push(RawEntry::file(&name, &replacement)),
        }
    }
    out.extend(add.iter().map(|(name, bytes)| RawEntry::file(name, bytes)));
    corpus::assemble(&out, None)
}

fn check(bytes: &[u8], expected: Option<&SigningKey>) -> casefile_package::VerifyReport {
    verify_with(Cursor::new(bytes), expected.map(|k| k.verifying_key()).as_ref()).unwrap()
}

#[test]
fn an_untouched_signed_package_is_authentic() {
    let signer = key(1);
    let report = check(&package(Some(&signer)), Some(&signer));
    assert!(report.is_authentic(), "{:?} {}", report.problems, report.signature);
    assert!(matches!(report.signature, SignatureCheck::Valid { expected: Some(true), .. }));
    let unpinned = check(&package(Some(&signer)), None);
    assert!(matches!(unpinned.signature, SignatureCheck::Valid { expected: None, .. }));
}

#[test]
fn an_altered_removed_or_added_file_is_named() {
    let signer = key(1);
    let original = package(Some(&signer));
    let altered =
        rewrite(&original, &|n| (n == "Users and groups/users.csv").then(|| Some(b"user,uid\n".to_vec())), &[]);
    let report = check(&altered, Some(&signer));
    assert!(!report.is_authentic());
    assert!(matches!(&report.problems[..], [Problem::Altered { path, .. }] if path == "Users and groups/users.csv"));

    let removed = rewrite(&original, &|n| (n == "Users and groups/groups.csv").then_some(None), &[]);
    let report = check(&removed, Some(&signer));
    assert!(matches!(&report.problems[..], [Problem::Missing { path }] if path == "Users and groups/groups.csv"));

    let added = rewrite(&original, &|_| None, &[("Users and groups/backdoor.sh", b"#!/bin/sh\n")]);
    let report = check(&added, Some(&signer));
    assert!(matches!(&report.problems[..], [Problem::Unlisted { path }] if path == "Users and groups/backdoor.sh"));
    assert!(report.signature.is_trusted(), "the signature itself still holds: the file problem is what fails it");
}

#[test]
fn an_edited_manifest_breaks_the_signature() {
    let signer = key(1);
    let original = package(Some(&signer));
    // Re-hash a tampered file into the manifest: files match again, the signature does not.
    let tampered = b"user,uid\n".to_vec();
    let manifest = {
        let entries = corpus::entries_of(&original);
        let text = &entries.iter().find(|e| e.name == b"manifest.json").unwrap().data;
        let mut manifest: serde_json::Value = serde_json::from_slice(text).unwrap();
        for item in manifest["items"].as_array_mut().unwrap() {
            if item["path"] == "Users and groups/users.csv" {
                use sha2::Digest;
                item["sha256"] = hex::encode(sha2::Sha256::digest(&tampered)).into();
                item["size"] = tampered.len().into();
            }
        }
        serde_json::to_vec_pretty(&manifest).unwrap()
    };
    let forged = rewrite(
        &original,
        &|n| match n {
            "manifest.json" => Some(Some(manifest.clone())),
            "Users and groups/users.csv" => Some(Some(tampered.clone())),
            _ => None,
        },
        &[],
    );
    let report = check(&forged, Some(&signer));
    assert!(report.is_ok(), "the files match the edited manifest");
    assert!(matches!(report.signature, SignatureCheck::Invalid(_)), "{}", report.signature);
    assert!(!report.is_authentic());
}

#[test]
fn another_key_or_no_signature_is_not_authentic() {
    let signer = key(1);
    let report = check(&package(Some(&key(2))), Some(&signer));
    assert!(matches!(report.signature, SignatureCheck::Valid { expected: Some(false), .. }));
    assert!(!report.is_authentic());
    assert!(report.signature.to_string().contains("not the expected key"));

    let report = check(&package(None), Some(&signer));
    assert_eq!(report.signature, SignatureCheck::Missing);
    assert!(report.is_ok() && !report.is_authentic());
}
