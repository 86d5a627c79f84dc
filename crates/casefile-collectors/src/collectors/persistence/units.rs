//! systemd units (`systemd_units.csv`) and timers (`timers.csv`): every unit file and
//! drop-in of the system and user unit directories and of each home, with the state
//! `systemctl` would show as far as the files tell it, what it runs, and its SHA-256.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use casefile_package::{ItemOutcome, ItemSink, PackageError};

use crate::Context;
use crate::collectors::accounts::{Home, open_home_file};
use crate::collectors::common::{
    CANCELLED, COPY_LIMIT, Csv, FileHasher, Lines, Problems, csv_file, dir_entries, is_missing, mtime_utc,
    open_regular, table_outcome, trim_bytes,
};

/// Unit directories in systemd's order of precedence.
const SYSTEM_DIRS: [&str; 5] = [
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];
const GLOBAL_USER_DIRS: [&str; 3] = ["/etc/systemd/user", "/run/systemd/user", "/usr/lib/systemd/user"];
/// Below each home.
const HOME_USER_DIR: &str = ".config/systemd/user";

const UNIT_TYPES: [&str; 11] =
    ["service", "socket", "timer", "target", "path", "mount", "automount", "swap", "slice", "scope", "device"];

/// Directories whose links enable a unit: `multi-user.target.wants/sshd.service`.
const DEPENDENCY_DIRS: [&str; 3] = [".wants", ".requires", ".upholds"];

/// Most of a unit file parsed; the whole file (up to the file cap) is hashed.
const PARSE_LIMIT: u64 = 1 << 20;
/// Most enabling links and timers remembered.
const MAX_LINKS: usize = 65_536;
const MAX_TIMERS: usize = 65_536;

const UNITS_HEADER: [&str; 15] = [
    "scope",
    "user",
    "path",
    "unit",
    "type",
    "state",
    "wanted_by",
    "description",
    "exec_start",
    "exec_other",
    "link_target",
    "size",
    "mtime_utc",
    "sha256",
    "note",
];

const TIMERS_HEADER: [&str; 13] = [
    "scope",
    "user",
    "path",
    "timer",
    "state",
    "on_calendar",
    "on_boot_sec",
    "on_startup_sec",
    "on_active_sec",
    "on_unit_active_sec",
    "on_unit_inactive_sec",
    "persistent",
    "unit",
];

/// The `[Timer]` settings listed, in column order after `state`.
const TIMER_KEYS: [&str; 7] =
    ["OnCalendar", "OnBootSec", "OnStartupSec", "OnActiveSec", "OnUnitActiveSec", "OnUnitInactiveSec", "Persistent"];

/// Unit directories that enable each other's units: the system ones, the global user
/// ones, and one per home.
struct Tree {
    scope: &'static str,
    user: String,
    /// Owner of the files, when they sit in a home (see [`open_home_file`]).
    owner: Option<Home>,
    dirs: Vec<String>,
}

fn trees(homes: &[Home]) -> Vec<Tree> {
    let mut trees = vec![
        Tree { scope: "system", user: String::new(), owner: None, dirs: SYSTEM_DIRS.map(String::from).to_vec() },
        Tree {
            scope: "user-global",
            user: String::new(),
            owner: None,
            dirs: GLOBAL_USER_DIRS.map(String::from).to_vec(),
        },
    ];
    trees.extend(homes.iter().map(|home| Tree {
        scope: "user",
        user: home.user.clone(),
        owner: Some(home.clone()),
        dirs: vec![format!("{}/{HOME_USER_DIR}", home.dir.trim_end_matches('/'))],
    }));
    trees
}

pub(super) fn write_units(ctx: &Context, sink: &mut dyn ItemSink, homes: &[Home]) -> Result<(), PackageError> {
    let source = "/etc/systemd/{system,user}, /run/systemd/{system,user}, /usr/local/lib/systemd/system, \
/usr/lib/systemd/{system,user}, /lib/systemd/system, ~/.config/systemd/user";
    let mut timers = Timers::default();
    csv_file(sink, "systemd_units.csv", source, &UNITS_HEADER, |csv| {
        let mut walk =
            UnitWalk { ctx, hasher: FileHasher::new(&ctx.limits), problems: Problems::default(), seen: HashSet::new() };
        let mut dirs_read = 0;
        for tree in trees(homes) {
            if ctx.cancel.is_cancelled() {
                return Ok(ItemOutcome::partial(CANCELLED));
            }
            dirs_read += walk.tree(&tree, csv, &mut timers)?;
        }
        Ok(table_outcome(dirs_read, walk.problems, "no systemd unit directories"))
    })?;
    let timer_source = "[Timer] sections of the *.timer units in systemd_units.csv";
    csv_file(sink, "timers.csv", timer_source, &TIMERS_HEADER, |csv| {
        for row in &timers.rows {
            csv.row(row)?;
        }
        Ok(if timers.cut {
            ItemOutcome::partial(format!("only the first {MAX_TIMERS} timers"))
        } else {
            ItemOutcome::ok()
        })
    })
}

