#!/usr/bin/env bash
# Proves the container on this machine: builds the image from the top-level
# Dockerfile as written (only the base images are local), runs it with host
# networking on a non-default GRPC_PORT, waits for the HEALTHCHECK
# (`embedstream health`) to report healthy, streams the sample through it,
# checks the server runs as non-root, and that `docker stop` ends it cleanly.
#
# No container registry is reachable here, so the base images are made
# locally with debootstrap and cached as docker images (a second run skips
# that): local/embedstream-rust-base (Debian trixie + gcc + the host's Rust
# toolchain) and local/embedstream-runtime-base (Debian trixie minbase). Both
# trust the host's locally added CA certificates, because registries are
# reached through a TLS-intercepting proxy; the public Dockerfile never does.
#
# Usage: scripts/docker_smoke.sh [--bases-only]
# Env: SMOKE_PORT (default 50261), DEBIAN_MIRROR (default: from the apt
#      sources), KEEP_IMAGE=1 keeps the built image and its build-stage layers
#      (a later build reuses the dependency layer), REBUILD_BASES=1.
# Prints ok:/FAILED: lines and "N passed, N failed"; exits non-zero on failure,
# and 77 after a "DOCKER SMOKE SKIPPED: <reason>" line when docker cannot start.
set -uo pipefail
cd "$(dirname "$0")/.."

STARTED=$(date +%s)
PASSED=0
FAILED=0
ok() { PASSED=$((PASSED + 1)); echo "ok: $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAILED: $*"; }
step() { echo; echo "== $* ($(($(date +%s) - STARTED)) s)"; }
die() { fail "$*"; summary; exit 1; }
# Docker cannot run here at all: not a failure of the image, but say so loudly.
skip() { echo; echo "DOCKER SMOKE SKIPPED: $*"; exit 77; }
summary() { echo; echo "docker smoke: $PASSED passed, $FAILED failed in $(($(date +%s) - STARTED)) s"; }

RUST_BASE=local/embedstream-rust-base:trixie
RUNTIME_BASE=local/embedstream-runtime-base:trixie
IMAGE=local/embedstream-smoke:$$
CONTAINER=embedstream-smoke-$$
PORT=${SMOKE_PORT:-50261}
TOOLCHAIN=${SMOKE_TOOLCHAIN:-stable-x86_64-unknown-linux-gnu}
WORK=$(mktemp -d /tmp/embedstream-docker-smoke.XXXXXX)
DOCKERD_PID=
export DOCKER_BUILDKIT=0 # the legacy builder: there is no buildx here

COMPOSE_USED=
cleanup() {
  docker rm -f "$CONTAINER" "$CONTAINER-check" >/dev/null 2>&1
  [ -n "$COMPOSE_USED" ] && "${COMPOSE[@]}" --profile check down >/dev/null 2>&1
  if [ "${KEEP_IMAGE:-0}" != 1 ]; then
    docker rmi "$IMAGE" >/dev/null 2>&1
    # The legacy builder keeps every step's layer as an untagged image (the
    # build stage's are not under the tag): remove each one the log names,
    # newest first, but never the FROM steps' (the cached base images).
    [ -f "$WORK/build.log" ] && awk '/^Step [0-9]+\/[0-9]+ : FROM /{from=1; next}
      /^ ---> [0-9a-f]+$/{if (!from) print $2; from=0}' "$WORK/build.log" | tac |
      xargs -r docker rmi >/dev/null 2>&1
  fi
  # Files the container wrote belong to its user; root can still remove them.
  rm -rf "$WORK"
  if [ -n "$DOCKERD_PID" ]; then
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# `embedstream stream` prints "N rows in ..." and then "...; all checks passed".
streamed_all() { # streamed_all OUTPUT ROWS
  [ -n "$2" ] && grep -qE "(^|[^0-9])$2 rows in " <<<"$1" && grep -q "all checks passed" <<<"$1"
}

# ---------------------------------------------------------------- docker up
step "docker daemon"
command -v docker >/dev/null || skip "no docker CLI (apt-get install docker.io)"
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || skip "no docker daemon running and no dockerd (apt-get install docker.io)"
  [ "$(id -u)" = 0 ] || skip "no docker daemon running, and starting dockerd needs root"
  # Niced: the containers (and so the in-container build) inherit it.
  nice -n 10 dockerd >"$WORK/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 300); do docker info >/dev/null 2>&1 && break; sleep 0.1; done
  docker info >/dev/null 2>&1 || { tail -5 "$WORK/dockerd.log"; skip "dockerd did not start within 30 s (log above)"; }
  echo "started dockerd (pid $DOCKERD_PID), stopped again on exit"
fi
ok "docker daemon answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"

# ------------------------------------------------------------ base images
mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(grep -hsE '^URIs:.*/debian/?$' /etc/apt/sources.list.d/*.sources | head -1 | awk '{print $2}')
  [ -z "$uri" ] && uri=$(grep -hsE '^deb +(\[[^]]*\] +)?https?://[^ ]*/debian/? ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
    head -1 | sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '{print $1}')
  echo "${uri:-http://deb.debian.org/debian}"
}

