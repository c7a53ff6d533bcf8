#!/bin/sh
# Runs the libFuzzer targets that "make fuzz" builds in build-fuzz/.
#
# Usage: fuzz/run.sh [--counts FILE] SECONDS
#
# For each target: runs every input under fuzz/regressions/<target>/ once,
# then fuzzes for SECONDS seconds starting from fuzz/corpus/<target>/.
# New inputs go to a folder under /tmp, never into the repository.  As
# many targets run at once as there are CPUs.  With --counts, appends
# "1 0 0" (passed) or "0 1 0" (failed) per target to FILE, the format
# tools/run-tests adds up.  Exits 1 when a target crashed, leaked or
# broke one of its invariants, and names the input that did it.
set -u

cd "$(dirname "$0")/.."
counts=""
if [ "${1:-}" = "--counts" ]; then
    counts=$2
    shift 2
fi
seconds=${1:?usage: fuzz/run.sh [--counts FILE] SECONDS}
build=${FUZZ_BUILD:-build-fuzz}
targets="key_load certs_parse certs_wrapped store_verify encoding json"
jobs=$(nproc 2>/dev/null || echo 1)
work=$(mktemp -d /tmp/wechatpay-fuzz.XXXXXX)

# run_target NAME: runs one target and writes "pass" or "fail" into
# $work/NAME/result.
run_target() {
    name=$1
    dir=$work/$name
    bin=$build/fuzz_$name
    result=pass
    mkdir -p "$dir/new" "$dir/crashes"

    if [ -d "fuzz/regressions/$name" ]; then
        find "fuzz/regressions/$name" -type f -exec "$bin" {} + \
            > "$dir/regressions.log" 2>&1 || result=fail
    fi

    dict=""
    if [ -f "fuzz/dict/$name.dict" ]; then
        dict="-dict=fuzz/dict/$name.dict"
    fi
    # -timeout: seconds one input may take before it counts as a hang.
    # shellcheck disable=SC2086
    "$bin" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$dir/crashes/" $dict \
        "$dir/new" "fuzz/corpus/$name" > "$dir/fuzz.log" 2>&1 || result=fail
    echo "$result" > "$dir/result"
}

running=0
for name in $targets; do
    if [ ! -x "$build/fuzz_$name" ]; then
        echo "fuzz: $build/fuzz_$name is missing; run make fuzz first" >&2
        exit 1
    fi
    run_target "$name" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait
        running=0
    fi
done
wait

failed=0
for name in $targets; do
    dir=$work/$name
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/fuzz.log")
    found=$(find "$dir/new" -type f | wc -l)
    if [ "$(cat "$dir/result" 2>/dev/null)" = pass ]; then
        echo "fuzz $name: passed, ${runs:-?} inputs in ${seconds} s," \
            "$found new in $dir/new"
        [ -z "$counts" ] || echo "1 0 0" >> "$counts"
        continue
    fi
    failed=$((failed + 1))
    [ -z "$counts" ] || echo "0 1 0" >> "$counts"
    echo "fuzz $name: FAILED"
    for log in "$dir/regressions.log" "$dir/fuzz.log"; do
        if [ -f "$log" ] && grep -q "ERROR\|invariant violated\|SUMMARY" \
            "$log"; then
            echo "--- $log"
            tail -n 40 "$log"
        fi
    done
    for input in "$dir"/crashes/*; do
        [ -f "$input" ] && echo "fuzz $name: failing input saved as $input"
    done
done

if [ "$failed" -gt 0 ]; then
    echo "fuzz: $failed target(s) failed; keep each failing input under" \
        "fuzz/regressions/<target>/ once the bug is fixed"
    exit 1
fi
if [ -n "$counts" ]; then
    rm -rf "$work"
fi