#[derive(Default)]
struct Timers {
    rows: Vec<[String; 13]>,
    cut: bool,
}

struct UnitWalk<'a> {
    ctx: &'a Context,
    hasher: FileHasher,
    problems: Problems,
    /// (device, inode) of the directories walked: on merged-/usr systems `/lib` and
    /// `/usr/lib` are the same directory.
    seen: HashSet<(u64, u64)>,
}

/// Where one unit file sits.
struct Place<'a> {
    tree: &'a Tree,
    /// Host path of the file.
    abs: String,
    path: PathBuf,
}

impl UnitWalk<'_> {
    /// Lists the units of one tree; returns how many of its directories exist.
    fn tree(&mut self, tree: &Tree, csv: &mut Csv<'_>, timers: &mut Timers) -> io::Result<usize> {
        let dirs: Vec<&String> = tree.dirs.iter().filter(|dir| self.first_visit(dir)).collect();
        let wants = Wants::load(self.ctx, &dirs, &mut self.problems);
        for dir in &dirs {
            for name in dir_entries(self.ctx, dir, &mut self.problems) {
                if self.ctx.cancel.is_cancelled() {
                    return Ok(dirs.len());
                }
                let text = name.to_string_lossy().into_owned();
                let place = Place { tree, abs: format!("{dir}/{text}"), path: self.ctx.path(dir).join(&name) };
                if place.path.is_dir() {
                    if let Some(unit) = text.strip_suffix(".d") {
                        self.drop_ins(&place, unit, csv)?;
                    }
                } else if unit_type(&text).is_some() {
                    self.unit(&place, &text, &wants, csv, timers)?;
                }
            }
        }
        Ok(dirs.len())
    }

    fn first_visit(&mut self, dir: &str) -> bool {
        match std::fs::metadata(self.ctx.path(dir)) {
            Ok(meta) if meta.is_dir() => self.seen.insert((meta.dev(), meta.ino())),
            _ => false,
        }
    }

    fn unit(
        &mut self,
        place: &Place<'_>,
        name: &str,
        wants: &Wants,
        csv: &mut Csv<'_>,
        timers: &mut Timers,
    ) -> io::Result<()> {
        let link_target = std::fs::read_link(&place.path).ok();
        let masked = link_target.as_deref() == Some(Path::new("/dev/null"));
        let read = if masked { None } else { Some(self.read(place)) };
        let info = read.as_ref().and_then(|r| r.info.as_ref());
        let wanted_by = wants.of(name);
        let state = if masked {
            "masked"
        } else if !wanted_by.is_empty() {
            "enabled"
        } else if let Some(target) = &link_target {
            if target.file_name() == Some(OsStr::new(name)) { "linked" } else { "alias" }
        } else if info.is_some_and(|i| i.has_install) {
            "disabled"
        } else if info.is_some() {
            "static"
        } else {
            ""
        };
        if name.ends_with(".timer")
            && let Some(info) = info
        {
            timers.add(place, name, state, info);
        }
        UnitRow {
            place,
            unit: name,
            unit_type: unit_type(name).unwrap_or_default(),
            state,
            wanted_by: wanted_by.join(" "),
            link_target: link_target.map(|t| t.to_string_lossy().into_owned()).unwrap_or_default(),
            read,
        }
        .write(csv)
    }

    /// `<unit>.d/*.conf`: settings added to or replacing those of the unit, a favourite
    /// place to hide an `ExecStart`.
    fn drop_ins(&mut self, dir: &Place<'_>, unit: &str, csv: &mut Csv<'_>) -> io::Result<()> {
        for name in dir_entries(self.ctx, &dir.abs, &mut self.problems) {
            let text = name.to_string_lossy();
            if !text.ends_with(".conf") {
                continue;
            }
            let place = Place { tree: dir.tree, abs: format!("{}/{text}", dir.abs), path: dir.path.join(&name) };
            let read = self.read(&place);
            let link_target =
                std::fs::read_link(&place.path).map(|t| t.to_string_lossy().into_owned()).unwrap_or_default();
            let row = UnitRow {
                place: &place,
                unit,
                unit_type: "drop-in",
                state: "",
                wanted_by: String::new(),
                link_target,
                read: Some(read),
            };
            row.write(csv)?;
        }
        Ok(())
    }

    /// Parses and hashes one unit file. What cannot be read leaves the fields empty and
    /// says why in `note`.
    fn read(&mut self, place: &Place<'_>) -> UnitRead {
        let opened = match &place.tree.owner {
            Some(home) => open_home_file(&self.ctx.path(&home.dir), &place.path, home.uid),
            None => open_regular(&place.path),
        };
        let result = opened.and_then(|file| {
            let meta = file.metadata()?;
            let info = UnitInfo::parse(&file)?;
            let mut file = file;
            file.seek(SeekFrom::Start(0))?;
            let hash = self.hasher.hash(file)?;
            Ok((meta, info, hash))
        });
        match result {
            Ok((meta, info, hash)) => UnitRead {
                info: Some(info),
                size: meta.len().to_string(),
                mtime: mtime_utc(&meta),
                sha256: hash.hex(),
                note: hash.note(),
            },
            // A link to a unit that is gone is how the host is, not a failure to read it.
            Err(e) if is_missing(&e) => UnitRead { note: format!("link target missing: {e}"), ..UnitRead::default() },
            Err(e) => {
                self.problems.add("unreadable unit files", format!("{}: {e}", place.abs));
                UnitRead { note: e.to_string(), ..UnitRead::default() }
            }
        }
    }
}

