#!/bin/sh
# start.sh COMMAND [ARGS…] — lotmesh's RabbitMQ set-up before the image's own entrypoint
# (deploy/compose.yaml: entrypoint start.sh, command docker-entrypoint.sh rabbitmq-server;
# the official image and lotmesh/backends alike), then exec COMMAND.
#
# The broker loads its definitions at boot (rabbitmq.conf `load_definitions`): the topology of
# definitions.json (next to this script) — exchanges lotmesh.events and lotmesh.events.dlx,
# the queues <service>.events and <service>.events.dlq with their bindings, exactly as the
# services declare them (lib/events/rmq.c) — so that no event published before a consumer's
# first connection misses its queue. A blank node that imports definitions creates neither
# the default user nor the vhost "/", so the user $RABBITMQ_DEFAULT_USER with the password
# $RABBITMQ_DEFAULT_PASS (full rights on "/") is written as a second definitions file here,
# at start-up, from the environment: the password is never in a file of the repository.
#
# Where the files go (the defaults are the images' paths; the black-box test sets them):
#   LOTMESH_RABBITMQ_DEFINITIONS  directory of the definitions files   /etc/rabbitmq/definitions.d
#   LOTMESH_RABBITMQ_CONF         the rabbitmq.conf fragment naming it /etc/rabbitmq/conf.d/30-lotmesh-definitions.conf
# Fails (exit 2, one line) when the user or password is missing.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
defs=${LOTMESH_RABBITMQ_DEFINITIONS:-/etc/rabbitmq/definitions.d}
conf=${LOTMESH_RABBITMQ_CONF:-/etc/rabbitmq/conf.d/30-lotmesh-definitions.conf}
user=${RABBITMQ_DEFAULT_USER:-}
pass=${RABBITMQ_DEFAULT_PASS:-}
if [ -z "$user" ] || [ -z "$pass" ]; then
  echo "start.sh: RABBITMQ_DEFAULT_USER and RABBITMQ_DEFAULT_PASS must be set" >&2
  exit 2
fi

# a JSON string's content: backslash and double quote escaped (control characters refused)
json_str() {
  if printf '%s' "$1" | LC_ALL=C grep -q '[[:cntrl:]]'; then
    echo "start.sh: control characters in RABBITMQ_DEFAULT_USER or _PASS" >&2
    exit 2
  fi
  printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'
}

mkdir -p "$defs" "$(dirname "$conf")"
umask 077
cp "$here/definitions.json" "$defs/20-topology.json"
u=$(json_str "$user")
p=$(json_str "$pass")
cat > "$defs/10-users.json" <<JSON
{
  "vhosts": [{"name": "/"}],
  "users": [{"name": "$u", "password": "$p", "tags": "administrator"}],
  "permissions": [{"user": "$u", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]
}
JSON
umask 022
echo "load_definitions = $defs" > "$conf"
# the broker runs as rabbitmq (the entrypoints switch to it): it must read the files
if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
  chown -R rabbitmq:rabbitmq "$defs"
fi
[ $# -gt 0 ] || exit 0
exec "$@"
