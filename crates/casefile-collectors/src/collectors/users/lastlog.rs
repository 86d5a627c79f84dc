//! `lastlog.csv`: the last sign-in of every uid from `/var/log/lastlog`.
//!
//! The file is an array of `struct lastlog { int32 ll_time; char ll_line[32];
//! char ll_host[256]; }` indexed by uid. It is sparse: the entry of uid 4294967294 puts
//! its apparent size past a terabyte, so only the extents that hold data are read
//! (`SEEK_DATA`/`SEEK_HOLE`), and never more than the file cap.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use casefile_package::{ItemOutcome, ItemSink, PackageError};
use rustix::fs::SeekFrom;

use crate::Context;
use crate::collectors::accounts::UserNames;
use crate::collectors::common::{CANCELLED, Csv, csv_file, open_regular, unavailable, utc_timestamp};

use super::c_string;

const LASTLOG: &str = "/var/log/lastlog";
const RECORD: u64 = 292;
const HEADER: [&str; 5] = ["uid", "user", "time_utc", "terminal", "host"];

pub(super) fn write_lastlog(ctx: &Context, sink: &mut dyn ItemSink, users: &UserNames) -> Result<(), PackageError> {
    csv_file(sink, "lastlog.csv", LASTLOG, &HEADER, |csv| {
        let file = match open_regular(&ctx.path(LASTLOG)) {
            Ok(file) => file,
            Err(e) => return Ok(unavailable(LASTLOG, &e)),
        };
        write_records(ctx, &file, users, csv)
    })
}

/// Streams the non-empty records, extent by extent.
fn write_records(ctx: &Context, file: &File, users: &UserNames, csv: &mut Csv<'_>) -> io::Result<ItemOutcome> {
    let size = file.metadata()?.len();
    let budget = ctx.limits.max_file_bytes;
    let mut read = 0u64;
    let mut uid = 0u64;
    let mut record = [0u8; RECORD as usize];
    while uid * RECORD < size {
        let Some((start, end)) = next_extent(file, uid * RECORD, size)? else {
            break;
        };
        // Extents start on file-system blocks, not records: back up to the record the
        // extent begins in.
        uid = uid.max(start / RECORD);
        while uid * RECORD < end {
            if ctx.cancel.is_cancelled() {
                return Ok(ItemOutcome::partial(CANCELLED));
            }
            if read >= budget {
                return Ok(ItemOutcome::partial(format!("stopped after {budget} bytes of records")));
            }
            let filled = read_at_most(file, &mut record, uid * RECORD)?;
            read += filled as u64;
            if filled < record.len() {
                return Ok(ItemOutcome::partial(format!(
                    "{filled} trailing bytes are not a whole {RECORD}-byte record"
                )));
            }
            if record.iter().any(|&b| b != 0) {
                csv.row(fields(uid, &record, users))?;
            }
            uid += 1;
        }
    }
    Ok(ItemOutcome::ok())
}

/// The next extent holding data at or after `from`, as byte offsets. A file system
/// that cannot tell holes apart reports the whole file as data.
fn next_extent(file: &File, from: u64, size: u64) -> io::Result<Option<(u64, u64)>> {
    use rustix::io::Errno;
    let start = match rustix::fs::seek(file, SeekFrom::Data(from)) {
        Ok(start) => start,
        // No data after `from`.
        Err(Errno::NXIO) => return Ok(None),
        Err(Errno::INVAL | Errno::OPNOTSUPP) => from,
        Err(e) => return Err(e.into()),
    };
    let end = rustix::fs::seek(file, SeekFrom::Hole(start)).unwrap_or(size);
    Ok(Some((start, end.max(start + 1))))
}

