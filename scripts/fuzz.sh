#!/usr/bin/env bash
# Fuzzing (libFuzzer through cargo-fuzz, on nightly) of every parser that reads bytes from
# outside: fuzz/fuzz_targets/*.rs. Not part of scripts/test.sh.
#
#   scripts/fuzz.sh                 # every target for 60 s (the short run)
#   scripts/fuzz.sh 600             # every target for 10 minutes
#   scripts/fuzz.sh 3600 relay_request envelope_open
#
# Each target starts from its seeds (fuzz/seeds/TARGET, kept in git, crash regressions
# included) and the corpus earlier runs grew (fuzz/corpus/TARGET, not in git). A crash stops
# that target with its input in fuzz/artifacts/TARGET and fails the script; the summary line
# per target gives executions, corpus size and the result. Each run rebuilds its target first, so
# do not leave the tree half-edited while it runs. Long runs' figures go in
# docs/benchmarks.md ("Fuzzing").
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
[ $# -gt 0 ] && shift
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# Sanitizer builds are their own artifacts: a target directory of their own.
export CARGO_TARGET_DIR="${JASPER_FUZZ_TARGET_DIR:-$HOME/.cache/jasper/fuzz-target}"

cd fuzz
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo +nightly fuzz list); fi
cargo +nightly fuzz build
failed=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="artifacts/$t/last-run.log"
  echo "== $t: ${secs} s"
  if cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
      >"$log" 2>&1; then
    result="no crash"
  elif grep -q "failed to build fuzz script" "$log"; then
    # `cargo fuzz run` rebuilds first: a source tree edited mid-run can fail to compile.
    result="BUILD FAILED (see $log)"
    failed=1
  else
    result="CRASH (see $log and artifacts/$t/)"
    failed=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  corpus=$(find "corpus/$t" -type f | wc -l)
  line="$t: $execs executions ($rate/s), corpus $corpus, $result"
  echo "   $line"
  summary+=("$line")
done
echo "== summary (${secs} s per target)"
printf '   %s\n' "${summary[@]}"
exit "$failed"
