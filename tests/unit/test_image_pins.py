"""Every third-party image the deployments run is pinned by digest, in place or through
deploy/images.lock (whose "unresolved" digests scripts/pin-images.sh fills in where a registry
answers), and no image names a registry host but the placeholder of your own mirror."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "deploy" / "images.lock"
OWN_MIRROR = "registry.example.internal"
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_K8S_IMAGE = re.compile(r"^\s*-?\s*(?:image|imageName):\s*[\"']?([^\s\"']+)", re.MULTILINE)


def project_images() -> dict[str, str]:
    """image reference -> where it is used (our own image, `cachebank`, left out)."""
    found: dict[str, str] = {}
    dockerfile = (ROOT / "Dockerfile").read_text()
    for match in re.finditer(r"^ARG \w*IMAGE=(\S+)$", dockerfile, re.MULTILINE):
        found[match.group(1)] = "Dockerfile"
    for match in re.finditer(r"^FROM (\S+)", dockerfile, re.MULTILINE):
        assert match.group(1).startswith("${"), "FROM takes the image from the pinned ARG"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        found.setdefault(service["image"], f"docker-compose.yml {name}")
    for path in sorted((ROOT / "deploy" / "k8s").rglob("*.yaml")):
        for match in _K8S_IMAGE.finditer(path.read_text()):
            found.setdefault(match.group(1), str(path.relative_to(ROOT)))
    return {ref: where for ref, where in found.items()
            if ref != "cachebank" and "BANK_IMAGE" not in ref}


def locked() -> dict[str, str]:
    entries = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            ref, _, digest = line.partition("@sha256:")
            assert digest == "unresolved" or re.fullmatch(r"[0-9a-f]{64}", digest), line
            entries[ref] = digest
    return entries


def test_every_image_is_pinned_or_locked() -> None:
    lock = locked()
    loose = {ref: where for ref, where in project_images().items()
             if not _DIGEST.search(ref) and ref not in lock}
    assert loose == {}, "pin these by digest or list them in deploy/images.lock"


def test_the_lock_lists_only_images_in_use() -> None:
    used = {_DIGEST.sub("", ref) for ref in project_images()}
    assert set(locked()) <= used


def test_a_resolved_digest_is_the_one_in_use() -> None:
    images = project_images()
    for ref, digest in locked().items():
        if digest != "unresolved":
            assert f"{ref}@sha256:{digest}" in images, ref


def _registry(ref: str) -> str | None:
    """The registry host of a reference, None for Docker Hub's short names."""
    first, _, rest = ref.partition("/")
    return first if rest and ("." in first or ":" in first or first == "localhost") else None


def test_no_registry_host_but_your_own_mirror() -> None:
    refs = set(project_images())
    for overlay in ("dev", "prod"):
        kustomization = yaml.safe_load(
            (ROOT / "deploy" / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text())
        refs |= {image["newName"] for image in kustomization.get("images", [])}
    hosts = {ref: _registry(ref) for ref in refs}
    assert {ref: host for ref, host in hosts.items() if host not in (None, OWN_MIRROR)} == {}
