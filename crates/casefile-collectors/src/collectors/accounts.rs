//! `/etc/passwd` and `/etc/group` parsing, shared by the users collector (which lists
//! them) and the process collectors (which turn uids into names).

use std::collections::HashMap;

use crate::Context;

use super::common::open_lines;

pub(crate) const PASSWD: &str = "/etc/passwd";
pub(crate) const GROUP: &str = "/etc/group";

/// The seven fields of a `/etc/passwd` line: name, password, uid, gid, gecos, home,
/// shell. `None` for a malformed line.
pub(crate) fn passwd_fields(line: &str) -> Option<[&str; 7]> {
    split_exact(line)
}

/// The four fields of a `/etc/group` line: name, password, gid, members.
pub(crate) fn group_fields(line: &str) -> Option<[&str; 4]> {
    split_exact(line)
}

/// Splits `line` at `:` into exactly `N` fields; the last keeps any further colons.
fn split_exact<const N: usize>(line: &str) -> Option<[&str; N]> {
    let mut parts = line.splitn(N, ':');
    let fields: [&str; N] = std::array::from_fn(|_| parts.next().unwrap_or_default());
    // `splitn` yields fewer than N parts exactly when the line has too few colons.
    (line.matches(':').count() >= N - 1).then_some(fields)
}

/// uid → user name, read from the root's `/etc/passwd` (not from NSS: the collection
/// describes the files on the host, and must not call into LDAP/SSSD).
#[derive(Debug, Default)]
pub(crate) struct UserNames {
    by_uid: HashMap<u32, String>,
}

impl UserNames {
    /// Best effort: an unreadable `/etc/passwd` leaves every name empty.
    pub(crate) fn load(ctx: &Context) -> Self {
        let mut names = Self::default();
        let Ok(mut lines) = open_lines(&ctx.path(PASSWD)) else {
            return names;
        };
        while let Ok(Some(line)) = lines.next_line() {
            let line = String::from_utf8_lossy(line);
            let Some([name, _, uid, ..]) = passwd_fields(&line) else {
                continue;
            };
            if let Ok(uid) = uid.parse::<u32>() {
                // The first entry wins, as with getpwuid.
                names.by_uid.entry(uid).or_insert_with(|| name.to_owned());
            }
        }
        names
    }

    /// The user name of `uid`, or "" when `/etc/passwd` does not know it.
    pub(crate) fn name(&self, uid: u32) -> &str {
        self.by_uid.get(&uid).map_or("", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_split_into_seven_fields() {
        let fields = passwd_fields("alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash").unwrap();
        assert_eq!(fields[0], "alice");
        assert_eq!(fields[2], "1000");
        assert_eq!(fields[6], "/bin/bash");
        assert!(passwd_fields("garbage").is_none());
        assert!(passwd_fields("a:b:c:d:e:f").is_none());
        assert_eq!(passwd_fields("a:b:c:d:e:f:g:h").unwrap()[6], "g:h");
    }

    #[test]
    fn group_members_stay_together() {
        let fields = group_fields("sudo:x:27:alice,bob").unwrap();
        assert_eq!(fields, ["sudo", "x", "27", "alice,bob"]);
        assert_eq!(group_fields("empty:x:5:").unwrap()[3], "");
    }
}
