-- Less work per row in the set-based apply and the row stamping
-- (docs/PERFORMANCE.md, issue 7). Same rows, outcomes and change log as
-- 0013/0006 (apply_pg_test SetBasedAndPerRevisionApplyAgree compares them
-- with the per-revision merge):
--
-- * apply_set_based parses each revision's payload once (it parsed it in
--   four statements), builds the typed edits only when the batch edits a
--   row that exists, and gives new rows their field clocks with one
--   expression of the field set instead of a subquery per row.
-- * stamp_row gives a revision's field clocks their version without a
--   query per row (below).

CREATE OR REPLACE FUNCTION pulsesync.apply_set_based(batch jsonb)
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
  payloads jsonb[];  -- of revs, each parsed once (with id, if given)
  group_payloads jsonb[];
  clocks_sql text;
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
    SELECT array_agg(r ORDER BY i), array_agg((r ->> 'payload')::jsonb ORDER BY i)
      INTO revs, payloads
    FROM jsonb_array_elements(batch) WITH ORDINALITY e(r, i) WHERE r ->> 'object_type' = type_name;
    -- Payloads: objects of known, client-writable fields, the id (if
    -- given) the object's; then as the table stores them.
    IF EXISTS (
        SELECT 1 FROM unnest(revs, payloads) x(r, p)
        WHERE jsonb_typeof(x.p) IS DISTINCT FROM 'object' OR (x.p - 'id') = '{}'
           OR (x.p ? 'id' AND x.p ->> 'id' IS DISTINCT FROM ((x.r ->> 'object_id')::uuid)::text)
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
    -- their INSERT); none when all are new.
    typed_all := NULL;
    IF existing_map <> '{}' THEN
      EXECUTE format(
        'SELECT array_agg((SELECT coalesce(jsonb_object_agg(key, full_row -> key), ''{}'') '
        '                  FROM jsonb_object_keys(p) key) ORDER BY o) '
        'FROM unnest($1, $3) WITH ORDINALITY u(r, pl, o), '
        'LATERAL (SELECT (pl - ''id'') AS p) x, '
        'LATERAL (SELECT CASE WHEN $2 ? ((r ->> ''object_id'')::uuid)::text '
        '                THEN to_jsonb(jsonb_populate_record(NULL::%s, x.p)) END AS full_row) y',
        reg.table_oid)
        INTO typed_all USING revs, existing_map, payloads;
    END IF;

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
    -- take their defaults), typed and written straight from the payloads,
    -- their field clocks built by one expression of the set's fields.
    FOR keys, group_revs, group_payloads IN
      SELECT k.keys, array_agg(u.rv ORDER BY u.n), array_agg(u.pl - 'id' ORDER BY u.n)
      FROM unnest(revs, payloads) WITH ORDINALITY u(rv, pl, n),
           LATERAL (SELECT array_agg(key ORDER BY key) AS keys
                    FROM jsonb_object_keys(u.pl - 'id') key) k
      WHERE NOT existing_map ? ((u.rv ->> 'object_id')::uuid)::text
      GROUP BY k.keys
      ORDER BY min(u.n)
    LOOP
      SELECT string_agg(quote_ident(key), ', '), string_agg('p.' || quote_ident(key), ', '),
             CASE WHEN count(*) <= 50  -- a function takes at most 100 arguments
                  THEN 'jsonb_build_object(' || string_agg(quote_literal(key) || ', c', ', ') || ')'
                  ELSE '(SELECT jsonb_object_agg(key, c) FROM jsonb_object_keys(u.pl) key)' END
        INTO cols, fld, clocks_sql FROM unnest(keys) key;
      expected := array_length(group_revs, 1);
      EXECUTE format(
        'WITH w AS (INSERT INTO %1$s (%2$s, id, last_origin_id, last_revision_id, live_hlc, '
        '                             deleted_hlc, deleted, recovered, hlc, field_clocks) '
        '  SELECT %3$s, (rv ->> ''object_id'')::uuid, rv ->> ''origin_id'', (rv ->> ''id'')::uuid, '
        '         rv ->> ''hlc'', NULL, false, false, rv ->> ''hlc'', %4$s '
        '  FROM unnest($1, $2) u(rv, pl), '
        '       LATERAL (SELECT jsonb_build_array(0, rv ->> ''hlc'') AS c) x, '
        '       LATERAL jsonb_populate_record(NULL::%1$s, u.pl) p '
        '  ON CONFLICT (id) DO NOTHING RETURNING id, version) '
        'SELECT count(*), coalesce(jsonb_object_agg(id::text, version), ''{}'') FROM w',
        reg.table_oid, cols, fld, clocks_sql)
        INTO written, applied USING group_revs, group_payloads;
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

-- 0006's stamp_row. A write by a revision brings field_clocks entries
-- [0, hlc] for the fields it wrote, and each 0 becomes the row's new
-- version. 0006 did that with a SELECT over jsonb_each(NEW.field_clocks): a
-- query for every row a revision writes. Now the replacement is made on the
-- clocks' text: jsonb prints an entry as "key": [version, "hlc"], and in a
-- text without a backslash every '"' delimits a string, so '": [0, ' occurs
-- exactly where an entry with version 0 begins. Clocks with a backslash (a
-- column name with a quote or backslash in it), or with an entry left at 0
-- in another form, take 0006's query.
CREATE OR REPLACE FUNCTION pulsesync.stamp_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
DECLARE
  h text;
  changed jsonb;
  clocks text;
BEGIN
  NEW.version := nextval('pulsesync.version_seq');
  NEW.updated_at := now();
  IF pulsesync.writing_revision() IS NOT NULL THEN
    clocks := NEW.field_clocks::text;
    IF strpos(clocks, '\') = 0 THEN
      clocks := replace(clocks, '": [0, ', '": [' || NEW.version || ', ');
      IF strpos(clocks, '": [0') = 0 THEN
        NEW.field_clocks := clocks::jsonb;
        RETURN NEW;
      END IF;
    END IF;
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
