#!/usr/bin/env bash
# The Python cross-checks of an embedstream binary against implementations
# that are not ours (the last part of .ci/run, callable on its own):
#
#     scripts/ci_crosschecks.sh BIN          # e.g. target/debug/embedstream
#
#  0. the venv: $VENV (default .venv-ci), made or updated here from
#     scripts/requirements-check.txt;
#  1. the checkers themselves (pytest scripts/tests);
#  2. converted files read back by pyarrow/polars/duckdb/pandas;
#  3. `serve` checked by a grpcio client and pyarrow.flight, and `stream`;
#     the same over TLS with a bearer token, and /metrics (needs `openssl`);
#     a refresh under a live `serve`, resumed with the old file's checkpoints;
#  4. `upload` checked by a grpcio receiver;
#  5. three replicas of a data set on 127.0.0.2-4 (scripts/tests/test_multihost.py).
# One `ok: NAME` / `FAILED: NAME` line per check, then
# `cross-checks: N passed, N failed`; exits 1 if any failed.
#
# Adding a check: one `check NAME CMD...` line in the section it belongs to
# (a Python check runs as `pym MODULE ARGS...`, i.e. python -m
# embedstream_py.MODULE). A check that needs a server started with other
# flags starts it first with `serve PORT FLAGS...` (see section 3).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 BIN (the embedstream binary to check)" >&2; exit 2; }
[ -x "$1" ] || { echo "$0: $1 is not an executable" >&2; exit 2; }
BIN=$(realpath "$1")
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "python venv for the cross-checks"
VENV=${VENV:-$ROOT/.venv-ci}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: -r scripts/requirements-check.txt
PY="$VENV/bin/python"
export PYTHONPATH="$ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}"
echo "binary: $BIN"

PASSED=0
FAILED=0
check() { # check NAME CMD...: run one cross-check, count it
  local name=$1; shift
  if "$@"; then PASSED=$((PASSED + 1)); echo "ok: $name"; else FAILED=$((FAILED + 1)); echo "FAILED: $name"; fi
}

pym() { # pym MODULE ARGS...: python -m embedstream_py.MODULE in the venv
  "$PY" -m "embedstream_py.$1" "${@:2}"
}

wait_port() { # wait_port PORT: until something listens (max 30 s)
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; return 1
}

serve() { # serve PORT FLAGS...: start `embedstream serve --port PORT FLAGS...`, wait until it listens
  local port=$1; shift
  "$BIN" serve "$@" --port "$port" >"$WORK/serve-$port.log" 2>&1 &
  PIDS+=($!)
  wait_port "$port" || { tail -20 "$WORK/serve-$port.log" >&2; return 1; }
}

step "the checkers themselves: each passes on a faithful file/server and fails on injected faults"
check "pytest scripts/tests" "$PY" -m pytest scripts/tests -q -p no:cacheprovider

step "converted files read back by pyarrow, polars, duckdb, pandas"
# One pickle per frame and pandas version through each writer family (to_pickle
# and the oldest protocol); cargo test covers every fixture value by value.
for pkl in tests/fixtures/pandas/*/*.to_pickle.pkl tests/fixtures/pandas/*/*.dump-p2.pkl data/sample.pkl; do
  expected="${pkl%.pkl}.expected.json"
  if [ -f "$expected" ] && "$PY" -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("error") else 1)' "$expected"; then
    continue # a fixture the converter must refuse; cargo test checks the message
  fi
  out="$WORK/$(basename "$(dirname "$pkl")")-$(basename "${pkl%.pkl}").arrow"
  args=("$out" "$pkl")
  [ -f "$expected" ] && args+=(--expected "$expected")
  check "convert+read $pkl" bash -c "'$BIN' convert '$pkl' -o '$out' --no-progress >/dev/null && '$PY' -m embedstream_py.check_output ${args[*]}"
done
out="$WORK/sample.parquet"
check "parquet output" bash -c "'$BIN' convert data/sample.pkl -o '$out' --format parquet --no-progress >/dev/null && '$PY' -m embedstream_py.check_output '$out' data/sample.pkl"

step "serve, checked by a grpcio client and pyarrow.flight"
# Every check against a running server goes here: `serve PORT FLAGS...` for
# a server with the flags it needs, then one `check` line per client.
DATA="$WORK/data-sample.arrow"
PORT=50151
serve "$PORT" --data "$DATA"
check "grpcio StreamEmbedding" pym grpc_check --server "127.0.0.1:$PORT" --data "$DATA"
check "pyarrow.flight" pym flight_check --server "127.0.0.1:$PORT" --data "$DATA"
check "embedstream stream" "$BIN" stream --server "127.0.0.1:$PORT" --out "$WORK/pulled.arrow"

