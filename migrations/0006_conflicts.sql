-- Conflict handling (docs/CONFLICTS.md): the merge becomes field by field,
-- deletes become a latest-wins register beside the fields, losing values of
-- concurrent edits are kept as conflict records, revisions of one origin
-- apply in seq order, and old clients' payloads are upgraded to the current
-- schema before they are merged.
--
-- The state of an object, all of it merged with max(), so that the result
-- does not depend on the order in which revisions arrive:
--   field_clocks  {"field": [version, "hlc"], ..., "_deleted": [version, "hlc"]}
--                 per field, the clock of the write whose value it holds and
--                 the server version that wrote it ("_deleted": the latest
--                 delete). A field without an entry has the smallest clock.
--   live_hlc      the latest upsert's clock (NULL: never written by one
--                 since 0006; read as `hlc` when the row is not deleted)
--   deleted_hlc   the latest delete's clock (NULL: never deleted)
--   deleted       deleted_hlc > live_hlc
--   recovered     not deleted, but deleted once (deleted_hlc IS NOT NULL)
--   hlc           greatest(live_hlc, deleted_hlc): the row's latest clock
-- A field takes a revision's value when the revision's clock is larger than
-- the field's. Fields not named by a revision keep their values and clocks.

-- ---------------------------------------------------------------------------
-- Bookkeeping columns and tables.

CREATE OR REPLACE FUNCTION pulsesync.system_columns() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
  SELECT ARRAY['version', 'updated_at', 'deleted', 'recovered',
               'last_origin_id', 'last_revision_id', 'hlc',
               'live_hlc', 'deleted_hlc', 'field_clocks']
$$;

-- Columns that are the engine's bookkeeping, not data: left out of the
-- change log's records, snapshots and what clients store.
CREATE FUNCTION pulsesync.internal_columns() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
  SELECT ARRAY['live_hlc', 'deleted_hlc', 'field_clocks']
$$;

-- A uuid, or NULL for text that is not one (for bookkeeping of refusals).
CREATE FUNCTION pulsesync.try_uuid(t text) RETURNS uuid
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN t::uuid;
EXCEPTION WHEN invalid_text_representation THEN
  RETURN NULL;
END
$$;

