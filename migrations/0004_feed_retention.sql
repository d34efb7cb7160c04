-- Change-log retention. Old log rows may be deleted (compacted); the
-- horizon remembers the newest transaction whose rows are gone, so that a
-- cursor from before it is refused ("re-snapshot") instead of silently
-- missing what was deleted.

CREATE TABLE pulsesync.feed_horizon (
  id int PRIMARY KEY CHECK (id = 1),
  -- Every log row of a transaction with txid <= horizon may be gone.
  -- '0' = nothing was ever compacted.
  horizon xid8 NOT NULL DEFAULT '0',
  compacted_at timestamptz
);
INSERT INTO pulsesync.feed_horizon (id) VALUES (1);

-- Deletes up to `max_rows` log rows older than `max_age` whose transactions
-- are finished for everyone (below the current snapshot's xmin), raises the
-- horizon, and returns how many rows it deleted. Safe to run concurrently
-- from several replicas.
CREATE FUNCTION pulsesync.compact_change_log(max_age interval, max_rows int DEFAULT 10000)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  newest xid8;
  n bigint;
BEGIN
  WITH doomed AS (
    SELECT position FROM pulsesync.change_log
    WHERE changed_at < now() - max_age
      AND txid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY position
    LIMIT max_rows
    FOR UPDATE SKIP LOCKED
  ), gone AS (
    DELETE FROM pulsesync.change_log c USING doomed d
    WHERE c.position = d.position
    RETURNING c.txid
  )
  SELECT max(txid), count(*) INTO newest, n FROM gone;
  IF n > 0 THEN
    UPDATE pulsesync.feed_horizon
    SET horizon = greatest(horizon, newest), compacted_at = now()
    WHERE id = 1;
  END IF;
  RETURN n;
END
$$;
