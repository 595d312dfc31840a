#!/usr/bin/env bash
# Installs the Debian packages lotmesh needs to build, run, test or benchmark, and only
# those that are missing, so that `make run` and `make test` work on a fresh machine.
# Usage: scripts/deps.sh build|test|bench|delivery
set -euo pipefail

build_pkgs=(build-essential cmake pkg-config libuv1-dev node-llhttp libjansson-dev
            libsqlite3-dev libpq-dev libjwt-dev libssl-dev libsodium-dev libhiredis-dev librabbitmq-dev curl openssl jq)
test_pkgs=(clang libclang-rt-14-dev libcmocka-dev python3 python3-pytest python3-pytest-xdist
           python3-requests python3-consul python3-jwt python3-jsonschema
           postgresql-15 python3-psycopg2 redis-server python3-redis prometheus chromium
           rabbitmq-server amqp-tools python3-pika)
# podman as root (runc, netavark with iptables, aardvark-dns for names), podman-compose,
# mmdebstrap for the Debian base image when none can be pulled
delivery_pkgs=(podman buildah podman-compose runc netavark aardvark-dns iptables mmdebstrap
               python3-yaml python3-requests python3-pytest git)
bench_pkgs=(wrk nginx-light haproxy python3-fastapi python3-uvicorn python3-starlette
            python3-httpx python3-uvloop python3-httptools valgrind)

want=("${build_pkgs[@]}")
case "${1:-build}" in
  build) ;;
  test) want+=("${test_pkgs[@]}") ;;
  bench) want+=("${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
  delivery) want=("${delivery_pkgs[@]}") ;;
  *) echo "deps.sh: unknown set '$1' (build|test|bench|delivery)" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The gateway's /docs serves npm swagger-ui-dist (scripts/web.sh installs it at build time);
# the contract and page tests run npm tools: any Node.js with npm will do (a machine may
# have NodeSource's, whose bundled npm conflicts with Debian's npm package).
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps.sh: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