# make_base IMAGE PACKAGES [docker-import --change args...]
make_base() {
  local image=$1 packages=$2
  shift 2
  if [ "${REBUILD_BASES:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
    ok "base image $image (cached)"
    return 0
  fi
  command -v debootstrap >/dev/null || { fail "no debootstrap (apt-get install debootstrap)"; return 1; }
  local root="$WORK/rootfs-${image//[^a-z]/_}" url
  url=$(mirror)
  echo "debootstrap trixie from $url with $packages"
  if ! nice -n 10 debootstrap --variant=minbase --include="$packages" trixie "$root" "$url" >"$WORK/debootstrap.log" 2>&1; then
    tail -20 "$WORK/debootstrap.log"
    fail "debootstrap for $image"
    return 1
  fi
  # The host's locally added CAs (the TLS-intercepting proxy), for apt and cargo.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null || { fail "update-ca-certificates in $image"; return 1; }
  fi
  if [ "$image" = "$RUST_BASE" ]; then
    # Debian's rustc is older than the dependencies need: carry the host's
    # toolchain, laid out as the official rust images do.
    local tc="${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$TOOLCHAIN"
    [ -x "$tc/bin/cargo" ] || { fail "no toolchain at $tc (set SMOKE_TOOLCHAIN)"; return 1; }
    mkdir -p "$root/usr/local/rustup/toolchains/$TOOLCHAIN" "$root/usr/local/cargo/bin"
    tar -C "$tc" --exclude=./share -c . | tar -C "$root/usr/local/rustup/toolchains/$TOOLCHAIN" -x
    for b in cargo rustc rustdoc; do
      ln -s "/usr/local/rustup/toolchains/$TOOLCHAIN/bin/$b" "$root/usr/local/cargo/bin/$b"
    done
  fi
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  if tar -C "$root" -c . | docker import "$@" - "$image" >/dev/null &&
    { [ "$image" != "$RUST_BASE" ] || docker run --rm "$image" sh -c 'rustc --version && cargo --version'; }; then
    ok "base image $image made ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
  else
    fail "docker import $image"
    docker rmi "$image" >/dev/null 2>&1
    rm -rf "$root"
    return 1
  fi
  rm -rf "$root"
}

step "base images"
make_base "$RUNTIME_BASE" ca-certificates \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' || die "runtime base image"
make_base "$RUST_BASE" ca-certificates,gcc,libc6-dev \
  --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
  --change 'ENV CARGO_HOME=/usr/local/cargo' \
  --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' || die "rust base image"
if [ "${1:-}" = --bases-only ]; then summary; [ "$FAILED" -eq 0 ]; exit; fi

# ------------------------------------------------------------------ build
step "docker build (release build inside the container: takes a while)"
if nice -n 10 docker build --network host \
  --build-arg RUST_IMAGE="$RUST_BASE" --build-arg RUNTIME_IMAGE="$RUNTIME_BASE" \
  -t "$IMAGE" . >"$WORK/build.log" 2>&1; then
  ok "docker build ($(($(date +%s) - STARTED)) s so far; image $(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
else
  tail -40 "$WORK/build.log"
  die "docker build"
fi
cfg() { docker image inspect --format "$1" "$IMAGE"; }
[ "$(cfg '{{json .Config.Entrypoint}}')" = '["embedstream"]' ] && ok "ENTRYPOINT [\"embedstream\"]" || fail "entrypoint is $(cfg '{{json .Config.Entrypoint}}')"
grep -q '"50051/tcp"' <<<"$(cfg '{{json .Config.ExposedPorts}}')" && ok "EXPOSE 50051" || fail "exposed: $(cfg '{{json .Config.ExposedPorts}}')"
user=$(cfg '{{.Config.User}}')
[ -n "$user" ] && [ "$user" != root ] && [ "$user" != 0 ] && ok "USER $user" || fail "image user is '$user'"

# -------------------------------------------------------------------- run
step "run with --network host on GRPC_PORT=$PORT, serving a pickle given by PKL_PATH"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then die "port $PORT is taken; set SMOKE_PORT"; fi
mkdir -p "$WORK/data"
cp data/sample.pkl "$WORK/data/sample.pkl"
# The image's user converts the pickle into the volume once: it must be writable.
uid=$(docker run --rm --entrypoint id "$IMAGE" -u)
chown -R "$uid" "$WORK/data"
docker run -d --name "$CONTAINER" --network host \
  -e GRPC_PORT="$PORT" -e PKL_PATH=/data/sample.pkl -e LOG_LEVEL=INFO \
  -v "$WORK/data:/data" "$IMAGE" >/dev/null || die "docker run"
status=
for _ in $(seq 180); do
  status=$(docker inspect --format '{{.State.Health.Status}}' "$CONTAINER" 2>/dev/null)
  [ "$status" = healthy ] || [ "$status" = unhealthy ] && break
  [ "$(docker inspect --format '{{.State.Running}}' "$CONTAINER" 2>/dev/null)" = true ] || break
  sleep 1
done
if [ "$status" = healthy ]; then
  ok "HEALTHCHECK healthy on port $PORT (embedstream health follows GRPC_PORT)"
else
  docker logs "$CONTAINER" 2>&1 | tail -20
  docker inspect --format '{{json .State.Health}}' "$CONTAINER" 2>/dev/null | tail -c 1500
  die "health status '$status' after 180 s"
fi
[ -f "$WORK/data/sample.arrow" ] && ok "PKL_PATH pickle converted once to /data/sample.arrow" || fail "no /data/sample.arrow"
grep -q "converting /data/sample.pkl" <<<"$(docker logs "$CONTAINER" 2>&1)" && ok "log says it converted the pickle" || fail "no conversion line in the log"

rows=$(docker run --rm -v "$WORK/data:/data" "$IMAGE" inspect /data/sample.arrow 2>/dev/null | grep -oE '^rows: *[0-9]+' | grep -oE '[0-9]+')
out=$(docker run --rm --name "$CONTAINER-check" --network host "$IMAGE" stream --server "127.0.0.1:$PORT" 2>&1)
echo "$out" | tail -2
if streamed_all "$out" "$rows"; then
  ok "embedstream stream (image's client) got all $rows rows, checked"
else
  fail "stream: expected ${rows:-?} rows: $out"
fi
host_bin=${EMBEDSTREAM_BIN:-}
[ -z "$host_bin" ] && for b in target/release/embedstream target/debug/embedstream; do [ -x "$b" ] && host_bin=$b && break; done
if [ -n "$host_bin" ]; then
  out=$("$host_bin" stream --server "127.0.0.1:$PORT" --flight 2>&1)
  streamed_all "$out" "$rows" && ok "host's $host_bin stream --flight: $rows rows" || fail "host stream --flight: $out"
  "$host_bin" health --server "127.0.0.1:$PORT" >/dev/null 2>&1 && ok "host's embedstream health: SERVING" || fail "host's embedstream health"
fi

uid_in=$(docker exec "$CONTAINER" id -u)
[ -n "$uid_in" ] && [ "$uid_in" != 0 ] && ok "server process runs as uid $uid_in, not root" || fail "uid in container: '$uid_in'"
pid1=$(docker top "$CONTAINER" -o user,pid,comm 2>&1 | awk 'NR==2')
echo "docker top: $pid1"
grep -q '^root ' <<<"$pid1" && fail "docker top shows root" || ok "docker top: not root"

step "docker stop"
docker stop -t 20 "$CONTAINER" >/dev/null
code=$(docker inspect --format '{{.State.ExitCode}}' "$CONTAINER")
[ "$code" = 0 ] && ok "docker stop: exit code 0" || fail "docker stop: exit code $code"
# Captured first: `cmd | grep -q` under pipefail fails when grep quits early (SIGPIPE).
log=$(docker logs "$CONTAINER" 2>&1)
tail -3 <<<"$log"
grep -q "SIGTERM received" <<<"$log" && grep -q "INFO embedstream::serve: stopped" <<<"$log" &&
  ok "graceful: SIGTERM received ... stopped" || fail "no graceful shutdown lines in the log"

# ---------------------------------------------------------------- compose
step "compose.yaml: serve + the check profile (host networking, port $((PORT + 1)))"
if command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose --ansi never)
elif docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose --ansi never)
else
  COMPOSE=()
  echo "no docker compose here: compose.yaml not exercised"
