-- Row Level Security on TeamPulse's tables, as a Supabase project would have
-- it: a user sees and writes the rows of the teams they belong to.
--
-- Beside Supabase, a table that already has Row Level Security enabled or any
-- policy of its own keeps exactly those: the project's policies decide, and
-- none of the defaults below is added to it (permissive policies add up, so
-- ours would widen what the project allows). Tables without any (new ones,
-- or on a bare PostgreSQL) get the defaults. pulsesyncd
-- runs each request's database work under the caller's role
-- (`SET LOCAL ROLE authenticated`, `request.jwt.claims`), exactly like
-- PostgREST, so these policies govern gRPC traffic too; service_role
-- bypasses RLS, as in Supabase.

-- The engine's own tables are written by the owner whoever the caller is
-- (triggers and bookkeeping functions are SECURITY DEFINER, see 0002);
-- callers get no direct privileges on them, only the merge's entry point.
GRANT USAGE ON SCHEMA pulsesync TO authenticated, service_role;
GRANT EXECUTE ON FUNCTION pulsesync.apply_revisions(jsonb) TO authenticated, service_role;

-- Decided before anything below changes: which tables get the defaults.
CREATE TEMP TABLE pulsesync_rls_defaults ON COMMIT DROP AS
  SELECT c.relname::text AS tbl
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = 'public'
    AND c.relname IN ('teams', 'users', 'team_members', 'projects', 'tasks')
    AND NOT c.relrowsecurity
    AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid);

-- The caller's teams, by definer so that policies on team_members do not
-- recurse into themselves.
CREATE FUNCTION pulsesync.my_team_ids() RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT team_id FROM public.team_members WHERE user_id = auth.uid() AND NOT deleted
$$;

CREATE FUNCTION pulsesync.my_teammate_ids() RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT m.user_id FROM public.team_members m
  WHERE m.team_id IN (SELECT pulsesync.my_team_ids()) AND NOT m.deleted
$$;
GRANT EXECUTE ON FUNCTION pulsesync.my_team_ids(), pulsesync.my_teammate_ids()
  TO authenticated, service_role;

GRANT SELECT, INSERT, UPDATE, DELETE
  ON public.teams, public.users, public.team_members, public.projects, public.tasks
  TO authenticated, service_role;

DO $$
BEGIN
  IF 'teams' IN (SELECT tbl FROM pulsesync_rls_defaults) THEN
    -- Who created a team may see it before anyone is a member (the founder
    -- adds their own membership next).
    ALTER TABLE public.teams ADD COLUMN IF NOT EXISTS created_by uuid DEFAULT auth.uid();
    ALTER TABLE public.teams ENABLE ROW LEVEL SECURITY;
    CREATE POLICY teams_member ON public.teams TO authenticated
      USING (id IN (SELECT pulsesync.my_team_ids()) OR created_by = auth.uid())
      WITH CHECK (id IN (SELECT pulsesync.my_team_ids()) OR created_by = auth.uid());
  END IF;

  IF 'users' IN (SELECT tbl FROM pulsesync_rls_defaults) THEN
    ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
    CREATE POLICY users_self_or_teammate ON public.users FOR SELECT TO authenticated
      USING (id = auth.uid() OR id IN (SELECT pulsesync.my_teammate_ids()));
    CREATE POLICY users_self_insert ON public.users FOR INSERT TO authenticated
      WITH CHECK (id = auth.uid());
    CREATE POLICY users_self_update ON public.users FOR UPDATE TO authenticated
      USING (id = auth.uid()) WITH CHECK (id = auth.uid());
  END IF;

  IF 'team_members' IN (SELECT tbl FROM pulsesync_rls_defaults) THEN
    ALTER TABLE public.team_members ENABLE ROW LEVEL SECURITY;
    CREATE POLICY team_members_of_my_teams ON public.team_members TO authenticated
      USING (team_id IN (SELECT pulsesync.my_team_ids()))
      WITH CHECK (team_id IN (SELECT pulsesync.my_team_ids()));
    -- Everyone sees their own memberships (also the one just being created).
    CREATE POLICY team_members_own ON public.team_members FOR SELECT TO authenticated
      USING (user_id = auth.uid());
    -- The founder's first membership of a team they created (where teams
    -- has the default policies, and so created_by).
    IF 'teams' IN (SELECT tbl FROM pulsesync_rls_defaults) THEN
      CREATE POLICY team_members_founder ON public.team_members FOR INSERT TO authenticated
        WITH CHECK (user_id = auth.uid() AND team_id IN
                    (SELECT id FROM public.teams WHERE created_by = auth.uid()));
    END IF;
  END IF;

  IF 'projects' IN (SELECT tbl FROM pulsesync_rls_defaults) THEN
    ALTER TABLE public.projects ENABLE ROW LEVEL SECURITY;
    CREATE POLICY projects_of_my_teams ON public.projects TO authenticated
      USING (team_id IN (SELECT pulsesync.my_team_ids()))
      WITH CHECK (team_id IN (SELECT pulsesync.my_team_ids()));
  END IF;

  IF 'tasks' IN (SELECT tbl FROM pulsesync_rls_defaults) THEN
    ALTER TABLE public.tasks ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tasks_of_my_teams ON public.tasks TO authenticated
      USING (team_id IN (SELECT pulsesync.my_team_ids()))
      WITH CHECK (team_id IN (SELECT pulsesync.my_team_ids()));
  END IF;
END
$$;
