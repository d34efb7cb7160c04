-- The sync engine: the registry of synced tables, the change log written by
-- triggers, the record of applied revisions, and the merge (apply_revision).
--
-- Invariants:
-- 1. Every write to a synced table, by any writer, appends exactly one row to
--    pulsesync.change_log in the same transaction (capture_change trigger).
-- 2. Every write gives the row a new version from one sequence, so versions
--    of one object increase in commit order (the BEFORE trigger runs after
--    the row lock is held) and a re-created object never reuses a version.
-- 3. A revision id is applied at most once (applied_revisions primary key).
-- 4. The merge lives only here; the gRPC server and PostgREST both call it.

CREATE SCHEMA IF NOT EXISTS pulsesync;

CREATE SEQUENCE pulsesync.version_seq;

-- A table becomes synced by registering it (pulsesync.register_table).
CREATE TABLE pulsesync.synced_tables (
  object_type text PRIMARY KEY CHECK (object_type ~ '^[a-z][a-z0-9_]*$'),
  table_oid regclass NOT NULL UNIQUE,
  -- Column holding the team the row belongs to (NULL: not team-scoped).
  team_column name
);

-- Columns the engine owns on every synced table; a payload may not set them.
CREATE FUNCTION pulsesync.system_columns() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
  SELECT ARRAY['version', 'updated_at', 'deleted', 'recovered',
               'last_origin_id', 'last_revision_id', 'hlc']
$$;

-- The change log: one row per write of a synced row.
-- txid is what makes the feed commit-safe (see server/core/change_feed.h):
-- readers select by transaction visibility between two snapshots, and order
-- by position.
CREATE TABLE pulsesync.change_log (
  position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
  changed_at timestamptz NOT NULL DEFAULT now(),
  schema_name name NOT NULL,
  table_name name NOT NULL,
  object_type text NOT NULL,
  object_id uuid NOT NULL,
  team_id uuid,
  op text NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE')),
  version bigint NOT NULL,
  origin_id text,
  revision_id uuid,
  -- Who: the JWT claims of the request (NULL for writes outside a request).
  claims jsonb,
  new_row jsonb,
  old_row jsonb
);
CREATE INDEX change_log_txid_idx ON pulsesync.change_log (txid);

-- Revisions applied, for idempotency: the answer to a duplicate is the answer
-- of the first application.
CREATE TABLE pulsesync.applied_revisions (
  id uuid PRIMARY KEY,
  object_type text NOT NULL,
  object_id uuid NOT NULL,
  origin_id text NOT NULL,
  seq bigint NOT NULL,
  version bigint NOT NULL,
  superseded boolean NOT NULL,
  created_at_ms bigint NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
);

-- A clock reading as text that sorts (COLLATE "C") in clock order:
-- physical ms, then counter, then origin id as the final tie-break.
CREATE FUNCTION pulsesync.hlc_text(physical_ms bigint, counter bigint, origin text)
RETURNS text LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT lpad(physical_ms::text, 15, '0') || '-' || lpad(counter::text, 10, '0') || '-' || origin
$$;

-- BEFORE INSERT OR UPDATE: versions and system columns (invariant 2).
CREATE FUNCTION pulsesync.stamp_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
BEGIN
  NEW.version := nextval('pulsesync.version_seq');
  NEW.updated_at := now();
  IF TG_OP = 'UPDATE' AND NEW.last_revision_id IS NOT DISTINCT FROM OLD.last_revision_id THEN
    -- Not written by a revision (psql, PostgREST, a migration): no origin.
    NEW.last_revision_id := NULL;
    NEW.last_origin_id := NULL;
    NEW.hlc := NULL;
  END IF;
  IF NEW.hlc IS NULL THEN
    NEW.hlc := pulsesync.hlc_text(
      (extract(epoch FROM clock_timestamp()) * 1000)::bigint, 0, '');
  END IF;
  RETURN NEW;
END
$$;

-- AFTER INSERT OR UPDATE OR DELETE: the change log (invariant 1).
-- TG_ARGV[0] = object type, TG_ARGV[1] = team column or ''.
CREATE FUNCTION pulsesync.capture_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
DECLARE
  new_j jsonb;
  old_j jsonb;
  row_j jsonb;
  op text := TG_OP;
  v bigint;
BEGIN
  IF TG_OP <> 'DELETE' THEN new_j := to_jsonb(NEW); END IF;
  IF TG_OP <> 'INSERT' THEN old_j := to_jsonb(OLD); END IF;
  IF TG_OP = 'UPDATE' AND (new_j ->> 'deleted')::boolean
     AND NOT coalesce((old_j ->> 'deleted')::boolean, false) THEN
    op := 'DELETE';
  END IF;
  row_j := coalesce(new_j, old_j);
  IF TG_OP = 'DELETE' THEN
    v := nextval('pulsesync.version_seq');
  ELSE
    v := (new_j ->> 'version')::bigint;
  END IF;
  INSERT INTO pulsesync.change_log
    (schema_name, table_name, object_type, object_id, team_id, op, version,
     origin_id, revision_id, claims, new_row, old_row)
  VALUES
    (TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0], (row_j ->> 'id')::uuid,
     CASE WHEN TG_ARGV[1] <> '' THEN (row_j ->> TG_ARGV[1])::uuid END,
     op, v,
     CASE WHEN TG_OP <> 'DELETE' THEN new_j ->> 'last_origin_id' END,
     CASE WHEN TG_OP <> 'DELETE' THEN (new_j ->> 'last_revision_id')::uuid END,
     nullif(current_setting('request.jwt.claims', true), '')::jsonb,
     new_j, old_j);
  RETURN NULL;
