#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) and runs each for a given time, niced, one after the
# other (or N at a time with FUZZ_JOBS=N).
#
#   scripts/fuzz.sh 600                    every target for 600 s
#   scripts/fuzz.sh 1800 saml_verify api_json
#   scripts/fuzz.sh build                  build only
#   scripts/fuzz.sh merge [targets...]     fold new coverage from fuzz/work/ into fuzz/corpus/
#
# Stable toolchain: the instrumentation `cargo fuzz build -s none` uses (sanitizer coverage
# with inline 8-bit counters, PC table and comparison tracing, no sanitizer) set through
# RUSTFLAGS for the target only (`--target`), so build scripts and proc macros stay plain.
# Work corpora (fuzz/work/<target>/) and logs (fuzz/logs/) are not committed; fuzz/corpus/
# (seeds and regression inputs) is, and `cargo test -p idbridge-fuzz-targets` replays it.
# A finding is written to fuzz/artifacts/<target>/; fix it, then copy the input into
# fuzz/corpus/<target>/ as a regression input.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/fuzz-deps.sh

ALL_TARGETS=(saml_gate saml_verify scim_filter scim_patch scim_resource sftp_csv ldap_controls ldap_message api_json saml_authn_request forward_response)
HOST=$(rustc -vV | sed -n 's/^host: //p')
BIN_DIR="fuzz/target/$HOST/release"

build() {
    echo "== building fuzz targets ($HOST)" >&2
    (cd fuzz && RUSTFLAGS="--cfg fuzzing -Cdebug-assertions -Coverflow-checks \
        -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
        -Cllvm-args=-sanitizer-coverage-pc-table \
        -Cllvm-args=-sanitizer-coverage-trace-compares \
        -Cllvm-args=-sanitizer-coverage-stack-depth" \
        nice -n "${FUZZ_BUILD_NICE:-10}" cargo build --release --target "$HOST" --bins)
}

max_len() {
    case "$1" in
        saml_*) echo 65536 ;;
        api_json | sftp_csv | scim_patch | scim_resource | forward_response) echo 16384 ;;
        *) echo 4096 ;;
    esac
}

run_one() {
    local target="$1" secs="$2"
    mkdir -p "fuzz/work/$target" "fuzz/artifacts/$target" fuzz/logs "fuzz/corpus/$target"
    local log="fuzz/logs/$target.log" dict=()
    [ -f "fuzz/dict/$target.dict" ] && dict=(-dict="fuzz/dict/$target.dict")
    echo "== $target: ${secs}s (log $log)" >&2
    local rc=0
    nice -n 19 "$BIN_DIR/$target" "fuzz/work/$target" "fuzz/corpus/$target" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$target")" \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" "${dict[@]}" \
        >"$log" 2>&1 || rc=$?
    summary "$target" "$rc"
    return "$rc"
}

# One line per target: run time, execs, execs/s, edges (cov), features (ft), corpus, findings.
summary() {
    local target="$1" rc="$2" log="fuzz/logs/$1.log"
    local last execs rate secs
    last=$(grep -E '^#[0-9]+' "$log" | grep -E 'cov: ' | tail -1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    secs=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | grep -oE '[0-9]+ second' | grep -oE '[0-9]+' | tail -1 || true)
    local findings
    findings=$(find "fuzz/artifacts/$target" -type f | wc -l)
    printf '%-14s rc=%s time=%ss execs=%s execs/s=%s findings=%s | %s\n' \
        "$target" "$rc" "${secs:-?}" "${execs:-?}" "${rate:-?}" "$findings" \
        "$(echo "$last" | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*')" \
        | tee -a fuzz/logs/summary.txt
}

merge() {
    local target
    for target in "$@"; do
        echo "== merging fuzz/work/$target into fuzz/corpus/$target" >&2
        nice -n 19 "$BIN_DIR/$target" -merge=1 -max_len="$(max_len "$target")" -timeout=10 \
            "fuzz/corpus/$target" "fuzz/work/$target" >"fuzz/logs/$target.merge.log" 2>&1
    done
}

case "${1:-}" in
    build) build ;;
    merge)
        shift
        targets=("$@")
        [ "${#targets[@]}" -eq 0 ] && targets=("${ALL_TARGETS[@]}")
        merge "${targets[@]}"
        ;;
    '' | *[!0-9]*)
        echo "usage: $0 SECONDS [targets...] | build | merge [targets...]" >&2
        exit 2
        ;;
    *)
        secs="$1"
        shift
        targets=("$@")
        [ "${#targets[@]}" -eq 0 ] && targets=("${ALL_TARGETS[@]}")
        build
        failed=0
        jobs_max="${FUZZ_JOBS:-1}"
        for target in "${targets[@]}"; do
            while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do sleep 5; done
            run_one "$target" "$secs" &
        done
        for pid in $(jobs -p); do wait "$pid" || failed=1; done
        [ "$failed" -eq 0 ] || { echo "fuzz: a target found a crash (see fuzz/artifacts/)" >&2; exit 1; }
        ;;
esac
