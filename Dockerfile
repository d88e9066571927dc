# syntax=docker/dockerfile:1
# concord's container image: one static binary on distroless, non-root, and compatible
# with a read-only root filesystem (it writes only to the mounted snapshot and /tmp
# volumes the chart gives it).
#
#   docker build -t concord:dev .
#
# Stage 1 builds on Alpine, where Rust's native target is musl and links statically
# (TLS is rustls on ring: no OpenSSL and no glibc at run time). The cache mounts keep the
# crate registry and the build directory between builds.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
# The workspace: the crate, and the testenv member Cargo needs to resolve it.
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY testenv testenv
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p concord --bin concord \
    && cp target/release/concord /concord
# Refuse to ship a dynamically linked binary: the runtime image has no libc.
RUN ! ldd /concord 2>/dev/null | grep -q '=>' && /concord --version

# Stage 2: no shell, no package manager; uid/gid 65532 ("nonroot").
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /concord /usr/local/bin/concord
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/concord"]
CMD ["controller"]
