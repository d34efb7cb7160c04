-- Indexes that the query plans showed missing (docs/PERFORMANCE.md,
-- "Indexes"; issue 7).
--
-- 1. A member's snapshot read every row of a team table. ReadSnapshot pages
--    a restricted caller's rows with `team_id = ANY(their teams) AND id > $1
--    ORDER BY id LIMIT n`. With an index on team_id alone, PostgreSQL walked
--    the primary key and filtered: a member of 2 teams out of 100 made each
--    page of 500 read about 25,000 rows, and the whole snapshot read the
--    whole table (1M tasks: 0.4 s a page). An index on (team column, id)
--    gives each team's rows in id order; the snapshot now takes the first
--    rows of each of the caller's teams and merges them (snapshot.cc), so a
--    page reads at most (teams x page) index entries, whatever the table's
--    size. The index replaces the single-column tasks_team_idx,
--    projects_team_idx (0003) and conflicts_team_idx (0006), whose lookups
--    (the teams' ON DELETE CASCADE, Row Level Security by team) it serves
--    as well: those tables keep one index led by the team column, not two.
--
--    Every synced table with a team column gets it (not `teams`, whose team
--    column is its id), now and when register_table registers one later.
--
-- 2. tasks.assignee_id references users ON DELETE SET NULL without an
--    index: deleting a user scanned every task. The spec's "user_id"
--    index; partial, since unassigned tasks are never looked up by it.
--
-- 3. ListOrigins reads a user's devices: pulsesync.origins by user_id.
--
-- Building an index locks its table against writes while it builds (about
-- 1.3 s for 1M tasks on 2 cores); the migration runs in one transaction
-- like the others. On a large database, build them beforehand with
-- CREATE INDEX CONCURRENTLY under these names, and this migration keeps
-- them.

CREATE FUNCTION pulsesync.ensure_scope_index(tbl regclass, team_column name)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  team_att smallint;
  id_att smallint;
BEGIN
  IF team_column IS NULL OR team_column = 'id' THEN
    RETURN;
  END IF;
  SELECT attnum INTO team_att FROM pg_attribute
  WHERE attrelid = tbl AND attname = team_column AND NOT attisdropped;
  SELECT attnum INTO id_att FROM pg_attribute
  WHERE attrelid = tbl AND attname = 'id' AND NOT attisdropped;
  IF team_att IS NULL OR id_att IS NULL THEN
    RETURN;
  END IF;
  -- Any valid btree index led by (team column, id) serves, whatever its name.
  IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             JOIN pg_am am ON am.oid = c.relam
             WHERE i.indrelid = tbl AND am.amname = 'btree' AND i.indisvalid
               AND i.indnkeyatts >= 2 AND i.indkey[0] = team_att AND i.indkey[1] = id_att
               AND i.indpred IS NULL AND i.indexprs IS NULL) THEN
    RETURN;
  END IF;
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s (%I, id)',
                 left(format('%s_%s_id_idx', (SELECT relname FROM pg_class WHERE oid = tbl),
                             team_column), 63),
                 tbl, team_column);
END
$$;

-- register_table (0014) keeps its columns and triggers under a new name;
-- register_table now also gives the table its scope index.
ALTER FUNCTION pulsesync.register_table(regclass, text, name)
  RENAME TO register_table_columns_and_triggers;

CREATE FUNCTION pulsesync.register_table(tbl regclass, object_type text, team_column name)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pulsesync.register_table_columns_and_triggers(tbl, object_type, team_column);
  PERFORM pulsesync.ensure_scope_index(tbl, team_column);
END
$$;

SELECT pulsesync.ensure_scope_index(table_oid, team_column) FROM pulsesync.synced_tables;

-- The single-column team indexes of 0003 (tasks, projects) and 0006
-- (conflicts), now prefixes of a scope index: only these names, and only if
-- each is still that plain index.
DO $$
DECLARE
  i record;
BEGIN
  FOR i IN SELECT x.indexrelid::regclass AS idx FROM pg_index x
           JOIN pg_class c ON c.oid = x.indexrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]
           WHERE (n.nspname, c.relname) IN (('public', 'tasks_team_idx'),
                                             ('public', 'projects_team_idx'),
                                             ('pulsesync', 'conflicts_team_idx'))
             AND x.indnatts = 1 AND NOT x.indisunique AND a.attname = 'team_id'
             AND x.indpred IS NULL AND x.indexprs IS NULL
             AND EXISTS (SELECT 1 FROM pg_index y
                         JOIN pg_attribute b ON b.attrelid = y.indrelid AND b.attnum = y.indkey[1]
                         WHERE y.indrelid = x.indrelid AND y.indisvalid AND y.indnkeyatts >= 2
                           AND y.indkey[0] = x.indkey[0] AND b.attname = 'id'
                           AND y.indpred IS NULL AND y.indexprs IS NULL)
  LOOP
    EXECUTE format('DROP INDEX %s', i.idx);
  END LOOP;
END
$$;

-- 2: where the column exists (a table that was there before pulsesync may
-- lack it, as in 0003).
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_attribute
             WHERE attrelid = to_regclass('public.tasks') AND attname = 'assignee_id'
               AND NOT attisdropped) THEN
    CREATE INDEX IF NOT EXISTS tasks_assignee_idx ON public.tasks (assignee_id)
      WHERE assignee_id IS NOT NULL;
  END IF;
END
$$;

-- 3.
CREATE INDEX origins_user_idx ON pulsesync.origins (user_id);
