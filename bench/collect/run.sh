#!/usr/bin/env bash
# bench/collect: `casefile-agent collect` against `sos report` on the same machine in the same run.
#
# Wall time, CPU seconds, peak RSS and package size of each, as ratios; then the agent's peak RSS
# with thousands of extra idle processes. Informational: exits 0 whatever the figures, 1 if a tool
# failed to run, 2 if a prerequisite is missing. See bench/README.md.
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<'EOF'
usage: bench/collect/run.sh [--no-build] [--runs N] [--idle-procs N]

  --no-build       use target/release/casefile-agent as it is
  --runs N         timed runs of each tool, median reported (default 3; odd numbers read best)
  --idle-procs N   extra idle processes for the scaling run (default 5000; 0 skips it)

Needs root (sos report refuses to run otherwise), sos (apt-get install -y sosreport) and GNU time
at /usr/bin/time (apt-get install -y time).
EOF
}

build=1
runs=3
idle_target=5000
while (($#)); do
    case "$1" in
        --no-build) build=0 ;;
        --runs) runs="${2:?--runs needs a number}"; shift ;;
        --idle-procs) idle_target="${2:?--idle-procs needs a number}"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "--runs: not a positive number: $runs" >&2; exit 2; }
[[ "$idle_target" =~ ^[0-9]+$ ]] || { echo "--idle-procs: not a number: $idle_target" >&2; exit 2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
agent="${CARGO_TARGET_DIR:-$repo/target}/release/casefile-agent"
sos_slow_s=180 # one sos run longer than this: time it once only

# ---------------------------------------------------------------- prerequisites

missing=0
if [[ $(id -u) -ne 0 ]]; then
    echo "run as root: sos report refuses to run otherwise, and the agent would see less" >&2
    missing=1
fi
if ! command -v sos >/dev/null 2>&1; then
    echo "sos not found; install it with: apt-get install -y sosreport" >&2
    missing=1
fi
if [[ ! -x /usr/bin/time ]] || ! /usr/bin/time -f '%M' -o /dev/null true >/dev/null 2>&1; then
    echo "GNU time not found at /usr/bin/time; install it with: apt-get install -y time" >&2
    missing=1
fi
((missing == 0)) || exit 2

have_unzip=0
if command -v unzip >/dev/null 2>&1; then
    have_unzip=1
elif ! command -v python3 >/dev/null 2>&1; then
    echo "neither unzip nor python3 found: cannot read the agent's package" >&2
    exit 2
fi

# ---------------------------------------------------------------- temp dir, idle processes, cleanup

work=$(mktemp -d "${TMPDIR:-/tmp}/casefile-bench-collect.XXXXXX")
idle_pids=()

stop_idle() {
    if ((${#idle_pids[@]})); then
        kill "${idle_pids[@]}" 2>/dev/null || true
        idle_pids=()
    fi
}
cleanup() {
    stop_idle
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$work"

# ---------------------------------------------------------------- build

if ((build)); then
    echo "building casefile-agent (release) ..."
    if ! (cd "$repo" && cargo build --release -p casefile-agent) >"$work/build.log" 2>&1; then
        tail -n 40 "$work/build.log" >&2
        echo "cargo build --release -p casefile-agent failed" >&2
        exit 1
    fi
fi
if [[ ! -x "$agent" ]]; then
    echo "$agent not found; build it or drop --no-build" >&2
    exit 1
fi

# ---------------------------------------------------------------- helpers

say() { printf '%s\n' "$*"; }

# Median of numbers.
median() {
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 }
        END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# calc 'awk expression' -> its value; variables a, b, c from the remaining arguments.
calc() {
    awk -v a="${2:-0}" -v b="${3:-0}" -v c="${4:-0}" "BEGIN { print ($1) }"
}

# Busy CPU seconds of the whole machine since boot (all cores), from /proc/stat.
hz=$(getconf CLK_TCK)
busy_s() { awk -v hz="$hz" '$1 == "cpu" { print ($2 + $3 + $4 + $7 + $8 + $9) / hz; exit }' /proc/stat; }
tools_cpu=0 # CPU seconds of every measured run, to tell other work on the machine apart

# measure CMD... -> sets m_wall, m_cpu (user + sys, children included), m_rss (KiB), m_rc.
# GNU time's %M is the largest RSS of the command or any one child it waited for, not a sum.
measure() {
    m_rc=0
    /usr/bin/time -f '%e %U %S %M' -o "$work/time.out" "$@" >"$work/cmd.out" 2>"$work/cmd.err" || m_rc=$?
    local user sys
    read -r m_wall user sys m_rss < <(tail -n 1 "$work/time.out")
    m_cpu=$(calc 'a + b' "$user" "$sys")
    tools_cpu=$(calc 'a + b' "$tools_cpu" "$m_cpu")
}

mb() { calc 'sprintf("%.2f", a / 1048576)' "$1"; } # bytes -> MB (2^20)

sos_dir="$work/sos"
sos_tarball=""

# run_sos -> m_* plus sos_size (bytes) and sos_tarball; a run without a tarball stops the bench.
run_sos() {
    rm -rf "$sos_dir"
    mkdir "$sos_dir"
    measure sos report --batch --quiet --tmp-dir "$sos_dir" --only-plugins "$sos_plugins"
    sos_tarball=$(find "$sos_dir" -maxdepth 1 -type f -name 'sosreport-*.tar*' \
        ! -name '*.md5' ! -name '*.sha256' | awk 'NR == 1')
    if [[ -z "$sos_tarball" ]]; then
        tail -n 20 "$work/cmd.out" "$work/cmd.err" >&2
        echo "sos report exited $m_rc and left no tarball in $sos_dir" >&2
        exit 1
    fi
    sos_size=$(stat -c %s "$sos_tarball")
}

# run_agent -> m_* plus agent_size (bytes); a failed run stops the bench.
run_agent() {
    rm -f "$work/casefile.zip"
    measure "$agent" collect --output "$work/casefile.zip" --key "$work/bench.key"
    if ((m_rc != 0)) || [[ ! -s "$work/casefile.zip" ]]; then
        tail -n 20 "$work/cmd.out" "$work/cmd.err" >&2
        echo "casefile-agent collect exited $m_rc" >&2
        exit 1
    fi
    agent_size=$(stat -c %s "$work/casefile.zip")
}

# zip_member ZIP PATH -> the member's bytes on stdout.
zip_member() {
    if ((have_unzip)); then
        unzip -p "$1" "$2"
    else
        python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' "$1" "$2"
    fi
}

# CSV records minus the header; a quoted field may hold newlines.
csv_rows() {
    awk '{ q += gsub(/"/, "&") } q % 2 == 0 { rows++; q = 0 } END { print rows - 1 }'
}

# top_collectors MANIFEST -> the three slowest collectors, "name duration_ms" per line.
top_collectors() {
    tr -d '\n' <"$1" |
        sed -e 's/.*"collectors": *\[//' -e 's/"items": *\[.*//' |
        { grep -oE '"(name|duration_ms)": *("[^"]*"|[0-9]+)' || true; } |
        awk -F': *' '{ gsub(/"/, "", $1); gsub(/"/, "", $2) }
            $1 == "name" { n = $2 } $1 == "duration_ms" { print n, $2 }' |
        sort -k2,2nr | awk 'NR <= 3'
}

fmt_run() { # label run-no wall cpu rss-kib size-bytes [extra]
    printf '  %-15s run %s: %7.2f s wall %7.2f s CPU %8.2f MB RSS %8.2f MB package%s\n' \
        "$1" "$2" "$3" "$4" "$(calc 'a / 1024' "$5")" "$(mb "$6")" "${7:-}"
}

# ---------------------------------------------------------------- sos plugins

# The plugins closest to the package's folders (docs/PACKAGE.md); only those this sos has are used.
wanted_plugins=(
    process                                  # Processes, Open files (lsof)
    networking firewalld firewall_tables     # Network connections, firewall rules
    iptables nftables ufw
    login sudo                               # Users and groups, logins, sudoers
    ssh                                      # Persistence: ssh configuration and keys
    systemd services cron anacron at         # Persistence: units, cron, at
    kernel                                   # kernel modules
    dpkg apt rpm yum dnf                     # Installed packages
    block filesys                            # Disk volumes, mounts
    hardware processor memory host date release # System information
    logs                                     # Logs
)
sos_list=$(sos report -l 2>/dev/null || true)
sos_version=$(awk '/^sos(report)? \(version/ { v = $NF; sub(/\)$/, "", v); print v; exit }' <<<"$sos_list")
mapfile -t available < <(awk '/plugins are currently/ { p = 1; next }
    /^The following (options|plugin options)/ { p = 0 }
    p && /^ [a-z0-9_]+ / { print $1 }' <<<"$sos_list")
if ((${#available[@]} == 0)); then
    echo "could not read the plugin list from 'sos report -l'" >&2
    exit 1
fi
used=()
for p in "${wanted_plugins[@]}"; do
    for a in "${available[@]}"; do
        if [[ "$p" == "$a" ]]; then used+=("$p"); break; fi
    done
done
sos_plugins=$(IFS=,; echo "${used[*]}")

say "bench/collect  $(date -u '+%Y-%m-%d %H:%M UTC')  $(uname -srm)  $(nproc) cores  $(awk '/^MemTotal/ { printf "%.1f GB RAM", $2 / 1048576 }' /proc/meminfo)"
say "casefile-agent: $agent (release)"
say "sos ${sos_version:-?}: sos report --batch --quiet --tmp-dir DIR --only-plugins $sos_plugins"
say "  (${#used[@]} of ${#wanted_plugins[@]} wanted plugins exist in this sos; default options, no --all-logs)"
say ""

bench_start=$SECONDS
busy_start=$(busy_s)
spawn_busy=0

# ---------------------------------------------------------------- warm-up

say "warm-up (untimed; fills the page cache for both tools) ..."
run_sos
sos_warm=$m_wall
fmt_run "sos (warm-up)" 0 "$m_wall" "$m_cpu" "$m_rss" "$sos_size" "  exit $m_rc"
run_agent
fmt_run "agent (warm-up)" 0 "$m_wall" "$m_cpu" "$m_rss" "$agent_size"

sos_runs=$runs
if [[ $(calc 'a > b' "$sos_warm" "$sos_slow_s") == 1 ]]; then
    sos_runs=1
    say "  sos took ${sos_warm} s (over ${sos_slow_s} s): timing sos once only"
fi

# ---------------------------------------------------------------- timed runs, order alternating

say ""
say "timed runs ($runs of the agent, $sos_runs of sos; order alternates sos/agent, agent/sos, ...)"
sos_wall=() sos_cpu=() sos_rss=() sos_sizes=() sos_rcs=()
ag_wall=() ag_cpu=() ag_rss=() ag_sizes=()
timed_sos() {
    run_sos
    sos_wall+=("$m_wall") sos_cpu+=("$m_cpu") sos_rss+=("$m_rss") sos_sizes+=("$sos_size") sos_rcs+=("$m_rc")
    fmt_run "sos report" "${#sos_wall[@]}" "$m_wall" "$m_cpu" "$m_rss" "$sos_size" "  exit $m_rc"
}
timed_agent() {
    run_agent
    ag_wall+=("$m_wall") ag_cpu+=("$m_cpu") ag_rss+=("$m_rss") ag_sizes+=("$agent_size")
    fmt_run "casefile-agent" "${#ag_wall[@]}" "$m_wall" "$m_cpu" "$m_rss" "$agent_size"
}
for ((i = 1; i <= runs; i++)); do
    if ((i % 2)); then
        if ((i <= sos_runs)); then timed_sos; fi
        timed_agent
    else
        timed_agent
        if ((i <= sos_runs)); then timed_sos; fi
    fi
done
cp "$work/casefile.zip" "$work/baseline.zip"

# sos's own account of the last run: its slowest plugins, timeouts and logged errors.
sos_notes=()
sos_manifest=$(tar -xOf "$sos_tarball" --wildcards '*/sos_reports/manifest.json' 2>/dev/null || true)
if [[ -n "$sos_manifest" ]] && command -v python3 >/dev/null 2>&1; then
    mapfile -t sos_notes < <(python3 -c '
import json, sys
def secs(t):
    h, m, s = t.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)
plugins = json.loads(sys.stdin.read())["components"]["report"]["plugins"]
ran = sorted(plugins.items(), key=lambda kv: -secs(kv[1].get("run_time", "0:0:0")))
print("sos plugins run: %d; slowest: %s" % (len(ran), ", ".join(
    "%s %.2f s" % (n, secs(p["run_time"])) for n, p in ran[:3])))
hit = [n for n, p in ran if p.get("timeout_hit")]
if hit:
    print("sos plugins that hit their timeout: " + ", ".join(hit))
' <<<"$sos_manifest" || true)
fi
sos_log=$(tar -xOf "$sos_tarball" --wildcards '*/sos_logs/sos.log' 2>/dev/null || true)
if [[ -n "$sos_log" ]]; then
    n_err=$(grep -c ' ERROR: ' <<<"$sos_log" || true)
    n_warn=$(grep -c ' WARNING: ' <<<"$sos_log" || true)
    sos_notes+=("sos.log of the last run: $n_err ERROR, $n_warn WARNING lines")
    while IFS= read -r line; do
        sos_notes+=("  ${line:0:160}")
    done < <(grep ' ERROR: ' <<<"$sos_log" | awk 'NR <= 5')
fi
rm -rf "$sos_dir"

# ---------------------------------------------------------------- with extra idle processes

idle=0
if ((idle_target > 0)); then
    # Leave room under every limit on the number of tasks (threads count against all of them).
    tasks=$({ find /proc/[0-9]*/task -mindepth 1 -maxdepth 1 2>/dev/null || true; } | wc -l)
    room=$(( $(cat /proc/sys/kernel/pid_max) - tasks - 1000 ))
    threads_max=$(cat /proc/sys/kernel/threads-max 2>/dev/null || echo 0)
    if ((threads_max > 0 && threads_max - tasks - 1000 < room)); then room=$((threads_max - tasks - 1000)); fi
    nproc_limit=$(ulimit -u)
    if [[ "$nproc_limit" != unlimited ]] && ((nproc_limit - tasks - 200 < room)); then
        room=$((nproc_limit - tasks - 200))
    fi
    cgroup=$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup 2>/dev/null || true)
    if [[ -r "/sys/fs/cgroup$cgroup/pids.max" ]]; then
        cg_max=$(cat "/sys/fs/cgroup$cgroup/pids.max")
        cg_cur=$(cat "/sys/fs/cgroup$cgroup/pids.current" 2>/dev/null || echo 0)
        if [[ "$cg_max" != max ]] && ((cg_max - cg_cur - 200 < room)); then room=$((cg_max - cg_cur - 200)); fi
    fi
    idle=$idle_target
    if ((room < idle)); then idle=$((room > 0 ? room : 0)); fi

    say ""
    say "starting $idle extra idle processes (sleep 3600) ..."
    b0=$(busy_s)
    for ((i = 0; i < idle; i++)); do
        sleep 3600 >/dev/null 2>&1 &
        idle_pids+=("$!")
    done
    disown -a # no "Terminated" notices when they are killed
    sleep 1   # let the last ones exec
    spawn_busy=$(calc 'a - b' "$(busy_s)" "$b0")
    if ((idle < idle_target)); then
        say "  $idle, not $idle_target: the task limits (pid_max, threads-max, ulimit -u, cgroup pids.max) leave no more room"
    fi

    say "timed runs with $idle extra idle processes ($runs of the agent)"
    i5_wall=() i5_cpu=() i5_rss=() i5_sizes=()
    for ((i = 1; i <= runs; i++)); do
        run_agent
        i5_wall+=("$m_wall") i5_cpu+=("$m_cpu") i5_rss+=("$m_rss") i5_sizes+=("$agent_size")
        fmt_run "casefile-agent" "$i" "$m_wall" "$m_cpu" "$m_rss" "$agent_size"
    done
    stop_idle
fi

# ---------------------------------------------------------------- results

s_wall=$(median "${sos_wall[@]}") s_cpu=$(median "${sos_cpu[@]}")
s_rss=$(median "${sos_rss[@]}") s_size=$(median "${sos_sizes[@]}")
a_wall=$(median "${ag_wall[@]}") a_cpu=$(median "${ag_cpu[@]}")
a_rss=$(median "${ag_rss[@]}") a_size=$(median "${ag_sizes[@]}")

row() { # tool wall cpu rss-kib size-bytes
    printf '%-36s %8.2f %8.2f %12.2f %11.2f\n' "$1" "$2" "$3" "$(calc 'a / 1024' "$4")" "$(mb "$5")"
}

say ""
say "medians of $runs agent run(s) and $sos_runs sos run(s); MB = 2^20 bytes; sos exit statuses: ${sos_rcs[*]}"
say ""
printf '%-36s %8s %8s %12s %11s\n' tool "wall s" "CPU s" "peak RSS MB" "package MB"
row "sos report" "$s_wall" "$s_cpu" "$s_rss" "$s_size"
row "casefile-agent collect" "$a_wall" "$a_cpu" "$a_rss" "$a_size"
if ((idle_target > 0)); then
    b_wall=$(median "${i5_wall[@]}") b_cpu=$(median "${i5_cpu[@]}")
    b_rss=$(median "${i5_rss[@]}") b_size=$(median "${i5_sizes[@]}")
    row "casefile-agent, +$idle idle processes" "$b_wall" "$b_cpu" "$b_rss" "$b_size"
fi

speed=$(calc 'b > 0 ? a / b : 0' "$s_wall" "$a_wall")
say ""
printf 'speed  sos wall / casefile wall   %8.2fx\n' "$speed"
printf 'CPU    sos CPU / casefile CPU     %8.2fx\n' "$(calc 'b > 0 ? a / b : 0' "$s_cpu" "$a_cpu")"
printf 'RSS    casefile / sos             %8.3f\n' "$(calc 'a / b' "$a_rss" "$s_rss")"
printf 'size   casefile / sos             %8.3f\n' "$(calc 'a / b' "$a_size" "$s_size")"

if ((idle_target > 0)); then
    rows_base=$(zip_member "$work/baseline.zip" 'Processes/processes.csv' | csv_rows)
    rows_idle=$(zip_member "$work/casefile.zip" 'Processes/processes.csv' | csv_rows)
    printf 'RSS with %d idle processes / baseline: %.3f (%+.2f MB); wall %.2fx; package %+.2f MB; process rows %d -> %d (%+d)\n' \
        "$idle" "$(calc 'a / b' "$b_rss" "$a_rss")" "$(calc '(a - b) / 1024' "$b_rss" "$a_rss")" \
        "$(calc 'a / b' "$b_wall" "$a_wall")" "$(calc '(a - b) / 1048576' "$b_size" "$a_size")" \
        "$rows_base" "$rows_idle" "$((rows_idle - rows_base))"
fi

say ""
say "slowest agent collectors (manifest.json duration_ms):"
zip_member "$work/baseline.zip" manifest.json >"$work/baseline-manifest.json"
say "  baseline, last run: $(top_collectors "$work/baseline-manifest.json" | awk '{ printf "%s%s %s ms", (NR > 1 ? ", " : ""), $1, $2 }')"
if ((idle_target > 0)); then
    zip_member "$work/casefile.zip" manifest.json >"$work/idle-manifest.json"
    say "  with $idle idle processes, last run: $(top_collectors "$work/idle-manifest.json" | awk '{ printf "%s%s %s ms", (NR > 1 ? ", " : ""), $1, $2 }')"
fi
for line in "${sos_notes[@]}"; do say "$line"; done

verdict() { if [[ "$1" == 1 ]]; then echo PASS; else echo MISS; fi; }
say ""
printf '%s: casefile-agent %.1fx faster than sos (aim >= 10x)\n' \
    "$(verdict "$(calc 'a >= 10' "$speed")")" "$speed"
printf '%s: casefile-agent peak RSS %.0f%% of sos'"'"'s (aim <= 25%%)\n' \
    "$(verdict "$(calc 'a <= 0.25 * b' "$a_rss" "$s_rss")")" "$(calc '100 * a / b' "$a_rss" "$s_rss")"
if ((idle_target > 0)); then
    # Within 10% or 2 MB of the baseline, whichever is larger.
    ok=$(calc 'a < 32 * 1024 && b < 32 * 1024 && (b - a <= 2048 || b <= 1.1 * a)' "$a_rss" "$b_rss")
    printf '%s: casefile-agent peak RSS %.2f MB, %.2f MB with %d idle processes (aim < 32 MB, not growing: within 10%% or 2 MB)\n' \
        "$(verdict "$ok")" "$(calc 'a / 1024' "$a_rss")" "$(calc 'a / 1024' "$b_rss")" "$idle"
else
    printf '%s: casefile-agent peak RSS %.2f MB (aim < 32 MB; scaling run skipped)\n' \
        "$(verdict "$(calc 'a < 32 * 1024' "$a_rss")")" "$(calc 'a / 1024' "$a_rss")"
fi

# Other work on the machine skews the figures, and not evenly: the agent runs at nice 19 and
# yields to it, sos at the caller's priority does not.
elapsed=$((SECONDS - bench_start))
other=$(calc 'a - b - c' "$(busy_s)" "$busy_start" "$(calc 'a + b' "$tools_cpu" "$spawn_busy")")
other_pct=$(calc 'b > 0 ? 100 * a / b : 0' "$other" "$((elapsed * $(nproc)))")
say ""
printf 'whole run: %d s (build not included); other work on the machine: %.0f CPU s, %.0f%% of %d cores
' \
    "$elapsed" "$other" "$other_pct" "$(nproc)"
if [[ $(calc 'a > 10' "$other_pct") == 1 ]]; then
    say "the machine was busy: figures are noisy, and the agent (nice 19) yields to other work while sos does not"
fi
