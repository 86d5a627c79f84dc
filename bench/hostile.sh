#!/bin/sh
# Issue 9's hostile corpus through `casefile package verify`: for each case, whether it
# was refused, the wall time and the peak RSS (`/usr/bin/time`). A Markdown table.
#
#   bench/hostile.sh [CASEFILE_BINARY] [CORPUS_DIR]
#
# CASEFILE_BINARY defaults to target/debug/casefile (build it, and the corpus example,
# with `cargo build -p casefile && cargo build -p casefile-package --example hostile_corpus`);
# pass an older binary to see what it made of the same corpus. Each run is cut at 300 s.
# Times per request for upload and import come from
#   cargo test -p casefile --test e2e hostile_corpus_request_times -- --ignored --nocapture
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/debug/casefile}
dir=${2:-$(mktemp -d)}
"$root/target/debug/examples/hostile_corpus" "$dir" >/dev/null
key=$(cat "$dir/public.key")
printf '| case | bytes | verify says | exit | seconds | peak RSS (MiB) |\n|---|---|---|---|---|---|\n'
for zip in "$dir"/*.zip; do
    name=$(basename "$zip" .zip)
    code=0
    /usr/bin/time -f '%e %M' -o "$dir/$name.time" timeout 300 "$bin" package verify --public-key "$key" "$zip" \
        >"$dir/$name.out" 2>&1 || code=$?
    set -- $(tail -n 1 "$dir/$name.time")
    if [ "$code" = 124 ]; then
        says="not refused: still running after 300 s"
    elif grep -q "verdict:   AUTHENTIC" "$dir/$name.out"; then
        says="AUTHENTIC (accepted)"
    else
        says="refused: $(grep -m1 -o -e 'FAILED .*' -e 'is refused: .*' -e 'the zip is refused: .*' -e 'NOT AUTHENTIC.*' "$dir/$name.out" | cut -c1-90)"
    fi
    printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "$(stat -c %s "$zip")" "$says" "$code" "$1" "$(( $2 / 1024 ))"
done
