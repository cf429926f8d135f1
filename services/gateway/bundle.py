"""The gateway bundle: everything Envoy reads, written into one folder.

    envoy.json       the bootstrap (envoy_config.py)
    descriptors.pb   the transcoder's descriptor set (descriptor_set.py)
    openapi.json     the OpenAPI document, served at /openapi.json
    docs.html        the API page, served at /docs

`make run` and the tests render it with the local replicas' addresses and a fresh self-signed
certificate; compose and Kubernetes mount a committed copy (deployments.py) with the same files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from services.gateway.descriptor_set import transcoder_descriptor_set
from services.gateway.descriptors import ProtoCatalog, load_catalog
from services.gateway.envoy_clusters import Upstream
from services.gateway.envoy_config import GatewayFiles, GatewaySpec, build_bootstrap
from services.gateway.openapi import build_openapi, docs_page
from services.gateway.routes import build_route_table
from shared.config import Settings

CONFIG = "envoy.json"
DESCRIPTORS = "descriptors.pb"
OPENAPI = "openapi.json"
DOCS = "docs.html"


def files_in(folder: Path, *, tls_folder: Path | None = None) -> GatewayFiles:
    """The bundle's files as Envoy sees them in `folder` (the certificate beside them, or in
    `tls_folder`: a mounted Secret)."""
    tls = tls_folder or folder
    return GatewayFiles(descriptor_set=folder / DESCRIPTORS, openapi=folder / OPENAPI,
                        docs=folder / DOCS, cert=tls / "tls.crt", key=tls / "tls.key")


def spec_from_settings(settings: Settings, upstreams: Sequence[Upstream], files: GatewayFiles,
                       **overrides: object) -> GatewaySpec:
    """The spec from the settings the gateway reads: where it listens (edge_host,
    edge_https_port, edge_admin_port), the services' deadline (grpc_deadline_s), the body
    limit (gateway_max_body_bytes) and where traces go (otel_exporter_otlp_endpoint,
    otel_sample_ratio)."""
    spec = GatewaySpec(
        listen_host=settings.edge_host,
        https_port=settings.edge_https_port,
        admin_port=settings.edge_admin_port,
        upstreams=tuple(upstreams),
        files=files,
        grpc_deadline_s=settings.grpc_deadline_s,
        max_body_bytes=settings.gateway_max_body_bytes,
        otel_collector=settings.otel_exporter_otlp_endpoint,
        otel_sample_ratio=settings.otel_sample_ratio,
        address_limit_per_minute=settings.edge_address_limit_per_minute,
    )
    return replace(spec, **overrides)  # type: ignore[arg-type]


def write_bundle(out: Path, spec: GatewaySpec, catalog: ProtoCatalog | None = None) -> Path:
    """Write the four files into `out`; returns the path of envoy.json. The paths inside
    envoy.json are `spec.files` (where Envoy will read them, which may be a mount point)."""
    catalog = catalog or load_catalog()
    table = build_route_table(catalog.rpcs)
    document = build_openapi(table, catalog.comments)
    out.mkdir(parents=True, exist_ok=True)
    (out / DESCRIPTORS).write_bytes(transcoder_descriptor_set().SerializeToString())
    (out / OPENAPI).write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    (out / DOCS).write_text(docs_page(document) + "\n")
    config = out / CONFIG
    config.write_text(json.dumps(build_bootstrap(spec, table), indent=1) + "\n")
    return config


def render_local(folder: Path, settings: Settings, upstreams: Sequence[Upstream],
                 **overrides: object) -> Path:
    """A bundle for an Envoy on this machine: a fresh self-signed certificate (`tls.crt`, also
    the clients' CA file) and every path absolute inside `folder`."""
    # Imported here: cryptography is a dev dependency (make run, tests), and the image, which
    # runs the other commands of `python -m services.gateway`, does not install it.
    from services.gateway.certs import generate_self_signed

    folder = folder.absolute()
    generate_self_signed(folder, hosts=("localhost", settings.edge_host))
    spec = spec_from_settings(settings, upstreams, files_in(folder), **overrides)
    return write_bundle(folder, spec)
