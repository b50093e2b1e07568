# syntax=docker/dockerfile:1
# byok-bridge: multi-stage build, distroless non-root runtime (~25 MB).
#   docker build -t byok-bridge .
#   docker run --rm -p 8787:8787 --env-file byok.env byok-bridge

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Build the dependencies first, so code changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src tests/e2e benches examples \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && mkdir -p tests/replicas && touch tests/e2e/main.rs tests/replicas/main.rs benches/flag_flip.rs benches/reservations.rs benches/vault.rs \
    && cargo build --release --locked --bin byok-bridge \
    && rm -rf src \
    && mkdir -p /data
COPY src ./src
# The shipped provider catalog, price table and account page are compiled into the binary.
COPY catalog ./catalog
COPY pricing ./pricing
COPY web ./web
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin byok-bridge

# cc: glibc + libgcc, which the binary links against; TLS roots are compiled in (rustls + webpki-roots).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/byok-bridge /usr/local/bin/byok-bridge
# Usage records wait here while Directus is unreachable: mount a volume so they survive the container.
COPY --from=build --chown=65532:65532 /data /var/lib/byok-bridge
VOLUME /var/lib/byok-bridge
ENV BIND_ADDR=0.0.0.0:8787 \
    DATA_DIR=/var/lib/byok-bridge \
    LOG_FORMAT=json \
    RUST_LOG=info
EXPOSE 8787
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/byok-bridge"]
CMD ["serve"]
