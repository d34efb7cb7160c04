-- Set-based apply: the common batch in a handful of statements per table
-- instead of a dozen per revision (docs/PERFORMANCE.md, issue 7).
--
-- A batch is "plain" when its object types come in one run each, no table
-- of it is registered with set_based = false, and every revision is a valid upsert, new (its id not
-- applied before, once in the batch), the only one of its object id in the
-- batch, next in its origin's seq order, of an origin the caller may use, at
-- the current schema version, and either creates an object the server has
-- never seen (no row, no tombstone) or edits a live, never-deleted row with
-- a clock later than everything the row holds, without overwriting a
-- concurrent edit's different value (that would be a conflict record). Then
-- every field it sets wins, and its outcome is known without the
-- per-revision merge: APPLIED, resolution 'applied' (or 'merged' when
-- others changed other fields since its base version), no conflicts.
--
-- apply_set_based writes such a batch with one locking read, one INSERT and
-- one UPDATE per table and field set, and one statement each for the
-- outcomes and the origins. Anything else raises before writing, and
-- apply_revisions falls back to 0012's paths (the batch in one
-- subtransaction through the per-revision merge; revision by revision if
-- one fails), which remain the definition of the merge: for a plain batch
-- both give the same rows, outcomes and change log
-- (apply_pg_test SetBasedAndPerRevisionApplyAgree).
--
-- In a set-based write (pulsesync.batch = 'on', with pulsesync.revision set
-- so that stamp_row treats the rows as a revision's), capture_change learns
-- which revision wrote a row from the row itself: last_origin_id and
-- last_revision_id are then always the writing revision's, because its
-- clock is the row's latest.

-- Tables whose writes a set-based statement may do (see apply_set_based):
-- not those whose foreign keys or Row Level Security read the table itself.
ALTER TABLE pulsesync.synced_tables ADD COLUMN set_based boolean NOT NULL DEFAULT true;
UPDATE pulsesync.synced_tables SET set_based = false WHERE object_type = 'team_member';

-- Is a set-based write in progress (transaction-local)?
CREATE FUNCTION pulsesync.writing_batch() RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT coalesce(current_setting('pulsesync.batch', true), '') = 'on'
$$;

-- 0006's capture_change; in a set-based write the origin and revision are
-- the row's.
CREATE OR REPLACE FUNCTION pulsesync.capture_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
DECLARE
  new_j jsonb;
  old_j jsonb;
  row_j jsonb;
  op text := TG_OP;
  v bigint;
  batch boolean := pulsesync.writing_batch();
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
     CASE WHEN batch THEN new_j ->> 'last_origin_id'
          ELSE nullif(current_setting('pulsesync.origin', true), '') END,
     CASE WHEN batch THEN (new_j ->> 'last_revision_id')::uuid
          ELSE pulsesync.writing_revision() END,
     nullif(current_setting('request.jwt.claims', true), '')::jsonb,
     new_j, old_j);
  RETURN NULL;
END
$$;

-- The bookkeeping side of a plain batch (`batch`: the revisions, as
-- apply_revisions gets them). True when no revision was applied before or
-- is in the batch twice, no object of `objects` ([{object_type, object_id}])
-- has a tombstone, and every origin is the caller's (check_origin's rule)
-- with the batch's seqs of it following its last one in batch order; the
-- origins' rows are then created where missing and locked. False: not plain
-- (nothing was written but missing origin rows).
CREATE FUNCTION pulsesync.batch_bookkeeping_plain(batch jsonb, objects jsonb)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pulsesync AS $$
DECLARE
  uid uuid := auth.uid();
