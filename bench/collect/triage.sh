#!/usr/bin/env bash
# bench/collect/triage.sh: the `triage` and `standard` profiles of `casefile-agent collect`, each
# part against the physical limit of the same work measured in the same run on the same tree, and
# both profiles beside `sos report` with its default plugin set. Twice: on this machine as it is,
# then with a synthetic load the bench adds (files, processes, logs) and removes again.
#
#   timeline walk     vs  find over the same file systems, printing the same fields
#   executable hashes vs  sha256sum over the same files
#   logs and configs  vs  cat of the same directories into /dev/null (bytes per second)
#
# Informational: exits 0 whatever the figures, 1 if a tool failed, 2 if a prerequisite is
# missing. See bench/README.md.
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<'EOF'
usage: bench/collect/triage.sh [--no-build] [--runs N] [--files N] [--procs N] [--log-mb N] [--no-sos] [--no-synthetic]

  --no-build      use target/release/casefile-agent as it is
  --runs N        timed runs of each casefile measurement, median reported (default 3)
  --files N       synthetic files (default 200000)
  --procs N       synthetic idle processes (default 5000)
  --log-mb N      synthetic logs, MB (default 2048)
  --no-sos        skip sos report (it takes minutes)
  --no-synthetic  this machine only

Needs root, sos (apt-get install -y sosreport), GNU time at /usr/bin/time, python3.
EOF
}

build=1 runs=3 files=200000 procs=5000 log_mb=2048 with_sos=1 synthetic=1
while (($#)); do
    case "$1" in
        --no-build) build=0 ;;
        --runs) runs="${2:?}"; shift ;;
        --files) files="${2:?}"; shift ;;
        --procs) procs="${2:?}"; shift ;;
        --log-mb) log_mb="${2:?}"; shift ;;
        --no-sos) with_sos=0 ;;
        --no-synthetic) synthetic=0 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
