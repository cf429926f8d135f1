-- The login users of the bank's processes and the migrator that owns the schema
-- (docs/database.md, "Roles"). Migration 0007 makes the group roles' grants; this makes who logs
-- in as them, with passwords, which belong to the deployment and never to a migration.
-- Used by devstack (`make run`, the tests), compose's postgres-roles step and the dev overlay's
-- postgres-roles Job; Kubernetes prod declares the same roles as CloudNativePG managed roles.
--
-- Run as a superuser with psql, the passwords in the environment (never on the command line):
--   DB_PASSWORD_MIGRATOR DB_PASSWORD_ACCOUNT DB_PASSWORD_TRANSFER DB_PASSWORD_AUTH
--   DB_PASSWORD_OUTBOX_RELAY DB_PASSWORD_TRANSFER_RETENTION DB_PASSWORD_AUTH_RETENTION
--   DB_PASSWORD_MONITOR (optional: the metrics exporter's login, pg_monitor's statistics only)
--   psql -v dbname=bank [-v migrator=bank] -f provision-roles.sql
-- Idempotent: running it again sets the passwords it is given (rotation).
\set ON_ERROR_STOP on
-- An unset variable stays `:'name'` below, a syntax error: nothing runs with a missing password.
\getenv pw_migrator DB_PASSWORD_MIGRATOR
\getenv pw_account DB_PASSWORD_ACCOUNT
\getenv pw_transfer DB_PASSWORD_TRANSFER
\getenv pw_auth DB_PASSWORD_AUTH
\getenv pw_outbox_relay DB_PASSWORD_OUTBOX_RELAY
\getenv pw_transfer_retention DB_PASSWORD_TRANSFER_RETENTION
\getenv pw_auth_retention DB_PASSWORD_AUTH_RETENTION
\getenv pw_monitor DB_PASSWORD_MONITOR
\if :{?migrator}
\else
  \set migrator bank
\endif

BEGIN;
-- The group roles the logins join (migration 0007 makes them too, whichever runs first).
SELECT format('CREATE ROLE %I NOLOGIN', r)
FROM unnest(ARRAY['bank_account', 'bank_transfer', 'bank_auth', 'bank_relay',
                  'bank_transfer_retention', 'bank_auth_retention']) AS r
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \gexec

SELECT format('CREATE ROLE %I', r)
FROM unnest(ARRAY[:'migrator', 'svc_account', 'svc_transfer', 'svc_auth', 'svc_outbox_relay',
                  'svc_transfer_retention', 'svc_auth_retention']) AS r
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \gexec

-- The migrator owns the database and every table; CREATEROLE (never SUPERUSER) lets migration
-- 0007 make the roles it grants to.
ALTER ROLE :"migrator" WITH LOGIN NOSUPERUSER CREATEROLE NOCREATEDB PASSWORD :'pw_migrator';
ALTER DATABASE :"dbname" OWNER TO :"migrator";

ALTER ROLE svc_account WITH LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB PASSWORD :'pw_account';
ALTER ROLE svc_transfer WITH LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB PASSWORD :'pw_transfer';
ALTER ROLE svc_auth WITH LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB PASSWORD :'pw_auth';
ALTER ROLE svc_outbox_relay WITH LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB
    PASSWORD :'pw_outbox_relay';
ALTER ROLE svc_transfer_retention WITH LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB
    PASSWORD :'pw_transfer_retention';
ALTER ROLE svc_auth_retention WITH LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB
    PASSWORD :'pw_auth_retention';
GRANT bank_account TO svc_account;
GRANT bank_transfer TO svc_transfer;
GRANT bank_auth TO svc_auth;
GRANT bank_relay TO svc_outbox_relay;
GRANT bank_transfer_retention TO svc_transfer_retention;
GRANT bank_auth_retention TO svc_auth_retention;

\if :{?pw_monitor}
SELECT 'CREATE ROLE bank_monitor' WHERE NOT EXISTS (SELECT FROM pg_roles
                                                    WHERE rolname = 'bank_monitor') \gexec
ALTER ROLE bank_monitor WITH LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB PASSWORD :'pw_monitor';
GRANT pg_monitor TO bank_monitor;
\endif
COMMIT;
