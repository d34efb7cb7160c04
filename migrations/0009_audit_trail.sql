-- The audit trail (docs/AUDIT.md): the change log plus explicit entries for
-- revisions that changed nothing, never the same fact twice.
--
-- 1. Writes: pulsesync.change_log is their audit. The feed's compaction no
--    longer deletes log rows; it only moves the feed's horizon (cursors from
--    before it re-snapshot, as before). Rows leave the log only by audit
--    retention (expire_audit), which the operator sets separately and which
--    keeps the chain verifiable with a checkpoint.
-- 2. Revisions that changed nothing: pulsesync.revision_events (was
--    refused_revisions): duplicate, rejected, out_of_order (held back), and
--    unchanged (applied, but later writes held everything it set: its
--    resolution is in applied_revisions, not repeated here).
-- 3. Outcomes are not copied: an entry with a revision id joins
--    applied_revisions for it (applied, merged, conflict, recovered, ...).
-- 4. One sequence numbers both tables (positions never collide), so the
--    trail is ordered by position across both, with the primary keys.
-- 5. Tamper evidence: pulsesync.audit_chain seals committed entries in
--    (txid, position) order, in the background (server/core/audit_sealer.h),
--    each hash covering the entry's canonical content and the previous hash.

-- ---------------------------------------------------------------------------
-- Who, for writes outside a request: the database role (SET ROLE if any,
-- else the login). Rows from before this migration have none.
ALTER TABLE pulsesync.change_log ADD COLUMN db_role text;
ALTER TABLE pulsesync.change_log
  ALTER COLUMN db_role SET DEFAULT coalesce(nullif(current_setting('role', true), 'none'),
                                            session_user::text);

-- The sealer walks (txid, position); the feed's txid bounds use it too.
CREATE INDEX change_log_txid_position_idx ON pulsesync.change_log (txid, position);
DROP INDEX pulsesync.change_log_txid_idx;
-- An object's history (GetAuditTrail by object, `pulsesync audit`).
CREATE INDEX change_log_object_idx ON pulsesync.change_log (object_id);

-- ---------------------------------------------------------------------------
-- Revisions that changed nothing.
ALTER TABLE pulsesync.refused_revisions RENAME TO revision_events;
ALTER TABLE pulsesync.revision_events RENAME COLUMN refused_at TO recorded_at;
ALTER TABLE pulsesync.revision_events DROP CONSTRAINT refused_revisions_outcome_check;
ALTER TABLE pulsesync.revision_events ADD CONSTRAINT revision_events_outcome_check
  CHECK (outcome IN ('duplicate', 'rejected', 'out_of_order', 'unchanged'));
ALTER INDEX pulsesync.refused_revisions_id_idx RENAME TO revision_events_id_idx;
ALTER TABLE pulsesync.revision_events
  ADD COLUMN txid xid8,
  ADD COLUMN team_id uuid,
  ADD COLUMN db_role text,
  ALTER COLUMN reason DROP NOT NULL;
-- Positions from the change log's sequence (existing rows renumbered in
-- their order: negated first, so DESC below is their original order).
ALTER TABLE pulsesync.revision_events ALTER COLUMN position DROP IDENTITY;
UPDATE pulsesync.revision_events SET position = -position;
UPDATE pulsesync.revision_events e
   SET position = n.new_position, txid = pg_current_xact_id()
  FROM (SELECT position AS old_position,
               nextval(pg_get_serial_sequence('pulsesync.change_log', 'position')) AS new_position
          FROM (SELECT position FROM pulsesync.revision_events ORDER BY position DESC) o) n
 WHERE e.position = n.old_position;
DO $$
BEGIN
  EXECUTE format('ALTER TABLE pulsesync.revision_events ALTER COLUMN position SET DEFAULT nextval(%L::regclass)',
                 pg_get_serial_sequence('pulsesync.change_log', 'position'));
