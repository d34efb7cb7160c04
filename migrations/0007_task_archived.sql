-- TeamPulse schema version 2: a task's "archived" state leaves `status`.
-- Version 1 clients set status = 'archived'; version 2 keeps the workflow
-- status (todo, doing, done) and a separate is_archived flag, so that an
-- archived task remembers where it was.
--
-- The payload upgrade below is how a version 1 client keeps working: its
-- revisions are rewritten to version 2 before they are merged (see
-- pulsesync.upgrade_payload in 0006). It names only the fields the old
-- client set, so an old client's edit of the title never touches
-- is_archived, and its status edits land in whichever field they mean.

ALTER TABLE public.tasks ADD COLUMN IF NOT EXISTS is_archived boolean NOT NULL DEFAULT false;

-- Existing archived tasks: their workflow status is not known; 'done'.
UPDATE public.tasks SET status = 'done', is_archived = true WHERE status = 'archived';

-- v1 -> v2: status 'archived' becomes is_archived = true (the status is left
-- as it was); any other status also un-archives, as setting a v1 task's
-- status to 'todo' took it out of the archive.
CREATE FUNCTION pulsesync.upgrade_task_v1(payload jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT CASE
    WHEN NOT payload ? 'status' THEN payload
    WHEN payload ->> 'status' = 'archived' THEN (payload - 'status') || '{"is_archived": true}'
    ELSE payload || '{"is_archived": false}'
  END
$$;

SELECT pulsesync.register_payload_upgrade(
  'task', 1, 'pulsesync.upgrade_task_v1(jsonb)',
  'status "archived" became is_archived = true; other statuses set is_archived = false');

ALTER TABLE public.tasks ADD CONSTRAINT tasks_status_v2
  CHECK (status IN ('todo', 'doing', 'done')) NOT VALID;
