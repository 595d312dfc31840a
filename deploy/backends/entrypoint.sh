#!/bin/sh
# entrypoint.sh COMMAND [ARGS…] — starts one server of the lotmesh/backends image the way the
# official images do (deploy/backends/Containerfile):
#   postgres [ARGS]         initialises $PGDATA once (superuser $POSTGRES_USER with password
#                           $POSTGRES_PASSWORD, database $POSTGRES_DB, then every
#                           /docker-entrypoint-initdb.d/*.sql), then runs postgres as user
#                           postgres, listening on every address with scram-sha-256
#   rabbitmq-server         the broker, node rabbit@$(hostname), user $RABBITMQ_DEFAULT_USER
#                           with $RABBITMQ_DEFAULT_PASS, /etc/rabbitmq/conf.d/*.conf added to
#                           its configuration; SIGINT/SIGTERM stop it cleanly
#   anything else           run as given (redis-server …) as user redis when it is a Redis tool
# The servers are exec'd with setpriv (not runuser, which stays PID 1 as their parent and lets
# the stop signal go nowhere), so the stop signal reaches them.
set -eu

pg() {
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
  user=${POSTGRES_USER:-postgres} db=${POSTGRES_DB:-${POSTGRES_USER:-postgres}}
  mkdir -p "$PGDATA" /run/postgresql
  chown postgres:postgres "$PGDATA" /run/postgresql
  chmod 0700 "$PGDATA"
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pw=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pw"
    chown postgres "$pw"
    runuser -u postgres -- initdb -D "$PGDATA" -U "$user" --pwfile="$pw" -E UTF8 \
      --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pw"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    # a first start on the socket only: nobody reaches it until the set-up is done
    runuser -u postgres -- pg_ctl -D "$PGDATA" -w -s -o "-c listen_addresses=''" start
    if [ "$db" != postgres ]; then
      runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -U "$user" -d postgres \
        -c "CREATE DATABASE \"$db\" OWNER \"$user\""
    fi
    for f in /docker-entrypoint-initdb.d/*.sql; do
      [ -e "$f" ] || continue
      echo "entrypoint.sh: running $f"
      runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -U "$user" -d "$db" -f "$f"
    done
    runuser -u postgres -- pg_ctl -D "$PGDATA" -w -s -m fast stop
  fi
  exec setpriv --reuid=postgres --regid=postgres --init-groups -- postgres -D "$PGDATA" -c listen_addresses='*' "$@"
}

rabbit() {
  home=/var/lib/rabbitmq
  mkdir -p /etc/rabbitmq "$home/mnesia" /var/log/rabbitmq
  chown -R rabbitmq:rabbitmq "$home" /var/log/rabbitmq
  {
    echo "listeners.tcp.default = 5672"
    echo "loopback_users = none"
    echo "default_user = ${RABBITMQ_DEFAULT_USER:-guest}"
    echo "default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}"
    echo "log.console = true"
    echo "log.file = false"
    # fragments such as deploy/rabbitmq/start.sh's load_definitions, as the official image
    # reads /etc/rabbitmq/conf.d
    for f in /etc/rabbitmq/conf.d/*.conf; do
      if [ -e "$f" ]; then cat "$f"; fi
    done
  } > /etc/rabbitmq/rabbitmq.conf
  chmod 0644 /etc/rabbitmq/rabbitmq.conf
  echo '[].' > /etc/rabbitmq/enabled_plugins
  # not exec: the shell stays PID 1 to turn the stop signal into `rabbitmqctl stop`
  rabbitmq-server &
  child=$!
  trap 'rabbitmqctl -q stop >/dev/null 2>&1 || kill "$child"' INT TERM
  wait "$child" || true
  trap - INT TERM
  wait "$child" 2>/dev/null || true
}

cmd=${1:-redis-server}
[ $# -gt 0 ] && shift
case $cmd in
  postgres) pg "$@" ;;
  rabbitmq-server) rabbit ;;
  # the official image's Redis is built with protected mode off (it is reached over the
  # container network); a config file named first stays first
  redis-server)
    cd /var/lib/redis # its working directory, where a save on shutdown goes
    case ${1:-} in
      '' | -*) exec setpriv --reuid=redis --regid=redis --init-groups -- redis-server --protected-mode no "$@" ;;
      *) conf=$1; shift; exec setpriv --reuid=redis --regid=redis --init-groups -- redis-server "$conf" --protected-mode no "$@" ;;
    esac ;;
  *) exec "$cmd" "$@" ;;
esac
