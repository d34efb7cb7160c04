-- The change log is written once per statement, not once per row
-- (docs/PERFORMANCE.md, issue 7).
--
-- 0006's capture_change ran as a row trigger: one PL/pgSQL call and one
-- single-row INSERT into the change log for every row written. Here each
-- synced table gets three AFTER ... FOR EACH STATEMENT triggers whose
-- transition tables hold the statement's rows, and one INSERT ... SELECT
-- logs them all. A set-based write of 100 rows then logs them in one
-- statement (about twice the rows a second of the row trigger); a
-- single-row write costs about what it did.
--
-- What is logged is what the row trigger logged: the row without the
-- internal columns, old and new for an update (an update that marks a row
-- deleted is a DELETE), the writing origin and revision (from the row in a
-- set-based write, from the session otherwise), the request's claims.
--
-- New rule: the id of a synced row cannot change. An update's old and new
-- rows are paired by id; an UPDATE that gives a row an id no row of it had
-- is refused (the row trigger logged it as an update of the new id, which
-- clients took for a new object while they kept the old one). Ids swapped
-- among the updated rows (possible only with a deferrable primary key) are
-- logged as what they are to a client: each id's row changed.

-- AFTER INSERT / UPDATE / DELETE, FOR EACH STATEMENT, with the transition
-- tables new_rows / old_rows. TG_ARGV: the object type, the team column
-- ('' for none).
--
-- One statement can write a row more than once (a writable CTE beside a
-- foreign-key cascade that sets a column NULL): all its versions are in the
-- transition tables. The k-th new version of an id is paired with the k-th
-- old one, both in version order (stamp_row gives every write a new
-- version), so each write is logged once with its own predecessor.
CREATE FUNCTION pulsesync.capture_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
DECLARE
  batch boolean;
  session_origin text;
  session_revision uuid;
  request_claims jsonb;
  team_column text := nullif(TG_ARGV[1], '');
  orphaned boolean;
BEGIN
  -- A statement that wrote no row logs nothing (and reads no setting).
  IF TG_OP = 'DELETE' THEN
    IF NOT EXISTS (SELECT 1 FROM old_rows) THEN RETURN NULL; END IF;
  ELSIF NOT EXISTS (SELECT 1 FROM new_rows) THEN
    RETURN NULL;
  END IF;
  batch := pulsesync.writing_batch();
  session_origin := nullif(current_setting('pulsesync.origin', true), '');
  session_revision := pulsesync.writing_revision();
  request_claims := nullif(current_setting('request.jwt.claims', true), '')::jsonb;
  -- OFFSET 0 keeps each row's to_jsonb computed once, not once per use.
  IF TG_OP = 'INSERT' THEN
    INSERT INTO pulsesync.change_log
      (schema_name, table_name, object_type, object_id, team_id, op, version,
       origin_id, revision_id, claims, new_row, old_row)
    SELECT TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0], n.id, (n.j ->> team_column)::uuid,
           'INSERT', (n.j ->> 'version')::bigint,
           CASE WHEN batch THEN n.j ->> 'last_origin_id' ELSE session_origin END,
           CASE WHEN batch THEN (n.j ->> 'last_revision_id')::uuid ELSE session_revision END,
           request_claims, n.j, NULL
    FROM (SELECT r.id, to_jsonb(r.*) - pulsesync.internal_columns() AS j
          FROM new_rows r OFFSET 0) n;
  ELSIF TG_OP = 'UPDATE' THEN
    WITH logged AS (
      INSERT INTO pulsesync.change_log
        (schema_name, table_name, object_type, object_id, team_id, op, version,
         origin_id, revision_id, claims, new_row, old_row)
      SELECT TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0], n.id, (n.j ->> team_column)::uuid,
             CASE WHEN (n.j ->> 'deleted')::boolean AND NOT coalesce((o.j ->> 'deleted')::boolean, false)
                  THEN 'DELETE' ELSE 'UPDATE' END,
             n.version,
             CASE WHEN batch THEN n.j ->> 'last_origin_id' ELSE session_origin END,
             CASE WHEN batch THEN (n.j ->> 'last_revision_id')::uuid ELSE session_revision END,
             request_claims, n.j, o.j
      FROM (SELECT r.id, r.version, row_number() OVER (PARTITION BY r.id ORDER BY r.version) AS nth,
                   to_jsonb(r.*) - pulsesync.internal_columns() AS j
            FROM new_rows r) n
      LEFT JOIN (SELECT r.id, row_number() OVER (PARTITION BY r.id ORDER BY r.version) AS nth,
                        to_jsonb(r.*) - pulsesync.internal_columns() AS j
                 FROM old_rows r) o ON o.id = n.id AND o.nth = n.nth
      ORDER BY n.version
      RETURNING old_row IS NULL AS orphan)
    SELECT coalesce(bool_or(orphan), false) INTO orphaned FROM logged;
    -- A new row without its predecessor: the statement gave a row an id
    -- none of its rows had. Raising undoes the statement, log rows included.
    IF orphaned THEN
      RAISE EXCEPTION 'the id of a row of synced table %.% cannot change', TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'check_violation',
              HINT = 'write a new row with the new id and delete the old one';
    END IF;
  ELSE
    -- A hard delete (a set-based write never deletes: it has no row to
    -- read the revision from).
    INSERT INTO pulsesync.change_log
      (schema_name, table_name, object_type, object_id, team_id, op, version,
       origin_id, revision_id, claims, new_row, old_row)
    SELECT TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0], o.id, (o.j ->> team_column)::uuid,
           'DELETE', nextval('pulsesync.version_seq'),
           CASE WHEN batch THEN NULL ELSE session_origin END,
           CASE WHEN batch THEN NULL ELSE session_revision END,
           request_claims, NULL, o.j
    FROM (SELECT r.id, to_jsonb(r.*) - pulsesync.internal_columns() AS j
          FROM old_rows r OFFSET 0) o;
  END IF;
  RETURN NULL;
