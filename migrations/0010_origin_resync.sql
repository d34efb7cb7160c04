-- The seq the server expects next from an origin, for the answer to an
-- out-of-order revision (RevisionResult.expected_seq): a client whose
-- acknowledged revisions the database lost (a restore from an older backup,
-- a crash with synchronous_commit off) learns where to send again from.
CREATE FUNCTION pulsesync.origin_next_seq(p_origin_id text) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pulsesync AS $$
BEGIN
  RETURN coalesce((SELECT last_seq + 1 FROM pulsesync.origins WHERE origin_id = p_origin_id), 1);
END
$$;
GRANT EXECUTE ON FUNCTION pulsesync.origin_next_seq(text) TO authenticated, service_role;
