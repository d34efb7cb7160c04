-- Supabase compatibility. On a Supabase database the roles, the auth schema
-- and its functions already exist and are left exactly as they are; on a bare
-- PostgreSQL this creates compatible ones, so that Row Level Security policies
-- written for Supabase (auth.uid(), auth.jwt(), TO authenticated) work here.

-- Roles belong to the cluster, not the database: another database of the same
-- cluster may be creating them at this moment, hence the exception handlers.
DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT%s', r,
                       CASE WHEN r = 'service_role' THEN ' BYPASSRLS' ELSE '' END);
      EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;  -- created concurrently: fine
      END;
    END IF;
  END LOOP;
END
$$;

CREATE SCHEMA IF NOT EXISTS auth;

DO $$
BEGIN
  -- The claims of the request, as PostgREST and pulsesyncd set them with
  -- set_config('request.jwt.claims', <json>, true).
  IF NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = 'auth' AND p.proname = 'jwt') THEN
    CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $f$
      SELECT coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
    $f$;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = 'auth' AND p.proname = 'uid') THEN
    CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $f$
      SELECT nullif(auth.jwt() ->> 'sub', '')::uuid
    $f$;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = 'auth' AND p.proname = 'role') THEN
    CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $f$
      SELECT auth.jwt() ->> 'role'
    $f$;
  END IF;
END
$$;

-- On Supabase the API roles can use auth already, and the schema belongs to
-- supabase_auth_admin: granting again could fail there ("permission denied").
DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
    IF NOT has_schema_privilege(r, 'auth', 'USAGE') THEN
      EXECUTE format('GRANT USAGE ON SCHEMA auth TO %I', r);
    END IF;
  END LOOP;
END
$$;
