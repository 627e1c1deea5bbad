# syntax=docker/dockerfile:1
#
# The jetstream-kv-operator image: non-root, fine with a read-only root filesystem, and
# nothing in it but the operator, glibc, CA certificates and tzdata (distroless).
#
#   docker build -t jetstream-kv-operator:0.2.0 .
#
# The operator uses rustls (ring), never OpenSSL, so the builder needs only a C compiler (for
# ring), and the runtime needs only glibc and libgcc_s: distroless/cc.

ARG RUST_VERSION=1.95

# Builder: Debian 12 (bookworm), the same glibc as the distroless runtime below.
FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src

# Dependencies, in a layer of their own that is rebuilt only when Cargo.toml or Cargo.lock change:
# empty stand-ins for the crate's library and binary let cargo compile every dependency now.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The crate itself. COPY keeps the files' modification times, which can be older than the
# stand-ins built above: touch the crate roots so that cargo rebuilds the crate.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -D -m 0755 target/release/jetstream-kv-operator /out/jetstream-kv-operator

# Runtime: no shell, no package manager; CA certificates for tls:// NATS URLs.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="jetstream-kv-operator" \
      org.opencontainers.image.description="Provisions the NATS JetStream KV buckets of Dapr state.jetstream Components" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/jetstream-kv-operator /jetstream-kv-operator
# 65532 is distroless' "nonroot" user; numeric, so that runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/jetstream-kv-operator"]
CMD ["run"]
