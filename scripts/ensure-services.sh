#!/usr/bin/env bash
# Make sure the PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) that the tests use
# are running; start the machine's own services when they are down.
set -euo pipefail

PG_HOST=${TEST_PG_HOST:-127.0.0.1}
PG_PORT=${TEST_PG_PORT:-5432}

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

wait_for() {
  local what=$1 check=$2
  for _ in $(seq 1 60); do
    if $check; then return 0; fi
    sleep 0.5
  done
  echo "ensure-services: $what did not come up" >&2
  return 1
}

if ! pg_up; then
  echo "ensure-services: starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null; then
    version=$(ls /etc/postgresql | sort -n | tail -1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
  else
    echo "ensure-services: PostgreSQL is down and pg_ctlcluster is not installed" >&2
    exit 1
  fi
  wait_for PostgreSQL pg_up
fi

if ! redis_up; then
  echo "ensure-services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis redis_up
fi

echo "ensure-services: PostgreSQL on $PG_HOST:$PG_PORT and Redis on 127.0.0.1:6379 are up"
