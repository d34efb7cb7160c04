-- Cheaper work behind every write: the cursor the feed's readers take, and
-- what the audit sealer reads (docs/PERFORMANCE.md, issue 7). What each
-- function returns is unchanged.
--
-- 1. pulsesync.db_started_at() (0011) as PL/pgSQL, so that its query is
-- planned once per session instead of on every call. Every statement that
-- makes a cursor calls it: each read of the change log by the feed hub, the
-- stats and the audit sealer, every PullChanges, Snapshot and stream start.
-- As a SQL function with a SET clause it cannot be inlined, and its body, a
-- query over pg_stat_activity (a view of five relations), was planned again
-- on each call: 1.2 ms a call against 0.06 ms as PL/pgSQL, whose plans are
-- kept for the session (pgbench, prepared, on an idle cluster).
CREATE OR REPLACE FUNCTION pulsesync.db_started_at() RETURNS timestamptz
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  RETURN greatest(pg_postmaster_start_time(),
                  (SELECT max(backend_start) FROM pg_stat_activity
                   WHERE backend_type = 'checkpointer'));
END
$$;

-- 2. The sealer (server/core/audit_chain.h) read each entry at about 47 us,
-- more than half of what writing it had cost: per entry it called
-- audit_excluded (a SECURITY DEFINER function with a SET clause, so never
-- inlined and a configuration change on every call: 9 us) and
-- audit_redact twice (a SQL function with a subquery, never inlined: 4 us
-- each) even though most object types exclude no field. Now the excluded
-- fields of each type are read once per call, and audit_redact is a CASE
-- that inlines, going to the subquery only for a record with excluded
-- fields. What the sealer hashes is unchanged, byte for byte
-- (migrator_pg_test `SealingReadsTheSameEntriesAfter0016`): the same
-- fields in the same order, the same records. And a call no longer sorts
-- the whole unsealed backlog to take its first p_limit, so a sealer behind
-- a bulk write catches up in time linear in the backlog, not quadratic.
-- `pulsesyncd audit seal` of 42,001 entries: 6.0 s -> 1.9 s (same data,
-- twice each, one slow phase of the machine); the chains sealed both ways
-- hash alike.
CREATE FUNCTION pulsesync.audit_redact_fields(p_record jsonb, p_fields text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT p_record || coalesce((SELECT jsonb_object_agg(f, '"[excluded]"'::jsonb)
                               FROM unnest(p_fields) f WHERE p_record ? f), '{}')
$$;

CREATE OR REPLACE FUNCTION pulsesync.audit_redact(p_record jsonb, p_fields text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN p_record IS NULL OR p_fields IS NULL THEN p_record
              ELSE pulsesync.audit_redact_fields(p_record, p_fields) END
$$;

CREATE OR REPLACE FUNCTION pulsesync.audit_unsealed(p_txid xid8, p_position bigint, p_limit int)
RETURNS TABLE (source text, entry_position bigint, txid xid8, entry_at timestamptz,
               excluded text[], canonical text)
LANGUAGE sql STABLE AS $$
  -- Each source is taken in its index order up to p_limit before they are
  -- merged: 0009 sorted the whole unsealed backlog on every call to take
  -- its first p_limit (218 ms against 4 ms for 10,000 of 347,000 waiting).
  WITH keys AS (
    SELECT * FROM (
      (SELECT 'change'::text AS source, c.position, c.txid FROM pulsesync.change_log c
       WHERE c.txid >= p_txid AND (c.txid, c.position) > (p_txid, p_position)
         AND c.txid < (SELECT pg_snapshot_xmin(pg_current_snapshot()))
       ORDER BY c.txid, c.position LIMIT p_limit)
      UNION ALL
      (SELECT 'event', e.position, e.txid FROM pulsesync.revision_events e
       WHERE e.txid >= p_txid AND (e.txid, e.position) > (p_txid, p_position)
         AND e.txid < (SELECT pg_snapshot_xmin(pg_current_snapshot()))
       ORDER BY e.txid, e.position LIMIT p_limit)
    ) k ORDER BY txid, position LIMIT p_limit
  ),
  -- audit_excluded's answer, for the types that exclude any field.
  excluding AS (
    SELECT object_type, array_agg(field ORDER BY field) AS fields
    FROM pulsesync.audit_excluded_fields GROUP BY object_type
  )
  SELECT k.source, k.position, k.txid, coalesce(c.changed_at, e.recorded_at), x.excluded,
         CASE WHEN k.source = 'change' THEN pulsesync.audit_canonical_change(c, x.excluded)
              ELSE pulsesync.audit_canonical_event(e) END
  FROM keys k
  LEFT JOIN pulsesync.change_log c ON k.source = 'change' AND c.position = k.position
  LEFT JOIN pulsesync.revision_events e ON k.source = 'event' AND e.position = k.position
  LEFT JOIN excluding f ON f.object_type = c.object_type
  LEFT JOIN LATERAL (SELECT CASE WHEN f.fields IS NOT NULL THEN
                       (SELECT array_agg(field ORDER BY field) FROM unnest(f.fields) field
                        WHERE coalesce(c.new_row ? field, false)
                           OR coalesce(c.old_row ? field, false)) END AS excluded) x ON true
  ORDER BY k.txid, k.position
$$;
