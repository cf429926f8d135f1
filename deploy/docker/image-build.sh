#!/bin/sh
# The image's build steps. The Dockerfile's builder stage runs them, and
# tests/deploy/test_image_build.py runs the builder stage's RUN lines (so these too) in a fresh
# venv with nothing else installed: a step that works only with the dev extra fails `make test`.
#
#   image-build.sh dependencies   the runtime dependencies of pyproject.toml, nothing else
#   image-build.sh protos         gen/ (modules and descriptor set); grpcio-tools comes and goes
#
# Run in the app folder (the Dockerfile's WORKDIR), with the target venv first on PATH.
set -eu

case "${1:-}" in
  dependencies)
    # pyproject.toml alone is enough: the project installs no package of its own
    # (packages = []), so what stays is exactly its runtime `dependencies`.
    pip install . && pip uninstall --yes cachebank
    ;;
  protos)
    # The generated *_pb2_grpc modules refuse to import under a grpcio older than the
    # grpcio-tools that made them: the newest generator not newer than the runtime's grpcio
    # (their patch releases differ: grpcio 1.85.3 comes with grpcio-tools 1.85.1).
    grpc_version="$(python -c 'import grpc; print(grpc.__version__)')"
    pip install "grpcio-tools<=$grpc_version"
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
