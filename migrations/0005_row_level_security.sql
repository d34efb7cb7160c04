-- Row Level Security on TeamPulse's tables, as a Supabase project would have
-- it: a user sees and writes the rows of the teams they belong to. pulsesyncd
-- runs each request's database work under the caller's role
-- (`SET LOCAL ROLE authenticated`, `request.jwt.claims`), exactly like
-- PostgREST, so these policies govern gRPC traffic too; service_role
-- bypasses RLS, as in Supabase.

-- The engine's own bookkeeping is written by the owner, whoever the caller
-- is: the change log and the version sequence through the triggers, the
-- record of applied revisions through apply_revision. Callers get no direct
-- privileges on pulsesync's tables.
ALTER FUNCTION pulsesync.stamp_row() SECURITY DEFINER SET search_path = pg_catalog, pulsesync;
ALTER FUNCTION pulsesync.capture_change() SECURITY DEFINER SET search_path = pg_catalog, pulsesync;

-- Lookups the merge needs, by definer so callers need no grants on them.
CREATE FUNCTION pulsesync.applied_revision(p_id uuid)
RETURNS pulsesync.applied_revisions LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pulsesync AS $$
  SELECT * FROM pulsesync.applied_revisions WHERE id = p_id
$$;

CREATE FUNCTION pulsesync.record_applied(
  p_id uuid, p_object_type text, p_object_id uuid, p_origin_id text, p_seq bigint,
  p_version bigint, p_superseded boolean, p_created_at_ms bigint)
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
  INSERT INTO pulsesync.applied_revisions
    (id, object_type, object_id, origin_id, seq, version, superseded, created_at_ms)
  VALUES (p_id, p_object_type, p_object_id, p_origin_id, p_seq, p_version, p_superseded,
          p_created_at_ms)
$$;

CREATE FUNCTION pulsesync.synced_table(p_object_type text)
RETURNS pulsesync.synced_tables LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pulsesync AS $$
  SELECT * FROM pulsesync.synced_tables WHERE object_type = p_object_type
$$;

-- The merge, now reading and writing the engine's tables through the
-- functions above. It stays SECURITY INVOKER: its reads and writes of the
-- synced tables are the caller's, under the caller's policies. A row the
-- caller may not see is, for the merge, a row it may not write.
CREATE OR REPLACE FUNCTION pulsesync.apply_revision(
  p_id uuid, p_object_type text, p_object_id uuid, p_origin_id text, p_seq bigint,
  p_op text, p_payload jsonb, p_created_at_ms bigint, p_base_version bigint,
  p_schema_version int, p_hlc text,
  OUT outcome text, OUT version bigint, OUT superseded boolean)
LANGUAGE plpgsql AS $$
DECLARE
  reg pulsesync.synced_tables;
  prior pulsesync.applied_revisions;
  bad text;
  cols text;
  existing jsonb;
  data jsonb;
BEGIN
  prior := pulsesync.applied_revision(p_id);
  IF prior.id IS NOT NULL THEN
    IF prior.object_id <> p_object_id OR prior.origin_id <> p_origin_id
       OR prior.object_type <> p_object_type THEN
      RAISE EXCEPTION 'revision id % was already used for another object or origin', p_id
        USING ERRCODE = 'unique_violation';
    END IF;
    outcome := 'duplicate';
    version := prior.version;
    superseded := prior.superseded;
    RETURN;
  END IF;

  reg := pulsesync.synced_table(p_object_type);
  IF reg.object_type IS NULL THEN
    RAISE EXCEPTION 'unknown object type "%"', p_object_type
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_op NOT IN ('upsert', 'delete') THEN
    RAISE EXCEPTION 'unknown operation "%"', p_op USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_op = 'upsert' THEN
    IF jsonb_typeof(p_payload) IS DISTINCT FROM 'object' THEN
      RAISE EXCEPTION 'payload must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(format('"%s"', k), ', ' ORDER BY k) INTO bad
    FROM jsonb_object_keys(p_payload) AS k
    WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a
                      WHERE a.attrelid = reg.table_oid AND a.attname = k
                        AND a.attnum > 0 AND NOT a.attisdropped);
    IF bad IS NOT NULL THEN
      RAISE EXCEPTION 'unknown field(s) % for object type "%"', bad, p_object_type
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(format('"%s"', k), ', ' ORDER BY k) INTO bad
    FROM jsonb_object_keys(p_payload) AS k
    WHERE k = ANY (pulsesync.system_columns());
    IF bad IS NOT NULL THEN
      RAISE EXCEPTION 'field(s) % are set by the server, not by revisions', bad
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_payload ? 'id' AND p_payload ->> 'id' IS DISTINCT FROM p_object_id::text THEN
      RAISE EXCEPTION 'payload id % does not match object_id %', p_payload ->> 'id', p_object_id
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
  END IF;

  EXECUTE format('SELECT to_jsonb(t) FROM %s t WHERE t.id = $1 FOR UPDATE', reg.table_oid)
    INTO existing USING p_object_id;

  IF existing IS NULL AND p_op = 'upsert' THEN
    data := (p_payload - 'id') || jsonb_build_object(
      'id', p_object_id, 'last_origin_id', p_origin_id, 'last_revision_id', p_id, 'hlc', p_hlc);
    SELECT string_agg(quote_ident(k), ', ') INTO cols FROM jsonb_object_keys(data) AS k;
    EXECUTE format('INSERT INTO %1$s (%2$s) SELECT %2$s FROM jsonb_populate_record(NULL::%1$s, $1) '
                   'ON CONFLICT (id) DO NOTHING RETURNING version', reg.table_oid, cols)
      INTO version USING data;
    IF version IS NULL THEN
      -- Created concurrently by another transaction: merge against it.
      EXECUTE format('SELECT to_jsonb(t) FROM %s t WHERE t.id = $1 FOR UPDATE', reg.table_oid)
        INTO existing USING p_object_id;
      IF existing IS NULL THEN
        -- It exists, but not for this caller.
        RAISE EXCEPTION 'permission denied for % %', p_object_type, p_object_id
          USING ERRCODE = 'insufficient_privilege';
      END IF;
    ELSE
      superseded := false;
    END IF;
  END IF;

  IF existing IS NULL AND version IS NULL THEN
    -- Delete of an object the server never had (or the caller cannot see).
    version := 0;
    superseded := true;
  ELSIF existing IS NOT NULL THEN
    IF p_hlc COLLATE "C" <= (existing ->> 'hlc') COLLATE "C" THEN
      version := (existing ->> 'version')::bigint;
      superseded := true;
    ELSIF p_op = 'delete' THEN
      EXECUTE format('UPDATE %s t SET deleted = true, last_origin_id = $2, last_revision_id = $3, '
                     'hlc = $4 WHERE t.id = $1 RETURNING version', reg.table_oid)
        INTO version USING p_object_id, p_origin_id, p_id, p_hlc;
      superseded := false;
    ELSE
      data := (p_payload - 'id');
      SELECT string_agg(quote_ident(k), ', ') INTO cols FROM jsonb_object_keys(data) AS k;
      IF cols IS NULL THEN
        EXECUTE format('UPDATE %s t SET deleted = false, recovered = t.recovered OR t.deleted, '
                       'last_origin_id = $2, last_revision_id = $3, hlc = $4 '
                       'WHERE t.id = $1 RETURNING version', reg.table_oid)
          INTO version USING p_object_id, p_origin_id, p_id, p_hlc;
      ELSE
        EXECUTE format('UPDATE %1$s t SET (%2$s) = (SELECT %2$s FROM jsonb_populate_record(NULL::%1$s, $5)), '
                       'deleted = false, recovered = t.recovered OR t.deleted, '
                       'last_origin_id = $2, last_revision_id = $3, hlc = $4 '
                       'WHERE t.id = $1 RETURNING version', reg.table_oid, cols)
          INTO version USING p_object_id, p_origin_id, p_id, p_hlc, data;
      END IF;
      superseded := false;
    END IF;
  END IF;

  PERFORM pulsesync.record_applied(p_id, p_object_type, p_object_id, p_origin_id, p_seq,
                                   version, superseded, p_created_at_ms);
  outcome := 'applied';
