#!/usr/bin/env bash
# Coverage-guided fuzzing of the trust boundaries (frame decoder, message decoders, handshake
# state machines, RelPath) with cargo fuzz (libFuzzer) on the nightly toolchain.
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET ...]     (default: 30 s, every target)
#
# Each target starts from its committed seeds (fuzz/seeds/TARGET) and grows a corpus in
# fuzz/corpus/TARGET (not committed). A crash leaves its input in fuzz/artifacts/TARGET and makes
# this script exit non-zero. Prints one summary line per target: executions, corpus, crashes.
# Without a nightly toolchain it says so in one line and exits 0 (CI then has no fuzz step).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

seconds="${1:-30}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then targets=(frame_decoder message_decode handshake relpath); fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: no nightly toolchain on this machine: coverage-guided fuzzing skipped (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install --locked cargo-fuzz@0.13.2 >/dev/null
fi

for t in "${targets[@]}"; do
    cargo +nightly fuzz build --release "$t" 2>&1 | grep -E "^(error|warning: unused)" || true
done
failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="$(mktemp)"
    status=0
    cargo +nightly fuzz run --release "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        >"$log" 2>&1 || status=$?
    runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
    corpus=$(find "corpus/$t" -type f | wc -l)
    crashes=$(find "artifacts/$t" -type f | wc -l)
    echo "fuzz: $t: ${seconds} s, ${runs} executions, corpus ${corpus}, crashes ${crashes}, exit ${status}"
    if ((status != 0 || crashes != 0)); then
        failed=1
        grep -E 'panicked|ERROR|SUMMARY' "$log" | head -n 5 || true
    fi
    rm -f "$log"
done
exit "$failed"
