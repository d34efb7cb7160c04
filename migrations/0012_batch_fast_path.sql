-- apply_revisions without a subtransaction per revision, as long as no
-- revision of the batch fails.
--
-- 0006/0009 applied each revision in its own subtransaction (an EXCEPTION
-- block), so that an invalid one rejects only itself. Every subtransaction
-- has its own transaction id, and each one took its own foreign-key lock
-- (KEY SHARE) on the rows its revision references: concurrent batches
-- writing tasks of one team made PostgreSQL build ever larger multixacts for
-- that team's row, and writers queued on MultiXactMemberSLRU
-- (docs/PERFORMANCE.md). Now the batch is first applied in one
-- subtransaction; only if a revision raises is that rolled back and the
-- batch applied again revision by revision, as before, to say which
-- revisions are rejected and why. Outcomes are the same either way.

-- One revision of a batch, as apply_revisions receives it (see 0006).
CREATE FUNCTION pulsesync.apply_revision_json(r jsonb,
  OUT outcome text, OUT reason text, OUT version bigint, OUT superseded boolean,
  OUT resolution text, OUT conflicts int, OUT record jsonb)
LANGUAGE sql AS $$
  SELECT * FROM pulsesync.apply_revision(
    (r ->> 'id')::uuid, r ->> 'object_type', (r ->> 'object_id')::uuid,
    r ->> 'origin_id', (r ->> 'seq')::bigint, r ->> 'op',
    CASE WHEN r ->> 'op' = 'upsert' THEN (r ->> 'payload')::jsonb END,
    (r ->> 'created_at')::bigint, (r ->> 'base_version')::bigint,
    (r ->> 'schema_version')::int, r ->> 'hlc')
$$;

-- The SQLSTATE classes that say something about the server or the
-- transaction (serialization, resources, shutdown, internal), not about a
-- revision: they abort the whole call so that it is retried.
CREATE FUNCTION pulsesync.is_server_error(p_state text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
  SELECT left(p_state, 2) IN ('40', '53', '54', '55', '57', '58', 'XX')
$$;

-- The batch loop of 0009's apply_revisions. `isolate`: each revision in its
-- own subtransaction, an error rejects it; otherwise an error raises.
CREATE FUNCTION pulsesync.apply_batch(batch jsonb, isolate boolean)
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
  taken boolean;
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
      taken := true;
      IF isolate THEN
        BEGIN
          SELECT * INTO res FROM pulsesync.apply_revision_json(r);
        EXCEPTION WHEN OTHERS THEN
          GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                  detail = PG_EXCEPTION_DETAIL;
          IF pulsesync.is_server_error(state) THEN
            RAISE;
          END IF;
          taken := false;
          outcome := 'rejected';
          reason := msg || CASE WHEN coalesce(detail, '') <> '' THEN ' (' || detail || ')' ELSE '' END;
          -- The seq is used up (origin_advance: only by the origin's owner).
          PERFORM pulsesync.origin_advance(r ->> 'origin_id', seq, false);
          PERFORM pulsesync.record_refused(pulsesync.try_uuid(r ->> 'id'), r ->> 'origin_id', seq,
                                           r ->> 'object_type', pulsesync.try_uuid(r ->> 'object_id'),
                                           'rejected', reason);
        END;
      ELSE
        SELECT * INTO res FROM pulsesync.apply_revision_json(r);
      END IF;
      IF taken THEN
        outcome := res.outcome; reason := res.reason;
        version := res.version; superseded := res.superseded;
        resolution := res.resolution; conflicts := res.conflicts; record := res.record::text;
      END IF;
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

-- Applies a batch (the format of 0006): all of it in one subtransaction;
-- if a revision fails, that is undone and the batch applied revision by
-- revision. apply_batch is a PL/pgSQL set-returning function, so it
-- produces its whole result before RETURN QUERY reads any of it: a failure
-- leaves no rows behind.
CREATE OR REPLACE FUNCTION pulsesync.apply_revisions(batch jsonb)
RETURNS TABLE (idx int, outcome text, reason text, version bigint, superseded boolean,
               resolution text, conflicts int, record text)
LANGUAGE plpgsql AS $$
DECLARE
  state text;
BEGIN
  BEGIN
    RETURN QUERY SELECT * FROM pulsesync.apply_batch(batch, false);
    RETURN;
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE;
    IF pulsesync.is_server_error(state) THEN
      RAISE;
    END IF;
  END;
  RETURN QUERY SELECT * FROM pulsesync.apply_batch(batch, true);
END
$$;

GRANT EXECUTE ON FUNCTION pulsesync.apply_revision_json(jsonb) TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION pulsesync.is_server_error(text) TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION pulsesync.apply_batch(jsonb, boolean) TO authenticated, service_role;
