#!/usr/bin/env bash
# Fuzzing in CI: builds every fuzz target and runs each briefly from its committed corpus
# (every corpus input, then a few thousand mutations), failing on any crash or broken
# invariant. Takes about two to three minutes on two cores, most of it the build.
#
# Needs the nightly toolchain (cargo-fuzz builds with -Zsanitizer flags); installs cargo-fuzz
# if it is missing. New inputs go to a temporary directory, so the committed corpora are not
# touched; a crashing input is kept there and its path printed.
set -euo pipefail
cd "$(dirname "$0")"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz/ci.sh: no nightly toolchain: install it (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/ci.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# One build for everything: debug assertions and overflow checks on (netback's debug_asserts
# are invariants too), no sanitizer (the code under test is safe Rust over a memfd the
# sanitizers cannot see into; this keeps the build and the runs fast), and 16 codegen units
# (a shorter build on two cores, for slightly slower runs).
FLAGS=(-a -s none --codegen-units 16)
cargo +nightly fuzz build "${FLAGS[@]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for target in $(cargo +nightly fuzz list); do
    seeds=$(find "corpus/$target" -type f | wc -l)
    case "$target" in
        netback_* | xenbus_keys) limit=(-max_total_time=8 -max_len=2048) ;;
        *) limit=(-runs=$((seeds + 5000))) ;;
    esac
    mkdir -p "$work/$target" "$work/artifacts/$target"
    log="$work/$target.log"
    start=$(date +%s)
    if cargo +nightly fuzz run "${FLAGS[@]}" "$target" "$work/$target" "corpus/$target" -- \
        "${limit[@]}" -artifact_prefix="$work/artifacts/$target/" -print_final_stats=1 \
        >"$log" 2>&1; then
        runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$')
        echo "fuzz $target: ok, ${runs:-?} runs ($seeds corpus inputs) in $(($(date +%s) - start)) s"
    else
        status=1
        echo "fuzz $target: FAILED" >&2
        grep -E "panicked at|^thread|SUMMARY|Test unit written" -A2 "$log" >&2 || tail -40 "$log" >&2
        for a in "$work/artifacts/$target"/*; do
            [ -e "$a" ] || continue
            keep="${TMPDIR:-/tmp}/splitnet-fuzz-$target-$(basename "$a")"
            cp "$a" "$keep"
            echo "  reproduce: (cd fuzz && cargo +nightly fuzz run ${FLAGS[*]} $target $keep)" >&2
        done
    fi
done
exit $status
