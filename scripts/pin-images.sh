#!/usr/bin/env bash
# Pin every third-party image of the deployments by digest: for each line of deploy/images.lock
# whose digest is "unresolved" (or every line, with --refresh), ask the registry for the digest
# of the reference's manifest list (`docker buildx imagetools inspect`), write it into the lock,
# and rewrite the reference wherever the project uses it (Dockerfile, docker-compose.yml,
# deploy/k8s) as name:tag@sha256:digest. Needs Docker with buildx and access to the registries;
# review the diff, run `make test` (tests/unit/test_image_pins.py), commit.
set -euo pipefail
cd "$(dirname "$0")/.."

LOCK=deploy/images.lock
refresh=false
[[ "${1:-}" == "--refresh" ]] && refresh=true
mapfile -t FILES < <(printf '%s\n' Dockerfile docker-compose.yml; \
                     find deploy/k8s -name '*.yaml' | sort)

while IFS= read -r line; do
  [[ -z "$line" || "$line" == \#* ]] && continue
  ref="${line%@sha256:*}"
  old="${line##*@sha256:}"
  if [[ "$old" != unresolved && "$refresh" == false ]]; then
    continue
  fi
  digest="$(docker buildx imagetools inspect "$ref" --format '{{json .Manifest.Digest}}' | tr -d '"')"
  if [[ ! "$digest" =~ ^sha256:[0-9a-f]{64}$ ]]; then
    echo "no digest for $ref: $digest" >&2
    exit 1
  fi
  echo "$ref -> $digest"
  ref_re="$(printf '%s' "$ref" | sed 's/[.[\*^$/]/\\&/g')"
  # The reference, with or without an older digest, followed by the end of the value.
  sed -i -E "s#${ref_re}(@sha256:[0-9a-f]{64})?([\"'[:space:]]|\$)#${ref}@${digest}\\2#g" "${FILES[@]}"
  sed -i "s#^${ref_re}@sha256:.*\$#${ref}@${digest}#" "$LOCK"
done < "$LOCK"
