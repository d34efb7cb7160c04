-- Writes made with SQL wake the feed at once (docs/ARCHITECTURE.md, "The
-- realtime feed"; issue 7: a 10,000-row transaction fully at a follower
-- within 0.5 s).
--
-- pulsesyncd wakes the feed hubs of every replica after it applies
-- revisions: NOTIFY pulsesync_feed in its own short transaction, after it
-- answered the client, so that its writers never queue on NOTIFY's
-- commit-time lock. A write made with SQL beside it (psql, PostgREST,
-- another app on the same database) was found only by the hubs' poll
-- (--feed_poll_ms, 500 ms by default): a transaction's rows reached
-- followers 0-500 ms after its commit, before any of the reading.
--
-- Now the log's INSERT statement notifies when its rows are not a
-- revision's (pulsesync.revision unset: apply_revision and the set-based
-- apply set it around their writes). PostgreSQL folds a transaction's
-- identical notifications into one, delivered at its commit, so a
-- transaction of any size wakes each hub once.
--
-- The cost: a transaction that sent NOTIFY holds a cluster-wide lock
-- through its commit, so notifying commits happen one at a time: these SQL
-- transactions, and pulsesyncd's own short NOTIFY transactions after an
-- apply (which come after the client has its answer, so no push waits). A
-- database with many small concurrent SQL writers that prefers their
-- commit rate to the feed's latency turns it off:
--   ALTER DATABASE <db> SET pulsesync.notify_sql_writes = 'off';
-- ('off', 'false', '0' or 'no', any case; new sessions; the hubs' poll
-- then finds those writes, as before).
--
-- The channel is pulsesync_feed, the default of FeedHubOptions and
-- SyncServiceOptions::notify_channel; a server built with another channel
-- would find these writes by its poll only.

CREATE FUNCTION pulsesync.notify_sql_writes() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pulsesync AS $$
BEGIN
  IF pulsesync.writing_revision() IS NULL
     AND lower(coalesce(current_setting('pulsesync.notify_sql_writes', true), ''))
         NOT IN ('off', 'false', '0', 'no') THEN
    -- The channel of FeedHubOptions::notify_channel and
    -- SyncServiceOptions::notify_channel.
    PERFORM pg_notify('pulsesync_feed', '');
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER notify_sql_writes AFTER INSERT ON pulsesync.change_log
  FOR EACH STATEMENT EXECUTE FUNCTION pulsesync.notify_sql_writes();
