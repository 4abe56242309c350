#!/usr/bin/env bash
# Seed the fuzz corpus with every fixture pickle (real pandas and hostile).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$here/corpus/pickle_machine"
find "$here/../tests/fixtures" -name '*.pkl' -size -200k -exec cp {} "$here/corpus/pickle_machine/" \;
ls "$here/corpus/pickle_machine" | wc -l
