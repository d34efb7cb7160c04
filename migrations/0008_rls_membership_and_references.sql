-- Tightens two of 0005's default policies (docs/SECURITY.md), only where
-- 0005 installed them (a project with policies of its own keeps its own):
--
-- 1. Membership: any member could add any user to their team, making that
--    user's row (email) visible to the team and sending them the team's data
--    without their consent. Now only a team's owners and admins add, change
--    or remove memberships; the founder's first membership stays allowed
--    (team_members_founder), and anyone may leave (delete their own).
-- 2. References: a task could point at another team's project or at any
--    user. Foreign-key checks bypass Row Level Security, so such an insert
--    told whether the id existed, and ON DELETE SET NULL let one team's
--    delete change another team's rows. Now a task's project must be one of
--    its team's projects and its assignee a member of its team; these
--    checks run before the foreign keys, so a foreign id is refused like a
--    missing one.

-- Teams the caller administers (owner or admin), by definer like
-- my_team_ids so that team_members' policies do not recurse.
CREATE FUNCTION pulsesync.my_admin_team_ids() RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT team_id FROM public.team_members
  WHERE user_id = auth.uid() AND role IN ('owner', 'admin') AND NOT deleted
$$;

-- Whether `p_user` is a member of `p_team`, for the caller's team only.
CREATE FUNCTION pulsesync.is_member_of_my_team(p_team uuid, p_user uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT p_team IN (SELECT pulsesync.my_team_ids()) AND EXISTS (
    SELECT 1 FROM public.team_members
    WHERE team_id = p_team AND user_id = p_user AND NOT deleted)
$$;

-- Whether `p_project` is a project of `p_team`, for the caller's team only.
CREATE FUNCTION pulsesync.is_project_of_my_team(p_team uuid, p_project uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT p_team IN (SELECT pulsesync.my_team_ids()) AND EXISTS (
    SELECT 1 FROM public.projects WHERE id = p_project AND team_id = p_team)
$$;

GRANT EXECUTE ON FUNCTION pulsesync.my_admin_team_ids(),
  pulsesync.is_member_of_my_team(uuid, uuid), pulsesync.is_project_of_my_team(uuid, uuid)
  TO authenticated, service_role;

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'public'
             AND tablename = 'team_members' AND policyname = 'team_members_of_my_teams') THEN
    DROP POLICY team_members_of_my_teams ON public.team_members;
    CREATE POLICY team_members_of_my_teams ON public.team_members FOR SELECT TO authenticated
      USING (team_id IN (SELECT pulsesync.my_team_ids()));
    CREATE POLICY team_members_admin_insert ON public.team_members FOR INSERT TO authenticated
      WITH CHECK (team_id IN (SELECT pulsesync.my_admin_team_ids()));
    CREATE POLICY team_members_admin_update ON public.team_members FOR UPDATE TO authenticated
      USING (team_id IN (SELECT pulsesync.my_admin_team_ids()))
      WITH CHECK (team_id IN (SELECT pulsesync.my_admin_team_ids()));
    -- Leaving is a delete, or a tombstone (deleted = true) of one's own row.
    CREATE POLICY team_members_leave ON public.team_members FOR UPDATE TO authenticated
      USING (user_id = auth.uid()) WITH CHECK (user_id = auth.uid() AND deleted);
    CREATE POLICY team_members_admin_or_self_delete ON public.team_members FOR DELETE
      TO authenticated
      USING (user_id = auth.uid() OR team_id IN (SELECT pulsesync.my_admin_team_ids()));
  END IF;

  IF EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'public'
             AND tablename = 'tasks' AND policyname = 'tasks_of_my_teams') THEN
    DROP POLICY tasks_of_my_teams ON public.tasks;
    CREATE POLICY tasks_of_my_teams ON public.tasks TO authenticated
      USING (team_id IN (SELECT pulsesync.my_team_ids()))
      WITH CHECK (team_id IN (SELECT pulsesync.my_team_ids())
                  AND (project_id IS NULL OR pulsesync.is_project_of_my_team(team_id, project_id))
                  AND (assignee_id IS NULL
                       OR pulsesync.is_member_of_my_team(team_id, assignee_id)));
  END IF;
END
$$;