for n in "$runs" "$files" "$procs" "$log_mb"; do
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "not a number: $n" >&2; exit 2; }
done
((runs > 0)) || { echo "--runs must be at least 1" >&2; exit 2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
agent="${CARGO_TARGET_DIR:-$repo/target}/release/casefile-agent"

missing=0
[[ $(id -u) -eq 0 ]] || { echo "run as root: the agent and sos would see less" >&2; missing=1; }
if ((with_sos)) && ! command -v sos >/dev/null 2>&1; then
    echo "sos not found: apt-get install -y sosreport (or --no-sos)" >&2
    missing=1
fi
/usr/bin/time -f '%M' -o /dev/null true 2>/dev/null || { echo "GNU time missing: apt-get install -y time" >&2; missing=1; }
command -v python3 >/dev/null 2>&1 || { echo "python3 missing" >&2; missing=1; }
((missing == 0)) || exit 2

work=$(mktemp -d "${TMPDIR:-/tmp}/casefile-bench-triage.XXXXXX")
tree=/var/tmp/casefile-bench-tree
logs=/var/log/casefile-bench
idle_pids=()
cleanup() {
    if ((${#idle_pids[@]})); then kill "${idle_pids[@]}" 2>/dev/null || true; fi
    rm -rf "$work" "$tree" "$logs"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ((build)); then
    echo "building casefile-agent (release) ..."
    if ! (cd "$repo" && cargo build --release -p casefile-agent) >"$work/build.log" 2>&1; then
        tail -n 40 "$work/build.log" >&2
        exit 1
    fi
fi
[[ -x "$agent" ]] || { echo "$agent not found; build it or drop --no-build" >&2; exit 1; }

say() { printf '%s\n' "$*"; }
calc() { awk -v a="${2:-0}" -v b="${3:-0}" -v c="${4:-0}" "BEGIN { print ($1) }"; }
median() {
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# measure CMD... -> m_wall m_cpu (s) m_rss (KiB) m_rc; output in $work/cmd.out, cmd.err.
measure() {
    m_rc=0
    /usr/bin/time -f '%e %U %S %M' -o "$work/time.out" "$@" >"$work/cmd.out" 2>"$work/cmd.err" || m_rc=$?
    local user sys
    read -r m_wall user sys m_rss < <(tail -n 1 "$work/time.out")
    m_cpu=$(calc 'a + b' "$user" "$sys")
}

# The file systems the timeline walks: local ones, pseudo and network ones left out (the same
# rule as the collector, docs/PACKAGE.md).
local_mounts() {
    python3 - <<'EOF'
skip = {"proc", "sysfs", "cgroup", "cgroup2", "devpts", "debugfs", "tracefs", "securityfs", "bpf",
        "pstore", "configfs", "fusectl", "mqueue", "hugetlbfs", "autofs", "binfmt_misc", "efivarfs",
        "nsfs", "rpc_pipefs", "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "9p", "devtmpfs",
        "selinuxfs", "ramfs", "squashfs", "overlay", "fuse.sshfs", "fuse.gvfsd-fuse", "fuse.portal"}
seen = set()
for line in open("/proc/self/mountinfo"):
    left, right = line.split(" - ", 1)
    point = left.split()[4].encode().decode("unicode_escape")
    fstype = right.split()[0]
    if fstype in skip or fstype.startswith("fuse.") or point in seen:
        continue
    seen.add(point)
    print(point)
EOF
}

# A profile file of the collectors named, for `--profile-file`.
profile_file() { # NAME COLLECTOR[:key=value,...]...
    local name=$1 spec c opts
    shift
    {
        echo "description = \"bench: $name\""
        for spec in "$@"; do
            c=${spec%%:*}
            echo "[[collector]]"
            echo "name = \"$c\""
            echo "timeout_seconds = 3600"
            if [[ "$spec" == *:* ]]; then
                opts=${spec#*:}
                tr ',' '\n' <<<"$opts"
            fi
        done
    } >"$work/$name.toml"
    echo "$work/$name.toml"
}

# agent_run PROFILE-ARGS... -> m_* and pkg_size; the package in $work/casefile.zip.
agent_run() {
    rm -f "$work/casefile.zip"
    measure "$agent" collect --output "$work/casefile.zip" --key "$work/bench.key" "$@"
    if ((m_rc != 0)) || [[ ! -s "$work/casefile.zip" ]]; then
        tail -n 20 "$work/cmd.out" "$work/cmd.err" >&2
        echo "casefile-agent collect $* exited $m_rc" >&2
        exit 1
    fi
    pkg_size=$(stat -c %s "$work/casefile.zip")
}

# collector_ms ZIP NAME -> the collector's duration in the manifest, seconds.
collector_s() {
    python3 - "$1" "$2" <<'EOF'
import json, sys, zipfile
m = json.loads(zipfile.ZipFile(sys.argv[1]).read("manifest.json"))
print(sum(c["duration_ms"] for c in m["collectors"] if c["name"] == sys.argv[2]) / 1000)
EOF
}

# items_bytes ZIP COLLECTOR... -> bytes of the collectors' files in the package, uncompressed.
items_bytes() {
    python3 - "$@" <<'EOF'
import json, sys, zipfile
m = json.loads(zipfile.ZipFile(sys.argv[1]).read("manifest.json"))
print(sum(i["size"] for i in m["items"] if i["collector"] in sys.argv[2:]))
EOF
}

# hashed_list ZIP -> NUL-separated host paths of the executables the timeline hashed.
hashed_list() {
    python3 - "$1" <<'EOF'
import csv, io, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
name = next(n for n in z.namelist() if n.endswith("executables.csv"))
rows = csv.DictReader(io.TextIOWrapper(z.open(name), encoding="utf-8", errors="surrogateescape"))
out = sys.stdout.buffer
for row in rows:
    if len(row.get("sha256") or "") == 64:
        out.write(row["path"].encode("utf-8", "surrogateescape") + b"\0")
EOF
}

row() { printf '  %-44s %9.2f %9.2f %10.1f %11.1f  %s\n' "$1" "$2" "$3" "$(calc 'a / 1024' "$4")" "$(calc 'a / 1048576' "$5")" "${6:-}"; }
header() { printf '  %-44s %9s %9s %10s %11s\n' "" "wall s" "CPU s" "RSS MB" "package MB"; }

# One round of every measurement; $1 names it.
round() {
    local label=$1
    say ""
    say "== $label"
    mapfile -t mounts < <(local_mounts)
    say "file systems walked: ${mounts[*]}"
    local walk_profile hash_profile files_profile
    walk_profile=$(profile_file walk "timeline:max_total_bytes = 1")
    hash_profile=$(profile_file hash "timeline")
    files_profile=$(profile_file files "var_log" "configs")

    # Warm the page cache for everything once, untimed.
    find "${mounts[@]}" -xdev -printf '%i|%m|%U|%G|%s|%A@|%T@|%C@|%p\n' >/dev/null 2>&1 || true
    agent_run --profile-file "$hash_profile"

    local f_w=() f_c=() w_w=() w_c=() w_r=() h_w=() s_w=() l_w=() l_b=() c_w=() lines=0 rows=0
    for ((i = 1; i <= runs; i++)); do
        measure find "${mounts[@]}" -xdev -printf '%i|%m|%U|%G|%s|%A@|%T@|%C@|%p\n'
        f_w+=("$m_wall") f_c+=("$m_cpu")
        lines=$(find "${mounts[@]}" -xdev -printf '.\n' 2>/dev/null | wc -l)
        agent_run --profile-file "$walk_profile"
        w_w+=("$(collector_s "$work/casefile.zip" timeline)") w_c+=("$m_cpu") w_r+=("$m_rss")
        rows=$(python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); n = next(n for n in z.namelist() if n.endswith("bodyfile.txt")); print(sum(1 for _ in z.open(n)))' "$work/casefile.zip")
        agent_run --profile-file "$hash_profile"
        h_w+=("$(collector_s "$work/casefile.zip" timeline)")
        hashed_list "$work/casefile.zip" >"$work/hashed.list"
        measure xargs -0 -a "$work/hashed.list" sha256sum
        s_w+=("$m_wall")
        agent_run --profile-file "$files_profile"
        l_w+=("$m_wall") l_b+=("$(items_bytes "$work/casefile.zip" var_log configs)")
        measure sh -c 'find /var/log /etc /usr/local/etc -xdev -type f -print0 2>/dev/null | xargs -0 cat >/dev/null 2>&1; true'
        c_w+=("$m_wall")
    done
    local fw ww hw sw lw lb cw hash_only n_hashed hashed_bytes cat_bytes
    fw=$(median "${f_w[@]}") ww=$(median "${w_w[@]}") hw=$(median "${h_w[@]}") sw=$(median "${s_w[@]}")
    lw=$(median "${l_w[@]}") lb=$(median "${l_b[@]}") cw=$(median "${c_w[@]}")
    hash_only=$(calc 'a - b > 0 ? a - b : 0' "$hw" "$ww")
    n_hashed=$(tr -cd '\0' <"$work/hashed.list" | wc -c)
    hashed_bytes=$(xargs -0 -a "$work/hashed.list" stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
    cat_bytes=$(find /var/log /etc /usr/local/etc -xdev -type f -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
    say ""
    say "medians of $runs; the timeline's times are its own (manifest duration_ms), the baselines' wall clock"
    printf '  %-58s %8s %8s %8s\n' "" "casefile" "baseline" "ratio"
    printf '  %-58s %8.2f %8.2f %7.2fx\n' "walk: $rows bodyfile lines vs find's $lines paths (s)" "$ww" "$fw" "$(calc 'b > 0 ? a / b : 0' "$ww" "$fw")"
    printf '  %-58s %8.2f %8.2f %7.2fx\n' "hash: $n_hashed executables, $(calc 'a / 1048576' "$hashed_bytes" | xargs printf '%.0f') MB vs sha256sum (s)" "$hash_only" "$sw" "$(calc 'b > 0 ? a / b : 0' "$hash_only" "$sw")"
    local packed_rate cat_rate
    packed_rate=$(calc 'b > 0 ? a / 1048576 / b : 0' "$lb" "$lw")
    cat_rate=$(calc 'b > 0 ? a / 1048576 / b : 0' "$cat_bytes" "$cw")
    printf '  %-58s %8.1f %8.1f %7.2fx\n' "logs+configs: MB/s packed vs cat MB/s (rate ratio)" "$packed_rate" "$cat_rate" "$(calc 'b > 0 ? a / b : 0' "$packed_rate" "$cat_rate")"
    say "  (logs+configs: $(calc 'a / 1048576' "$lb" | xargs printf '%.0f') MB packed in $lw s; cat read $(calc 'a / 1048576' "$cat_bytes" | xargs printf '%.0f') MB in $cw s)"

    say ""
    header
    local st_w=() st_c=() st_r=() st_s=() tr_w=() tr_c=() tr_r=() tr_s=()
    for ((i = 1; i <= runs; i++)); do
        agent_run --profile standard
        st_w+=("$m_wall") st_c+=("$m_cpu") st_r+=("$m_rss") st_s+=("$pkg_size")
    done
    row "casefile-agent collect --profile standard" "$(median "${st_w[@]}")" "$(median "${st_c[@]}")" "$(median "${st_r[@]}")" "$(median "${st_s[@]}")"
    agent_run --profile triage
    tr_w=("$m_wall") tr_c=("$m_cpu") tr_r=("$m_rss") tr_s=("$pkg_size")
    row "casefile-agent collect --profile triage" "$m_wall" "$m_cpu" "$m_rss" "$pkg_size" "(one run)"
    cp "$work/casefile.zip" "$work/triage-$label.zip"
    python3 - "$work/casefile.zip" <<'EOF'
import json, sys, zipfile
m = json.loads(zipfile.ZipFile(sys.argv[1]).read("manifest.json"))
slow = sorted(m["collectors"], key=lambda c: -c["duration_ms"])[:6]
print("  triage collectors, slowest: " + ", ".join("%s %.1f s (%s)" % (c["name"], c["duration_ms"] / 1000, c["status"]) for c in slow))
print("  triage package: %d files" % len(m["items"]))
EOF
    if ((with_sos)); then
        rm -rf "$work/sos" && mkdir "$work/sos"
        measure sos report --batch --quiet --tmp-dir "$work/sos"
        local tarball
        tarball=$(find "$work/sos" -maxdepth 1 -type f -name 'sosreport-*.tar*' ! -name '*.md5' ! -name '*.sha256' | head -n 1)
        if [[ -z "$tarball" ]]; then
            tail -n 20 "$work/cmd.out" "$work/cmd.err" >&2
            echo "sos report exited $m_rc without a tarball" >&2
            exit 1
        fi
        local s_wall=$m_wall s_cpu=$m_cpu s_rss=$m_rss s_size
        s_size=$(stat -c %s "$tarball")
        row "sos report (default plugins)" "$s_wall" "$s_cpu" "$s_rss" "$s_size" "(one run, exit $m_rc)"
        rm -rf "$work/sos"
        say ""
        printf '  standard: %.1fx faster than sos, %.3f of its peak RSS; triage: %.2fx faster, %.3f of its RSS\n' \
            "$(calc 'a / b' "$s_wall" "$(median "${st_w[@]}")")" "$(calc 'a / b' "$(median "${st_r[@]}")" "$s_rss")" \
            "$(calc 'a / b' "$s_wall" "${tr_w[0]}")" "$(calc 'a / b' "${tr_r[0]}" "$s_rss")"
    fi
}

say "bench/collect/triage.sh  $(date -u '+%Y-%m-%d %H:%M UTC')  $(uname -srm)  $(nproc) cores  $(awk '/^MemTotal/ { printf "%.1f GB RAM", $2 / 1048576 }' /proc/meminfo)"
say "agent: $agent; sos: $( (sos --version 2>/dev/null || sos report --version 2>/dev/null || echo '?') | head -n 1)"

round "this machine"

if ((synthetic)); then
    say ""
    say "building the synthetic load: $files files under $tree, $log_mb MB of logs under $logs, $procs idle processes ..."
    python3 - "$tree" "$files" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(root, exist_ok=True)
per_dir = 500
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // (per_dir * 40)), "s%03d" % (i // per_dir % 40))
    if i % per_dir == 0:
        os.makedirs(d, exist_ok=True)
    name = os.path.join(d, ("f%06d" % i) + (".sh" if i % 100 == 0 else ".dat"))
    with open(name, "wb") as f:
        f.write(os.urandom(64 + (i % 7) * 512))
    if i % 100 == 0:
        os.chmod(name, 0o755)
    elif i % 1000 == 1:
        os.chmod(name, 0o4755)
    if i % 5000 == 2:
        os.makedirs(os.path.join(d, ".hidden"), exist_ok=True)
EOF
    mkdir -p "$logs"
    python3 - "$logs" "$log_mb" <<'EOF'
import gzip, os, random, sys
root, mb = sys.argv[1], int(sys.argv[2])
rng = random.Random(13)
apps = 16
per_app = mb * 1024 * 1024 // apps
words = ["GET", "POST", "/index.html", "/api/v1/items", "200", "404", "500", "user=alice", "user=bob",
         "latency_ms=", "session", "error", "timeout", "upstream", "cache", "hit", "miss"]
def lines(n):
    out, size = [], 0
    while size < n:
        line = "2026-12-0%d %02d:%02d:%02d host app[%d]: %s\n" % (rng.randint(1, 7), rng.randint(0, 23),
            rng.randint(0, 59), rng.randint(0, 59), rng.randint(100, 99999),
            " ".join(rng.choice(words) + str(rng.randint(0, 999)) for _ in range(8)))
        out.append(line)
        size += len(line)
        if len(out) >= 20000:
            yield "".join(out)
            out = []
    if out:
        yield "".join(out)
for a in range(apps):
    d = os.path.join(root, "app%02d" % a)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "access.log"), "w") as f:
        for chunk in lines(per_app // 2):
            f.write(chunk)
    with open(os.path.join(d, "access.log.1"), "w") as f:
        for chunk in lines(per_app // 4):
            f.write(chunk)
    with gzip.open(os.path.join(d, "access.log.2.gz"), "wt", compresslevel=1) as f:
        for chunk in lines(per_app // 4):
            f.write(chunk)
EOF
    for ((i = 0; i < procs; i++)); do
        sleep 3600 >/dev/null 2>&1 &
        idle_pids+=("$!")
    done
    disown -a
    say "synthetic load: $(find "$tree" -type f | wc -l) files, $(du -sm "$logs" | cut -f1) MB of logs on disk, $(ls /proc | grep -c '^[0-9]') processes"
    round "with the synthetic load"
fi
say ""
say "done in $SECONDS s"