impl Timers {
    fn add(&mut self, place: &Place<'_>, name: &str, state: &str, info: &UnitInfo) {
        if self.rows.len() >= MAX_TIMERS {
            self.cut = true;
            return;
        }
        let setting = |key: &str| {
            info.timer.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect::<Vec<_>>().join("\n")
        };
        let [calendar, boot, startup, active, unit_active, unit_inactive, persistent] = TIMER_KEYS.map(setting);
        // Without `Unit=` a timer starts the service of its own name.
        let unit = info
            .timer
            .iter()
            .rev()
            .find(|(k, _)| k == "Unit")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| format!("{}.service", name.trim_end_matches(".timer")));
        self.rows.push([
            place.tree.scope.to_owned(),
            place.tree.user.clone(),
            place.abs.clone(),
            name.to_owned(),
            state.to_owned(),
            calendar,
            boot,
            startup,
            active,
            unit_active,
            unit_inactive,
            persistent,
            unit,
        ]);
    }
}

/// One row of `systemd_units.csv`.
struct UnitRow<'a> {
    place: &'a Place<'a>,
    unit: &'a str,
    unit_type: &'a str,
    state: &'a str,
    wanted_by: String,
    link_target: String,
    /// `None` for a masked unit, which is not opened.
    read: Option<UnitRead>,
}

impl UnitRow<'_> {
    fn write(&self, csv: &mut Csv<'_>) -> io::Result<()> {
        let read = self.read.as_ref();
        let info = read.and_then(|r| r.info.as_ref());
        let empty = String::new();
        csv.row([
            self.place.tree.scope,
            &self.place.tree.user,
            &self.place.abs,
            self.unit,
            self.unit_type,
            self.state,
            &self.wanted_by,
            info.map_or("", |i| i.description.as_str()),
            &info.map(|i| i.exec_start.join("\n")).unwrap_or_default(),
            &info.map(|i| i.exec_other.join("\n")).unwrap_or_default(),
            &self.link_target,
            read.map_or(&empty, |r| &r.size),
            read.map_or(&empty, |r| &r.mtime),
            read.map_or(&empty, |r| &r.sha256),
            read.map_or(&empty, |r| &r.note),
        ])
    }
}

/// What [`UnitWalk::read`] found out about one file.
#[derive(Default)]
struct UnitRead {
    info: Option<UnitInfo>,
    size: String,
    mtime: String,
    sha256: String,
    note: String,
}

