//! `Containers and VMs/`: running and stopped containers of Docker, Podman, containerd
//! and LXC, and libvirt domains.
//!
//! What the runtimes keep on disk comes first: it is there when a daemon is down (or
//! was stopped by an intruder) and on an image. `containers.csv` merges it, one row per
//! container or domain; the files it was made from are copied under `raw/` within the
//! collector's byte budget. Then, on the live host only, the runtimes' own read-only
//! listings (`docker ps`, `podman ps`, `ctr`, `crictl`, `lxc-ls`, `virsh -r`) go under
//! `commands/`, each with the command time limit, listed in `commands.csv`.
//!
//! Sources, below the root:
//! - Docker: `/var/lib/docker/containers/<id>/{config.v2.json,hostconfig.json}`,
//!   `/var/lib/docker/image/<driver>/repositories.json` (copied only);
//! - Podman: `/var/lib/containers/storage/overlay-containers/containers.json` and its
//!   rootless twin in every home (`~/.local/share/containers/storage/…`), with each
//!   container's OCI `userdata/config.json` for command and mounts;
//! - containerd: the OCI bundles of running tasks,
//!   `/run/containerd/io.containerd.runtime.v2.task/<namespace>/<id>/config.json`;
//! - LXC: `/var/lib/lxc/<name>/config`;
//! - libvirt: `/etc/libvirt/qemu/*.xml` (defined) and `/run/libvirt/qemu/*.xml` (running).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};

use casefile_package::{ItemOutcome, ItemSink, PackageError};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{CollectError, Collector, Context};

use super::accounts::{Home, homes, open_home_file};
use super::command::{CommandLog, LineSplitter, command_line};
use super::common::{
    CANCELLED, Csv, Problems, UniqueNames, copy_head, csv_file, dir_entries, name_part, open_lines, open_regular,
    trim_bytes, unavailable,
};
use super::copies::{Secrets, Stat, scan_for_secret};

pub struct Containers;

const HEADER: [&str; 14] = [
    "runtime",
    "scope",
    "id",
    "name",
    "image",
    "state",
    "command",
    "mounts",
    "created",
    "started",
    "privileged",
    "pid",
    "source",
    "note",
];

const SOURCE: &str = "/var/lib/docker/containers/*/{config.v2.json,hostconfig.json}, \
/var/lib/containers/storage/overlay-containers/containers.json, ~/.local/share/containers/storage/…, \
/run/containerd/io.containerd.runtime.v2.task/*/*/config.json, /var/lib/lxc/*/config, \
/etc/libvirt/qemu/*.xml, /run/libvirt/qemu/*.xml";

/// Most of one runtime file parsed: container configurations are a few KiB; a planted
/// giant is copied (cut) but not parsed.
const PARSE_LIMIT: u64 = 16 << 20;
/// Most raw files copied; past it they are counted in `containers.csv`'s outcome.
const MAX_RAW: usize = 5_000;
/// Most containers `docker inspect` is asked about in one run.
const MAX_INSPECT: usize = 100;
/// Most containerd namespaces listed.
const MAX_NAMESPACES: usize = 32;

const DOCKER: &str = "/var/lib/docker";
const PODMAN_STORAGE: &str = "/var/lib/containers/storage";
const PODMAN_ROOTLESS: &str = ".local/share/containers/storage";
const CONTAINERD_TASKS: &str = "/run/containerd/io.containerd.runtime.v2.task";
const LXC: &str = "/var/lib/lxc";
const LIBVIRT_DEFINED: &str = "/etc/libvirt/qemu";
const LIBVIRT_RUNNING: &str = "/run/libvirt/qemu";

