use super::*;
use crate::Limits;
use crate::collectors::test_support::{Fixture, MemorySink, PASSWD_FIXTURE, find_row, run, run_live, run_with};
use casefile_package::ItemStatus;

const WEB_ID: &str = "4f1c2a9e8b7d6c5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f";

fn docker_config(id: &str, name: &str) -> String {
    serde_json::json!({
        "ID": id,
        "Name": name,
        "Image": "sha256:abcdef",
        "Created": "2026-12-01T10:00:00.123Z",
        "Path": "/docker-entrypoint.sh",
        "Args": ["nginx", "-g", "daemon off;"],
        "Config": {"Image": "nginx:1.27", "Cmd": ["nginx"], "Entrypoint": null},
        "State": {"Running": true, "Paused": false, "Pid": 4242,
                  "StartedAt": "2026-12-01T10:00:01Z", "FinishedAt": "0001-01-01T00:00:00Z"},
        "MountPoints": {
            "/data": {"Source": "/srv/data", "Destination": "/data", "RW": true},
            "/etc/cfg": {"Source": "/srv/cfg", "Destination": "/etc/cfg", "RW": false}
        },
        "SomethingNew": {"deep": [1, 2, 3]}
    })
    .to_string()
}

fn docker_fixture(f: &Fixture) {
    let dir = format!("/var/lib/docker/containers/{WEB_ID}");
    f.write(&format!("{dir}/config.v2.json"), docker_config(WEB_ID, "/web\n../../evil"));
    f.write(&format!("{dir}/hostconfig.json"), r#"{"Privileged": true, "Binds": ["/srv/data:/data"]}"#);
    // Cut off mid-way, as by a full disk or a kill during a write.
    let full = docker_config("b2", "/cut");
    f.write("/var/lib/docker/containers/b2/config.v2.json", &full[..full.len() / 2]);
    f.fifo("/var/lib/docker/containers/c3/config.v2.json");
    f.write(
        "/var/lib/docker/containers/d4/config.v2.json",
        r#"{"ID":"d4","Name":"/old","Config":{"Image":"busybox"},"State":{"Running":false,"FinishedAt":"2026-11-30T00:00:00Z"},"Path":""}"#,
    );
    f.write(
        "/var/lib/docker/image/overlay2/repositories.json",
        r#"{"Repositories":{"nginx":{"nginx:1.27":"sha256:abcdef"}}}"#,
    );
}

#[test]
fn docker_containers_are_read_from_disk_with_hostile_and_cut_files_noted() {
    let f = Fixture::new();
    docker_fixture(&f);
    let sink = run(&Containers, f.root());
    let item = sink.item("containers.csv");
    assert_eq!(item.status(), ItemStatus::Partial, "{:?}", item.outcome);
    assert_eq!(item.header(), HEADER);
    let rows = item.rows();
    assert_eq!(rows.len(), 4, "{rows:?}");

    let web = find_row(&rows, "id", WEB_ID);
    assert_eq!(web["runtime"], "docker");
    assert_eq!(web["name"], "web\n../../evil");
    assert_eq!(web["image"], "nginx:1.27");
    assert_eq!(web["state"], "running");
    assert_eq!(web["pid"], "4242");
    assert_eq!(web["command"], "/docker-entrypoint.sh nginx -g 'daemon off;'");
    assert_eq!(web["mounts"], "/srv/data:/data:rw; /srv/cfg:/etc/cfg:ro");
    assert_eq!(web["created"], "2026-12-01T10:00:00.123Z");
    assert_eq!(web["started"], "2026-12-01T10:00:01Z");
    assert_eq!(web["privileged"], "true");
    assert_eq!(web["note"], "");
    assert_eq!(web["source"], format!("/var/lib/docker/containers/{WEB_ID}/config.v2.json"));

    let cut = find_row(&rows, "id", "b2");
    assert!(cut["note"].starts_with("config.v2.json: unparseable: EOF"), "{cut:?}");
    assert_eq!(cut["name"], "");
    let fifo = find_row(&rows, "id", "c3");
    assert_eq!(fifo["note"], "config.v2.json: not a regular file");
    let old = find_row(&rows, "id", "d4");
    assert_eq!((old["state"].as_str(), old["image"].as_str(), old["command"].as_str()), ("exited", "busybox", ""));
    assert_eq!(old["pid"], "");

    assert_eq!(sink.item(&format!("raw/docker/{WEB_ID}/config.v2.json")).status(), ItemStatus::Ok);
    assert!(sink.item(&format!("raw/docker/{WEB_ID}/hostconfig.json")).text().contains("Privileged"));
    assert_eq!(sink.item("raw/docker/b2/config.v2.json").status(), ItemStatus::Ok, "copied as it is");
    assert_eq!(sink.item("raw/docker/c3/config.v2.json").status(), ItemStatus::Failed);
    assert_eq!(sink.item("raw/docker/c3/hostconfig.json").status(), ItemStatus::NotApplicable);
    assert!(sink.item("raw/docker/image/overlay2/repositories.json").text().contains("nginx:1.27"));
    // Below a fixture root no program runs.
    assert_eq!(sink.item("commands/docker_ps.jsonl").status(), ItemStatus::NotApplicable);
    assert_eq!(sink.item("commands.csv").status(), ItemStatus::NotApplicable);
    assert!(!sink.names().contains(&"commands/docker_inspect.json"));
}

#[test]
fn a_config_over_the_file_cap_is_copied_cut_and_not_parsed() {
    let f = Fixture::new();
    let mut big = docker_config("e5", "/big");
    big.push_str(&" ".repeat(10_000));
    f.write("/var/lib/docker/containers/e5/config.v2.json", &big);
    let limits = Limits { max_file_bytes: 4096, ..Limits::default() };
    let sink = run_with(&Containers, f.root(), limits);
    let row = &sink.item("containers.csv").rows()[0];
    assert_eq!(row["note"], "config.v2.json: over the 4096-byte parse cap, not parsed");
    let raw = sink.item("raw/docker/e5/config.v2.json");
    assert_eq!(raw.status(), ItemStatus::Partial);
    assert_eq!(raw.bytes.len(), 4096);
}

#[test]
fn the_total_budget_stops_raw_copies() {
    let f = Fixture::new();
    docker_fixture(&f);
    let limits = Limits { max_total_bytes: 100, ..Limits::default() };
    let sink = run_with(&Containers, f.root(), limits);
    let raws: Vec<&crate::collectors::test_support::MemItem> =
        sink.items.iter().filter(|i| i.name.starts_with("raw/")).collect();
    let total: usize = raws.iter().map(|i| i.bytes.len()).sum();
    assert!(total <= 100, "{total}");
    assert!(raws.iter().any(|i| i.outcome.error.as_deref().is_some_and(|e| e.contains("budget is used up"))));
    assert_eq!(sink.item("containers.csv").rows().len(), 4, "the table is made whatever the budget");
}

fn oci_config(args: &[&str]) -> String {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": args, "cwd": "/"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/srv", "type": "bind", "source": "/home/alice/srv", "options": ["rbind"]}
        ],
        "annotations": {"io.kubernetes.cri.image-name": "registry.k8s.io/pause:3.9",
                        "io.kubernetes.cri.container-name": "pause"}
    })
    .to_string()
}

