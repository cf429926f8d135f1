#!/bin/sh
# The image's build steps. The Dockerfile's builder stage runs them, and
# tests/deploy/test_image_build.py runs the builder stage's RUN lines (so these too) in a fresh
# venv with nothing else installed: a step that works only with the dev extra fails `make test`.
#
#   image-build.sh dependencies   the locked runtime dependencies (requirements-image.lock)
#   image-build.sh protos         gen/ (modules and descriptor set); grpcio-tools goes after
#
# Run in the app folder (the Dockerfile's WORKDIR), with the target venv first on PATH.
set -eu

case "${1:-}" in
  dependencies)
    # The runtime `dependencies` of pyproject.toml and grpcio-tools, exactly as
    # requirements-image.lock pins them, each file checked against the hashes it lists
    # (`make lock` writes it). The project itself installs no package (packages = []).
    pip install --require-hashes --no-deps -r requirements-image.lock
    pip check
    ;;
  protos)
    # grpcio-tools came with the locked dependencies, at a release its resolver matched to the
    # runtime's grpcio (generated *_pb2_grpc modules refuse an older grpcio than their generator).
    python scripts/gen_protos.py --runtime-only
    # Only the builder ever needs protoc; grpcio-tools' own dependencies are runtime ones.
    pip uninstall --yes grpcio-tools
    pip check
    ;;
  *)
    echo "usage: image-build.sh dependencies|protos" >&2
    exit 64
    ;;
esac
