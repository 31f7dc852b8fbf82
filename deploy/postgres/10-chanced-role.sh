#!/bin/sh
# docker-entrypoint-initdb.d script of compose.yaml's postgres service: runs once, when the
# container initialises an empty volume, as the superuser (POSTGRES_USER) in the gateway's
# database (POSTGRES_DB). Creates the gateway's role `chanced` (not a superuser; it owns only its
# schema) from chanced-role.sql; its password is the postgres_password secret, read by psql
# itself, never put on a command line. The entrypoint may source this file: no exit, no set -u.
set -e
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app_user=chanced -v app_password_file=/run/secrets/postgres_password \
    -f /etc/chanced/postgres/chanced-role.sql