/// Reads into `buf` at `offset` until it is full or the file ends.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn fields(uid: u64, record: &[u8], users: &UserNames) -> [String; 5] {
    let time = u32::from_le_bytes([record[0], record[1], record[2], record[3]]);
    let user = u32::try_from(uid).map(|uid| users.name(uid).to_owned()).unwrap_or_default();
    [
        uid.to_string(),
        user,
        if time == 0 { String::new() } else { utc_timestamp(i64::from(time)) },
        c_string(&record[4..36]),
        c_string(&record[36..292]),
    ]
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use casefile_package::ItemStatus;

    use crate::Limits;
    use crate::collectors::test_support::{Fixture, PASSWD_FIXTURE, run, run_with};
    use crate::collectors::users::Users;

    use super::*;

    fn record(time: i32, line: &str, host: &[u8]) -> Vec<u8> {
        let mut raw = vec![0u8; RECORD as usize];
        raw[0..4].copy_from_slice(&time.to_le_bytes());
        raw[4..4 + line.len()].copy_from_slice(line.as_bytes());
        raw[36..36 + host.len()].copy_from_slice(host);
        raw
    }

    /// A sparse lastlog as `login` writes it: records at `uid * 292`, holes between.
    fn lastlog(f: &Fixture, entries: &[(u64, Vec<u8>)]) {
        f.write(LASTLOG, "");
        let file = std::fs::OpenOptions::new().write(true).open(f.path(LASTLOG)).unwrap();
        for (uid, raw) in entries {
            file.write_all_at(raw, uid * RECORD).unwrap();
        }
    }

    #[test]
    fn sparse_records_are_read_by_uid_with_names_from_passwd() {
        let f = Fixture::new();
        f.write("/etc/passwd", PASSWD_FIXTURE);
        lastlog(
            &f,
            &[
                (0, record(1_700_000_000, "tty1", b"")),
                (1000, record(1_700_000_600, "pts/0", b"203.0.113.9")),
                // A uid no longer in passwd, far into the file, with a hostile host.
                (4_000_000, record(1_700_001_200, "pts/9", b"evil,\"host\"\n\xff")),
            ],
        );
        let sink = run(&Users, f.root());
        let item = sink.item("lastlog.csv");
        assert_eq!(item.status(), ItemStatus::Ok, "{:?}", item.outcome);
        let rows = item.rows();
        let got: Vec<[&str; 5]> = rows
            .iter()
            .map(|r| [&r["uid"], &r["user"], &r["time_utc"], &r["terminal"], &r["host"]].map(String::as_str))
            .collect();
        assert_eq!(
            got,
            [
                ["0", "root", "2023-11-14T22:13:20Z", "tty1", ""],
                ["1000", "alice", "2023-11-14T22:23:20Z", "pts/0", "203.0.113.9"],
                ["4000000", "", "2023-11-14T22:33:20Z", "pts/9", "evil,\"host\"\n\u{fffd}"],
            ]
        );
    }

    #[test]
    fn reading_stops_at_the_file_cap_and_a_torn_record_is_partial() {
        let f = Fixture::new();
        let mut dense = Vec::new();
        for uid in 0..10 {
            dense.extend(record(1_700_000_000 + uid, "tty1", b"h"));
        }
        f.write(LASTLOG, &dense);
        let limits = Limits { max_file_bytes: 3 * RECORD, ..Limits::default() };
        let item = run_with(&Users, f.root(), limits);
        let capped = item.item("lastlog.csv");
        assert_eq!(capped.rows().len(), 3);
        assert_eq!(capped.outcome, ItemOutcome::partial(format!("stopped after {} bytes of records", 3 * RECORD)));

        dense.truncate(RECORD as usize + 100);
        f.write(LASTLOG, &dense);
        let torn = run(&Users, f.root());
        assert_eq!(torn.item("lastlog.csv").rows().len(), 1);
        assert_eq!(torn.item("lastlog.csv").status(), ItemStatus::Partial);
    }

    #[test]
    fn an_empty_or_missing_lastlog() {
        let f = Fixture::new();
        assert_eq!(run(&Users, f.root()).item("lastlog.csv").status(), ItemStatus::NotApplicable);
        f.write(LASTLOG, "");
        let item = run(&Users, f.root());
        assert_eq!(item.item("lastlog.csv").status(), ItemStatus::Ok);
        assert!(item.item("lastlog.csv").rows().is_empty());
    }
}
