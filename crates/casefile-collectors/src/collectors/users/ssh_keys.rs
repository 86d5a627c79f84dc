//! `ssh_authorized_keys.csv`: the keys that may sign in as each user, from
//! `~/.ssh/authorized_keys` and `~/.ssh/authorized_keys2` of every home and `/root`.

use std::io::{self, BufReader, Read};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use casefile_package::{ItemSink, PackageError};
use sha2::{Digest, Sha256};

use crate::Context;
use crate::collectors::accounts::{Home, open_home_file};
use crate::collectors::common::{CANCELLED, Csv, Lines, Problems, csv_file, is_missing, table_outcome, trim_bytes};

const FILES: [&str; 2] = [".ssh/authorized_keys", ".ssh/authorized_keys2"];
const HEADER: [&str; 7] = ["user", "file", "line_number", "options", "key_type", "key_fingerprint_sha256", "comment"];

pub(super) fn write_authorized_keys(
    ctx: &Context,
    sink: &mut dyn ItemSink,
    homes: &[Home],
) -> Result<(), PackageError> {
    let source = "~/.ssh/authorized_keys, ~/.ssh/authorized_keys2 of every home in /etc/passwd and /root";
    csv_file(sink, "ssh_authorized_keys.csv", source, &HEADER, |csv| {
        let mut problems = Problems::default();
        let mut files_read = 0;
        for home in homes {
            for name in FILES {
                if ctx.cancel.is_cancelled() {
                    return Ok(casefile_package::ItemOutcome::partial(CANCELLED));
                }
                let file = format!("{}/{name}", home.dir.trim_end_matches('/'));
                match write_keys_of(ctx, home, &file, csv, &mut problems) {
                    Ok(()) => files_read += 1,
                    Err(e) if is_missing(&e) => {}
                    Err(e) => problems.add("unreadable files", format!("{file}: {e}")),
                }
            }
        }
        Ok(table_outcome(files_read, problems, "no authorized_keys files"))
    })
}

fn write_keys_of(ctx: &Context, home: &Home, file: &str, csv: &mut Csv<'_>, problems: &mut Problems) -> io::Result<()> {
    let opened = open_home_file(&ctx.path(&home.dir), &ctx.path(file), home.uid)?;
    let mut lines = Lines::new(BufReader::new(opened.take(ctx.limits.max_file_bytes)));
    let mut line_number = 0u64;
    while let Some(line) = lines.next_line()? {
        line_number += 1;
        let line = trim_bytes(line);
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let key = AuthorizedKey::parse(&String::from_utf8_lossy(line));
        if key.fingerprint.is_empty() {
            problems.add("lines that are no valid key", format!("{file}:{line_number}"));
        }
        csv.row([
            home.user.as_str(),
            file,
            &line_number.to_string(),
            &key.options,
            &key.key_type,
            &key.fingerprint,
            &key.comment,
        ])?;
    }
    Ok(())
}

/// One line of an authorized_keys file (sshd(8), "AUTHORIZED_KEYS FILE FORMAT"):
/// `[options] keytype base64-key [comment]`. A line that is no key keeps its text in
/// `comment` with the other fields empty, since a mangled line is evidence too.
#[derive(Debug, Default, PartialEq, Eq)]
struct AuthorizedKey {
    options: String,
    key_type: String,
    /// `SHA256:…` as `ssh-keygen -l` prints it.
    fingerprint: String,
    comment: String,
}

impl AuthorizedKey {
    fn parse(line: &str) -> Self {
        let (options, rest) = if is_key_type(first_word(line)) { ("", line) } else { split_options(line) };
        let mut words = rest.splitn(3, char::is_whitespace).filter(|w| !w.is_empty());
        let (Some(key_type), Some(blob)) = (words.next(), words.next()) else {
            return Self { comment: line.to_owned(), ..Self::default() };
        };
        let Some(fingerprint) = fingerprint(blob).filter(|_| is_key_type(key_type)) else {
            return Self { comment: line.to_owned(), ..Self::default() };
        };
        let comment = rest.splitn(3, char::is_whitespace).nth(2).unwrap_or_default().trim();
        Self { options: options.to_owned(), key_type: key_type.to_owned(), fingerprint, comment: comment.to_owned() }
    }
}

fn first_word(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or_default()
}

/// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `sk-ssh-ed25519@openssh.com`, certificates …
fn is_key_type(word: &str) -> bool {
    ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-sha2-"].iter().any(|prefix| word.starts_with(prefix))
}