fi
if [ ${#COMPOSE[@]} -gt 0 ]; then
  mkdir -p "$WORK/compose-data"
  cp "$WORK/data/sample.arrow" "$WORK/compose-data/embeddings.arrow"
  export COMPOSE_PROJECT_NAME="embedstream-smoke-$$" EMBEDSTREAM_IMAGE="$IMAGE" \
    GRPC_PORT=$((PORT + 1)) DATA_DIR="$WORK/compose-data"
  COMPOSE_USED=1
  if out=$("${COMPOSE[@]}" --profile check up --no-build --exit-code-from check 2>&1); then
    grep -E "rows in|all checks" <<<"$out" | tail -2
    streamed_all "$out" "$rows" &&
      ok "compose --profile check: server healthy, stream got all $rows rows" ||
      fail "compose check output: $(echo "$out" | tail -5)"
  else
    echo "$out" | tail -20
    fail "docker-compose --profile check up"
  fi
  "${COMPOSE[@]}" --profile check down >/dev/null 2>&1
  # The replicas profile (issue 12): three serve services on 127.0.0.2-4 that
  # advertise each other; checked as configuration only (the multi-host
  # behaviour itself is scripts/tests/test_multihost.py in the cross-checks).
  if cfg=$("${COMPOSE[@]}" --profile replicas config 2>&1); then
    adv="grpc://127.0.0.2:50071,grpc://127.0.0.3:50071,grpc://127.0.0.4:50071"
    [ "$(grep -c -- "$adv" <<<"$cfg")" -eq 3 ] && grep -q -- "- 127.0.0.4:50071" <<<"$cfg" &&
      ok "compose --profile replicas config: three replicas advertising each other" ||
      fail "compose --profile replicas config: $(echo "$cfg" | grep -A12 'replica-' | head -20)"
  else
    fail "compose --profile replicas config: $(echo "$cfg" | tail -5)"
  fi
fi

summary
[ "$FAILED" -eq 0 ]
