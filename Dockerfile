# syntax=docker/dockerfile:1
# The `conclave` node as a container image (see README, "Deploying").
#
#   podman build -t conclave .        # or: docker build -t conclave .
#   podman compose up                 # a 3-node cluster (compose.yaml)
#
# Two stages: the build, with the locked dependencies (`--locked` refuses a Cargo.lock that
# does not match), and a small runtime image with the binary only, run as an unprivileged user.
# Settings come from CONCLAVE_* environment variables (every `conclave serve` flag has one).

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
# .cargo/config.toml carries `--cfg tokio_unstable`: no RUSTFLAGS here, which would replace it
# (even an empty one).
COPY . .
RUN cargo build --release --locked -p conclave-node --bin conclave \
 && install -D -m 0755 target/release/conclave /out/conclave

FROM docker.io/library/debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/conclave --no-create-home conclave \
 && install -d -o conclave -g conclave -m 0750 /var/lib/conclave
COPY --from=build /out/conclave /usr/local/bin/conclave
USER 10001:10001
# The data directory: mount a volume here, or a member loses its log with its container.
VOLUME ["/var/lib/conclave"]
# A named member (CONCLAVE_INITIAL_CLUSTER, ...) listens on 0.0.0.0:2379 for clients and on
# its peer URL's port (2380 by convention) for peers unless told otherwise.
ENV CONCLAVE_WORKING_DIR=/var/lib/conclave
# 2379: the HTTP API (clients); 2380: the peer transport (members).
EXPOSE 2379 2380
# /health answers 200 while the node knows a leader. No curl in the image: bash's /dev/tcp
# sends one request and reads the status line.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/2379 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# SIGTERM (what `docker stop` and Kubernetes send) stops a node cleanly: a leader hands over
# leadership first. It is the process itself (exec form), so it receives the signal.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/conclave"]
CMD ["serve"]