BEGIN
  IF EXISTS (SELECT 1 FROM jsonb_array_elements(batch) r
             JOIN pulsesync.applied_revisions a ON a.id = (r ->> 'id')::uuid) THEN
    RETURN false;
  END IF;
  IF EXISTS (SELECT 1 FROM jsonb_array_elements(objects) o
             JOIN pulsesync.tombstones t ON t.object_type = o ->> 'object_type'
                                        AND t.object_id = (o ->> 'object_id')::uuid) THEN
    RETURN false;
  END IF;
  INSERT INTO pulsesync.origins (origin_id, user_id)
  SELECT DISTINCT r ->> 'origin_id', uid FROM jsonb_array_elements(batch) r
  ORDER BY 1
  ON CONFLICT (origin_id) DO NOTHING;
  -- Locked in one order, as check_origin locks one at a time.
  PERFORM 1 FROM pulsesync.origins o
  WHERE o.origin_id IN (SELECT r ->> 'origin_id' FROM jsonb_array_elements(batch) r)
  ORDER BY o.origin_id FOR UPDATE;
  RETURN NOT EXISTS (
    SELECT 1
    FROM (SELECT r ->> 'origin_id' AS origin_id, (r ->> 'seq')::bigint AS seq,
                 row_number() OVER (PARTITION BY r ->> 'origin_id' ORDER BY i) AS nth
          FROM jsonb_array_elements(batch) WITH ORDINALITY e(r, i)) b
    JOIN pulsesync.origins o USING (origin_id)
    WHERE b.seq <> o.last_seq + b.nth
       OR (o.user_id IS NOT NULL AND o.user_id IS DISTINCT FROM uid
           AND coalesce(auth.role(), '') <> 'service_role'));
END
$$;

-- Records the outcomes of a plain batch (`applied`: [{id, object_type,
-- object_id, origin_id, seq, version, created_at, resolution}]) and moves the
-- origins on, as record_applied does one at a time.
CREATE FUNCTION pulsesync.batch_record_applied(applied jsonb)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pulsesync AS $$
DECLARE
  moved bigint;
BEGIN
  INSERT INTO pulsesync.applied_revisions
    (id, object_type, object_id, origin_id, seq, version, superseded, created_at_ms,
     resolution, conflicts)
  SELECT (a ->> 'id')::uuid, a ->> 'object_type', (a ->> 'object_id')::uuid, a ->> 'origin_id',
         (a ->> 'seq')::bigint, (a ->> 'version')::bigint, false, (a ->> 'created_at')::bigint,
         a ->> 'resolution', 0
  FROM jsonb_array_elements(applied) a;
  -- Like record_applied, only ever one step on per revision, and only the
  -- origin's owner (origin_advance's rule): anything else is refused whole.
  UPDATE pulsesync.origins o
     SET last_seq = b.last_seq, applied = o.applied + b.n, last_seen = now()
    FROM (SELECT a ->> 'origin_id' AS origin_id, min((a ->> 'seq')::bigint) AS first_seq,
                 max((a ->> 'seq')::bigint) AS last_seq, count(*) AS n
          FROM jsonb_array_elements(applied) a GROUP BY 1) b
   WHERE o.origin_id = b.origin_id AND o.last_seq = b.first_seq - 1
     AND b.last_seq - b.first_seq + 1 = b.n
     AND (o.user_id IS NULL OR o.user_id IS NOT DISTINCT FROM auth.uid()
          OR coalesce(auth.role(), '') = 'service_role');
  GET DIAGNOSTICS moved = ROW_COUNT;
  IF moved <> (SELECT count(DISTINCT a ->> 'origin_id') FROM jsonb_array_elements(applied) a) THEN
    RAISE EXCEPTION 'not plain: origins not the caller''s or not next in seq order';
  END IF;
END
$$;

