#!/bin/sh
# A self-signed certificate for the compose edge (https://localhost), in deploy/compose/tls/
# (not committed). Use a real certificate for anything but a local machine.
set -eu
dir="$(cd "$(dirname "$0")" && pwd)/tls"
mkdir -p "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
# Envoy runs as an unprivileged user in its container and must read the key.
chmod 0644 "$dir/tls.key" "$dir/tls.crt"
echo "wrote $dir/tls.crt and $dir/tls.key"