END
$$;

-- Makes a table synced: adds the system columns it lacks, installs the
-- triggers and records it. The table needs a uuid primary key named id.
-- Idempotent.
CREATE FUNCTION pulsesync.register_table(tbl regclass, object_type text, team_column name)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (
      SELECT 1 FROM pg_index i
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
      WHERE i.indrelid = tbl AND i.indisprimary AND i.indnatts = 1
        AND a.attname = 'id' AND a.atttypid = 'uuid'::regtype) THEN
    RAISE EXCEPTION 'table % needs a uuid primary key named id to be synced', tbl;
  END IF;
  EXECUTE format($f$
    ALTER TABLE %s
      ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0,
      ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now(),
      ADD COLUMN IF NOT EXISTS deleted boolean NOT NULL DEFAULT false,
      ADD COLUMN IF NOT EXISTS recovered boolean NOT NULL DEFAULT false,
      ADD COLUMN IF NOT EXISTS last_origin_id text,
      ADD COLUMN IF NOT EXISTS last_revision_id uuid,
      ADD COLUMN IF NOT EXISTS hlc text COLLATE "C"
  $f$, tbl);
  EXECUTE format('DROP TRIGGER IF EXISTS pulsesync_stamp ON %s', tbl);
  EXECUTE format('CREATE TRIGGER pulsesync_stamp BEFORE INSERT OR UPDATE ON %s '
                 'FOR EACH ROW EXECUTE FUNCTION pulsesync.stamp_row()', tbl);
  EXECUTE format('DROP TRIGGER IF EXISTS pulsesync_capture ON %s', tbl);
  EXECUTE format('CREATE TRIGGER pulsesync_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                 'FOR EACH ROW EXECUTE FUNCTION pulsesync.capture_change(%L, %L)',
                 tbl, object_type, coalesce(team_column, ''));
  INSERT INTO pulsesync.synced_tables (object_type, table_oid, team_column)
  VALUES (object_type, tbl, team_column)
  ON CONFLICT ON CONSTRAINT synced_tables_pkey
  DO UPDATE SET table_oid = EXCLUDED.table_oid, team_column = EXCLUDED.team_column;
END
$$;

-- The engine's bookkeeping, reached by definer: callers (who run the merge
-- under their own role, see 0005) need no privileges on pulsesync's tables.
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

-- Applies one revision and returns its outcome. Raises (and so writes
-- nothing) when the revision is invalid; apply_revisions turns that into a
-- rejection. The merge, for now: latest wins by clock (hlc) per object; an
-- upsert later than a delete re-creates the object with recovered = true.
-- SECURITY INVOKER: its reads and writes of the synced tables are the
-- caller's, under the caller's Row Level Security policies; a row the caller
-- may not see is a row it may not write.
CREATE FUNCTION pulsesync.apply_revision(
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

-- Applies a batch: a JSON array of revisions, each
--   {"id","object_type","object_id","origin_id","seq","op","payload" (JSON
--    text, parsed here so that bad JSON rejects only its revision),
--    "created_at","base_version","schema_version","hlc"}
-- in order, each in its own subtransaction. Returns one row per element.
-- Errors that say nothing about the revision itself (serialization failure,
-- deadlock, resources, shutdown, internal) abort the whole batch instead of
-- rejecting a revision, so the caller can retry it.
CREATE FUNCTION pulsesync.apply_revisions(batch jsonb)
RETURNS TABLE (idx int, outcome text, reason text, version bigint, superseded boolean)
LANGUAGE plpgsql AS $$
DECLARE
  r jsonb;
  i int := 0;
  res record;
  state text;
  msg text;
  detail text;
BEGIN
  FOR r IN SELECT value FROM jsonb_array_elements(batch) LOOP
    BEGIN
      SELECT * INTO res FROM pulsesync.apply_revision(
        (r ->> 'id')::uuid, r ->> 'object_type', (r ->> 'object_id')::uuid,
        r ->> 'origin_id', (r ->> 'seq')::bigint, r ->> 'op',
        CASE WHEN r ->> 'op' = 'upsert' THEN (r ->> 'payload')::jsonb END,
        (r ->> 'created_at')::bigint, (r ->> 'base_version')::bigint,
        (r ->> 'schema_version')::int, r ->> 'hlc');
      idx := i; outcome := res.outcome; reason := NULL;
      version := res.version; superseded := res.superseded;
    EXCEPTION WHEN OTHERS THEN
      GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
      IF left(state, 2) IN ('40', '53', '54', '55', '57', '58', 'XX') THEN
        RAISE;
      END IF;
      idx := i; outcome := 'rejected';
      reason := msg || CASE WHEN coalesce(detail, '') <> '' THEN ' (' || detail || ')' ELSE '' END;
      version := NULL; superseded := NULL;
    END;
    RETURN NEXT;
    i := i + 1;
  END LOOP;
END
$$;