END
$$;

-- 0006's register_table, with the statement triggers.
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
  EXECUTE format('DROP TRIGGER IF EXISTS pulsesync_capture_insert ON %s', tbl);
  EXECUTE format('CREATE TRIGGER pulsesync_capture_insert AFTER INSERT ON %s '
                 'REFERENCING NEW TABLE AS new_rows '
                 'FOR EACH STATEMENT EXECUTE FUNCTION pulsesync.capture_changes(%L, %L)',
                 tbl, object_type, coalesce(team_column, ''));
  EXECUTE format('DROP TRIGGER IF EXISTS pulsesync_capture_update ON %s', tbl);
  EXECUTE format('CREATE TRIGGER pulsesync_capture_update AFTER UPDATE ON %s '
                 'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
                 'FOR EACH STATEMENT EXECUTE FUNCTION pulsesync.capture_changes(%L, %L)',
                 tbl, object_type, coalesce(team_column, ''));
  EXECUTE format('DROP TRIGGER IF EXISTS pulsesync_capture_delete ON %s', tbl);
  EXECUTE format('CREATE TRIGGER pulsesync_capture_delete AFTER DELETE ON %s '
                 'REFERENCING OLD TABLE AS old_rows '
                 'FOR EACH STATEMENT EXECUTE FUNCTION pulsesync.capture_changes(%L, %L)',
                 tbl, object_type, coalesce(team_column, ''));
  INSERT INTO pulsesync.synced_tables (object_type, table_oid, team_column)
  VALUES (object_type, tbl, team_column)
  ON CONFLICT ON CONSTRAINT synced_tables_pkey
  DO UPDATE SET table_oid = EXCLUDED.table_oid, team_column = EXCLUDED.team_column;
END
$$;

SELECT pulsesync.register_table(table_oid, object_type, team_column)
FROM pulsesync.synced_tables;

-- The row trigger's function: any trigger left on a table that is not
-- registered (any more) goes with it.
DO $$
DECLARE
  t record;
BEGIN
  FOR t IN SELECT tgrelid::regclass AS rel, tgname FROM pg_trigger
           WHERE tgfoid = 'pulsesync.capture_change()'::regprocedure LOOP
    EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, t.rel);
  END LOOP;
END
$$;
DROP FUNCTION pulsesync.capture_change();