/// `sshd.service` → `service`.
fn unit_type(name: &str) -> Option<&'static str> {
    let (stem, suffix) = name.rsplit_once('.')?;
    (!stem.is_empty()).then_some(())?;
    UNIT_TYPES.iter().copied().find(|t| *t == suffix)
}

/// unit name → the units whose `.wants`/`.requires`/`.upholds` directory links to it.
#[derive(Default)]
struct Wants {
    by_unit: HashMap<String, Vec<String>>,
}

impl Wants {
    fn load(ctx: &Context, dirs: &[&String], problems: &mut Problems) -> Self {
        let mut wants = Self::default();
        let mut links = 0;
        for dir in dirs {
            for name in dir_entries(ctx, dir, problems) {
                let name = name.to_string_lossy();
                let Some(wanting) = DEPENDENCY_DIRS.iter().find_map(|suffix| name.strip_suffix(suffix)) else {
                    continue;
                };
                for link in dir_entries(ctx, &format!("{dir}/{name}"), problems) {
                    if links >= MAX_LINKS {
                        problems.add("enabling links not all read", format!("more than {MAX_LINKS}"));
                        return wants;
                    }
                    links += 1;
                    wants.add(&link.to_string_lossy(), wanting);
                }
            }
        }
        wants
    }

    /// Also under the template's name: `getty@tty1.service` enables `getty@.service`.
    fn add(&mut self, unit: &str, wanting: &str) {
        let mut names = vec![unit.to_owned()];
        if let Some((prefix, rest)) = unit.split_once('@')
            && let Some((_, suffix)) = rest.rsplit_once('.')
        {
            names.push(format!("{prefix}@.{suffix}"));
        }
        for name in names {
            let by = self.by_unit.entry(name).or_default();
            if !by.iter().any(|w| w == wanting) {
                by.push(wanting.to_owned());
            }
        }
    }

    fn of(&self, unit: &str) -> &[String] {
        self.by_unit.get(unit).map_or(&[], Vec::as_slice)
    }
}

/// The settings of a unit file the tables show.
#[derive(Debug, Default, PartialEq, Eq)]
struct UnitInfo {
    description: String,
    exec_start: Vec<String>,
    /// `ExecStartPre=…`, `ExecStop=…`, … as `key=value`.
    exec_other: Vec<String>,
    /// An `[Install]` section: the unit can be enabled (otherwise it is static).
    has_install: bool,
    /// The `[Timer]` settings, in file order.
    timer: Vec<(String, String)>,
}

