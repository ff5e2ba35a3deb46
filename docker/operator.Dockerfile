# The Atrium operator image: a static binary on distroless/static, running as non-root.
# Build from the repository root: docker build -f docker/operator.Dockerfile -t atrium-operator .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN hack/build-release.sh /out

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/atrium-operator /atrium-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/atrium-operator"]
