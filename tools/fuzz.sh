#!/usr/bin/env bash
# tools/fuzz.sh [SECONDS] [TARGET...]: builds every cargo-fuzz target of the
# workspace (control/fuzz, dataplane/core/fuzz; or only the TARGETs named)
# and runs each for SECONDS (default 20) at nice 19, one fuzz process at a
# time, then prints per target: executions, exec/s, coverage (edges and
# features) and corpus size. Exit status 1 when a target found a crash (its
# input is under <crate>/fuzz/artifacts/<target>/).
#
# Corpora: <crate>/fuzz/seeds/<target> is the small, minimised seed corpus
# kept in the repository (fixtures of the unit tests, regression inputs);
# <crate>/fuzz/corpus/<target> is libFuzzer's working corpus, kept between
# runs on this machine and ignored by git. Both are read; new inputs go to
# corpus/. Needs the nightly toolchain and cargo-fuzz (tools/setup.sh).
# docs/fuzzing.md records the long runs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${1:-20}
[ $# -gt 0 ] && shift
only=("$@")
target_dir=${FUZZ_TARGET_DIR:-$root/target/fuzz}
export CARGO_INCREMENTAL=0
crates=(control/fuzz dataplane/core/fuzz)
results=()
failed=0
for crate in "${crates[@]}"; do
  cd "$root/$crate"
  mapfile -t targets < <(cargo +nightly fuzz list)
  for t in "${targets[@]}"; do
    if [ ${#only[@]} -gt 0 ] && [[ ! " ${only[*]} " =~ " $t " ]]; then
      continue
    fi
    nice -n 19 cargo +nightly fuzz build --target-dir "$target_dir" "$t" >/dev/null
    mkdir -p "corpus/$t" "artifacts/$t"
    dirs=("corpus/$t")
    [ -d "seeds/$t" ] && dirs+=("seeds/$t")
    log=$(mktemp)
    rc=0
    nice -n 19 cargo +nightly fuzz run --target-dir "$target_dir" "$t" "${dirs[@]}" -- \
      -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=4096 >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
    corpus=$(find "corpus/$t" -type f | wc -l)
    bytes=$(du -sk "corpus/$t" | cut -f1)
    if [ "$rc" -ne 0 ]; then
      failed=1
      echo "fuzz: $t FAILED (exit $rc); log:" >&2
      tail -40 "$log" >&2
    fi
    results+=("$(printf '%-16s %5ss %12s %8s/s  %-22s corpus %5s inputs %6s KB  %s' \
      "$t" "$secs" "${execs:-?}" "${rate:-?}" "${cov:-cov: ?}" "$corpus" "$bytes" \
      "$([ "$rc" -eq 0 ] && echo ok || echo CRASH)")")
    rm -f "$log"
  done
done
echo "fuzz: $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%s\n' "${results[@]}"
exit "$failed"
