# The wpfleet controller image: `wpfleet serve` as a non-root user on a small runtime image
# (distroless: glibc, CA certificates, no shell). Build from the repository root:
#
#   docker build -t wpfleet .
#   docker run -p 8080:8080 wpfleet                    # embedded store + simulated cloud
#
# Configuration is by WPFLEET_* environment variables (README, "Configuration"); the ECS
# task definition in deploy/ecs/ sets the production ones. See deploy/README.md.

# ---- build stage ---------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer: a source change does not rebuild the AWS SDK.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/.fingerprint/wpfleet-* target/release/deps/wpfleet-* target/release/deps/libwpfleet-*
COPY src ./src
RUN cargo build --release --locked --bin wpfleet \
    && strip target/release/wpfleet \
    && mkdir -p /out/var/lib/wpfleet

# ---- runtime stage -------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/wpfleet /usr/local/bin/wpfleet
# The data dir (embedded store, simulated cloud) must be writable by the non-root user.
COPY --from=build --chown=65532:65532 /out/var/lib/wpfleet /var/lib/wpfleet
# Listen on every interface inside the container (the default, 127.0.0.1, is for laptops).
ENV WPFLEET_LISTEN=0.0.0.0:8080 \
    WPFLEET_DATA_DIR=/var/lib/wpfleet \
    WPFLEET_LOG_FORMAT=json
# distroless's "nonroot" user.
USER 65532:65532
EXPOSE 8080
VOLUME ["/var/lib/wpfleet"]
# No shell or curl in the image: the binary checks itself.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/wpfleet", "healthcheck", "--server", "http://127.0.0.1:8080"]
# SIGTERM (docker stop, ECS) finishes the passes in flight and exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/wpfleet"]
CMD ["serve"]
