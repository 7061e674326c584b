#!/usr/bin/env bash
# What a newcomer waits for: clone this repository's HEAD into a temporary folder and time
# `make demo` there from nothing (a new .venv, pip without its cache, the two demo sweeps and
# their reports), then print the wall time, the peak memory and the size of .venv.
#
#   bash benchmarks/fresh_clone.sh            # uses python3.11 (or python3) as make demo does
#   KEEP=1 bash benchmarks/fresh_clone.sh     # keep the clone and print where it is
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d -t study-fresh-XXXXXX)"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT

git clone --quiet "$repo" "$work/study"
cd "$work/study"
export PIP_NO_CACHE_DIR=1  # download every package, as a fresh machine does
/usr/bin/time -v -o "$work/time.txt" make demo > "$work/demo.log" 2>&1 || { tail -20 "$work/demo.log"; exit 1; }

echo "commit:       $(git rev-parse --short HEAD)"
echo "make demo:    $(grep 'Elapsed (wall clock)' "$work/time.txt" | awk '{print $NF}') (h:mm:ss or m:ss), install included"
echo "peak memory:  $(grep 'Maximum resident' "$work/time.txt" | awk '{printf "%.1f GiB", $NF / 1048576}')"
echo ".venv:        $(du -sh .venv | cut -f1)"
grep -a -E '^(demo|demo_compression): (complete|partial)' "$work/demo.log" || true
if [ "${KEEP:-0}" = 1 ]; then echo "kept:         $work/study"; fi
