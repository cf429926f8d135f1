#!/bin/sh
# The internal CA and certificates of the links inside compose (docs/operations.md, "Internal
# TLS"): Envoy -> services and service -> service (mTLS), services -> Redis (TLS).
#
#   deploy/compose/make-internal-certs.sh [FOLDER]      (default: deploy/compose/tls/internal)
#
# Writes ca.crt/ca.key (the CA: keep ca.key off the host once issued), one certificate per
# name (NAME.crt, NAME.key; SAN DNS:NAME, and DNS:localhost for tests) for the gRPC services,
# the edge (its client certificate), and the Redis nodes (one certificate for every node:
# SAN DNS:redis-1 ... redis-6). Each leaf is valid for both server and client use, 90 days.
# Running it again keeps the CA (when ca.key is still there) and issues fresh leaves: that is
# the rotation, followed by `docker compose up -d --force-recreate edge`; the services and
# Redis read renewed files on new connections (Redis: after `CONFIG SET tls-cert-file`).
set -eu
dir="${1:-$(cd "$(dirname "$0")" && pwd)/tls/internal}"
days="${CERT_DAYS:-90}"
mkdir -p "$dir"
umask 077
if [ ! -f "$dir/ca.key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=cachebank internal CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
fi
issue() {  # issue NAME SAN
  name="$1"; san="$2"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n' \
    "$san" > "$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days "$days" -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}
for name in account transfer auth outbox-relay edge; do
  issue "$name" "DNS:$name,DNS:localhost,IP:127.0.0.1"
done
issue redis "DNS:redis-1,DNS:redis-2,DNS:redis-3,DNS:redis-4,DNS:redis-5,DNS:redis-6,DNS:localhost,IP:127.0.0.1"
# One folder per consumer with the names cert-manager's Secrets use (ca.crt, tls.crt, tls.key),
# so compose mounts a folder where Kubernetes mounts a Secret.
for name in account transfer auth outbox-relay edge redis; do
  mkdir -p "$dir/$name"
  cp "$dir/ca.crt" "$dir/$name/ca.crt"
  cp "$dir/$name.crt" "$dir/$name/tls.crt"
  cp "$dir/$name.key" "$dir/$name/tls.key"
done
# The containers run as unprivileged users (10001 for ours, Envoy's and Redis' own): they must
# read their keys. On a shared host, chown the files to those users instead.
chmod 0755 "$dir"/*/
chmod 0644 "$dir"/*.crt "$dir"/*.key "$dir"/*/*
chmod 0600 "$dir/ca.key"
echo "wrote the internal CA and certificates into $dir"
