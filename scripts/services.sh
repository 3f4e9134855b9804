#!/usr/bin/env bash
# Start PostgreSQL and Redis for the scale-out tests if they are not running, and make sure
# the test database exists. Idempotent; safe to call before every test run (.ci/run does).
# Commands are the ones this machine kind documents; elsewhere, point the tests at your own
# servers with TOKENOMY_TEST_PG_URL / TOKENOMY_TEST_REDIS_URL instead.
set -uo pipefail

PG_HOST=127.0.0.1 PG_PORT=5432 REDIS_PORT=6379
log() { echo "services: $*" >&2; }

wait_for() {  # name, command...
  local name=$1; shift
  for _ in $(seq 1 50); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  log "$name did not come up"; return 1
}

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }
redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

rc=0
if command -v pg_isready >/dev/null 2>&1; then
  if ! pg_up; then
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
      log "starting PostgreSQL"
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
    fi
    wait_for PostgreSQL pg_up || rc=1
  fi
  if pg_up; then
    if ! psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" \
        | grep -q 1; then
      log "creating database test"
      psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -qc "CREATE DATABASE test" || rc=1
    fi
    log "PostgreSQL ready on $PG_HOST:$PG_PORT (database test)"
  fi
else
  log "PostgreSQL client tools not installed (pg_isready); the postgres tests will skip, or fail in CI"
  rc=1
fi

if command -v redis-cli >/dev/null 2>&1; then
  if ! redis_up; then
    if command -v redis-server >/dev/null 2>&1; then
      log "starting Redis"
      mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
      redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    fi
    wait_for Redis redis_up || rc=1
  fi
  redis_up && log "Redis ready on 127.0.0.1:$REDIS_PORT"
else
  log "redis-cli not installed; the redis tests will skip, or fail in CI"
  rc=1
fi
exit "$rc"
