#!/bin/sh
# Writes PgBouncer's auth_file from the environment, then runs PgBouncer.
# A plain-text password lets PgBouncer use SCRAM towards both clients and PostgreSQL.
set -eu
: "${APP_DB_PASSWORD:?APP_DB_PASSWORD is not set}"
umask 077
printf '"%s" "%s"\n' christmas_app "$APP_DB_PASSWORD" >/etc/pgbouncer/userlist.txt
exec pgbouncer /etc/pgbouncer/pgbouncer.ini
