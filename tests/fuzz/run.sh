#!/bin/sh
# Builds the libFuzzer targets with clang-14 (AddressSanitizer + UndefinedBehaviorSanitizer) and
# runs each for SECONDS (default 30) from its seed corpus in tests/fuzz/corpus/<target>.
# REGPIN_FUZZ_SEED fixes libFuzzer's seed (CI sets 1, so a run's exploration does not depend on
# chance); unset, every run explores differently, which is what longer local runs are for.
# New inputs go to a temporary folder; a crash fails the run and its input is printed, to be
# fixed and added to the corpus. Targets run side by side, one per core (REGPIN_FUZZ_JOBS).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-30}
build=${REGPIN_FUZZ_BUILD:-$root/build-fuzz}
mkdir -p "$build"
cmake -S "$root" -B "$build" -G Ninja -DREGPIN_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++-14 \
    -DCMAKE_BUILD_TYPE=Debug > "$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
cmake --build "$build"
targets="route manifest challenge config bundle deploy"
# One target per core at a time (libFuzzer runs one process each): a CI machine has 2.
jobs=${REGPIN_FUZZ_JOBS:-$(nproc)}
results=$(mktemp -d)
fuzz_one() {
    target=$1
    work=$(mktemp -d)
    if ! "$build/tests/fuzz/${target}_fuzz" "$work" "$root/tests/fuzz/corpus/$target" \
            -max_total_time="$secs" -artifact_prefix="$work/" -print_final_stats=1 \
            ${REGPIN_FUZZ_SEED:+-seed="$REGPIN_FUZZ_SEED"} \
            > "$work/log" 2>&1; then
        {
            echo "FUZZ FAILURE in $target:"
            tail -n 40 "$work/log"
            for f in "$work"/crash-* "$work"/leak-* "$work"/timeout-*; do
                [ -e "$f" ] && { echo "input ($f), base64:"; base64 "$f"; }
            done
        } > "$results/$target.failed"
    else
        { echo "fuzzed $target for ${secs}s"; grep -E "stat::number_of_executed_units|Done" "$work/log" | tail -n 2; } \
            > "$results/$target.ok"
    fi
    rm -rf "$work"
}
running=0
for target in $targets; do
    fuzz_one "$target" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait
        running=0
    fi
done
wait
failed=0
for target in $targets; do
    if [ -e "$results/$target.failed" ]; then
        cat "$results/$target.failed"
        failed=1
    else
        cat "$results/$target.ok"
    fi
done
rm -rf "$results"
if [ "$failed" -ne 0 ]; then
    echo "fuzzing found a crash"
    exit 1
fi
echo "fuzzing: $(echo $targets | wc -w) targets, ${secs}s each, no crash"