-- Applies a plain batch set-based (see the top of this file) and returns
-- what apply_revisions returns; raises (SQLSTATE P0001, "not plain: ...")
-- before writing anything of a batch that is not plain. SECURITY INVOKER:
-- the synced tables are read and written as the caller, under Row Level
-- Security, like apply_revision.
CREATE FUNCTION pulsesync.apply_set_based(batch jsonb)
RETURNS TABLE (idx int, outcome text, reason text, version bigint, superseded boolean,
               resolution text, conflicts int, record text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  current_schema_version int := pulsesync.schema_version();
  types text[];
  type_name text;
  reg pulsesync.synced_tables;
  revs jsonb[];
  typed_all jsonb[];
  existing_map jsonb;
  rev jsonb;
  typed jsonb;
  existing jsonb;
  clocks jsonb;
  entry jsonb;
  fld text;
  p_hlc text;
  p_origin text;
  p_base bigint;
  e_hlc text;
  others boolean;
  keyset text;
  keys text[];
  group_revs jsonb[];
  updates jsonb;  -- the rows of one field set
  update_rows jsonb[];
  update_sets text[];
  answers jsonb := '{}';  -- revision id -> resolution
  versions jsonb := '{}';  -- object id -> version
  cols text;
  expected int;
  written int;
  applied jsonb;
  n int;
BEGIN
  IF coalesce(current_setting('pulsesync.set_based', true), '') = 'off' THEN
    RAISE EXCEPTION 'not plain: set-based apply is off';
  END IF;
  -- The shape of every revision, without touching a table.
  IF EXISTS (
      SELECT 1 FROM jsonb_array_elements(batch) r
      WHERE r ? 'refused' OR r ->> 'op' IS DISTINCT FROM 'upsert'
         OR jsonb_typeof(r -> 'payload') IS DISTINCT FROM 'string'
         OR r ->> 'hlc' IS NULL OR r ->> 'origin_id' IS NULL
         OR coalesce((r ->> 'schema_version')::int, 0) NOT IN (0, current_schema_version))
     OR (SELECT count(*) <> count(DISTINCT r ->> 'id')
                OR count(*) <> count(DISTINCT (r ->> 'object_id')::uuid)
         FROM jsonb_array_elements(batch) r) THEN
    RAISE EXCEPTION 'not plain: refused, delete, duplicate or old-schema revisions';
  END IF;
  IF NOT pulsesync.batch_bookkeeping_plain(
           batch, (SELECT jsonb_agg(jsonb_build_object('object_type', r ->> 'object_type',
                                                       'object_id', r ->> 'object_id'))
                   FROM jsonb_array_elements(batch) r)) THEN
    RAISE EXCEPTION 'not plain: duplicates, tombstones or origins out of order';
  END IF;

  -- Writes go type by type: plain only if that is the batch's own order, so
  -- that what earlier revisions wrote is there for the checks (foreign keys,
  -- Row Level Security) of later ones of other types, as revision by
  -- revision. Within a type, rows are written new objects first, one
  -- statement per field set: a table whose foreign keys or policies read the
  -- table itself (team_members: is the caller an admin of the team?) could
  -- judge a row differently than after its earlier rows, so such a table is
  -- registered with set_based = false and always goes revision by revision.
  IF (SELECT count(*) FILTER (WHERE t IS DISTINCT FROM prev) <> count(DISTINCT t)
      FROM (SELECT r ->> 'object_type' AS t, lag(r ->> 'object_type') OVER (ORDER BY i) AS prev
            FROM jsonb_array_elements(batch) WITH ORDINALITY e(r, i)) x) THEN
    RAISE EXCEPTION 'not plain: object types interleaved';
  END IF;
  -- Types in the order they first appear (a team before its tasks).
  SELECT array_agg(object_type ORDER BY first) INTO types
  FROM (SELECT r ->> 'object_type' AS object_type, min(i) AS first
        FROM jsonb_array_elements(batch) WITH ORDINALITY e(r, i) GROUP BY 1) x;
  -- A revision is writing (stamp_row gives the rows' field clocks their
  -- version, and leaves last_origin_id and last_revision_id as written);
  -- which one, capture_change reads from each row.
  PERFORM set_config('pulsesync.batch', 'on', true),
          set_config('pulsesync.revision', '00000000-0000-0000-0000-000000000000', true);
  FOREACH type_name IN ARRAY types LOOP
    reg := pulsesync.synced_table(type_name);
    IF reg.object_type IS NULL OR NOT reg.set_based THEN
      RAISE EXCEPTION 'not plain: unknown object type, or one applied revision by revision';
    END IF;
    SELECT array_agg(r ORDER BY i) INTO revs
    FROM jsonb_array_elements(batch) WITH ORDINALITY e(r, i) WHERE r ->> 'object_type' = type_name;
    -- Payloads: objects of known, client-writable fields, the id (if
    -- given) the object's; then as the table stores them.
    IF EXISTS (
        SELECT 1 FROM unnest(revs) r, LATERAL (SELECT (r ->> 'payload')::jsonb AS p) x
        WHERE jsonb_typeof(x.p) IS DISTINCT FROM 'object' OR (x.p - 'id') = '{}'
           OR (x.p ? 'id' AND x.p ->> 'id' IS DISTINCT FROM ((r ->> 'object_id')::uuid)::text)
           OR EXISTS (SELECT 1 FROM jsonb_object_keys(x.p - 'id') key
                      WHERE key = ANY (pulsesync.system_columns())
                         OR NOT EXISTS (SELECT 1 FROM pg_attribute a
                                        WHERE a.attrelid = reg.table_oid AND a.attname = key
                                          AND a.attnum > 0 AND NOT a.attisdropped))) THEN
      RAISE EXCEPTION 'not plain: a payload the per-revision path must judge';
    END IF;
    EXECUTE format(
      'SELECT coalesce(jsonb_object_agg(s.id, s.j), ''{}'') FROM '
      '(SELECT t.id::text AS id, to_jsonb(t) AS j FROM %s t '
      ' WHERE t.id = ANY ($1) FOR UPDATE) s', reg.table_oid)
      INTO existing_map
      USING (SELECT array_agg((r ->> 'object_id')::uuid) FROM unnest(revs) r);
    -- The payloads of edits as the table stores them (new rows are typed by
    -- their INSERT).
    EXECUTE format(
      'SELECT array_agg((SELECT coalesce(jsonb_object_agg(key, full_row -> key), ''{}'') '
      '                  FROM jsonb_object_keys(p) key) ORDER BY o) '
      'FROM unnest($1) WITH ORDINALITY u(r, o), '
      'LATERAL (SELECT ((r ->> ''payload'')::jsonb - ''id'') AS p) x, '
      'LATERAL (SELECT CASE WHEN $2 ? ((r ->> ''object_id'')::uuid)::text '
      '                THEN to_jsonb(jsonb_populate_record(NULL::%s, x.p)) END AS full_row) y',
      reg.table_oid)
      INTO typed_all USING revs, existing_map;

    SELECT answers || coalesce(jsonb_object_agg(u.rv ->> 'id', 'applied'), '{}') INTO answers
    FROM unnest(revs) u(rv)
    WHERE NOT existing_map ? ((u.rv ->> 'object_id')::uuid)::text;


    -- Edits of existing rows: the checks that make them plain, per field.
    update_rows := '{}';
    update_sets := '{}';
    FOR n IN 1 .. array_length(revs, 1) LOOP
      rev := revs[n];
      existing := existing_map -> ((rev ->> 'object_id')::uuid)::text;
      CONTINUE WHEN existing IS NULL;
      typed := typed_all[n];
      p_hlc := rev ->> 'hlc';
      p_origin := rev ->> 'origin_id';
      p_base := coalesce((rev ->> 'base_version')::bigint, 0);
      clocks := existing -> 'field_clocks';
      IF (existing ->> 'deleted')::boolean OR existing ->> 'deleted_hlc' IS NOT NULL
         OR clocks ? '_deleted'
         OR NOT (p_hlc COLLATE "C" > coalesce(existing ->> 'live_hlc', existing ->> 'hlc', '')
                 COLLATE "C") THEN
        RAISE EXCEPTION 'not plain: an edit of a deleted row or with an older clock';
      END IF;
      FOR fld IN SELECT key FROM jsonb_object_keys(typed) key LOOP
        entry := clocks -> fld;
        e_hlc := coalesce(entry ->> 1, '');
        IF NOT (p_hlc COLLATE "C" > e_hlc COLLATE "C") THEN
          RAISE EXCEPTION 'not plain: a field with a later clock';
        END IF;
        IF coalesce((entry ->> 0)::bigint, 0) > p_base AND e_hlc <> ''
           AND pulsesync.hlc_origin(e_hlc) <> p_origin
           AND (existing -> fld) IS DISTINCT FROM (typed -> fld) THEN
          RAISE EXCEPTION 'not plain: a concurrent edit (a conflict record)';
        END IF;
        clocks := clocks || jsonb_build_object(fld, jsonb_build_array(0, p_hlc));
      END LOOP;
      SELECT coalesce(bool_or(true), false) INTO others
      FROM jsonb_each(existing -> 'field_clocks') c
      WHERE c.key <> '_deleted' AND NOT typed ? c.key
        AND (c.value ->> 0)::bigint > p_base
        AND pulsesync.hlc_origin(c.value ->> 1) <> p_origin;
      update_rows := update_rows || (typed || jsonb_build_object(
        'id', rev ->> 'object_id', 'deleted', false, 'recovered', false,
        'live_hlc', p_hlc, 'deleted_hlc', NULL, 'hlc', p_hlc, 'field_clocks', clocks,
        'last_origin_id', p_origin, 'last_revision_id', rev ->> 'id'));
      SELECT string_agg(key, ',' ORDER BY key) INTO keyset FROM jsonb_object_keys(typed) key;
      update_sets := update_sets || keyset;
      answers := answers || jsonb_build_object(rev ->> 'id',
                                               CASE WHEN others THEN 'merged' ELSE 'applied' END);
    END LOOP;

    -- New objects: one INSERT per field set (columns a payload leaves out
    -- take their defaults), typed and written straight from the payloads.
    FOR keys, group_revs IN
      SELECT k.keys, array_agg(u.rv ORDER BY u.n)
      FROM unnest(revs) WITH ORDINALITY u(rv, n),
           LATERAL (SELECT array_agg(key ORDER BY key) AS keys
                    FROM jsonb_object_keys((u.rv ->> 'payload')::jsonb - 'id') key) k
      WHERE NOT existing_map ? ((u.rv ->> 'object_id')::uuid)::text
      GROUP BY k.keys
      ORDER BY min(u.n)
    LOOP
      SELECT string_agg(quote_ident(key), ', '), string_agg('p.' || quote_ident(key), ', ')
        INTO cols, fld FROM unnest(keys) key;
      expected := array_length(group_revs, 1);
      EXECUTE format(
        'WITH w AS (INSERT INTO %1$s (%2$s, id, last_origin_id, last_revision_id, live_hlc, '
        '                             deleted_hlc, deleted, recovered, hlc, field_clocks) '
        '  SELECT %3$s, (rv ->> ''object_id'')::uuid, rv ->> ''origin_id'', (rv ->> ''id'')::uuid, '
        '         rv ->> ''hlc'', NULL, false, false, rv ->> ''hlc'', '
        '         (SELECT jsonb_object_agg(key, jsonb_build_array(0, rv ->> ''hlc'')) '
        '          FROM jsonb_object_keys(x.pl) key) '
        '  FROM unnest($1) rv, LATERAL (SELECT (rv ->> ''payload'')::jsonb - ''id'' AS pl) x, '
        '       LATERAL jsonb_populate_record(NULL::%1$s, x.pl) p '
        '  ON CONFLICT (id) DO NOTHING RETURNING id, version) '
        'SELECT count(*), coalesce(jsonb_object_agg(id::text, version), ''{}'') FROM w',
        reg.table_oid, cols, fld)
        INTO written, applied USING group_revs;
      IF written <> expected THEN
        -- Created meanwhile by another transaction, or there for others only.
        RAISE EXCEPTION 'not plain: an object created concurrently';
      END IF;
      versions := versions || applied;
    END LOOP;
    FOR keyset, updates IN
      SELECT u.keyset, jsonb_agg(u.row_j ORDER BY u.o)
      FROM unnest(update_rows, update_sets) WITH ORDINALITY u(row_j, keyset, o)
      GROUP BY u.keyset
      ORDER BY min(u.o)
    LOOP
      SELECT string_agg(quote_ident(key), ', '), string_agg('w.' || quote_ident(key), ', ')
        INTO cols, fld
      FROM jsonb_object_keys(updates -> 0) key WHERE key <> 'id';
      expected := jsonb_array_length(updates);
      EXECUTE format(
        'WITH w AS (UPDATE %1$s t SET (%2$s) = ROW(%3$s) '
        'FROM jsonb_populate_recordset(NULL::%1$s, $1) w WHERE t.id = w.id '
        'RETURNING t.id, t.version) '
        'SELECT count(*), coalesce(jsonb_object_agg(id::text, version), ''{}'') FROM w',
        reg.table_oid, cols, fld)
        INTO written, applied USING updates;
      IF written <> expected THEN
        RAISE EXCEPTION 'not plain: a row the caller may not write';
      END IF;
      versions := versions || applied;
    END LOOP;
  END LOOP;
  PERFORM set_config('pulsesync.batch', '', true), set_config('pulsesync.revision', '', true);

  SELECT jsonb_agg(jsonb_build_object(
           'id', r ->> 'id', 'object_type', r ->> 'object_type', 'object_id', r ->> 'object_id',
           'origin_id', r ->> 'origin_id', 'seq', r ->> 'seq',
           'version', versions -> ((r ->> 'object_id')::uuid)::text,
           'created_at', r ->> 'created_at', 'resolution', answers ->> (r ->> 'id')))
    INTO applied FROM jsonb_array_elements(batch) r;
  PERFORM pulsesync.batch_record_applied(applied);

  RETURN QUERY
  SELECT (i - 1)::int, 'applied'::text, NULL::text, (a ->> 'version')::bigint, false,
         a ->> 'resolution', 0, NULL::text
  FROM jsonb_array_elements(applied) WITH ORDINALITY e(a, i)
  ORDER BY i;
END
$$;

-- 0012's apply_revisions, with the set-based path first: each way in a
-- subtransaction, the next one tried when it raises for a reason of the
-- batch's (not the server's), revision by revision last.
CREATE OR REPLACE FUNCTION pulsesync.apply_revisions(batch jsonb)
RETURNS TABLE (idx int, outcome text, reason text, version bigint, superseded boolean,
               resolution text, conflicts int, record text)
LANGUAGE plpgsql AS $$
DECLARE
  way text;
  state text;
BEGIN
  FOREACH way IN ARRAY ARRAY['set_based', 'one_subtransaction'] LOOP
    BEGIN
      IF way = 'set_based' THEN
        RETURN QUERY SELECT * FROM pulsesync.apply_set_based(batch);
      ELSE
        RETURN QUERY SELECT * FROM pulsesync.apply_batch(batch, false);
      END IF;
      RETURN;
    EXCEPTION WHEN OTHERS THEN
      GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE;
      IF pulsesync.is_server_error(state) THEN
        RAISE;
      END IF;
    END;
  END LOOP;
  RETURN QUERY SELECT * FROM pulsesync.apply_batch(batch, true);
END
$$;

GRANT EXECUTE ON FUNCTION pulsesync.writing_batch() TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION pulsesync.batch_bookkeeping_plain(jsonb, jsonb) TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION pulsesync.batch_record_applied(jsonb) TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION pulsesync.apply_set_based(jsonb) TO authenticated, service_role;
