-- The gateway's own PostgreSQL role, as compose.yaml creates it: deploy/postgres/10-chanced-role.sh
-- runs this file once, as the superuser, in the gateway's (new, empty) database.
--   psql -v app_user=chanced -v app_password_file=/run/secrets/postgres_password -f chanced-role.sql
-- The role is no superuser and may create neither databases nor roles. It owns one schema, named
-- like itself, where `chanced migrate` creates every table (so it owns them all); its
-- search_path is that schema alone. PUBLIC loses CONNECT on the database and CREATE on the
-- schema public, so other roles get nothing here unless granted.
-- gen_random_uuid() and sha256(), which migration 4 calls, are built in (PostgreSQL 13+) and
-- executable by every role: no extension is needed.
\set ON_ERROR_STOP 1
\set app_password `cat :'app_password_file'`
SELECT current_database() AS db \gset
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
\unset app_password
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"app_user";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA :"app_user" AUTHORIZATION :"app_user";
ALTER ROLE :"app_user" IN DATABASE :"db" SET search_path = :"app_user";
