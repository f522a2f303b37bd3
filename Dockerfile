# berth's container image: a build stage and a small runtime stage.
#
#   docker build -t berth .
#
# Every base image is a build argument, so the image also builds where no
# registry can be reached, from bases made locally (docs/swarm.md shows how):
#   BUILDER_IMAGE  a Debian 12 image with a Rust toolchain (1.85 or newer)
#   RUNTIME_IMAGE  a Debian 12 image; berth needs glibc and libstdc++
#   BINARY         `source` compiles berth here; `prebuilt` takes the
#                  `berth` binary from the root of the build context instead
#                  (one built on a Debian 12 host), skipping the long
#                  compile. Needs BuildKit (DOCKER_BUILDKIT=1), which builds
#                  only the stages the result needs.
ARG BUILDER_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG BINARY=source

FROM ${BUILDER_IMAGE} AS build-source
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libclang-dev protobuf-compiler pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
RUN cargo build --release --locked && cp target/release/berth /berth

FROM scratch AS build-prebuilt
COPY berth /berth

FROM build-${BINARY} AS build

FROM ${RUNTIME_IMAGE}
# A fixed uid, so volumes and the Kubernetes securityContext agree on it.
RUN groupadd --system --gid 10001 berth \
 && useradd --system --uid 10001 --gid berth --home-dir /var/lib/berth --shell /usr/sbin/nologin berth \
 && mkdir -p /var/lib/berth \
 && chown berth:berth /var/lib/berth
COPY --from=build /berth /usr/local/bin/berth
USER 10001:10001
WORKDIR /var/lib/berth
ENV BERTH_DATA_DIR=/var/lib/berth \
    BERTH_LISTEN=0.0.0.0:5000 \
    BERTH_PEER_LISTEN=0.0.0.0:5001
VOLUME /var/lib/berth
# 5000: the registry API. 5001: peers (Raft and blob copies), cluster only.
EXPOSE 5000 5001
# Liveness only: a node that lost its quorum is still alive and still serves
# blobs by digest. Orchestrators that should wait for readiness ask
# `berth health --ready` (stack.yml does).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/berth", "health"]
ENTRYPOINT ["/usr/local/bin/berth"]
CMD ["serve"]
