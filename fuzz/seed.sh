#!/usr/bin/env bash
# Seed the fuzz corpora:
# - pickle_machine: every fixture pickle (real pandas and hostile);
# - arrow_file: each real pandas fixture converted to Arrow IPC (default and
#   --keep-float64), plus a few small batches of data/sample.pkl; only files
#   under 64 KiB (libFuzzer mutates small inputs far faster).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
mkdir -p "$here/corpus/pickle_machine" "$here/corpus/arrow_file"
find "$root/tests/fixtures" -name '*.pkl' -size -200k -exec cp {} "$here/corpus/pickle_machine/" \;
ls "$here/corpus/pickle_machine" | wc -l

cargo build --quiet --manifest-path "$root/Cargo.toml"
bin="$root/target/debug/embedstream"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
n=0
for pkl in "$root"/tests/fixtures/pandas/*/*.pkl "$root/data/sample.pkl"; do
    for flags in "" "--keep-float64" "--batch-rows 7"; do
        out="$tmp/seed-$n.arrow"
        n=$((n + 1))
        # shellcheck disable=SC2086
        if "$bin" convert "$pkl" -o "$out" $flags >/dev/null 2>&1 \
            && [ "$(stat -c %s "$out")" -lt 65536 ]; then
            cp "$out" "$here/corpus/arrow_file/$(sha1sum "$out" | cut -c1-16).arrow"
        fi
    done
done
ls "$here/corpus/arrow_file" | wc -l