END
$$;
ALTER TABLE pulsesync.revision_events
  ALTER COLUMN txid SET DEFAULT pg_current_xact_id(),
  ALTER COLUMN txid SET NOT NULL,
  ALTER COLUMN db_role SET DEFAULT coalesce(nullif(current_setting('role', true), 'none'),
                                            session_user::text);
CREATE INDEX revision_events_txid_position_idx ON pulsesync.revision_events (txid, position);
CREATE INDEX revision_events_object_idx ON pulsesync.revision_events (object_id);

-- The table's old name, for readers of the refusals.
CREATE VIEW pulsesync.refused_revisions AS
  SELECT position, id, origin_id, seq, object_type, object_id, outcome, reason, claims,
         recorded_at AS refused_at
  FROM pulsesync.revision_events WHERE outcome IN ('rejected', 'out_of_order');

-- The team of an object as it is now (NULL: no such row, or no team).
CREATE FUNCTION pulsesync.object_team(p_object_type text, p_object_id uuid) RETURNS uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
DECLARE
  reg pulsesync.synced_tables;
  t uuid;
BEGIN
  IF p_object_id IS NULL OR p_object_type IS NULL THEN
    RETURN NULL;
  END IF;
  SELECT * INTO reg FROM pulsesync.synced_tables WHERE object_type = p_object_type;
  IF reg.team_column IS NULL THEN
    RETURN NULL;
  END IF;
  EXECUTE format('SELECT %I::uuid FROM %s WHERE id = $1', reg.team_column, reg.table_oid)
    INTO t USING p_object_id;
  RETURN t;
END
$$;

UPDATE pulsesync.revision_events SET team_id = pulsesync.object_team(object_type, object_id);

CREATE FUNCTION pulsesync.record_revision_event(
  p_id uuid, p_origin_id text, p_seq bigint, p_object_type text, p_object_id uuid,
  p_outcome text, p_reason text)
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
  INSERT INTO pulsesync.revision_events
    (id, origin_id, seq, object_type, object_id, team_id, outcome, reason, claims)
  VALUES (p_id, p_origin_id, p_seq, p_object_type, p_object_id,
          pulsesync.object_team(p_object_type, p_object_id), p_outcome, p_reason,
          nullif(current_setting('request.jwt.claims', true), '')::jsonb)
$$;

CREATE OR REPLACE FUNCTION pulsesync.record_refused(
  p_id uuid, p_origin_id text, p_seq bigint, p_object_type text, p_object_id uuid,
  p_outcome text, p_reason text)
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
  SELECT pulsesync.record_revision_event(p_id, p_origin_id, p_seq, p_object_type, p_object_id,
                                         p_outcome, p_reason)
$$;

