# embedstream: build with cargo, run on slim Debian as a non-root user.
#
#   docker build -t embedstream .
#   docker run -v "$PWD/data:/data" -p 50051:50051 embedstream
#
# Serves /data/embeddings.arrow, or the file PKL_PATH names (a pandas pickle
# is converted once to a sibling .arrow, so /data must then be writable by
# uid 10001). Works with the legacy builder too (no BuildKit-only syntax).
# The dependencies' minimum Rust is 1.89 (uuid), above Cargo.toml's rust-version.
ARG RUST_IMAGE=rust:1.93-slim-trixie
ARG RUNTIME_IMAGE=debian:trixie-slim

FROM ${RUST_IMAGE} AS build
# Lets `docker image prune --filter label=embedstream.stage=build` find the
# build stage's layers, which the legacy builder keeps untagged.
LABEL embedstream.stage=build
# The container needs no debug info; everything else is the release profile.
ENV CARGO_PROFILE_RELEASE_DEBUG=0
WORKDIR /src
# Dependencies first, in a layer that only Cargo.toml, Cargo.lock, build.rs
# and proto/ invalidate: an empty crate with the real manifest.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src
COPY src ./src
# COPY keeps the context's mtimes, which may be older than the empty crate's
# build: touch the crate roots so cargo rebuilds embedstream itself.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin embedstream \
 && cp target/release/embedstream /usr/local/bin/embedstream \
 && embedstream --version

FROM ${RUNTIME_IMAGE}
RUN groupadd --system --gid 10001 embedstream \
 && useradd --system --uid 10001 --gid embedstream --no-create-home \
      --home-dir /data --shell /usr/sbin/nologin embedstream \
 && mkdir /data \
 && chown embedstream:embedstream /data
COPY --from=build /usr/local/bin/embedstream /usr/local/bin/embedstream
USER embedstream:embedstream
WORKDIR /data
# `serve --data` reads PKL_PATH: an Arrow file, or a pickle to convert once.
ENV PKL_PATH=/data/embeddings.arrow
VOLUME ["/data"]
EXPOSE 50051
# Follows GRPC_PORT when it is set (host networking may move the port).
HEALTHCHECK --interval=10s --timeout=6s --start-period=60s --retries=3 \
  CMD embedstream health --server "127.0.0.1:${GRPC_PORT:-50051}" --timeout 5s
ENTRYPOINT ["embedstream"]
CMD ["serve"]