impl Collector for Containers {
    fn name(&self) -> &'static str {
        "containers"
    }

    fn folder(&self) -> &'static str {
        "Containers and VMs"
    }

    fn collect(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        let mut raws = RawFiles::default();
        csv_file(sink, "containers.csv", SOURCE, &HEADER, |csv| {
            let mut scan = Scan { ctx, csv, raws: &mut raws, problems: Problems::default(), rows: 0 };
            scan.docker()?;
            scan.podman()?;
            scan.containerd()?;
            scan.lxc()?;
            scan.libvirt()?;
            if ctx.cancel.is_cancelled() {
                return Ok(ItemOutcome::partial(CANCELLED));
            }
            Ok(scan.outcome())
        })?;
        ctx.check_cancelled()?;
        raws.copy(ctx, &mut UniqueNames::new(sink))?;
        ctx.check_cancelled()?;
        let mut commands = CommandLog::default();
        run_listings(ctx, sink, &mut commands)?;
        commands.write(sink)?;
        ctx.check_cancelled()
    }
}

// ---------------------------------------------------------------------------------------
// Reading runtime files

/// A file a row was made from, to be copied under `raw/`.
#[derive(Debug)]
struct RawFile {
    name: String,
    abs: String,
    /// A file in a user's home: a link is followed only to that user's own file.
    owner: Option<Home>,
}

#[derive(Debug, Default)]
struct RawFiles {
    files: Vec<RawFile>,
    left_out: usize,
}

impl RawFiles {
    fn add(&mut self, name: String, abs: &str, owner: Option<&Home>) {
        if self.files.len() < MAX_RAW {
            self.files.push(RawFile { name, abs: abs.to_owned(), owner: owner.cloned() });
        } else {
            self.left_out += 1;
        }
    }

    /// Copies the files, each within the file cap, all within the collector's budget.
    /// A file holding a private key (a PEM key in a container's environment) is not
    /// copied: `secrets.csv` lists it by name, size and hash.
    fn copy(&self, ctx: &Context, sink: &mut dyn ItemSink) -> Result<(), CollectError> {
        let mut left = ctx.limits.max_total_bytes;
        let mut secrets = Secrets::new(ctx);
        for raw in &self.files {
            ctx.check_cancelled()?;
            if left == 0 {
                sink.file(&raw.name, &raw.abs, |_| {
                    Ok(ItemOutcome::partial(format!(
                        "not copied: the collector's {}-byte budget is used up",
                        ctx.limits.max_total_bytes
                    )))
                })?;
                continue;
            }
            let opened = open_source(ctx, &raw.abs, raw.owner.as_ref()).and_then(|mut file| {
                let scanned = scan_for_secret(&mut file, ctx.limits.max_file_bytes.min(left))?;
                Ok((file, scanned))
            });
            let mut file = match opened {
                Ok((file, Some(scanned))) => Some((file, scanned)),
                Ok((file, None)) => {
                    let stat = file.metadata().map_or(Stat::unknown("file"), |meta| Stat::of(&meta));
                    secrets.record(&raw.abs, stat, Ok(file), "holds a private key");
                    continue;
                }
                Err(e) => {
                    sink.file(&raw.name, &raw.abs, |_| Ok(unavailable(&raw.abs, &e)))?;
                    continue;
                }
            };
            sink.file(&raw.name, &raw.abs, |out| {
                let Some((file, scanned)) = file.take() else {
                    return Ok(ItemOutcome::failed("read twice"));
                };
                let copied = copy_head(file, out, scanned)?;
                left -= copied.bytes;
                Ok(copied.outcome())
            })?;
        }
        secrets.write(sink, "raw runtime files that hold a private key")?;
        if self.left_out > 0 {
            sink.file("raw/left_out", "runtime files past the copy cap", |_| {
                Ok(ItemOutcome::partial(format!("{} more runtime files not copied (cap {MAX_RAW})", self.left_out)))
            })?;
        }
        Ok(())
    }
}

/// Opens a runtime file: a regular file only, and in a home only the user's own.
fn open_source(ctx: &Context, abs: &str, owner: Option<&Home>) -> io::Result<File> {
    match owner {
        Some(home) => open_home_file(&ctx.path(&home.dir), &ctx.path(abs), home.uid),
        None => open_regular(&ctx.path(abs)),
    }
}