impl UnitInfo {
    /// Parses the first [`PARSE_LIMIT`] bytes: `[Section]` headers, `Key=value` lines,
    /// `#`/`;` comments, and lines continued with a trailing backslash.
    fn parse(file: &File) -> io::Result<Self> {
        let mut lines = Lines::new(BufReader::new(file.take(PARSE_LIMIT.min(COPY_LIMIT))));
        let mut info = Self::default();
        let mut section = String::new();
        let mut pending = String::new();
        while let Some(line) = lines.next_line()? {
            let line = String::from_utf8_lossy(trim_bytes(line)).into_owned();
            if pending.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
                continue;
            }
            if let Some(continued) = line.strip_suffix('\\') {
                pending.push_str(continued);
                pending.push(' ');
                continue;
            }
            let line = std::mem::take(&mut pending) + &line;
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                info.has_install |= section == "Install";
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                info.setting(&section, key.trim(), value.trim());
            }
        }
        Ok(info)
    }

    fn setting(&mut self, section: &str, key: &str, value: &str) {
        match (section, key) {
            ("Unit", "Description") => self.description = value.to_owned(),
            ("Service", "ExecStart") => self.exec_start.push(value.to_owned()),
            ("Service" | "Socket" | "Mount" | "Swap", _) if key.starts_with("Exec") => {
                self.exec_other.push(format!("{key}={value}"));
            }
            ("Timer", _) if TIMER_KEYS.contains(&key) || key == "Unit" => {
                self.timer.push((key.to_owned(), value.to_owned()));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use casefile_package::ItemStatus;
    use sha2::{Digest, Sha256};

    use crate::collectors::persistence::Persistence;
    use crate::collectors::test_support::{Fixture, PASSWD_FIXTURE, run};

    use super::*;

    const SSHD: &str = "[Unit]\nDescription=OpenBSD Secure Shell server\n\n[Service]\nExecStartPre=/usr/sbin/sshd -t\n\
ExecStart=/usr/sbin/sshd -D $SSHD_OPTS\n# ExecStart=/commented/out\n\n[Install]\nWantedBy=multi-user.target\n";

    fn unit_row<'a>(rows: &'a [HashMap<String, String>], path: &str) -> &'a HashMap<String, String> {
        rows.iter().find(|r| r["path"] == path).unwrap_or_else(|| panic!("no row for {path}: {rows:#?}"))
    }

    #[test]
    fn unit_files_parse_sections_comments_and_continuations() {
        let f = Fixture::new();
        f.write(
            "/u.service",
            "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/sh -c \\\n  'echo hi'\n; comment\nExecStop=/bin/true\n",
        );
        let info = UnitInfo::parse(&File::open(f.path("/u.service")).unwrap()).unwrap();
        assert_eq!(info.description, "x");
        assert_eq!(info.exec_start, ["/bin/sh -c  'echo hi'"]);
        assert_eq!(info.exec_other, ["ExecStop=/bin/true"]);
        assert!(!info.has_install);
        assert_eq!(unit_type("a.service"), Some("service"));
        assert_eq!(unit_type(".service"), None);
        assert_eq!(unit_type("README"), None);
        assert_eq!(unit_type("x.conf"), None);
    }

    #[test]
    fn units_get_their_state_exec_lines_and_hash() {
        let f = Fixture::new();
        f.write("/etc/passwd", PASSWD_FIXTURE);
        f.write("/usr/lib/systemd/system/ssh.service", SSHD);
        f.symlink("/usr/lib/systemd/system/ssh.service", "/etc/systemd/system/multi-user.target.wants/ssh.service");
        f.symlink("/usr/lib/systemd/system/ssh.service", "/etc/systemd/system/sshd.service");
        f.write("/usr/lib/systemd/system/rescue.target", "[Unit]\nDescription=Rescue\n");
        f.write(
            "/usr/lib/systemd/system/cups.service",
            "[Service]\nExecStart=/usr/sbin/cupsd\n[Install]\nWantedBy=x\n",
        );
        f.symlink("/dev/null", "/etc/systemd/system/cups.service");
        f.write("/usr/lib/systemd/system/getty@.service", "[Service]\nExecStart=-/sbin/agetty %I\n[Install]\n");
        f.symlink(
            "/usr/lib/systemd/system/getty@.service",
            "/etc/systemd/system/getty.target.wants/getty@tty1.service",
        );
        f.write(
            "/etc/systemd/system/ssh.service.d/override.conf",
            "[Service]\nExecStart=\nExecStart=/tmp/.x/backdoor\n",
        );
        f.write("/etc/systemd/system/README", "not a unit\n");
        // A FIFO named like a unit must not hang the walk.
        f.fifo("/etc/systemd/system/evil.service");
        // A user unit in alice's home, with a hostile name.
        f.write(
            "/home/alice/.config/systemd/user/miner,\"x\"\n.service",
            "[Service]\nExecStart=/home/alice/.m\n[Install]\n",
        );
        f.symlink(
            "../miner,\"x\"\n.service",
            "/home/alice/.config/systemd/user/default.target.wants/miner,\"x\"\n.service",
        );

        f.give_homes();
        let sink = run(&Persistence, f.root());
        let item = sink.item("systemd_units.csv");
        assert_eq!(item.header(), UNITS_HEADER);
        let rows = item.rows();

        let ssh = unit_row(&rows, "/usr/lib/systemd/system/ssh.service");
        assert_eq!(ssh["scope"], "system");
        assert_eq!(ssh["type"], "service");
        assert_eq!(ssh["state"], "enabled");
        assert_eq!(ssh["wanted_by"], "multi-user.target");
        assert_eq!(ssh["description"], "OpenBSD Secure Shell server");
        assert_eq!(ssh["exec_start"], "/usr/sbin/sshd -D $SSHD_OPTS");
        assert_eq!(ssh["exec_other"], "ExecStartPre=/usr/sbin/sshd -t");
        assert_eq!(ssh["sha256"], hex::encode(Sha256::digest(SSHD)));
        assert_eq!(ssh["size"], SSHD.len().to_string());
        assert!(ssh["mtime_utc"].ends_with('Z'));

        let alias = unit_row(&rows, "/etc/systemd/system/sshd.service");
        assert_eq!(alias["state"], "alias");
        assert_eq!(alias["link_target"], "/usr/lib/systemd/system/ssh.service");
        assert_eq!(unit_row(&rows, "/usr/lib/systemd/system/rescue.target")["state"], "static");
        let masked = unit_row(&rows, "/etc/systemd/system/cups.service");
        assert_eq!((masked["state"].as_str(), masked["sha256"].as_str()), ("masked", ""));
        assert_eq!(unit_row(&rows, "/usr/lib/systemd/system/cups.service")["state"], "disabled");
        assert_eq!(unit_row(&rows, "/usr/lib/systemd/system/getty@.service")["state"], "enabled");
        let drop_in = unit_row(&rows, "/etc/systemd/system/ssh.service.d/override.conf");
        assert_eq!(drop_in["unit"], "ssh.service");
        assert_eq!(drop_in["type"], "drop-in");
        assert_eq!(drop_in["exec_start"], "\n/tmp/.x/backdoor");
        assert!(!rows.iter().any(|r| r["path"].ends_with("README")));
        assert!(!rows.iter().any(|r| r["path"].contains(".wants/")));

        let fifo = unit_row(&rows, "/etc/systemd/system/evil.service");
        assert_eq!(fifo["note"], "not a regular file");
        assert_eq!(item.status(), ItemStatus::Partial);

        let miner = unit_row(&rows, "/home/alice/.config/systemd/user/miner,\"x\"\n.service");
        assert_eq!(miner["scope"], "user");
        assert_eq!(miner["user"], "alice");
        assert_eq!(miner["state"], "enabled");
        assert_eq!(miner["wanted_by"], "default.target");
        assert_eq!(miner["exec_start"], "/home/alice/.m");
    }

    #[test]
    fn merged_usr_directories_are_walked_once() {
        let f = Fixture::new();
        f.write("/usr/lib/systemd/system/a.service", "[Service]\nExecStart=/bin/a\n");
        f.symlink("usr/lib", "/lib");
        let rows = run(&Persistence, f.root()).item("systemd_units.csv").rows();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["path"], "/usr/lib/systemd/system/a.service");
    }

    #[test]
    fn timers_list_their_schedule_and_unit() {
        let f = Fixture::new();
        f.write(
            "/usr/lib/systemd/system/apt-daily.timer",
            "[Timer]\nOnCalendar=*-*-* 6,18:00\nRandomizedDelaySec=12h\nPersistent=true\n[Install]\nWantedBy=timers.target\n",
        );
        f.symlink("/usr/lib/systemd/system/apt-daily.timer", "/etc/systemd/system/timers.target.wants/apt-daily.timer");
        f.write(
            "/etc/systemd/system/beacon.timer",
            "[Timer]\nOnBootSec=5min\nOnUnitActiveSec=10min\nUnit=beacon-run.service\n",
        );
        let sink = run(&Persistence, f.root());
        let item = sink.item("timers.csv");
        assert_eq!(item.status(), ItemStatus::Ok);
        assert_eq!(item.header(), TIMERS_HEADER);
        let rows = item.rows();
        let apt = unit_row(&rows, "/usr/lib/systemd/system/apt-daily.timer");
        assert_eq!(apt["timer"], "apt-daily.timer");
        assert_eq!(apt["state"], "enabled");
        assert_eq!(apt["on_calendar"], "*-*-* 6,18:00");
        assert_eq!(apt["persistent"], "true");
        assert_eq!(apt["unit"], "apt-daily.service");
        let beacon = unit_row(&rows, "/etc/systemd/system/beacon.timer");
        assert_eq!(beacon["state"], "static");
        assert_eq!(beacon["on_boot_sec"], "5min");
        assert_eq!(beacon["on_unit_active_sec"], "10min");
        assert_eq!(beacon["unit"], "beacon-run.service");
    }

    #[test]
    fn no_unit_directories_is_not_applicable() {
        let f = Fixture::new();
        let sink = run(&Persistence, f.root());
        assert_eq!(sink.item("systemd_units.csv").status(), ItemStatus::NotApplicable);
        assert_eq!(sink.item("timers.csv").status(), ItemStatus::Ok);
        assert!(sink.item("timers.csv").rows().is_empty());
    }
}
