-- Incarnations of the database: one row per start of the PostgreSQL server,
-- for cursors that outlive a crash
-- (server/core/change_feed.h, point 8; docs/RELIABILITY.md).
--
-- A transaction id handed out before a crash but never written to the WAL
-- (a transaction that aborted, or had not yet logged anything) is handed out
-- again after crash recovery. A cursor taken before the crash may count such
-- an id as finished, so the new transaction that reuses it would never be
-- delivered. A cursor therefore names the incarnation it was taken in, and a
-- cursor of an earlier incarnation is rewound to the first id the
-- incarnations since then handed out: what it already had may come again
-- (clients ignore versions they hold), nothing is skipped.
-- When the running incarnation began: the postmaster's start, or, after a
-- backend crashed and PostgreSQL reinitialized in place (restart_after_crash,
-- the default), the restart of the checkpointer, which recovery brings up
-- anew while the postmaster (and pg_postmaster_start_time()) stays. Runs as
-- the owner: other roles do not see background processes in
-- pg_stat_activity; without that right it is the postmaster's start alone.
CREATE FUNCTION pulsesync.db_started_at() RETURNS timestamptz
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT greatest(pg_postmaster_start_time(),
                  (SELECT max(backend_start) FROM pg_stat_activity
                   WHERE backend_type = 'checkpointer'))
$$;

CREATE TABLE pulsesync.db_incarnations (
  started_at timestamptz PRIMARY KEY,
  -- Every transaction of an earlier incarnation that left anything behind
  -- has an id below this; NULL = not known (then cursors of earlier
  -- incarnations are refused with "re-snapshot").
  first_xid xid8,
  noted_at timestamptz NOT NULL DEFAULT now()
);

-- Records the running incarnation if it is not yet recorded, and returns its
-- start. Its first id is the next id of the checkpoint that began it: the
-- shutdown checkpoint of a clean stop (taken before the start) or the
-- end-of-recovery checkpoint after a crash. Both are written with nothing
-- else running: no oldest active transaction, redo at the checkpoint itself.
-- A later (online) checkpoint says nothing about where the incarnation began,
-- so if one already replaced it the first id stays unknown. Runs as the
-- owner, so that any role the server reads the feed as may record it.
CREATE FUNCTION pulsesync.note_incarnation() RETURNS timestamptz
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
DECLARE
  started timestamptz := pulsesync.db_started_at();
  first xid8;
BEGIN
  IF EXISTS (SELECT 1 FROM pulsesync.db_incarnations WHERE started_at = started) THEN
    RETURN started;
  END IF;
  BEGIN
    SELECT CASE
             WHEN c.redo_lsn = c.checkpoint_lsn
                  AND (c.oldest_active_xid = '0'
                       AND current_setting('wal_level') <> 'minimal'
                       OR c.checkpoint_time <= started)
             THEN ((split_part(c.next_xid, ':', 1)::bigint << 32)
                   + split_part(c.next_xid, ':', 2)::bigint)::text::xid8
           END
      INTO first
    FROM pg_control_checkpoint() c;
  EXCEPTION WHEN insufficient_privilege THEN
    first := NULL;
  END;
  INSERT INTO pulsesync.db_incarnations (started_at, first_xid) VALUES (started, first)
  ON CONFLICT (started_at) DO NOTHING;
  RETURN started;
END
$$;

-- The rewind point for a cursor of the incarnation that started at
-- `p_since`: the lowest first id of the incarnations after it (NULL when
-- one of them is not known). Notes the running incarnation first.
CREATE FUNCTION pulsesync.incarnation_floor(p_since timestamptz) RETURNS xid8
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
BEGIN
  PERFORM pulsesync.note_incarnation();
  RETURN (SELECT CASE WHEN bool_and(first_xid IS NOT NULL) THEN min(first_xid) END
          FROM pulsesync.db_incarnations WHERE started_at > p_since);
END
$$;

GRANT EXECUTE ON FUNCTION pulsesync.db_started_at() TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION pulsesync.note_incarnation() TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION pulsesync.incarnation_floor(timestamptz) TO authenticated, service_role;