/// Splits the options off the front of a line: they end at the first whitespace outside
/// double quotes (`command="echo hi",no-pty ssh-ed25519 …`).
fn split_options(line: &str) -> (&str, &str) {
    let mut quoted = false;
    let mut escaped = false;
    for (at, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return (&line[..at], line[at..].trim_start()),
            _ => {}
        }
    }
    (line, "")
}

/// `SHA256:` and the unpadded base64 of the SHA-256 of the decoded key blob.
fn fingerprint(blob: &str) -> Option<String> {
    let decoded = STANDARD.decode(blob).ok()?;
    Some(format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(&decoded))))
}

#[cfg(test)]
mod tests {
    use casefile_package::ItemStatus;

    use crate::collectors::test_support::{Fixture, PASSWD_FIXTURE, run};
    use crate::collectors::users::Users;

    use super::*;

    /// An ed25519 public key.
    const ED25519: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn expected_fingerprint() -> String {
        format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(STANDARD.decode(ED25519).unwrap())))
    }

    #[test]
    fn lines_split_into_options_type_fingerprint_and_comment() {
        let plain = AuthorizedKey::parse(&format!("ssh-ed25519 {ED25519} alice@laptop"));
        assert_eq!(plain.options, "");
        assert_eq!(plain.key_type, "ssh-ed25519");
        assert_eq!(plain.fingerprint, expected_fingerprint());
        assert_eq!(plain.comment, "alice@laptop");

        let restricted = AuthorizedKey::parse(&format!(
            r#"command="echo \"hi there\"",no-pty,from="10.0.0.1" ssh-ed25519 {ED25519} a b"#
        ));
        assert_eq!(restricted.options, r#"command="echo \"hi there\"",no-pty,from="10.0.0.1""#);
        assert_eq!(restricted.key_type, "ssh-ed25519");
        assert_eq!(restricted.comment, "a b");

        let garbage = AuthorizedKey::parse("not a key at all");
        assert_eq!(garbage, AuthorizedKey { comment: "not a key at all".into(), ..Default::default() });
        let bad_base64 = AuthorizedKey::parse("ssh-rsa !!!notbase64!!! x");
        assert_eq!(bad_base64.fingerprint, "");
    }

    #[test]
    fn the_fingerprint_matches_ssh_keygen() {
        // `ssh-keygen -lf` of the key above.
        assert_eq!(fingerprint(ED25519).unwrap(), "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU");
    }

    #[test]
    fn keys_of_every_home_are_listed_with_hostile_comments_intact() {
        let f = Fixture::new();
        f.write("/etc/passwd", PASSWD_FIXTURE);
        f.write(
            "/root/.ssh/authorized_keys",
            format!("# managed\n\nssh-ed25519 {ED25519} root,\"key\"\nno-pty ssh-ed25519 {ED25519}\n"),
        );
        f.write(
            "/home/alice/.ssh/authorized_keys2",
            [format!("ssh-ed25519 {ED25519} x\u{e9}").as_bytes(), b"\xff\n"].concat(),
        );
        f.write("/home/bob/.ssh/authorized_keys", "garbage line\n");
        f.give_homes();
        let sink = run(&Users, f.root());
        let item = sink.item("ssh_authorized_keys.csv");
        assert_eq!(item.status(), ItemStatus::Partial);
        assert_eq!(
            item.outcome.error.as_deref(),
            Some("lines that are no valid key: 1 (first: /home/bob/.ssh/authorized_keys:1)")
        );
        let rows = item.rows();
        let got: Vec<[&str; 5]> = rows
            .iter()
            .map(|r| [&r["user"], &r["file"], &r["line_number"], &r["options"], &r["comment"]].map(String::as_str))
            .collect();
        assert_eq!(
            got,
            [
                ["root", "/root/.ssh/authorized_keys", "3", "", "root,\"key\""],
                ["root", "/root/.ssh/authorized_keys", "4", "no-pty", ""],
                ["alice", "/home/alice/.ssh/authorized_keys2", "1", "", "x\u{e9}\u{fffd}"],
                ["bob", "/home/bob/.ssh/authorized_keys", "1", "", "garbage line"],
            ]
        );
        assert_eq!(rows[0]["key_fingerprint_sha256"], expected_fingerprint());
    }

    #[test]
    fn a_fifo_in_place_of_authorized_keys_does_not_hang() {
        let f = Fixture::new();
        f.mkdir("/root/.ssh");
        f.fifo("/root/.ssh/authorized_keys");
        let sink = run(&Users, f.root());
        let item = sink.item("ssh_authorized_keys.csv");
        assert_eq!(item.status(), ItemStatus::Failed);
        assert!(item.outcome.error.as_ref().unwrap().contains("not a regular file"));
    }
}
