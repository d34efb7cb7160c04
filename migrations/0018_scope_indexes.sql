-- Indexes that the query plans showed missing (docs/PERFORMANCE.md,
-- "Indexes"; issue 7).
--
-- 1. A member's snapshot read every row of a team table. ReadSnapshot paged
--    a restricted caller's rows with `team_id = ANY(their teams) AND id > $1
--    ORDER BY id LIMIT n`; with an index on team_id alone, PostgreSQL walked
--    the primary key and filtered: a member of 2 teams out of 100 made each
--    page of 500 read about 25,000 rows, and the whole snapshot read the
--    whole table (1M tasks: 0.4 s a page). An index on (team column, id)
--    gives each team's rows in id order, and the snapshot now merges its
--    teams' rows by it (server/core/snapshot.cc): a page reads its own rows
--    and at most one more per team, whatever the table's size. The index
--    replaces the single-column tasks_team_idx, projects_team_idx (0003)
--    and conflicts_team_idx (0006), whose lookups (the teams' ON DELETE
--    CASCADE, queries by team) it serves as well: those tables keep one
--    index led by the team column, not two.
--
--    Every synced table with a team column gets it (not `teams`, whose team
--    column is its id), now and when register_table registers one later.
--    Any valid btree index led by (team column, id) counts, whatever its
--    name: one built beforehand is kept.
--
-- 2. tasks.assignee_id references users ON DELETE SET NULL without an
--    index: deleting a user scanned every task. The spec's "user_id"
--    index; partial, since unassigned tasks are never looked up by it.
--
-- 3. ListOrigins reads a user's devices: pulsesync.origins by user_id.
--
-- 4. A member's snapshot of conflict records takes, beside their teams'
--    records, those of users rows (no team) of the users they see: by id
--    among the records that have no team.
--
-- Building an index locks its table against writes while it builds (about
-- 1.3 s for 1M tasks on 2 cores); the migration runs in one transaction
-- like the others. On a large database, build them beforehand with CREATE
-- INDEX CONCURRENTLY (any name for 1; tasks_assignee_idx and
-- origins_user_idx for 2 and 3), and this migration keeps them. (An index
-- left invalid by a failed CONCURRENTLY build does not count: drop it.)

-- Whether `tbl` has a valid plain btree index led by (team_column, id).
CREATE FUNCTION pulsesync.has_scope_index(tbl regclass, team_column name)
RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT EXISTS (
    SELECT 1 FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_am am ON am.oid = c.relam
    JOIN pg_attribute a0 ON a0.attrelid = i.indrelid AND a0.attnum = i.indkey[0]
    JOIN pg_attribute a1 ON a1.attrelid = i.indrelid AND a1.attnum = i.indkey[1]
    WHERE i.indrelid = tbl AND am.amname = 'btree' AND i.indisvalid AND i.indnkeyatts >= 2
      AND a0.attname = team_column AND a1.attname = 'id'
      AND i.indpred IS NULL AND i.indexprs IS NULL)
$$;

CREATE FUNCTION pulsesync.ensure_scope_index(tbl regclass, team_column name)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF team_column IS NULL OR team_column = 'id'
     OR NOT EXISTS (SELECT 1 FROM pg_attribute
                    WHERE attrelid = tbl AND attname = team_column AND NOT attisdropped)
     OR pulsesync.has_scope_index(tbl, team_column) THEN
    RETURN;
  END IF;
  -- Unnamed: PostgreSQL names it <table>_<column>_id_idx, shortened and
  -- made unique as needed.
  EXECUTE format('CREATE INDEX ON %s (%I, id)', tbl, team_column);
END
$$;

-- register_table (0014) keeps its columns and triggers under a new name
-- (a later migration that changes those restates
-- register_table_columns_and_triggers); register_table now also gives the
-- table its scope index.
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
-- (conflicts), now prefixes of a scope index: only these names, and only
-- while each is still that plain index and the scope index is there.
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
             AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)
             AND pulsesync.has_scope_index(x.indrelid, 'team_id')
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
CREATE INDEX IF NOT EXISTS origins_user_idx ON pulsesync.origins (user_id);

-- 4.
CREATE INDEX IF NOT EXISTS conflicts_of_users_rows_idx ON pulsesync.conflicts (id)
  WHERE team_id IS NULL;
