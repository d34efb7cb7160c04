-- TeamPulse's tables, registered for sync. System columns (version,
-- updated_at, deleted, recovered, last_origin_id, last_revision_id, hlc) are
-- added by pulsesync.register_table.

CREATE TABLE public.teams (
  id uuid PRIMARY KEY,
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.users (
  id uuid PRIMARY KEY,
  email text,
  display_name text,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.team_members (
  id uuid PRIMARY KEY,
  team_id uuid NOT NULL REFERENCES public.teams (id) ON DELETE CASCADE,
  user_id uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
  role text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member')),
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (team_id, user_id)
);

CREATE TABLE public.projects (
  id uuid PRIMARY KEY,
  team_id uuid NOT NULL REFERENCES public.teams (id) ON DELETE CASCADE,
  name text NOT NULL,
  description text,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.tasks (
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

CREATE INDEX team_members_user_idx ON public.team_members (user_id);
CREATE INDEX projects_team_idx ON public.projects (team_id);
CREATE INDEX tasks_team_idx ON public.tasks (team_id);
CREATE INDEX tasks_project_idx ON public.tasks (project_id);

SELECT pulsesync.register_table('public.teams', 'team', 'id');
SELECT pulsesync.register_table('public.users', 'user', NULL);
SELECT pulsesync.register_table('public.team_members', 'team_member', 'team_id');
SELECT pulsesync.register_table('public.projects', 'project', 'team_id');
SELECT pulsesync.register_table('public.tasks', 'task', 'team_id');