/// Reads a runtime file of at most [`PARSE_LIMIT`] bytes and the file cap; a larger one
/// is refused.
fn read_source(ctx: &Context, abs: &str, owner: Option<&Home>) -> Result<Vec<u8>, String> {
    let limit = PARSE_LIMIT.min(ctx.limits.max_file_bytes);
    let file = open_source(ctx, abs, owner).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    file.take(limit + 1).read_to_end(&mut buf).map_err(|e| e.to_string())?;
    if buf.len() as u64 > limit {
        return Err(format!("over the {limit}-byte parse cap, not parsed"));
    }
    Ok(buf)
}

/// A runtime's JSON file parsed into `T`; a cut or hostile file is an error, not a panic
/// (serde_json limits nesting, so no stack overflow either).
fn read_json<T: DeserializeOwned>(ctx: &Context, abs: &str, owner: Option<&Home>) -> Result<T, String> {
    let bytes = read_source(ctx, abs, owner)?;
    serde_json::from_slice(&bytes).map_err(|e| format!("unparseable: {e}"))
}

/// One line of `containers.csv`.
#[derive(Debug, Default)]
struct Row {
    runtime: &'static str,
    scope: String,
    id: String,
    name: String,
    image: String,
    state: String,
    command: String,
    mounts: String,
    created: String,
    started: String,
    privileged: String,
    pid: String,
    source: String,
    note: String,
}

impl Row {
    fn fields(self) -> [String; HEADER.len()] {
        [
            self.runtime.to_owned(),
            self.scope,
            self.id,
            self.name,
            self.image,
            self.state,
            self.command,
            self.mounts,
            self.created,
            self.started,
            self.privileged,
            self.pid,
            self.source,
            self.note,
        ]
    }
}

/// Joins a command and its arguments as a shell would take them.
fn shell_words(words: &[String]) -> String {
    match words.split_first() {
        Some((program, args)) => {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            command_line(program, &args)
        }
        None => String::new(),
    }
}

/// Docker's and Go's zero time means "never".
fn time_or_empty(time: String) -> String {
    if time.starts_with("0001-01-01") { String::new() } else { time }
}

struct Scan<'a, 'w> {
    ctx: &'a Context,
    csv: &'a mut Csv<'w>,
    raws: &'a mut RawFiles,
    problems: Problems,
    rows: usize,
}

impl Scan<'_, '_> {
    fn emit(&mut self, row: Row) -> io::Result<()> {
        if !row.note.is_empty() {
            self.problems.add("containers with unreadable sources", format!("{}: {}", row.source, row.note));
        }
        self.rows += 1;
        self.csv.row(row.fields())
    }

    fn outcome(&self) -> ItemOutcome {
        if self.rows == 0 && self.problems.is_empty() {
            ItemOutcome::not_applicable("no container runtime or libvirt state found")
        } else {
            self.problems.outcome()
        }
    }

    fn cancelled(&self) -> bool {
        self.ctx.cancel.is_cancelled()
    }

    // -----------------------------------------------------------------------------------
    // Docker