#[test]
fn podman_root_and_rootless_storage_and_containerd_tasks() {
    let f = Fixture::new();
    f.write("/etc/passwd", PASSWD_FIXTURE);
    let metadata = serde_json::json!({"image-name": "docker.io/library/alpine:latest", "name": "box",
                                       "created-at": 1_700_000_000})
    .to_string();
    f.write(
        "/var/lib/containers/storage/overlay-containers/containers.json",
        serde_json::json!([
            {"id": "aa11", "names": ["box"], "image": "img1", "metadata": metadata, "created": "2026-12-02T00:00:00Z"},
            {"id": "../../../etc", "names": ["sneaky"], "image": "img2", "metadata": "not json"}
        ])
        .to_string(),
    );
    f.write(
        "/var/lib/containers/storage/overlay-containers/aa11/userdata/config.json",
        oci_config(&["/bin/sh", "-c", "sleep 1d"]),
    );
    f.write(
        "/home/alice/.local/share/containers/storage/overlay-containers/containers.json",
        r#"[{"id":"bb22","names":["alicebox"],"image":"img3","metadata":"{}"}]"#,
    );
    f.mkdir("/home/bob");
    // bob links his rootless list to a file of root's: it must not be read or copied.
    f.write("/etc/secret", "root:secret\n");
    f.symlink(f.path("/etc/secret"), "/home/bob/.local/share/containers/storage/overlay-containers/containers.json");
    std::os::unix::fs::lchown(
        f.path("/home/bob/.local/share/containers/storage/overlay-containers/containers.json"),
        Some(1001),
        Some(1001),
    )
    .unwrap();
    f.write("/run/containerd/io.containerd.runtime.v2.task/k8s.io/cc33/config.json", oci_config(&["/pause"]));
    f.write("/run/containerd/io.containerd.runtime.v2.task/moby/dd44/config.json", "{\"process\": {\"args\": [");
    // alice links her container's folder to root's docker credentials: the folder is
    // below her home, so the link is refused, whatever it points to.
    f.write("/root/.docker/config.json", r#"{"auths":{"x":{"auth":"DOCKERMARK"}}}"#);
    f.symlink(f.path("/root/.docker"), "/home/alice/.local/share/containers/storage/overlay-containers/bb22/userdata");
    f.give_homes();

    let sink = run(&Containers, f.root());
    crate::collectors::copies::testing::assert_nowhere(&sink, "DOCKERMARK");
    assert!(!sink.names().contains(&"raw/podman/alice/bb22/config.json"), "{:?}", sink.names());
    let rows = sink.item("containers.csv").rows();
    let box_row = find_row(&rows, "id", "aa11");
    assert_eq!(box_row["runtime"], "podman");
    assert_eq!(box_row["scope"], "root");
    assert_eq!(box_row["name"], "box");
    assert_eq!(box_row["image"], "docker.io/library/alpine:latest");
    assert_eq!(box_row["command"], "/bin/sh -c 'sleep 1d'");
    assert_eq!(box_row["mounts"], "/home/alice/srv:/srv");
    assert_eq!(box_row["created"], "2026-12-02T00:00:00Z");
    let sneaky = find_row(&rows, "id", "../../../etc");
    assert_eq!((sneaky["name"].as_str(), sneaky["image"].as_str(), sneaky["command"].as_str()), ("sneaky", "img2", ""));
    let alice = find_row(&rows, "id", "bb22");
    assert_eq!((alice["scope"].as_str(), alice["name"].as_str()), ("alice", "alicebox"));
    let bob = find_row(&rows, "scope", "bob");
    assert!(bob["note"].contains("reached through a symbolic link"), "{bob:?}");
    assert!(sink.names().iter().all(|n| !n.contains("raw/podman/bob") || sink.item(n).bytes.is_empty()));
    assert!(sink.items.iter().all(|i| !String::from_utf8_lossy(&i.bytes).contains("root:secret")));

    let pause = find_row(&rows, "id", "cc33");
    assert_eq!(pause["runtime"], "containerd");
    assert_eq!(pause["scope"], "k8s.io");
    assert_eq!(pause["state"], "running");
    assert_eq!(pause["image"], "registry.k8s.io/pause:3.9");
    assert_eq!(pause["name"], "pause");
    assert_eq!(pause["command"], "/pause");
    assert!(find_row(&rows, "id", "dd44")["note"].contains("unparseable"));
    assert_eq!(sink.item("raw/podman/root/containers.json").status(), ItemStatus::Ok);
    assert_eq!(sink.item("raw/podman/root/aa11/config.json").status(), ItemStatus::Ok);
    assert_eq!(sink.item("raw/containerd/k8s.io/cc33/config.json").status(), ItemStatus::Ok);
}

#[test]
fn lxc_containers_and_libvirt_domains() {
    let f = Fixture::new();
    f.write(
        "/var/lib/lxc/web\nname/config",
        "# comment\nlxc.uts.name = web\nlxc.rootfs.path = dir:/var/lib/lxc/web/rootfs\n\
lxc.mount.entry = /srv srv none bind 0 0\nlxc.mount.entry = /tmp tmp none bind 0 0\nlxc.init.cmd = /sbin/init --x\n",
    );
    f.mkdir("/var/lib/lxc/empty");
    f.write(
        "/etc/libvirt/qemu/vm1.xml",
        "<domain type='kvm'>\n  <name>vm&amp;1</name>\n  <uuid>1b4e28ba-2fa1-11d2-883f-0016d3cca427</uuid>\n\
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\n\
  <disk type='file'><source file='/var/lib/libvirt/images/vm1.qcow2'/></disk>\n\
  <filesystem type='mount'><source dir=\"/srv/share\"/></filesystem></devices>\n</domain>\n",
    );
    f.write(
        "/run/libvirt/qemu/vm1.xml",
        "<domstatus state='running' reason='booted' pid='777'>\n<domain type='kvm'><name>vm&amp;1</name>\
<uuid>1b4e28ba-2fa1-11d2-883f-0016d3cca427</uuid></domain></domstatus>\n",
    );
    f.write("/etc/libvirt/qemu/broken.xml", "<domain><name>never closed");
    f.write("/etc/libvirt/qemu/notes.txt", "not a domain");
    let sink = run(&Containers, f.root());
    let rows = sink.item("containers.csv").rows();
    let web = find_row(&rows, "id", "web\nname");
    assert_eq!(web["runtime"], "lxc");
    assert_eq!(web["image"], "dir:/var/lib/lxc/web/rootfs");
    assert_eq!(web["mounts"], "/srv srv none bind 0 0; /tmp tmp none bind 0 0");
    assert_eq!(web["command"], "/sbin/init --x");
    assert!(find_row(&rows, "id", "empty")["note"].contains("config"));
    assert_eq!(sink.item("raw/lxc/web\nname/config").status(), ItemStatus::Ok);

    let vms: Vec<_> = rows.iter().filter(|r| r["runtime"] == "libvirt").collect();
    assert_eq!(vms.len(), 3, "{vms:?}");
    let defined = vms.iter().find(|r| r["state"] == "defined" && r["name"] == "vm&1").unwrap();
    assert_eq!(defined["id"], "1b4e28ba-2fa1-11d2-883f-0016d3cca427");
    assert_eq!(defined["image"], "/var/lib/libvirt/images/vm1.qcow2");
    assert_eq!(defined["mounts"], "/srv/share");
    assert_eq!(defined["command"], "/usr/bin/qemu-system-x86_64");
    let running = vms.iter().find(|r| r["state"] == "running").unwrap();
    assert_eq!((running["name"].as_str(), running["pid"].as_str()), ("vm&1", "777"));
    let broken = vms.iter().find(|r| r["source"] == "/etc/libvirt/qemu/broken.xml").unwrap();
    assert_eq!(broken["note"], "no <name> in the domain XML");
    assert_eq!(sink.item("raw/libvirt/running/vm1.xml").status(), ItemStatus::Ok);
}

#[test]
fn nothing_found_is_not_applicable() {
    let f = Fixture::new();
    let sink = run(&Containers, f.root());
    assert_eq!(sink.item("containers.csv").status(), ItemStatus::NotApplicable);
    assert!(sink.item("containers.csv").rows().is_empty());
}

#[test]
fn only_plain_ids_and_namespaces_reach_a_follow_up_command() {
    assert_eq!(docker_ps_id(format!(r#"{{"ID":"{WEB_ID}","Names":"web"}}"#).as_bytes()), Some(WEB_ID.to_owned()));
    assert_eq!(docker_ps_id(br#"{"ID":"--format=x"}"#), None);
    assert_eq!(docker_ps_id(br#"{"ID":"abc"}"#), None);
    assert_eq!(docker_ps_id(b"{\"ID\":"), None);
    assert!(plain_name(b"k8s.io\n"));
    assert!(!plain_name(b"-n"));
    assert!(!plain_name(b"a b"));
}

#[test]
fn domain_scan_survives_garbage() {
    for xml in ["", "<", "<source ", "<source file='x", "<domstatus ", "<name></name", "<source dir=\"\u{fffd}\">"] {
        let _ = Domain::parse(xml);
    }
    assert_eq!(Domain::parse("<source dev='/dev/sdb'/>").disks, ["/dev/sdb"]);
}

#[test]
fn the_live_host_is_listed_and_programs_recorded() {
    let sink: MemorySink = run_live(&Containers);
    let item = sink.item("containers.csv");
    assert_ne!(item.status(), ItemStatus::Failed, "{:?}", item.outcome);
    let docker = DOCKER_BIN.iter().any(|p| std::path::Path::new(p).is_file());
    let commands = sink.item("commands.csv");
    if docker {
        let rows = commands.rows();
        let ps = find_row(&rows, "output", "commands/docker_ps.jsonl");
        assert!(ps["command_line"].ends_with("docker ps -a --no-trunc --format '{{json .}}'"), "{ps:?}");
    } else {
        assert_eq!(sink.item("commands/docker_ps.jsonl").status(), ItemStatus::NotApplicable);
    }
}

/// The listing-then-follow-up path with a real program standing in for `docker ps`:
/// the output is kept whole and only plain ids are picked for `docker inspect`.
#[test]
fn listing_output_is_kept_and_plain_ids_picked() {
    let ctx = Context::live(tokio_util::sync::CancellationToken::new());
    let mut sink = MemorySink::default();
    let mut log = CommandLog::default();
    let script = format!(r#"printf '{{"ID":"{WEB_ID}"}}\n{{"ID":"--rm"}}\nnot json\n{{"ID":"{WEB_ID}"}}'"#);
    let ids =
        output_lines(&ctx, &mut sink, &mut log, "commands/ps.jsonl", (&["/bin/sh"], &["-c", &script]), docker_ps_id)
            .unwrap();
    assert_eq!(ids, [WEB_ID, WEB_ID], "the last line needs no newline");
    let item = sink.item("commands/ps.jsonl");
    assert_eq!(item.status(), ItemStatus::Ok);
    assert_eq!(item.text().lines().count(), 4);
    log.write(&mut sink).unwrap();
    assert_eq!(sink.item("commands.csv").rows()[0]["output"], "commands/ps.jsonl");
}

/// A container started with a PEM key in its environment: its configuration is not
/// copied, `secrets.csv` lists it by hash, and the row is still made from it.
#[test]
fn a_raw_configuration_holding_a_private_key_is_listed_by_hash_only() {
    use sha2::{Digest, Sha256};
    let f = Fixture::new();
    let id = "e5";
    let config = serde_json::json!({
        "ID": id, "Name": "/keyed", "Config": {"Image": "app:1",
            "Env": ["TLS_KEY=-----BEGIN PRIVATE KEY-----\nPEMMARK\n-----END PRIVATE KEY-----", "PORT=80"]},
        "State": {"Running": false}, "Path": "/app"
    })
    .to_string();
    let abs = format!("/var/lib/docker/containers/{id}/config.v2.json");
    f.write(&abs, &config);
    f.write(&format!("/var/lib/docker/containers/{id}/hostconfig.json"), r#"{"Privileged": false}"#);
    let sink = run(&Containers, f.root());
    crate::collectors::copies::testing::assert_nowhere(&sink, "PEMMARK");
    assert_eq!(find_row(&sink.item("containers.csv").rows(), "id", id)["image"], "app:1");
    let secrets = sink.item("secrets.csv").rows();
    let row = find_row(&secrets, "path", &abs);
    assert_eq!(row["reason"], "holds a private key");
    assert_eq!(row["size"], config.len().to_string());
    assert_eq!(row["sha256"], hex::encode(Sha256::digest(&config)));
    assert!(sink.names().iter().any(|n| n.ends_with("/hostconfig.json")), "{:?}", sink.names());
    assert!(!sink.names().iter().any(|n| n.ends_with("/config.v2.json")), "{:?}", sink.names());
}
