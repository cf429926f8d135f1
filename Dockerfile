# syntax=docker/dockerfile:1
# One image for every role of the bank: account, transfer, auth, outbox-relay, migrate (the
# gateway is Envoy, from its own image, running the bundle services/gateway generates).
# The role is the first argument (see deploy/docker/entrypoint.sh):
#   docker run IMAGE account        docker run IMAGE migrate
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: dependencies, generated protos, byte-code; the only stage with pip and protoc ----
# Every dependency ships manylinux wheels (grpcio, psycopg[binary], argon2-cffi, uvloop), so no
# compiler is needed even here.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
# The steps are deploy/docker/image-build.sh, which `make test` also runs in a fresh venv.
# Dependencies first, in their own layer: it is rebuilt only when the lock changes. Only the
# hashed, pinned files of requirements-image.lock are installed (`make lock`).
COPY pyproject.toml requirements-image.lock ./
COPY deploy/docker/image-build.sh ./deploy/docker/image-build.sh
RUN sh deploy/docker/image-build.sh dependencies

# `make protos` without make or the dev extra: gen/bank/v1 and gen/bank.desc, never committed,
# built here by a grpcio-tools that is uninstalled again (the runtime stage never has it).
COPY protos ./protos
COPY scripts/gen_protos.py ./scripts/gen_protos.py
RUN sh deploy/docker/image-build.sh protos && rm -rf protos scripts

COPY alembic.ini ./
COPY migrations ./migrations
COPY shared ./shared
COPY services ./services
COPY deploy/docker ./deploy/docker
# Byte-code now: the root filesystem is read-only at run time. pip goes: nothing installs later.
RUN python -m compileall -q /app /opt/venv \
 && pip uninstall --yes pip setuptools wheel

# ---- runtime: the interpreter, the venv and the code; no compiler, no pip, not root ----
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="cachebank" \
      org.opencontainers.image.description="Banking backend: gRPC services, outbox relay, migrations"
# The base image's own pip goes too: nothing is installed at run time.
RUN python -m pip uninstall --yes --disable-pip-version-check pip setuptools wheel \
 && groupadd --system --gid 10001 bank \
 && useradd --system --uid 10001 --gid bank --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin bank
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 7051 7052 7053
ENTRYPOINT ["/app/deploy/docker/entrypoint.sh"]
CMD ["help"]