    fn docker(&mut self) -> io::Result<()> {
        let dir = format!("{DOCKER}/containers");
        for id in dir_entries(self.ctx, &dir, &mut self.problems) {
            if self.cancelled() {
                return Ok(());
            }
            let id = id.to_string_lossy().into_owned();
            let config = format!("{dir}/{id}/config.v2.json");
            let host = format!("{dir}/{id}/hostconfig.json");
            let folder = format!("raw/docker/{}", name_part(&id));
            self.raws.add(format!("{folder}/config.v2.json"), &config, None);
            self.raws.add(format!("{folder}/hostconfig.json"), &host, None);
            let mut row = Row { runtime: "docker", id: id.clone(), source: config.clone(), ..Row::default() };
            match read_json::<DockerConfig>(self.ctx, &config, None) {
                Ok(c) => c.fill(&mut row),
                Err(e) => row.note = format!("config.v2.json: {e}"),
            }
            match read_json::<DockerHostConfig>(self.ctx, &host, None) {
                Ok(h) => row.privileged = h.privileged.to_string(),
                Err(e) if row.note.is_empty() => row.note = format!("hostconfig.json: {e}"),
                Err(_) => {}
            }
            self.emit(row)?;
        }
        let images = format!("{DOCKER}/image");
        for driver in dir_entries(self.ctx, &images, &mut self.problems) {
            let driver = driver.to_string_lossy().into_owned();
            let abs = format!("{images}/{driver}/repositories.json");
            if self.ctx.path(&abs).symlink_metadata().is_ok() {
                self.raws.add(format!("raw/docker/image/{}/repositories.json", name_part(&driver)), &abs, None);
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Podman

    fn podman(&mut self) -> io::Result<()> {
        self.podman_storage(PODMAN_STORAGE, "root", None)?;
        for home in homes(self.ctx) {
            if self.cancelled() {
                return Ok(());
            }
            let storage = format!("{}/{PODMAN_ROOTLESS}", home.dir.trim_end_matches('/'));
            let label = home.label.clone();
            self.podman_storage(&storage, &label, Some(&home))?;
        }
        Ok(())
    }

    fn podman_storage(&mut self, storage: &str, scope: &str, owner: Option<&Home>) -> io::Result<()> {
        let list = format!("{storage}/overlay-containers/containers.json");
        if self.ctx.path(&list).symlink_metadata().is_err() {
            return Ok(());
        }
        self.raws.add(format!("raw/podman/{}/containers.json", name_part(scope)), &list, owner);
        let containers = match read_json::<Vec<PodmanContainer>>(self.ctx, &list, owner) {
            Ok(containers) => containers,
            Err(e) => {
                let note = format!("containers.json: {e}");
                let row = Row { runtime: "podman", scope: scope.to_owned(), source: list, note, ..Row::default() };
                return self.emit(row);
            }
        };
        for c in containers {
            if self.cancelled() {
                return Ok(());
            }
            let meta: PodmanMetadata = serde_json::from_str(&c.metadata).unwrap_or_default();
            let mut row = Row {
                runtime: "podman",
                scope: scope.to_owned(),
                name: if meta.name.is_empty() { c.names.join(",") } else { meta.name },
                image: if meta.image_name.is_empty() { c.image } else { meta.image_name },
                created: c.created,
                source: list.clone(),
                ..Row::default()
            };
            // The OCI bundle of the container: what it runs and what it mounts.
            let bundle = format!("{storage}/overlay-containers/{}/userdata/config.json", c.id);
            // An id that could climb out of the storage directory is not followed.
            let plain_id = !c.id.is_empty() && !c.id.contains('/') && c.id != "..";
            if plain_id && let Ok(spec) = read_json::<OciSpec>(self.ctx, &bundle, owner) {
                spec.fill(&mut row);
                let name = format!("raw/podman/{}/{}/config.json", name_part(scope), name_part(&c.id));
                self.raws.add(name, &bundle, owner);
            }
            row.id = c.id;
            self.emit(row)?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // containerd

    fn containerd(&mut self) -> io::Result<()> {
        for ns in dir_entries(self.ctx, CONTAINERD_TASKS, &mut self.problems) {
            let ns = ns.to_string_lossy().into_owned();
            let ns_dir = format!("{CONTAINERD_TASKS}/{ns}");
            for id in dir_entries(self.ctx, &ns_dir, &mut self.problems) {
                if self.cancelled() {
                    return Ok(());
                }
                let id = id.to_string_lossy().into_owned();
                let config = format!("{ns_dir}/{id}/config.json");
                self.raws.add(
                    format!("raw/containerd/{}/{}/config.json", name_part(&ns), name_part(&id)),
                    &config,
                    None,
                );
                // A task bundle exists while the task does.
                let mut row = Row {
                    runtime: "containerd",
                    scope: ns.clone(),
                    id,
                    state: "running".to_owned(),
                    source: config.clone(),
                    ..Row::default()
                };
                match read_json::<OciSpec>(self.ctx, &config, None) {
                    Ok(spec) => spec.fill(&mut row),
                    Err(e) => row.note = format!("config.json: {e}"),
                }
                self.emit(row)?;
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // LXC

    fn lxc(&mut self) -> io::Result<()> {
        for name in dir_entries(self.ctx, LXC, &mut self.problems) {
            if self.cancelled() {
                return Ok(());
            }
            let name = name.to_string_lossy().into_owned();
            let config = format!("{LXC}/{name}/config");
            if !self.ctx.path(&format!("{LXC}/{name}")).is_dir() {
                continue;
            }
            self.raws.add(format!("raw/lxc/{}/config", name_part(&name)), &config, None);
            let mut row =
                Row { runtime: "lxc", name: name.clone(), id: name, source: config.clone(), ..Row::default() };
            match lxc_config(self.ctx, &config) {
                Ok(settings) => {
                    let get = |keys: &[&str]| {
                        settings.iter().find(|(k, _)| keys.contains(&k.as_str())).map(|(_, v)| v.clone())
                    };
                    row.image = get(&["lxc.rootfs.path", "lxc.rootfs"]).unwrap_or_default();
                    row.command = get(&["lxc.init.cmd", "lxc.execute.cmd", "lxc.init_cmd"]).unwrap_or_default();
                    row.mounts = settings
                        .iter()
                        .filter(|(k, _)| k == "lxc.mount.entry")
                        .map(|(_, v)| v.as_str())
                        .collect::<Vec<_>>()
                        .join("; ");
                }
                Err(e) => row.note = format!("config: {e}"),
            }
            self.emit(row)?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // libvirt

    fn libvirt(&mut self) -> io::Result<()> {
        for (dir, running) in [(LIBVIRT_DEFINED, false), (LIBVIRT_RUNNING, true)] {
            for file in dir_entries(self.ctx, dir, &mut self.problems) {
                if self.cancelled() {
                    return Ok(());
                }
                let file = file.to_string_lossy().into_owned();
                if !file.ends_with(".xml") {
                    continue;
                }
                let abs = format!("{dir}/{file}");
                let kind = if running { "running" } else { "defined" };
                self.raws.add(format!("raw/libvirt/{kind}/{}", name_part(&file)), &abs, None);
                let mut row = Row {
                    runtime: "libvirt",
                    state: if running { "running" } else { "defined" }.to_owned(),
                    source: abs.clone(),
                    ..Row::default()
                };
                match read_source(self.ctx, &abs, None) {
                    Ok(bytes) => Domain::parse(&String::from_utf8_lossy(&bytes)).fill(&mut row),
                    Err(e) => row.note = e,
                }
                if row.name.is_empty() && row.note.is_empty() {
                    row.note = "no <name> in the domain XML".to_owned();
                }
                self.emit(row)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Docker's files

/// The parts of `config.v2.json` the table shows; unknown fields are ignored, a field of
/// the wrong type fails the parse (the row then says why).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct DockerConfig {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    image: String,
    created: String,
    path: String,
    args: Option<Vec<String>>,
    config: DockerInner,
    state: DockerState,
    mount_points: Option<BTreeMap<String, DockerMount>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct DockerInner {
    image: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct DockerState {
    running: bool,
    paused: bool,
    restarting: bool,
    dead: bool,
    pid: i64,
    started_at: String,
    finished_at: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct DockerMount {
    source: String,
    destination: String,
    #[serde(rename = "RW")]
    rw: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct DockerHostConfig {
    privileged: bool,
}

impl DockerConfig {
    fn fill(self, row: &mut Row) {
        if !self.id.is_empty() && self.id != row.id {
            row.note = format!("config.v2.json names another id: {}", self.id);
        }
        row.name = self.name.trim_start_matches('/').to_owned();
        row.image = if self.config.image.is_empty() { self.image } else { self.config.image };
        let s = &self.state;
        row.state = if s.running && s.paused {
            "paused"
        } else if s.restarting {
            "restarting"
        } else if s.running {
            "running"
        } else if s.dead {
            "dead"
        } else if time_or_empty(s.finished_at.clone()).is_empty() {
            "created"
        } else {
            "exited"
        }
        .to_owned();
        if s.running && s.pid > 0 {
            row.pid = s.pid.to_string();
        }
        let mut words = vec![self.path];
        words.extend(self.args.unwrap_or_default());
        row.command = if words[0].is_empty() { String::new() } else { shell_words(&words) };
        row.mounts = self
            .mount_points
            .unwrap_or_default()
            .into_values()
            .map(|m| format!("{}:{}:{}", m.source, m.destination, if m.rw { "rw" } else { "ro" }))
            .collect::<Vec<_>>()
            .join("; ");
        row.created = time_or_empty(self.created);
        row.started = time_or_empty(self.state.started_at);
    }
}

// ---------------------------------------------------------------------------------------
// Podman's and containerd's files

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PodmanContainer {
    id: String,
    names: Vec<String>,
    image: String,
    /// JSON in a string.
    metadata: String,
    created: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PodmanMetadata {
    #[serde(rename = "image-name")]
    image_name: String,
    name: String,
}

/// The parts of an OCI runtime bundle's `config.json` the table shows.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OciSpec {
    process: OciProcess,
    mounts: Vec<OciMount>,
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OciProcess {
    args: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OciMount {
    destination: String,
    source: String,
    #[serde(rename = "type")]
    kind: String,
}

impl OciSpec {
    fn fill(self, row: &mut Row) {
        row.command = shell_words(&self.process.args);
        row.mounts = self
            .mounts
            .iter()
            // The standard pseudo file systems every container has say nothing.
            .filter(|m| !matches!(m.kind.as_str(), "proc" | "sysfs" | "tmpfs" | "devpts" | "mqueue" | "cgroup"))
            .map(|m| format!("{}:{}", m.source, m.destination))
            .collect::<Vec<_>>()
            .join("; ");
        let annotation = |keys: &[&str]| keys.iter().find_map(|k| self.annotations.get(*k)).cloned();
        if row.image.is_empty() {
            row.image = annotation(&["io.kubernetes.cri.image-name"]).unwrap_or_default();
        }
        if row.name.is_empty() {
            row.name =
                annotation(&["io.kubernetes.cri.container-name", "io.kubernetes.container.name"]).unwrap_or_default();
        }
    }
}

// ---------------------------------------------------------------------------------------
// LXC's and libvirt's files

/// Most lines of an LXC configuration read.
const LXC_LINES: usize = 10_000;

/// The `key = value` lines of an LXC configuration, in order.
fn lxc_config(ctx: &Context, abs: &str) -> io::Result<Vec<(String, String)>> {
    let mut lines = open_lines(&ctx.path(abs))?;
    let mut settings = Vec::new();
    while let Some(line) = lines.next_line()? {
        if settings.len() >= LXC_LINES {
            break;
        }
        let line = trim_bytes(line);
        if line.starts_with(b"#") {
            continue;
        }
        let Some(eq) = line.iter().position(|&b| b == b'=') else {
            continue;
        };
        let key = String::from_utf8_lossy(trim_bytes(&line[..eq])).into_owned();
        let value = String::from_utf8_lossy(trim_bytes(&line[eq + 1..])).into_owned();
        settings.push((key, value));
    }
    Ok(settings)
}

/// What a libvirt domain XML says, found by a light scan rather than a full XML parse:
/// the file itself is copied for anything more.
#[derive(Debug, Default, PartialEq, Eq)]
struct Domain {
    name: String,
    uuid: String,
    emulator: String,
    disks: Vec<String>,
    shared_dirs: Vec<String>,
    /// From the `<domstatus state='…' pid='…'>` wrapper of a running domain's file.
    state: String,
    pid: String,
}

/// Most disks or shared directories kept per domain.
const MAX_DEVICES: usize = 64;

impl Domain {
    fn parse(xml: &str) -> Self {
        let mut domain = Self {
            name: element_text(xml, "name").unwrap_or_default(),
            uuid: element_text(xml, "uuid").unwrap_or_default(),
            emulator: element_text(xml, "emulator").unwrap_or_default(),
            ..Self::default()
        };
        if let Some(status) = start_tag(xml, "domstatus") {
            domain.state = attribute(status, "state").unwrap_or_default();
            domain.pid = attribute(status, "pid").unwrap_or_default();
        }
        let mut rest = xml;
        while let Some(at) = rest.find("<source ") {
            let tag = start_tag(&rest[at..], "source").unwrap_or_default();
            rest = &rest[at + 1..];
            if let Some(file) = attribute(tag, "file").or_else(|| attribute(tag, "dev")) {
                if domain.disks.len() < MAX_DEVICES {
                    domain.disks.push(file);
                }
            } else if let Some(dir) = attribute(tag, "dir")
                && domain.shared_dirs.len() < MAX_DEVICES
            {
                domain.shared_dirs.push(dir);
            }
        }
        domain
    }

    fn fill(self, row: &mut Row) {
        row.name = self.name;
        row.id = self.uuid;
        row.command = self.emulator;
        row.image = self.disks.join("; ");
        row.mounts = self.shared_dirs.join("; ");
        if !self.state.is_empty() {
            row.state = self.state;
        }
        row.pid = self.pid;
    }
}

/// The text of the first `<tag>…</tag>`, entities decoded.
fn element_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(unescape(xml[start..end].trim()))
}

/// The first start tag `<tag …>`, without its brackets.
fn start_tag<'x>(xml: &'x str, tag: &str) -> Option<&'x str> {
    let open = format!("<{tag} ");
    let start = xml.find(&open)? + 1;
    let end = xml[start..].find('>')? + start;
    Some(&xml[start..end])
}

/// The value of `name='…'` or `name="…"` in a start tag.
fn attribute(tag: &str, name: &str) -> Option<String> {
    for quote in ['\'', '"'] {
        let key = format!(" {name}={quote}");
        if let Some(at) = tag.find(&key) {
            let start = at + key.len();
            let end = tag[start..].find(quote)? + start;
            return Some(unescape(&tag[start..end]));
        }
    }
    None
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

// ---------------------------------------------------------------------------------------
// The runtimes' own listings (live host only)

const DOCKER_BIN: &[&str] = &["/usr/bin/docker", "/usr/local/bin/docker", "/snap/bin/docker"];
const PODMAN_BIN: &[&str] = &["/usr/bin/podman", "/usr/local/bin/podman"];
const CTR_BIN: &[&str] = &["/usr/bin/ctr", "/usr/local/bin/ctr"];
const CRICTL_BIN: &[&str] = &["/usr/bin/crictl", "/usr/local/bin/crictl"];
const LXC_LS_BIN: &[&str] = &["/usr/bin/lxc-ls", "/usr/local/bin/lxc-ls"];
const VIRSH_BIN: &[&str] = &["/usr/bin/virsh", "/usr/local/bin/virsh"];

/// Read-only listings only: nothing here starts, stops or changes a container.
fn run_listings(ctx: &Context, sink: &mut dyn ItemSink, log: &mut CommandLog) -> Result<(), CollectError> {
    let ps_args = ["ps", "-a", "--no-trunc", "--format", "{{json .}}"];
    let ids = output_lines(ctx, sink, log, "commands/docker_ps.jsonl", (DOCKER_BIN, &ps_args), docker_ps_id)?;
    if !ids.is_empty() {
        let mut args = vec!["inspect"];
        args.extend(ids.iter().take(MAX_INSPECT).map(String::as_str));
        log.service_listing(ctx, sink, "commands/docker_inspect.json", DOCKER_BIN, &args)?;
    }
    ctx.check_cancelled()?;
    log.service_listing(ctx, sink, "commands/podman_ps.json", PODMAN_BIN, &["ps", "-a", "--format", "json"])?;
    ctx.check_cancelled()?;
    let namespaces =
        output_lines(ctx, sink, log, "commands/ctr_namespaces.txt", (CTR_BIN, &["namespaces", "list", "-q"]), |l| {
            plain_name(l).then(|| String::from_utf8_lossy(l).into_owned())
        })?;
    for ns in namespaces.iter().take(MAX_NAMESPACES) {
        ctx.check_cancelled()?;
        let name = format!("commands/ctr_containers_{}.txt", name_part(ns));
        log.service_listing(ctx, sink, &name, CTR_BIN, &["-n", ns, "containers", "list"])?;
    }
    ctx.check_cancelled()?;
    log.service_listing(ctx, sink, "commands/crictl_ps.json", CRICTL_BIN, &["ps", "-a", "-o", "json"])?;
    ctx.check_cancelled()?;
    log.service_listing(ctx, sink, "commands/lxc-ls.txt", LXC_LS_BIN, &["-f"])?;
    ctx.check_cancelled()?;
    // `-r`: a read-only connection to libvirtd.
    log.service_listing(ctx, sink, "commands/virsh_list.txt", VIRSH_BIN, &["-r", "list", "--all"])?;
    ctx.check_cancelled()?;
    Ok(())
}

/// Runs a listing into package file `name` and hands each output line to `pick`, which
/// returns what a follow-up command needs (an id, a namespace). At most
/// [`MAX_INSPECT`] values are kept.
fn output_lines(
    ctx: &Context,
    sink: &mut dyn ItemSink,
    log: &mut CommandLog,
    name: &str,
    (candidates, args): (&[&str], &[&str]),
    pick: fn(&[u8]) -> Option<String>,
) -> Result<Vec<String>, PackageError> {
    let mut picked = Vec::new();
    let source = command_line(candidates[0], args);
    sink.file(name, &source, |out| {
        let mut lines = LineSplitter::new(|line: &[u8]| {
            if picked.len() < MAX_INSPECT
                && let Some(value) = pick(line)
            {
                picked.push(value);
            }
            Ok(())
        });
        let mut tee = Tee { out, copy: &mut lines };
        let outcome = log.run(ctx, (candidates, args), name, ctx.limits.max_file_bytes, &mut tee)?;
        lines.finish()?;
        Ok(log.service_outcome(outcome))
    })?;
    Ok(picked)
}

/// Writes to the package and to a line reader at once.
struct Tee<'a, W: Write> {
    out: &'a mut dyn Write,
    copy: &'a mut W,
}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write_all(buf)?;
        self.copy.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The container id of a `docker ps --format '{{json .}}'` line, if it is one: only
/// hexadecimal ids go on to `docker inspect`, so no output can become an option.
fn docker_ps_id(line: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct PsLine {
        #[serde(rename = "ID")]
        id: String,
    }
    let id = serde_json::from_slice::<PsLine>(line).ok()?.id;
    (id.len() >= 12 && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// A containerd namespace name: letters, digits, `.`, `_`, `-`, not starting with `-`.
fn plain_name(line: &[u8]) -> bool {
    let line = trim_bytes(line);
    !line.is_empty()
        && line.len() <= 76
        && line[0] != b'-'
        && line.iter().all(|b| b.is_ascii_alphanumeric() || b".-_".contains(b))
}

#[cfg(test)]
mod tests;
