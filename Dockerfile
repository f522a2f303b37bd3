# berth's container image: a build stage and a small runtime stage.
#
#   docker build -t berth .
#
# Both base images are build arguments, so the image also builds where no
# registry can be reached, from bases made locally (docs/swarm.md shows how):
#   BUILDER_IMAGE  a Debian 12 image with a Rust toolchain (1.85 or newer)
#   RUNTIME_IMAGE  a Debian 12 image; berth needs glibc and libstdc++
# A build context that holds a prebuilt `berth` binary (built on a Debian 12
# host) instead of the sources skips the long compile; the builder image then
# needs only a shell.
ARG BUILDER_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY . .
RUN if [ -f berth ]; then \
      install -m 0755 berth /berth; \
    else \
      apt-get update \
      && apt-get install -y --no-install-recommends clang libclang-dev protobuf-compiler pkg-config \
      && cargo build --release --locked \
      && install -m 0755 target/release/berth /berth; \
    fi

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
# `berth health --ready` (stack.yml asks `--ready --or-joining`).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/berth", "health"]
ENTRYPOINT ["/usr/local/bin/berth"]
CMD ["serve"]