END
$$;

GRANT USAGE ON SCHEMA pulsesync TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION pulsesync.apply_revisions(jsonb) TO authenticated, service_role;

-- Who created a team may see it before anyone is a member (the founder adds
-- their own membership next).
ALTER TABLE public.teams ADD COLUMN IF NOT EXISTS created_by uuid DEFAULT auth.uid();

-- The caller's teams, by definer so that policies on team_members do not
-- recurse into themselves.
CREATE FUNCTION pulsesync.my_team_ids() RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT team_id FROM public.team_members WHERE user_id = auth.uid() AND NOT deleted
$$;

CREATE FUNCTION pulsesync.my_teammate_ids() RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT m.user_id FROM public.team_members m
  WHERE m.team_id IN (SELECT pulsesync.my_team_ids()) AND NOT m.deleted
$$;
GRANT EXECUTE ON FUNCTION pulsesync.my_team_ids(), pulsesync.my_teammate_ids()
  TO authenticated, service_role;

GRANT SELECT, INSERT, UPDATE, DELETE
  ON public.teams, public.users, public.team_members, public.projects, public.tasks
  TO authenticated, service_role;

ALTER TABLE public.teams ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.team_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.tasks ENABLE ROW LEVEL SECURITY;

CREATE POLICY teams_member ON public.teams TO authenticated
  USING (id IN (SELECT pulsesync.my_team_ids()) OR created_by = auth.uid())
  WITH CHECK (id IN (SELECT pulsesync.my_team_ids()) OR created_by = auth.uid());

CREATE POLICY users_self_or_teammate ON public.users FOR SELECT TO authenticated
  USING (id = auth.uid() OR id IN (SELECT pulsesync.my_teammate_ids()));
CREATE POLICY users_self_insert ON public.users FOR INSERT TO authenticated
  WITH CHECK (id = auth.uid());
CREATE POLICY users_self_update ON public.users FOR UPDATE TO authenticated
  USING (id = auth.uid()) WITH CHECK (id = auth.uid());

CREATE POLICY team_members_of_my_teams ON public.team_members TO authenticated
  USING (team_id IN (SELECT pulsesync.my_team_ids()))
  WITH CHECK (team_id IN (SELECT pulsesync.my_team_ids()));
-- Everyone sees their own memberships (also the one just being created).
CREATE POLICY team_members_own ON public.team_members FOR SELECT TO authenticated
  USING (user_id = auth.uid());
-- The founder's first membership of a team they created.
CREATE POLICY team_members_founder ON public.team_members FOR INSERT TO authenticated
  WITH CHECK (user_id = auth.uid() AND team_id IN
              (SELECT id FROM public.teams WHERE created_by = auth.uid()));

CREATE POLICY projects_of_my_teams ON public.projects TO authenticated
  USING (team_id IN (SELECT pulsesync.my_team_ids()))
  WITH CHECK (team_id IN (SELECT pulsesync.my_team_ids()));

CREATE POLICY tasks_of_my_teams ON public.tasks TO authenticated
  USING (team_id IN (SELECT pulsesync.my_team_ids()))
  WITH CHECK (team_id IN (SELECT pulsesync.my_team_ids()));
