#!/bin/sh
# Runs every fuzz target for SECONDS seconds each (default 600), one after the other, at the
# lowest priority, on one core. New inputs go to fuzz/corpus/<target>/, crashes to
# fuzz/artifacts/<target>/ (copy a crash there only once it passes: tests/fuzz_corpus.rs runs
# both on every `cargo test`). Works on the stable toolchain (see README.md, "Fuzzing").
#   fuzz/run-all.sh 600            all targets, 10 minutes each
#   fuzz/run-all.sh 60 payload     one target, 1 minute
set -eu
seconds="${1:-600}"
shift || true
cd "$(dirname "$0")"
targets="${*:-template payload config retry_after}"
status=0
for target in $targets; do
    echo "== $target: ${seconds}s"
    nice -n 19 cargo fuzz run --sanitizer none -O "$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 || status=1
done
exit "$status"