-- The origin id inside a clock text (see hlc_text: 15 + 1 + 10 + 1 chars).
CREATE FUNCTION pulsesync.hlc_origin(h text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$ SELECT substr(h, 28) $$;

-- A clock for a write made outside a revision (psql, PostgREST, a
-- migration): the server's time, but always after `after` (the row's clock),
-- so that a direct write is the latest write of what it changes even when a
-- device's clock runs ahead. Origin '' (loses a tie to any device).
CREATE FUNCTION pulsesync.server_hlc(after text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
  now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
  after_ms bigint;
BEGIN
  IF after IS NOT NULL AND length(after) >= 26 THEN
    after_ms := substr(after, 1, 15)::bigint;
    IF after_ms >= now_ms THEN
      RETURN pulsesync.hlc_text(after_ms, substr(after, 17, 10)::bigint + 1, '');
    END IF;
  END IF;
  RETURN pulsesync.hlc_text(now_ms, 0, '');
END
$$;

-- Per origin (device): the seq order check, who it belongs to, and counts
-- for operators (issue 6 lists them).
CREATE TABLE pulsesync.origins (
  origin_id text PRIMARY KEY,
  -- The JWT sub that first used the origin; others may not use it.
  user_id uuid,
  last_seq bigint NOT NULL DEFAULT 0,
  applied bigint NOT NULL DEFAULT 0,
  refused bigint NOT NULL DEFAULT 0,
  first_seen timestamptz NOT NULL DEFAULT now(),
  last_seen timestamptz NOT NULL DEFAULT now()
);
INSERT INTO pulsesync.origins (origin_id, last_seq, applied)
SELECT origin_id, max(seq), count(*) FROM pulsesync.applied_revisions GROUP BY origin_id;

-- Revisions refused (rejected, or out of seq order), for the answer to a
-- retry and for the audit trail.
CREATE TABLE pulsesync.refused_revisions (
  position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id uuid,
  origin_id text NOT NULL,
  seq bigint NOT NULL,
  object_type text,
  object_id uuid,
  outcome text NOT NULL CHECK (outcome IN ('rejected', 'out_of_order')),
  reason text NOT NULL,
  claims jsonb,
  refused_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refused_revisions_id_idx ON pulsesync.refused_revisions (id);

-- Deletes of objects the server has no row for (yet): a create that arrives
-- later with an older clock must not bring the object to life.
CREATE TABLE pulsesync.tombstones (
  object_type text NOT NULL,
  object_id uuid NOT NULL,
  deleted_hlc text COLLATE "C" NOT NULL,
  origin_id text NOT NULL,
  revision_id uuid NOT NULL,
  PRIMARY KEY (object_type, object_id)
);

-- How an applied revision was merged, for the answer to a duplicate and for
-- the audit trail.
ALTER TABLE pulsesync.applied_revisions
  ADD COLUMN resolution text,
  ADD COLUMN conflicts int NOT NULL DEFAULT 0;

-- Payload upgrades: a revision made by a client built for schema version v
-- passes through every upgrade of its object type with from_version >= v,
-- in order, before it is merged. Register them in the migration that
-- changes the schema (see 0007).
CREATE TABLE pulsesync.payload_upgrades (
  object_type text NOT NULL,
  from_version int NOT NULL CHECK (from_version >= 1),
  upgrade regprocedure NOT NULL,
  description text NOT NULL,
  PRIMARY KEY (object_type, from_version)
);

-- The schema version clients are built for today: 1 + the newest upgrade.
-- (The engine's helpers below are PL/pgSQL rather than SQL functions: a
-- SECURITY DEFINER SQL function is not inlined and is planned again on every
-- call, which cost the merge more than the merge itself.)
CREATE FUNCTION pulsesync.schema_version() RETURNS int
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
BEGIN
  RETURN (SELECT coalesce(max(from_version), 0) + 1 FROM pulsesync.payload_upgrades);
END
$$;

-- `upgrade` must be a function (jsonb) RETURNS jsonb taking a payload of
-- from_version and answering it in from_version + 1.
CREATE FUNCTION pulsesync.register_payload_upgrade(
  p_object_type text, p_from_version int, p_upgrade regprocedure, p_description text)
RETURNS void LANGUAGE sql AS $$
  INSERT INTO pulsesync.payload_upgrades VALUES ($1, $2, $3, $4)
  ON CONFLICT (object_type, from_version)
  DO UPDATE SET upgrade = EXCLUDED.upgrade, description = EXCLUDED.description
$$;

CREATE FUNCTION pulsesync.upgrade_payload(
  p_object_type text, p_schema_version int, p_payload jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pulsesync AS $$
DECLARE
  u record;
  current_version int := pulsesync.schema_version();
BEGIN
  IF p_schema_version > current_version THEN
    RAISE EXCEPTION 'schema version % is newer than this server''s (%): upgrade the server first',
      p_schema_version, current_version USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_payload IS NULL OR p_schema_version <= 0 OR p_schema_version = current_version THEN
    RETURN p_payload;  -- 0: the client did not say; read as current
  END IF;
  FOR u IN SELECT upgrade FROM pulsesync.payload_upgrades
           WHERE object_type = p_object_type AND from_version >= p_schema_version
           ORDER BY from_version LOOP
    EXECUTE format('SELECT %s($1)', u.upgrade::regproc) INTO p_payload USING p_payload;
  END LOOP;
  RETURN p_payload;
END
$$;

-- ---------------------------------------------------------------------------
-- Conflict records: the values that lost to a concurrent edit (or to a later
-- delete), kept for the app to show ("prompt the user"). A synced object
-- type ("conflict"): clients receive them through the feed like any row and
-- resolve one by a revision that sets resolved/resolution.
CREATE TABLE pulsesync.conflicts (
  id uuid PRIMARY KEY,
  -- Who may see it: whoever sees the object (its team; for team-less
  -- objects, the users row itself: user_id).
  team_id uuid,
  user_id uuid,
  object_type text NOT NULL,
  object_id uuid NOT NULL,
  -- 'field': two edits of `field`; 'deleted': an edit lost to a later delete
  -- (field is NULL, local_value holds the edit's fields).
  kind text NOT NULL CHECK (kind IN ('field', 'deleted')),
  field text,
  local_value jsonb,
  winning_value jsonb,
  loser_origin_id text,
  loser_revision_id uuid,
  loser_hlc text,
  winner_origin_id text,
  winner_revision_id uuid,
  winner_hlc text,
  created_at timestamptz NOT NULL DEFAULT now(),
  resolved boolean NOT NULL DEFAULT false,
  -- 'theirs': the winning value stays; 'mine': the app wrote the local value
  -- again (a new revision of the object).
  resolution text CHECK (resolution IN ('theirs', 'mine'))
);
CREATE INDEX conflicts_object_idx ON pulsesync.conflicts (object_type, object_id);
CREATE INDEX conflicts_team_idx ON pulsesync.conflicts (team_id);

-- ---------------------------------------------------------------------------
-- Registration: the new bookkeeping columns on every synced table.

CREATE OR REPLACE FUNCTION pulsesync.register_table(tbl regclass, object_type text, team_column name)
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
      ADD COLUMN IF NOT EXISTS hlc text COLLATE "C",
      ADD COLUMN IF NOT EXISTS live_hlc text COLLATE "C",
      ADD COLUMN IF NOT EXISTS deleted_hlc text COLLATE "C",
      ADD COLUMN IF NOT EXISTS field_clocks jsonb NOT NULL DEFAULT '{}'
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

-- Who is writing: apply_revision sets pulsesync.revision and
-- pulsesync.origin (transaction-local) around its writes; empty or unset
-- means a direct write (psql, PostgREST, a migration).
CREATE FUNCTION pulsesync.writing_revision() RETURNS uuid
LANGUAGE sql STABLE AS $$
  SELECT nullif(current_setting('pulsesync.revision', true), '')::uuid
$$;

-- BEFORE INSERT OR UPDATE: versions, and the clocks of direct writes.
-- A write by a revision brings its clocks, with version 0 in the
-- field_clocks entries it wrote; they get the row's new version here. Any
-- other write gets a server clock (server_hlc) for what it changed, so it
-- takes part in the merge like a revision would.
CREATE OR REPLACE FUNCTION pulsesync.stamp_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
DECLARE
  h text;
  changed jsonb;
BEGIN
  NEW.version := nextval('pulsesync.version_seq');
  NEW.updated_at := now();
  IF pulsesync.writing_revision() IS NOT NULL THEN
    SELECT coalesce(jsonb_object_agg(key, CASE WHEN (value ->> 0)::bigint = 0
                                               THEN jsonb_build_array(NEW.version, value -> 1)
                                               ELSE value END), '{}')
      INTO NEW.field_clocks FROM jsonb_each(NEW.field_clocks);
    RETURN NEW;
  END IF;

  -- Not written by a revision (psql, PostgREST, a migration): no origin.
  NEW.last_revision_id := NULL;
  NEW.last_origin_id := NULL;
  IF TG_OP = 'INSERT' THEN
    h := pulsesync.server_hlc(NULL);
    NEW.field_clocks := '{}';
    IF NEW.deleted THEN
      NEW.deleted_hlc := h;
      NEW.live_hlc := NULL;
      NEW.field_clocks := jsonb_build_object('_deleted', jsonb_build_array(NEW.version, h));
    ELSE
      NEW.live_hlc := h;
      NEW.deleted_hlc := NULL;
    END IF;
  ELSE
    h := pulsesync.server_hlc(OLD.hlc);
    SELECT coalesce(jsonb_object_agg(n.key, jsonb_build_array(NEW.version, h)), '{}')
      INTO changed
      FROM jsonb_each(to_jsonb(NEW)) n JOIN jsonb_each(to_jsonb(OLD)) o USING (key)
     WHERE n.value IS DISTINCT FROM o.value AND NOT (n.key = ANY (pulsesync.system_columns()));
    NEW.field_clocks := OLD.field_clocks || changed;
    NEW.live_hlc := OLD.live_hlc;
    NEW.deleted_hlc := OLD.deleted_hlc;
    IF NEW.deleted AND NOT OLD.deleted THEN
      NEW.deleted_hlc := h;
      NEW.field_clocks := NEW.field_clocks
        || jsonb_build_object('_deleted', jsonb_build_array(NEW.version, h));
    ELSIF NOT NEW.deleted THEN
      NEW.live_hlc := h;
    END IF;
  END IF;
  NEW.hlc := h;
  RETURN NEW;
END
$$;

-- AFTER INSERT OR UPDATE OR DELETE: the change log, without the internal
-- columns (they are the merge's, not data).
CREATE OR REPLACE FUNCTION pulsesync.capture_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
DECLARE
  new_j jsonb;
  old_j jsonb;
  row_j jsonb;
  op text := TG_OP;
  v bigint;
BEGIN
  IF TG_OP <> 'DELETE' THEN new_j := to_jsonb(NEW) - pulsesync.internal_columns(); END IF;
  IF TG_OP <> 'INSERT' THEN old_j := to_jsonb(OLD) - pulsesync.internal_columns(); END IF;
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
     nullif(current_setting('pulsesync.origin', true), ''),
     pulsesync.writing_revision(),
     nullif(current_setting('request.jwt.claims', true), '')::jsonb,
     new_j, old_j);
  RETURN NULL;
END
$$;

SELECT pulsesync.register_table(table_oid, object_type, team_column)
FROM pulsesync.synced_tables;
SELECT pulsesync.register_table('pulsesync.conflicts', 'conflict', 'team_id');

-- ---------------------------------------------------------------------------
-- Definer helpers: the engine's bookkeeping, for callers without privileges
-- on pulsesync's tables.

-- The seq check of one revision. Locks the origin's row (so two batches of
-- one origin apply one after the other) and answers what is wrong, or NULL
-- when `p_seq` is the next one expected. Raises for a foreign origin.
CREATE FUNCTION pulsesync.check_origin(p_origin_id text, p_seq bigint,
                                       OUT status text, OUT message text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
DECLARE
  o pulsesync.origins;
  uid uuid := auth.uid();
BEGIN
  INSERT INTO pulsesync.origins (origin_id, user_id) VALUES (p_origin_id, uid)
  ON CONFLICT (origin_id) DO NOTHING;
  SELECT * INTO o FROM pulsesync.origins WHERE origin_id = p_origin_id FOR UPDATE;
  IF o.user_id IS NOT NULL AND o.user_id IS DISTINCT FROM uid
     AND coalesce(auth.role(), '') <> 'service_role' THEN
    RAISE EXCEPTION 'origin "%" belongs to another user', p_origin_id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF p_seq = o.last_seq + 1 THEN
    status := 'next';
  ELSIF p_seq <= o.last_seq THEN
    status := 'used';
    message := format('seq %s of origin "%s" was already used by another revision (the origin''s last seq is %s)',
                      p_seq, p_origin_id, o.last_seq);
  ELSE
    status := 'gap';
    message := format('seq %s of origin "%s" arrived before seq %s: send the origin''s revisions in seq order',
                      p_seq, p_origin_id, o.last_seq + 1);
  END IF;
END
$$;

-- Counts a revision of an origin: applied, or refused for a reason of its
-- own (the seq is then used up, so that the origin's next revisions apply).
-- Only the origin's owner moves its seq on.
CREATE FUNCTION pulsesync.origin_advance(p_origin_id text, p_seq bigint, p_applied boolean)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pulsesync.origins WHERE origin_id = p_origin_id) THEN
    INSERT INTO pulsesync.origins (origin_id, user_id) VALUES (p_origin_id, auth.uid())
    ON CONFLICT (origin_id) DO NOTHING;
  END IF;
  UPDATE pulsesync.origins
     SET last_seq = p_seq,
         applied = applied + CASE WHEN p_applied THEN 1 ELSE 0 END,
         refused = refused + CASE WHEN p_applied THEN 0 ELSE 1 END,
         last_seen = now()
   WHERE origin_id = p_origin_id AND p_seq = last_seq + 1
     AND (user_id IS NULL OR user_id IS NOT DISTINCT FROM auth.uid()
          OR coalesce(auth.role(), '') = 'service_role');
END
$$;

CREATE FUNCTION pulsesync.record_refused(
  p_id uuid, p_origin_id text, p_seq bigint, p_object_type text, p_object_id uuid,
  p_outcome text, p_reason text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
BEGIN
  INSERT INTO pulsesync.refused_revisions
    (id, origin_id, seq, object_type, object_id, outcome, reason, claims)
  VALUES (p_id, p_origin_id, p_seq, p_object_type, p_object_id, p_outcome, p_reason,
          nullif(current_setting('request.jwt.claims', true), '')::jsonb);
END
$$;

-- The reason a revision id was rejected before, if it was.
CREATE FUNCTION pulsesync.rejection_of(p_id uuid) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
BEGIN
  RETURN (SELECT reason FROM pulsesync.refused_revisions
          WHERE id = p_id AND outcome = 'rejected' ORDER BY position LIMIT 1);
END
$$;

DROP FUNCTION pulsesync.record_applied(uuid, text, uuid, text, bigint, bigint, boolean, bigint);
CREATE FUNCTION pulsesync.record_applied(
  p_id uuid, p_object_type text, p_object_id uuid, p_origin_id text, p_seq bigint,
  p_version bigint, p_superseded boolean, p_created_at_ms bigint, p_resolution text,
  p_conflicts int)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
BEGIN
  INSERT INTO pulsesync.applied_revisions
    (id, object_type, object_id, origin_id, seq, version, superseded, created_at_ms,
     resolution, conflicts)
  VALUES (p_id, p_object_type, p_object_id, p_origin_id, p_seq, p_version, p_superseded,
          p_created_at_ms, p_resolution, p_conflicts);
  -- check_origin made the row and holds its lock.
  UPDATE pulsesync.origins
     SET last_seq = p_seq, applied = applied + 1, last_seen = now()
   WHERE origin_id = p_origin_id AND last_seq = p_seq - 1;
END
$$;

-- 0002's lookups, as PL/pgSQL (see schema_version above).
CREATE OR REPLACE FUNCTION pulsesync.applied_revision(p_id uuid)
RETURNS pulsesync.applied_revisions LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pulsesync AS $$
DECLARE
  r pulsesync.applied_revisions;
BEGIN
  SELECT * INTO r FROM pulsesync.applied_revisions WHERE id = p_id;
  RETURN r;
END
$$;

CREATE OR REPLACE FUNCTION pulsesync.synced_table(p_object_type text)
RETURNS pulsesync.synced_tables LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pulsesync AS $$
DECLARE
  r pulsesync.synced_tables;
BEGIN
  SELECT * INTO r FROM pulsesync.synced_tables WHERE object_type = p_object_type;
  RETURN r;
END
$$;

-- Consumes the tombstone of an object the server had no row for.
CREATE FUNCTION pulsesync.take_tombstone(p_object_type text, p_object_id uuid)
RETURNS pulsesync.tombstones LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pulsesync AS $$
DECLARE
  t pulsesync.tombstones;
BEGIN
  DELETE FROM pulsesync.tombstones
  WHERE object_type = p_object_type AND object_id = p_object_id
  RETURNING * INTO t;
  RETURN t;
END
$$;

CREATE FUNCTION pulsesync.put_tombstone(p_object_type text, p_object_id uuid, p_hlc text,
                                        p_origin_id text, p_revision_id uuid)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
BEGIN
  INSERT INTO pulsesync.tombstones VALUES (p_object_type, p_object_id, p_hlc, p_origin_id,
                                           p_revision_id)
  ON CONFLICT (object_type, object_id) DO UPDATE
  SET deleted_hlc = EXCLUDED.deleted_hlc, origin_id = EXCLUDED.origin_id,
      revision_id = EXCLUDED.revision_id
  WHERE EXCLUDED.deleted_hlc > pulsesync.tombstones.deleted_hlc;
END
$$;

-- Keeps a losing value. The id is derived from what lost and to what, so
-- that the same conflict found twice is recorded once.
CREATE FUNCTION pulsesync.record_conflict(
  p_reg pulsesync.synced_tables, p_row jsonb, p_kind text, p_field text,
  p_local jsonb, p_winning jsonb,
  p_loser_origin text, p_loser_revision uuid, p_loser_hlc text,
  p_winner_origin text, p_winner_revision uuid, p_winner_hlc text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
DECLARE
  team uuid;
  owner uuid;
BEGIN
  IF p_reg.team_column IS NOT NULL THEN
    team := (p_row ->> p_reg.team_column)::uuid;
  ELSIF p_reg.object_type = 'user' THEN
    owner := (p_row ->> 'id')::uuid;
  END IF;
  INSERT INTO pulsesync.conflicts
    (id, team_id, user_id, object_type, object_id, kind, field, local_value, winning_value,
     loser_origin_id, loser_revision_id, loser_hlc, winner_origin_id, winner_revision_id,
     winner_hlc, hlc, live_hlc)
  VALUES
    (md5(concat_ws('|', p_reg.object_type, p_row ->> 'id', p_kind, p_field, p_loser_hlc,
                   p_winner_hlc))::uuid,
     team, owner, p_reg.object_type, (p_row ->> 'id')::uuid, p_kind, p_field, p_local,
     p_winning, p_loser_origin, p_loser_revision, p_loser_hlc, p_winner_origin,
     p_winner_revision, p_winner_hlc, pulsesync.server_hlc(NULL), pulsesync.server_hlc(NULL))
  ON CONFLICT (id) DO NOTHING;
END
$$;

-- ---------------------------------------------------------------------------
-- The merge.

DROP FUNCTION pulsesync.apply_revisions(jsonb);
DROP FUNCTION pulsesync.apply_revision(uuid, text, uuid, text, bigint, text, jsonb, bigint,
                                       bigint, int, text);

-- Applies one revision and returns its outcome:
--   outcome     'applied' | 'duplicate' | 'out_of_order'
--   reason      out_of_order: why
--   version     the object's version after it (0: no row, a tombstone kept)
--   superseded  nothing of it took effect: later writes hold every field it
--               names (or the object, for a delete)
--   resolution  'applied' (taken as is), 'merged' (others changed other
--               fields since its base; both kept), 'conflict' (it and a
--               concurrent edit set a field differently; latest won and the
--               loser is in pulsesync.conflicts), 'recovered' (it brought a
--               deleted object back), 'superseded', 'tombstoned' (delete of
--               an object the server has no row for)
--   conflicts   conflict records made
-- Raises (and so writes nothing) when the revision is invalid;
-- apply_revisions turns that into a rejection.
-- SECURITY INVOKER: its reads and writes of the synced tables are the
-- caller's, under the caller's Row Level Security policies; a row the caller
-- may not see is a row it may not write.
CREATE FUNCTION pulsesync.apply_revision(
  p_id uuid, p_object_type text, p_object_id uuid, p_origin_id text, p_seq bigint,
  p_op text, p_payload jsonb, p_created_at_ms bigint, p_base_version bigint,
  p_schema_version int, p_hlc text,
  OUT outcome text, OUT reason text, OUT version bigint, OUT superseded boolean,
  OUT resolution text, OUT conflicts int, OUT record jsonb)
LANGUAGE plpgsql AS $$
DECLARE
  reg pulsesync.synced_tables;
  prior pulsesync.applied_revisions;
  bad text;
  cols text;
  existing jsonb;
  typed jsonb;
  clocks jsonb;
  won jsonb := '{}';
  entry jsonb;
  f text;
  e_hlc text;
  e_version bigint;
  concurrent boolean;
  others_since_base boolean := false;
  live text;
  del text;
  was_deleted boolean;
  now_deleted boolean;
  now_recovered boolean;
  lost_to_delete jsonb := '{}';
  del_entry jsonb;
  n_won int := 0;
  keep_conflicts boolean;
  tomb pulsesync.tombstones;
BEGIN
  conflicts := 0;
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
    resolution := prior.resolution;
    conflicts := prior.conflicts;
    IF superseded THEN
      reg := pulsesync.synced_table(p_object_type);
      EXECUTE format('SELECT to_jsonb(t) - pulsesync.internal_columns() FROM %s t WHERE t.id = $1',
                     reg.table_oid)
        INTO record USING p_object_id;
    END IF;
    RETURN;
  END IF;

  SELECT c.status, c.message INTO bad, reason FROM pulsesync.check_origin(p_origin_id, p_seq) c;
  IF bad = 'gap' THEN
    outcome := 'out_of_order';
    RETURN;
  ELSIF bad = 'used' THEN
    -- Sent again after its first answer was lost: the same answer.
    reason := coalesce(pulsesync.rejection_of(p_id), reason);
    RAISE EXCEPTION '%', reason USING ERRCODE = 'invalid_parameter_value';
  END IF;
  reason := NULL;

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
    p_payload := pulsesync.upgrade_payload(p_object_type, p_schema_version, p_payload);
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
    p_payload := p_payload - 'id';
    -- The values as the table stores them (so that "2026-01-01T00:00Z" and
    -- the row's timestamp compare as the same instant); raises for a value
    -- of the wrong type.
    EXECUTE format('SELECT to_jsonb(jsonb_populate_record(NULL::%s, $1))', reg.table_oid)
      INTO typed USING p_payload;
    SELECT coalesce(jsonb_object_agg(k, typed -> k), '{}') INTO typed
    FROM jsonb_object_keys(p_payload) AS k;
  END IF;

  -- Writes from here on are this revision's (stamp_row, capture_change).
  PERFORM set_config('pulsesync.revision', p_id::text, true),
          set_config('pulsesync.origin', p_origin_id, true);

  EXECUTE format('SELECT to_jsonb(t) FROM %s t WHERE t.id = $1 FOR UPDATE', reg.table_oid)
    INTO existing USING p_object_id;

  IF existing IS NULL AND p_op = 'delete' THEN
    -- Nothing to delete (or nothing this caller may see): keep the delete's
    -- clock for a create that may still arrive.
    PERFORM pulsesync.put_tombstone(p_object_type, p_object_id, p_hlc, p_origin_id, p_id);
    PERFORM set_config('pulsesync.revision', '', true), set_config('pulsesync.origin', '', true);
    version := 0;
    superseded := false;
    resolution := 'tombstoned';
    PERFORM pulsesync.record_applied(p_id, p_object_type, p_object_id, p_origin_id, p_seq,
                                     version, superseded, p_created_at_ms, resolution, conflicts);
    outcome := 'applied';
    RETURN;
  END IF;

  IF existing IS NULL THEN
    tomb := pulsesync.take_tombstone(p_object_type, p_object_id);
    del := tomb.deleted_hlc;
    now_deleted := del IS NOT NULL AND del COLLATE "C" > p_hlc COLLATE "C";
    SELECT jsonb_object_agg(k, jsonb_build_array(0, p_hlc)) INTO clocks
    FROM jsonb_object_keys(p_payload) AS k;
    IF del IS NOT NULL THEN
      clocks := coalesce(clocks, '{}') || jsonb_build_object('_deleted', jsonb_build_array(0, del));
    END IF;
    -- last_origin_id/last_revision_id: the writer of the row's latest clock.
    existing := typed || jsonb_build_object(
      'id', p_object_id,
      'last_origin_id', CASE WHEN now_deleted THEN tomb.origin_id ELSE p_origin_id END,
      'last_revision_id', CASE WHEN now_deleted THEN tomb.revision_id ELSE p_id END,
      'live_hlc', p_hlc, 'deleted_hlc', del, 'deleted', now_deleted,
      'recovered', del IS NOT NULL AND NOT now_deleted,
      'hlc', greatest(p_hlc COLLATE "C", del COLLATE "C"),
      'field_clocks', coalesce(clocks, '{}'));
    SELECT string_agg(quote_ident(k), ', ') INTO cols FROM jsonb_object_keys(existing) AS k;
    EXECUTE format('INSERT INTO %1$s (%2$s) SELECT %2$s FROM jsonb_populate_record(NULL::%1$s, $1) '
                   'ON CONFLICT (id) DO NOTHING RETURNING version', reg.table_oid, cols)
      INTO version USING existing;
    IF version IS NOT NULL THEN
      PERFORM set_config('pulsesync.revision', '', true), set_config('pulsesync.origin', '', true);
      superseded := now_deleted;
      resolution := CASE WHEN now_deleted THEN 'superseded' ELSE 'applied' END;
      PERFORM pulsesync.record_applied(p_id, p_object_type, p_object_id, p_origin_id, p_seq,
                                       version, superseded, p_created_at_ms, resolution,
                                       conflicts);
      outcome := 'applied';
      RETURN;
    END IF;
    -- Created concurrently by another transaction: merge against it.
    IF del IS NOT NULL THEN
      PERFORM pulsesync.put_tombstone(p_object_type, p_object_id, del, tomb.origin_id,
                                      tomb.revision_id);
    END IF;
    EXECUTE format('SELECT to_jsonb(t) FROM %s t WHERE t.id = $1 FOR UPDATE', reg.table_oid)
      INTO existing USING p_object_id;
    IF existing IS NULL THEN
      -- It exists, but not for this caller.
      RAISE EXCEPTION 'permission denied for % %', p_object_type, p_object_id
        USING ERRCODE = 'insufficient_privilege';
    END IF;
  END IF;

  -- Merge into the existing row.
  -- Two resolutions of one conflict record: latest wins, no record of that.
  keep_conflicts := reg.object_type <> 'conflict';
  clocks := existing -> 'field_clocks';
  was_deleted := (existing ->> 'deleted')::boolean;
  live := coalesce(existing ->> 'live_hlc',
                   CASE WHEN NOT was_deleted THEN existing ->> 'hlc' END);
  del := coalesce(existing ->> 'deleted_hlc',
                  CASE WHEN was_deleted THEN existing ->> 'hlc' END);
  -- Whether someone else wrote `f` after the version this revision is based on.
  del_entry := clocks -> '_deleted';

  IF p_op = 'upsert' THEN
    FOR f IN SELECT k FROM jsonb_object_keys(typed) AS k ORDER BY k LOOP
      entry := clocks -> f;
      e_hlc := coalesce(entry ->> 1, '');
      e_version := coalesce((entry ->> 0)::bigint, 0);
      concurrent := e_version > p_base_version AND e_hlc <> ''
                    AND pulsesync.hlc_origin(e_hlc) <> p_origin_id;
      IF p_hlc COLLATE "C" > e_hlc COLLATE "C" THEN
        won := won || jsonb_build_object(f, typed -> f);
        n_won := n_won + 1;
        clocks := clocks || jsonb_build_object(f, jsonb_build_array(0, p_hlc));
        IF keep_conflicts AND concurrent AND (existing -> f) IS DISTINCT FROM (typed -> f) THEN
          PERFORM pulsesync.record_conflict(reg, existing, 'field', f, existing -> f, typed -> f,
            pulsesync.hlc_origin(e_hlc), NULL, e_hlc, p_origin_id, p_id, p_hlc);
          conflicts := conflicts + 1;
        END IF;
      ELSIF keep_conflicts AND concurrent AND (existing -> f) IS DISTINCT FROM (typed -> f) THEN
        PERFORM pulsesync.record_conflict(reg, existing, 'field', f, typed -> f, existing -> f,
          p_origin_id, p_id, p_hlc, pulsesync.hlc_origin(e_hlc), NULL, e_hlc);
        conflicts := conflicts + 1;
      END IF;
    END LOOP;
    SELECT bool_or(true) INTO others_since_base
    FROM jsonb_each(clocks) c
    WHERE c.key <> '_deleted' AND NOT typed ? c.key
      AND (c.value ->> 0)::bigint > p_base_version
      AND pulsesync.hlc_origin(c.value ->> 1) <> p_origin_id;
    live := greatest(live COLLATE "C", p_hlc COLLATE "C");
    now_deleted := del IS NOT NULL AND del COLLATE "C" > live COLLATE "C";
    -- An edit that a later delete (made without seeing it) hides.
    IF keep_conflicts AND now_deleted AND del_entry IS NOT NULL AND (del_entry ->> 0)::bigint > p_base_version
       AND pulsesync.hlc_origin(del_entry ->> 1) <> p_origin_id AND typed <> '{}' THEN
      PERFORM pulsesync.record_conflict(reg, existing, 'deleted', NULL, typed, NULL,
        p_origin_id, p_id, p_hlc, pulsesync.hlc_origin(del), NULL, del);
      conflicts := conflicts + 1;
    END IF;
  ELSE
    del := greatest(del COLLATE "C", p_hlc COLLATE "C");
    IF del = p_hlc THEN
      clocks := clocks || jsonb_build_object('_deleted', jsonb_build_array(0, p_hlc));
    END IF;
    now_deleted := live IS NULL OR del COLLATE "C" > live COLLATE "C";
    -- Edits this delete wins over that it had not seen.
    IF now_deleted AND NOT was_deleted THEN
      SELECT jsonb_object_agg(c.key, existing -> c.key), max((c.value ->> 1) COLLATE "C")
        INTO lost_to_delete, e_hlc
      FROM jsonb_each(clocks) c
      WHERE c.key <> '_deleted' AND (c.value ->> 0)::bigint > p_base_version
        AND pulsesync.hlc_origin(c.value ->> 1) <> p_origin_id;
      IF keep_conflicts AND lost_to_delete IS NOT NULL THEN
        PERFORM pulsesync.record_conflict(reg, existing, 'deleted', NULL, lost_to_delete, NULL,
          pulsesync.hlc_origin(e_hlc), NULL, e_hlc, p_origin_id, p_id, p_hlc);
        conflicts := conflicts + 1;
      END IF;
    END IF;
  END IF;
  now_recovered := NOT now_deleted AND del IS NOT NULL;

  IF won = '{}' AND now_deleted = was_deleted
     AND now_recovered = (existing ->> 'recovered')::boolean
     AND live IS NOT DISTINCT FROM existing ->> 'live_hlc'
     AND del IS NOT DISTINCT FROM existing ->> 'deleted_hlc' THEN
    -- Nothing changes: later writes hold all of it.
    version := (existing ->> 'version')::bigint;
    superseded := true;
    resolution := CASE WHEN conflicts > 0 THEN 'conflict' ELSE 'superseded' END;
    record := existing - pulsesync.internal_columns();
  ELSE
    won := won || jsonb_build_object(
      'deleted', now_deleted, 'recovered', now_recovered,
      'live_hlc', live, 'deleted_hlc', del,
      'hlc', greatest(live COLLATE "C", del COLLATE "C"),
      'field_clocks', clocks);
    IF p_hlc = greatest(live COLLATE "C", del COLLATE "C") THEN
      won := won || jsonb_build_object('last_origin_id', p_origin_id, 'last_revision_id', p_id);
    END IF;
    SELECT string_agg(quote_ident(k), ', ') INTO cols FROM jsonb_object_keys(won) AS k;
    EXECUTE format('UPDATE %1$s t SET (%2$s) = (SELECT %2$s FROM jsonb_populate_record(NULL::%1$s, $2)) '
                   'WHERE t.id = $1 RETURNING version', reg.table_oid, cols)
      INTO version USING p_object_id, won;
    IF p_op = 'delete' THEN
      superseded := NOT (now_deleted AND del = p_hlc);
    ELSE
      -- Nothing of it shows: every field lost, or a later delete hides it;
      -- unless it brought the object back.
      superseded := (n_won = 0 OR now_deleted) AND NOT (was_deleted AND NOT now_deleted);
    END IF;
    resolution := CASE
      WHEN conflicts > 0 THEN 'conflict'
      WHEN p_op = 'upsert' AND was_deleted AND NOT now_deleted THEN 'recovered'
      WHEN superseded THEN 'superseded'
      WHEN others_since_base THEN 'merged'
      ELSE 'applied' END;
  END IF;

  PERFORM set_config('pulsesync.revision', '', true), set_config('pulsesync.origin', '', true);
  PERFORM pulsesync.record_applied(p_id, p_object_type, p_object_id, p_origin_id, p_seq,
                                   version, superseded, p_created_at_ms, resolution, conflicts);
  outcome := 'applied';
END
$$;

-- Applies a batch: a JSON array of revisions, each
--   {"id","object_type","object_id","origin_id","seq","op","payload" (JSON
--    text, parsed here so that bad JSON rejects only its revision),
--    "created_at","base_version","schema_version","hlc"}
-- or, for a revision the server refused before reaching SQL,
--   {"id","origin_id","seq","object_type","object_id","refused": reason}
-- (recorded so that the origin's seq moves on past it),
-- in order, each in its own subtransaction. Returns one row per element.
-- Errors that say nothing about the revision itself (serialization failure,
-- deadlock, resources, shutdown, internal) abort the whole batch instead of
-- rejecting a revision, so the caller can retry it.
CREATE FUNCTION pulsesync.apply_revisions(batch jsonb)
RETURNS TABLE (idx int, outcome text, reason text, version bigint, superseded boolean,
               resolution text, conflicts int, record text)
LANGUAGE plpgsql AS $$
DECLARE
  r jsonb;
  i int := 0;
  res record;
  state text;
  msg text;
  detail text;
  seq bigint;
BEGIN
  FOR r IN SELECT value FROM jsonb_array_elements(batch) LOOP
    idx := i; reason := NULL; version := NULL; superseded := NULL;
    resolution := NULL; conflicts := NULL; record := NULL;
    seq := (r ->> 'seq')::bigint;
    IF r ? 'refused' THEN
      outcome := 'rejected';
      reason := r ->> 'refused';
      PERFORM pulsesync.origin_advance(r ->> 'origin_id', seq, false);
      PERFORM pulsesync.record_refused(pulsesync.try_uuid(r ->> 'id'), r ->> 'origin_id', seq,
                                       r ->> 'object_type', pulsesync.try_uuid(r ->> 'object_id'),
                                       'rejected', reason);
    ELSE
      BEGIN
        SELECT * INTO res FROM pulsesync.apply_revision(
          (r ->> 'id')::uuid, r ->> 'object_type', (r ->> 'object_id')::uuid,
          r ->> 'origin_id', seq, r ->> 'op',
          CASE WHEN r ->> 'op' = 'upsert' THEN (r ->> 'payload')::jsonb END,
          (r ->> 'created_at')::bigint, (r ->> 'base_version')::bigint,
          (r ->> 'schema_version')::int, r ->> 'hlc');
        outcome := res.outcome; reason := res.reason;
        version := res.version; superseded := res.superseded;
        resolution := res.resolution; conflicts := res.conflicts; record := res.record::text;
      EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
        IF left(state, 2) IN ('40', '53', '54', '55', '57', '58', 'XX') THEN
          RAISE;
        END IF;
        outcome := 'rejected';
        reason := msg || CASE WHEN coalesce(detail, '') <> '' THEN ' (' || detail || ')' ELSE '' END;
        -- The seq is used up (origin_advance: only by the origin's owner).
        PERFORM pulsesync.origin_advance(r ->> 'origin_id', seq, false);
        PERFORM pulsesync.record_refused(pulsesync.try_uuid(r ->> 'id'), r ->> 'origin_id', seq,
                                         r ->> 'object_type', pulsesync.try_uuid(r ->> 'object_id'),
                                         'rejected', reason);
      END;
      IF outcome = 'out_of_order' THEN
        PERFORM pulsesync.record_refused(pulsesync.try_uuid(r ->> 'id'), r ->> 'origin_id', seq,
                                         r ->> 'object_type', pulsesync.try_uuid(r ->> 'object_id'),
                                         'out_of_order', reason);
      END IF;
    END IF;
    RETURN NEXT;
    i := i + 1;
  END LOOP;
END
$$;

-- ---------------------------------------------------------------------------
-- Privileges and policies for the conflict records.

GRANT EXECUTE ON FUNCTION pulsesync.apply_revisions(jsonb) TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION pulsesync.schema_version() TO authenticated, service_role, anon;
GRANT SELECT ON pulsesync.conflicts TO authenticated, service_role;
-- Resolving is the only change a client makes to a conflict record (plus the
-- merge's bookkeeping columns that every revision writes).
GRANT UPDATE (resolved, resolution, deleted, recovered, last_origin_id, last_revision_id,
              hlc, live_hlc, deleted_hlc, field_clocks)
  ON pulsesync.conflicts TO authenticated;
GRANT UPDATE ON pulsesync.conflicts TO service_role;
ALTER TABLE pulsesync.conflicts ENABLE ROW LEVEL SECURITY;
CREATE POLICY conflicts_of_my_objects ON pulsesync.conflicts TO authenticated
  USING (team_id IN (SELECT pulsesync.my_team_ids())
         OR (team_id IS NULL AND (user_id = auth.uid()
                                  OR user_id IN (SELECT pulsesync.my_teammate_ids()))))
  WITH CHECK (team_id IN (SELECT pulsesync.my_team_ids())
              OR (team_id IS NULL AND user_id = auth.uid()));