# The same over TLS with a bearer token, and /metrics (issue 11): a
# throw-away PKI made by the openssl CLI (Debian package `openssl`).
if ! command -v openssl >/dev/null; then
  echo "installing the openssl CLI for the TLS cross-checks" >&2
  { apt-get update -qq && apt-get install -y -qq openssl; } >/dev/null || echo "pki needs the openssl CLI; install the openssl package" >&2
fi
PKI="$WORK/pki"; pym pki "$PKI" >/dev/null
printf '# cross-check token\nci-%s\n' "$RANDOM$RANDOM" > "$WORK/tokens.txt"
SPORT=50155; MPORT=50156
serve "$SPORT" --data "$DATA" --tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key" \
  --auth-token-file "$WORK/tokens.txt" --metrics-addr "127.0.0.1:$MPORT"
check "TLS+token: grpcio, pyarrow.flight grpc+tls, /metrics" pym secure_check --server "127.0.0.1:$SPORT" \
  --data "$DATA" --tls-ca "$PKI/ca.pem" --token-file "$WORK/tokens.txt" --metrics "http://127.0.0.1:$MPORT/metrics"
check "embedstream stream over TLS with a token" "$BIN" stream --server "127.0.0.1:$SPORT" \
  --tls-ca "$PKI/ca.pem" --token-file "$WORK/tokens.txt"

# A refresh under a live server (issue 9): checkpoints taken by a grpcio client
# on OLD, NEW.pkl re-exported by pandas (rows removed, changed, added), the
# documented refresh onto the served path, then the old checkpoints resumed.
REFRESH="$WORK/refresh"
mkdir "$REFRESH"
check "refresh: convert OLD" "$BIN" convert data/sample.pkl -o "$REFRESH/old.arrow" --no-progress
cp "$REFRESH/old.arrow" "$REFRESH/live.arrow"
FPORT=50153
serve "$FPORT" --data "$REFRESH/live.arrow"
refresh_args=(--server "127.0.0.1:$FPORT" --old "$REFRESH/old.arrow" --state "$REFRESH/state.json")
check "refresh: checkpoints on OLD, NEW.pkl written" pym refresh_check prepare "${refresh_args[@]}" \
  --pickle data/sample.pkl --new-pickle "$REFRESH/new.pkl"
check "refresh: convert --previous onto the served path" "$BIN" convert "$REFRESH/new.pkl" \
  --previous "$REFRESH/old.arrow" --match-on id -o "$REFRESH/live.arrow" --force --no-progress
check "refresh: grpcio resumes across the refresh with OLD's checkpoints" pym refresh_check verify \
  "${refresh_args[@]}" --new "$REFRESH/live.arrow"

step "upload, checked by a grpcio receiver"
# The receiver compares every row it gets with the file (--data) and exits
# non-zero if they differ; the upload exits non-zero unless the receiver says
# success. --fail-first drops the first attempt mid-stream: upload must retry.
RPORT=50152
for variant in "com.alpha.backend.grpc" "embedding" "embedding --fail-first"; do
  set -- $variant
  package=$1; shift
  "$PY" -m embedstream_py.ingest_receiver --port "$RPORT" --package "$package" --data "$DATA" \
    --once --timeout 120 "$@" --report "$WORK/ingest.json" &
  RPID=$!
  PIDS+=("$RPID")
  wait_port "$RPORT"
  check "upload ($variant)" "$BIN" upload "$DATA" --to "127.0.0.1:$RPORT" --service-package "$package"
  check "receiver got every row ($variant)" wait "$RPID"
done

step "multi-host: three replicas on 127.0.0.2-4, read in parallel, killed mid-read and mid-stream"
# A data set converted from three pandas pickles, served by three replicas
# that advertise each other: pyarrow.flight reads every endpoint in parallel
# round robin, then again with a replica SIGKILLed mid-read (its partitions
# re-read elsewhere); a grpcio StreamEmbedding resumes its checkpoint on
# another replica after a SIGKILL. Every row once, equal to the pickles'.
check "multi-host (pytest scripts/tests/test_multihost.py)" "$PY" -m pytest \
  scripts/tests/test_multihost.py -m multihost --embedstream-bin "$BIN" -q -p no:cacheprovider

echo
echo "cross-checks: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