CREATE OR REPLACE FUNCTION pulsesync.rejection_of(p_id uuid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
  SELECT reason FROM pulsesync.revision_events
  WHERE id = p_id AND outcome = 'rejected' ORDER BY position LIMIT 1
$$;

-- Whether this transaction wrote anything as revision `p_id` (its rows in
-- the log; found through the transaction's txid, so the scan is bounded by
-- what this transaction wrote).
CREATE FUNCTION pulsesync.revision_wrote(p_id uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
  SELECT EXISTS (SELECT 1 FROM pulsesync.change_log
                 WHERE txid = pg_current_xact_id() AND revision_id = p_id)
$$;

-- apply_revisions as in 0006, plus the audit's entries for duplicates and for
-- applied revisions that wrote nothing (marked "-- audit" below).
CREATE OR REPLACE FUNCTION pulsesync.apply_revisions(batch jsonb)
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
      ELSIF outcome = 'duplicate' THEN  -- audit
        PERFORM pulsesync.record_revision_event((r ->> 'id')::uuid, r ->> 'origin_id', seq,
                                                r ->> 'object_type', (r ->> 'object_id')::uuid,
                                                'duplicate', NULL);
      ELSIF outcome = 'applied' AND (superseded OR version = 0)  -- audit
            AND NOT pulsesync.revision_wrote((r ->> 'id')::uuid) THEN
        PERFORM pulsesync.record_revision_event((r ->> 'id')::uuid, r ->> 'origin_id', seq,
                                                r ->> 'object_type', (r ->> 'object_id')::uuid,
                                                'unchanged', NULL);
      END IF;
    END IF;
    RETURN NEXT;
    i := i + 1;
  END LOOP;
END
$$;

-- ---------------------------------------------------------------------------
-- Fields kept out of the trail (secrets): their values show as
-- "[excluded]", and the entry lists which fields were excluded.
CREATE TABLE pulsesync.audit_excluded_fields (
  object_type text NOT NULL,
  field text NOT NULL,
  PRIMARY KEY (object_type, field)
);

-- The excluded fields present in a record pair, sorted; NULL when none.
CREATE FUNCTION pulsesync.audit_excluded(p_object_type text, p_new jsonb, p_old jsonb)
RETURNS text[] LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
  SELECT array_agg(field ORDER BY field) FROM pulsesync.audit_excluded_fields
  WHERE object_type = p_object_type
    AND (coalesce(p_new ? field, false) OR coalesce(p_old ? field, false))
$$;

CREATE FUNCTION pulsesync.audit_redact(p_record jsonb, p_fields text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN p_record IS NULL OR p_fields IS NULL THEN p_record
    ELSE p_record || coalesce((SELECT jsonb_object_agg(f, '"[excluded]"'::jsonb)
                               FROM unnest(p_fields) f WHERE p_record ? f), '{}')
  END
$$;

-- ---------------------------------------------------------------------------
-- The chain. Canonical content (what an entry's hash covers) is the text of
-- one JSON array, built only here, so the sealer and `audit verify` agree:
--   change: ["change", position, txid, changed_at (µs since epoch), schema,
--            table, object_type, object_id, team_id, op, version, origin_id,
--            revision_id, db_role, claims, excluded, new_row, old_row]
--   event:  ["event", position, txid, recorded_at (µs), id, origin_id, seq,
--            object_type, object_id, team_id, outcome, reason, db_role,
--            claims]
-- with excluded fields' values replaced by "[excluded]" (the list is the
-- one stored with the seal, so a later change of the configuration, or the
-- redaction of the log at compaction, leaves sealed hashes valid).
-- hash(n) = sha256(hash(n-1) || n || "\n" || canonical(n)), hash(0) = 32
-- zero bytes or the latest checkpoint's hash (server/core/audit_chain.h).
CREATE FUNCTION pulsesync.audit_canonical_change(c pulsesync.change_log, p_excluded text[])
RETURNS text LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_array(
    'change', c.position, c.txid::text, (extract(epoch FROM c.changed_at) * 1000000)::bigint,
    c.schema_name, c.table_name, c.object_type, c.object_id, c.team_id, c.op, c.version,
    c.origin_id, c.revision_id, c.db_role, c.claims, to_jsonb(p_excluded),
    pulsesync.audit_redact(c.new_row, p_excluded),
    pulsesync.audit_redact(c.old_row, p_excluded))::text
$$;

CREATE FUNCTION pulsesync.audit_canonical_event(e pulsesync.revision_events)
RETURNS text LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_array(
    'event', e.position, e.txid::text, (extract(epoch FROM e.recorded_at) * 1000000)::bigint,
    e.id, e.origin_id, e.seq, e.object_type, e.object_id, e.team_id, e.outcome, e.reason,
    e.db_role, e.claims)::text
$$;

-- One row per sealed entry, in chain order.
CREATE TABLE pulsesync.audit_chain (
  seq bigint PRIMARY KEY,
  entry_position bigint NOT NULL UNIQUE,
  source text NOT NULL CHECK (source IN ('change', 'event')),
  txid xid8 NOT NULL,
  entry_at timestamptz NOT NULL,
  excluded text[],
  hash bytea NOT NULL,
  sealed_at timestamptz NOT NULL DEFAULT now()
);

-- What audit retention removed from the front of the chain: the chain goes
-- on from the newest checkpoint's hash.
CREATE TABLE pulsesync.audit_checkpoints (
  seq bigint PRIMARY KEY,       -- the last entry removed
  hash bytea NOT NULL,          -- its hash
  txid xid8 NOT NULL,           -- its sealing key
  entry_position bigint NOT NULL,
  entries bigint NOT NULL,      -- how many this checkpoint removed
  first_at timestamptz,
  last_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Entries not yet sealed whose transactions are all finished (txid below the
-- oldest running one), after the sealing key (p_txid, p_position), in chain
-- order, with their canonical content. For the sealer.
CREATE FUNCTION pulsesync.audit_unsealed(p_txid xid8, p_position bigint, p_limit int)
RETURNS TABLE (source text, entry_position bigint, txid xid8, entry_at timestamptz,
               excluded text[], canonical text)
LANGUAGE sql STABLE AS $$
  WITH bound AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin),
  keys AS (
    SELECT * FROM (
      SELECT 'change'::text AS source, c.position, c.txid FROM pulsesync.change_log c, bound
      WHERE c.txid >= p_txid AND (c.txid, c.position) > (p_txid, p_position) AND c.txid < bound.xmin
      UNION ALL
      SELECT 'event', e.position, e.txid FROM pulsesync.revision_events e, bound
      WHERE e.txid >= p_txid AND (e.txid, e.position) > (p_txid, p_position) AND e.txid < bound.xmin
    ) k ORDER BY txid, position LIMIT p_limit
  )
  SELECT k.source, k.position, k.txid, coalesce(c.changed_at, e.recorded_at), x.excluded,
         CASE WHEN k.source = 'change' THEN pulsesync.audit_canonical_change(c, x.excluded)
              ELSE pulsesync.audit_canonical_event(e) END
  FROM keys k
  LEFT JOIN pulsesync.change_log c ON k.source = 'change' AND c.position = k.position
  LEFT JOIN pulsesync.revision_events e ON k.source = 'event' AND e.position = k.position
  LEFT JOIN LATERAL (SELECT pulsesync.audit_excluded(c.object_type, c.new_row, c.old_row)
                     AS excluded) x ON true
  ORDER BY k.txid, k.position
$$;

-- The chain from seq > p_after_seq, each with its entry's canonical content
-- recomputed now (NULL when the entry is gone). For `audit verify`.
CREATE FUNCTION pulsesync.audit_chain_page(p_after_seq bigint, p_limit int)
RETURNS TABLE (seq bigint, source text, entry_position bigint, txid xid8, hash bytea,
               canonical text)
LANGUAGE sql STABLE AS $$
  SELECT a.seq, a.source, a.entry_position, a.txid, a.hash,
         CASE WHEN a.source = 'change' AND c.position IS NOT NULL
                THEN pulsesync.audit_canonical_change(c, a.excluded)
              WHEN a.source = 'event' AND e.position IS NOT NULL
                THEN pulsesync.audit_canonical_event(e) END
  FROM (SELECT * FROM pulsesync.audit_chain WHERE seq > p_after_seq ORDER BY seq LIMIT p_limit) a
  LEFT JOIN pulsesync.change_log c ON a.source = 'change' AND c.position = a.entry_position
  LEFT JOIN pulsesync.revision_events e ON a.source = 'event' AND e.position = a.entry_position
  ORDER BY a.seq
$$;

-- Entries at or before the sealing key (p_txid, p_position) that no seal
-- covers: added behind the sealer's back. For `audit verify`.
CREATE FUNCTION pulsesync.audit_unsealed_behind(p_txid xid8, p_position bigint, p_limit int)
RETURNS TABLE (source text, entry_position bigint)
LANGUAGE sql STABLE AS $$
  SELECT * FROM (
    SELECT 'change'::text, c.position FROM pulsesync.change_log c
    WHERE (c.txid, c.position) <= (p_txid, p_position)
      AND NOT EXISTS (SELECT 1 FROM pulsesync.audit_chain a WHERE a.entry_position = c.position)
    UNION ALL
    SELECT 'event', e.position FROM pulsesync.revision_events e
    WHERE (e.txid, e.position) <= (p_txid, p_position)
      AND NOT EXISTS (SELECT 1 FROM pulsesync.audit_chain a WHERE a.entry_position = e.position)
  ) u LIMIT p_limit
$$;

-- ---------------------------------------------------------------------------
-- Retention.

-- Feed compaction (replaces 0004's): moves the feed's horizon past up to
-- `max_rows` log rows older than `max_age` whose transactions are finished,
-- taking them in position order and stopping at the first that is not
-- (so a running transaction holds the horizon back). Deletes nothing: the
-- rows stay for the audit. Redacts the excluded fields of the sealed rows
-- it passes (the feed no longer needs their values; the seal's hash covers
-- the redacted form). Returns how many rows it passed.
ALTER TABLE pulsesync.feed_horizon ADD COLUMN passed_position bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION pulsesync.compact_change_log(max_age interval, max_rows int DEFAULT 10000)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  h pulsesync.feed_horizon;
  newest xid8;
  last_position bigint;
  n bigint;
BEGIN
  SELECT * INTO h FROM pulsesync.feed_horizon WHERE id = 1 FOR UPDATE;
  WITH candidates AS (
    SELECT position, txid,
           bool_and(changed_at < now() - max_age
                    AND txid < pg_snapshot_xmin(pg_current_snapshot()))
             OVER (ORDER BY position) AS ok
    FROM (SELECT position, txid, changed_at FROM pulsesync.change_log
          WHERE position > h.passed_position ORDER BY position LIMIT max_rows) c
  )
  SELECT max(txid), max(position), count(*) INTO newest, last_position, n
  FROM candidates WHERE ok;
  IF n > 0 THEN
    UPDATE pulsesync.change_log c
       SET new_row = pulsesync.audit_redact(c.new_row, a.excluded),
           old_row = pulsesync.audit_redact(c.old_row, a.excluded)
      FROM pulsesync.audit_chain a
     WHERE a.entry_position = c.position AND a.excluded IS NOT NULL
       AND c.position > h.passed_position AND c.position <= last_position;
    UPDATE pulsesync.feed_horizon
       SET horizon = greatest(horizon, newest), compacted_at = now(),
           passed_position = last_position
     WHERE id = 1;
  END IF;
  RETURN n;
END
$$;

-- Audit retention: removes up to `max_rows` sealed entries older than
-- `max_age` from the front of the chain (stopping at the first younger or
-- unsealed one), with their seals, and records a checkpoint with the last
-- removed hash so that the rest still verifies. Moves the feed's horizon
-- past what it deletes. Returns how many entries it removed. Run by the
-- sealer (under its lock); never by the feed.
CREATE FUNCTION pulsesync.expire_audit(max_age interval, max_rows int DEFAULT 10000)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  last pulsesync.audit_chain;
  first_at timestamptz;
  n bigint;
  newest xid8;
BEGIN
  WITH prefix AS (
    SELECT a.*, bool_and(a.entry_at < now() - max_age) OVER (ORDER BY a.seq) AS ok
    FROM (SELECT * FROM pulsesync.audit_chain ORDER BY seq LIMIT max_rows) a
  )
  SELECT count(*), min(entry_at) INTO n, first_at FROM prefix WHERE ok;
  IF n = 0 THEN
    RETURN 0;
  END IF;
  SELECT * INTO last FROM pulsesync.audit_chain ORDER BY seq OFFSET n - 1 LIMIT 1;
  WITH gone AS (
    DELETE FROM pulsesync.change_log c USING pulsesync.audit_chain a
    WHERE a.seq <= last.seq AND a.source = 'change' AND c.position = a.entry_position
    RETURNING c.txid
  )
  SELECT max(txid) INTO newest FROM gone;
  DELETE FROM pulsesync.revision_events e USING pulsesync.audit_chain a
  WHERE a.seq <= last.seq AND a.source = 'event' AND e.position = a.entry_position;
  DELETE FROM pulsesync.audit_chain WHERE seq <= last.seq;
  INSERT INTO pulsesync.audit_checkpoints
    (seq, hash, txid, entry_position, entries, first_at, last_at)
  VALUES (last.seq, last.hash, last.txid, last.entry_position, n, first_at, last.entry_at);
  IF newest IS NOT NULL THEN
    UPDATE pulsesync.feed_horizon
       SET horizon = greatest(horizon, newest), compacted_at = now()
     WHERE id = 1;
  END IF;
  RETURN n;
END
$$;

-- ---------------------------------------------------------------------------
-- The trail as one relation: every write (change_log, with the outcome of
-- its revision) and every revision that changed nothing (revision_events).
--   kind       'change' | 'event'
--   outcome    changes: 'direct' (no revision: SQL, PostgREST, a migration)
--              or the revision's resolution (applied, merged, conflict,
--              recovered, superseded); events: duplicate, rejected,
--              out_of_order, or the resolution of an unchanged revision
--              (superseded, conflict, tombstoned)
--   actor      the JWT sub; actor_role: the JWT role, else the database role
-- Values of excluded fields are "[excluded]" and `excluded` names them.
-- Only the engine (service_role and the owner) reads it; GetAuditTrail and
-- `pulsesync audit` apply the caller's team scope.
CREATE VIEW pulsesync.audit_trail AS
SELECT c.position, 'change'::text AS kind, c.changed_at AS at, c.txid,
       c.schema_name, c.table_name, c.object_type, c.object_id, c.team_id, c.op, c.version,
       c.origin_id, c.revision_id, ar.seq,
       CASE WHEN c.revision_id IS NULL THEN 'direct' ELSE coalesce(ar.resolution, 'applied') END
         AS outcome,
       NULL::text AS reason, coalesce(ar.conflicts, 0) AS conflicts,
       c.claims ->> 'sub' AS actor, coalesce(c.claims ->> 'role', c.db_role) AS actor_role,
       x.excluded,
       pulsesync.audit_redact(c.new_row, x.excluded) AS new_row,
       pulsesync.audit_redact(c.old_row, x.excluded) AS old_row
FROM pulsesync.change_log c
LEFT JOIN pulsesync.applied_revisions ar ON ar.id = c.revision_id
LEFT JOIN LATERAL (SELECT pulsesync.audit_excluded(c.object_type, c.new_row, c.old_row)
                   AS excluded) x ON true
UNION ALL
SELECT e.position, 'event', e.recorded_at, e.txid,
       n.nspname, t.relname, e.object_type, e.object_id, e.team_id, NULL, ar.version,
       e.origin_id, e.id, e.seq,
       CASE WHEN e.outcome = 'unchanged' THEN coalesce(ar.resolution, 'superseded')
            ELSE e.outcome END,
       e.reason, coalesce(ar.conflicts, 0),
       e.claims ->> 'sub', coalesce(e.claims ->> 'role', e.db_role),
       NULL, NULL, NULL
FROM pulsesync.revision_events e
LEFT JOIN pulsesync.applied_revisions ar ON e.outcome IN ('unchanged', 'duplicate') AND ar.id = e.id
LEFT JOIN pulsesync.synced_tables st ON st.object_type = e.object_type
LEFT JOIN pg_catalog.pg_class t ON t.oid = st.table_oid
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace;

GRANT SELECT ON pulsesync.audit_trail TO service_role;

-- ---------------------------------------------------------------------------
-- Per device: open conflicts by the origin whose value lost.
CREATE INDEX conflicts_open_loser_idx ON pulsesync.conflicts (loser_origin_id)
  WHERE NOT resolved AND NOT deleted;

-- ---------------------------------------------------------------------------
-- supa_audit's audit.record_version, as a read-only view of the change log,
-- so that tools written for supa_audit read ours. record_id is derived as
-- supa_audit derives it: uuid_generate_v5('fd62bc3d-8d6e-43c2-919c-802ba3762271',
-- ( jsonb_build_array(to_jsonb(table_oid)) || jsonb_agg(<primary key values>) )::text),
-- and our primary key is always `id`. A tombstone (op DELETE, written as an
-- UPDATE of `deleted`) shows as supa_audit shows a DELETE: no record. Excluded
-- fields are "[excluded]". In schema audit unless that already has a
-- record_version (supa_audit itself installed): always as
-- pulsesync.record_version.

-- uuid_generate_v5 comes from uuid-ossp, wherever it is installed (Supabase:
-- schema extensions); installed in schema extensions when missing, if the
-- migrating role may. Without it record_id is NULL.
DO $$
DECLARE
  ns text;
BEGIN
  SELECT n.nspname INTO ns FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE p.proname = 'uuid_generate_v5' LIMIT 1;
  IF ns IS NULL THEN
    BEGIN
      CREATE SCHEMA IF NOT EXISTS extensions;
      CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA extensions;
      ns := 'extensions';
    EXCEPTION WHEN insufficient_privilege OR undefined_file OR feature_not_supported THEN
      RAISE NOTICE 'uuid-ossp unavailable (%): record_version.record_id will be NULL', SQLERRM;
    END;
  END IF;
  IF ns IS NOT NULL THEN
    EXECUTE format($f$
      CREATE FUNCTION pulsesync.supa_audit_record_id(p_table_oid oid, p_record jsonb)
      RETURNS uuid LANGUAGE sql STABLE AS $b$
        SELECT CASE WHEN p_record IS NULL THEN NULL ELSE
          %I.uuid_generate_v5('fd62bc3d-8d6e-43c2-919c-802ba3762271',
            (jsonb_build_array(to_jsonb(p_table_oid)) || jsonb_build_array(p_record ->> 'id'))::text)
        END
      $b$ $f$, ns);
  ELSE
    CREATE FUNCTION pulsesync.supa_audit_record_id(p_table_oid oid, p_record jsonb)
    RETURNS uuid LANGUAGE sql STABLE AS $b$ SELECT NULL::uuid $b$;
  END IF;
END
$$;

CREATE VIEW pulsesync.record_version AS
SELECT c.position AS id,
       pulsesync.supa_audit_record_id(t.oid, CASE WHEN c.op <> 'DELETE' THEN c.new_row END)
         AS record_id,
       pulsesync.supa_audit_record_id(t.oid, c.old_row) AS old_record_id,
       c.op, c.changed_at AS ts, t.oid AS table_oid,
       c.schema_name AS table_schema, c.table_name,
       CASE WHEN c.op <> 'DELETE' THEN pulsesync.audit_redact(c.new_row, x.excluded) END AS record,
       pulsesync.audit_redact(c.old_row, x.excluded) AS old_record,
       pulsesync.try_uuid(c.claims ->> 'sub') AS auth_uid,
       c.claims ->> 'role' AS auth_role
FROM pulsesync.change_log c
JOIN pg_catalog.pg_namespace n ON n.nspname = c.schema_name
JOIN pg_catalog.pg_class t ON t.relnamespace = n.oid AND t.relname = c.table_name
LEFT JOIN LATERAL (SELECT pulsesync.audit_excluded(c.object_type, c.new_row, c.old_row)
                   AS excluded) x ON true;

GRANT SELECT ON pulsesync.record_version TO service_role;

DO $$
BEGIN
  IF to_regclass('audit.record_version') IS NULL THEN
    CREATE SCHEMA IF NOT EXISTS audit;
    CREATE VIEW audit.record_version AS SELECT * FROM pulsesync.record_version;
    GRANT USAGE ON SCHEMA audit TO service_role;
    GRANT SELECT ON audit.record_version TO service_role;
  END IF;
END
$$;
