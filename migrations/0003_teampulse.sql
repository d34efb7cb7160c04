-- TeamPulse's tables, registered for sync. System columns (version,
-- updated_at, deleted, recovered, last_origin_id, last_revision_id, hlc) are
-- added by pulsesync.register_table.
--
-- Beside Supabase the tables may exist already (the app synced with Supabase
-- before): they are kept as they are, rows, columns, constraints and
-- policies included, and only registered (system columns and triggers
-- added). register_table requires a uuid primary key named id.

CREATE TABLE IF NOT EXISTS public.teams (
  id uuid PRIMARY KEY,
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.users (
  id uuid PRIMARY KEY,
  email text,
  display_name text,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.team_members (
  id uuid PRIMARY KEY,
  team_id uuid NOT NULL REFERENCES public.teams (id) ON DELETE CASCADE,
  user_id uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
  role text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member')),
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (team_id, user_id)
);

CREATE TABLE IF NOT EXISTS public.projects (
  id uuid PRIMARY KEY,
  team_id uuid NOT NULL REFERENCES public.teams (id) ON DELETE CASCADE,
  name text NOT NULL,
  description text,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.tasks (
  id uuid PRIMARY KEY,
  team_id uuid NOT NULL REFERENCES public.teams (id) ON DELETE CASCADE,
  project_id uuid REFERENCES public.projects (id) ON DELETE SET NULL,
  title text NOT NULL,
  description text,
  status text NOT NULL DEFAULT 'todo',
  priority integer NOT NULL DEFAULT 0,
  assignee_id uuid REFERENCES public.users (id) ON DELETE SET NULL,
  due_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Indexes, where the column exists (an existing table may lack one).
DO $$
DECLARE
  i record;
BEGIN
  FOR i IN SELECT * FROM (VALUES ('team_members_user_idx', 'team_members', 'user_id'),
                                 ('projects_team_idx', 'projects', 'team_id'),
                                 ('tasks_team_idx', 'tasks', 'team_id'),
                                 ('tasks_project_idx', 'tasks', 'project_id')) v(name, tbl, col)
  LOOP
    IF EXISTS (SELECT 1 FROM pg_attribute
               WHERE attrelid = format('public.%I', i.tbl)::regclass
                 AND attname = i.col AND NOT attisdropped) THEN
      EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON public.%I (%I)', i.name, i.tbl, i.col);
    END IF;
  END LOOP;
END
$$;

SELECT pulsesync.register_table('public.teams', 'team', 'id');
SELECT pulsesync.register_table('public.users', 'user', NULL);
SELECT pulsesync.register_table('public.team_members', 'team_member', 'team_id');
SELECT pulsesync.register_table('public.projects', 'project', 'team_id');
SELECT pulsesync.register_table('public.tasks', 'task', 'team_id');
