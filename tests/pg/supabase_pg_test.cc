// Beside Supabase: a database prepared the way Supabase's init scripts
// prepare one (the API roles, authenticator, supabase_auth_admin owning the
// `auth` schema and its functions, default privileges in public), with the
// project's own TeamPulse tables, data and Row Level Security policies and an
// unrelated table of its own. Our migrations run on it as the project's
// non-superuser owner (like Supabase's `postgres`) and leave Supabase's
// objects and the project's policies exactly as they were; then gRPC writes
// are readable by plain SQL under the project's policies, and SQL writes (as
// PostgREST makes them) reach gRPC streams.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/json.h"
#include "common/jwt.h"
#include "common/uuid.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "pulsesync/v1/sync.grpc.pb.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::ServerProcess;
using ::pulsesync::testing::TestDatabase;

constexpr char kSecret[] = "super-secret-jwt-token-with-at-least-32-characters-long";
constexpr char kOwner[] = "supabase_like_postgres";  // the project's owner, not a superuser
constexpr char kTeamA[] = "a0000000-0000-4000-8000-00000000000a";
constexpr char kTeamB[] = "b0000000-0000-4000-8000-00000000000b";
constexpr char kUser1[] = "11111111-1111-4111-8111-111111111111";
constexpr char kUser2[] = "22222222-2222-4222-8222-222222222222";
constexpr char kOldTask[] = "a1000000-0000-4000-8000-000000000001";

// Cluster-wide, so created only where missing (other tests share the cluster).
constexpr char kRoles[] = R"sql(
DO $$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT * FROM (VALUES
      ('anon', 'NOLOGIN NOINHERIT'),
      ('authenticated', 'NOLOGIN NOINHERIT'),
      ('service_role', 'NOLOGIN NOINHERIT BYPASSRLS'),
      ('authenticator', 'LOGIN NOINHERIT'),
      ('supabase_admin', 'LOGIN CREATEROLE CREATEDB REPLICATION BYPASSRLS'),
      ('supabase_auth_admin', 'LOGIN NOINHERIT CREATEROLE'),
      ('supabase_like_postgres', 'LOGIN CREATEROLE CREATEDB NOSUPERUSER')) v(name, options)
  LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r.name) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I %s', r.name, r.options);
      EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
      END;
    END IF;
  END LOOP;
END
$$;
GRANT anon, authenticated, service_role TO authenticator;
GRANT anon, authenticated, service_role TO supabase_like_postgres;
)sql";

// What Supabase's init scripts and GoTrue's migrations leave in a database.
constexpr char kSupabaseInit[] = R"sql(
CREATE SCHEMA auth AUTHORIZATION supabase_auth_admin;
CREATE TABLE auth.users (
  instance_id uuid, id uuid PRIMARY KEY, aud varchar(255), role varchar(255),
  email varchar(255) UNIQUE, encrypted_password varchar(255), raw_app_meta_data jsonb,
  raw_user_meta_data jsonb, created_at timestamptz, updated_at timestamptz);
ALTER TABLE auth.users OWNER TO supabase_auth_admin;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid
$$;
CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim.role', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'))::text
$$;
CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim', true), ''),
                  nullif(current_setting('request.jwt.claims', true), ''))::jsonb
$$;
CREATE FUNCTION auth.email() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim.email', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email'))::text
$$;
ALTER FUNCTION auth.uid() OWNER TO supabase_auth_admin;
ALTER FUNCTION auth.role() OWNER TO supabase_auth_admin;
ALTER FUNCTION auth.jwt() OWNER TO supabase_auth_admin;
ALTER FUNCTION auth.email() OWNER TO supabase_auth_admin;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_like_postgres IN SCHEMA public
  GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_like_postgres IN SCHEMA public
  GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
)sql";

// The project's own schema, made by its owner through the dashboard or SQL
// editor: TeamPulse's tables (synced through Supabase before), its policies,
// its data, and a table that has nothing to do with sync.
constexpr char kProject[] = R"sql(
CREATE TABLE public.teams (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL,
                           created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE public.users (id uuid PRIMARY KEY, email text, display_name text,
                           created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE public.team_members (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  team_id uuid NOT NULL REFERENCES public.teams (id) ON DELETE CASCADE,
  user_id uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
  role text NOT NULL DEFAULT 'member', created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (team_id, user_id));
CREATE TABLE public.tasks (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  team_id uuid NOT NULL REFERENCES public.teams (id) ON DELETE CASCADE,
  project_id uuid, title text NOT NULL, description text,
  status text NOT NULL DEFAULT 'todo', priority integer NOT NULL DEFAULT 0,
  assignee_id uuid, due_at timestamptz, created_at timestamptz NOT NULL DEFAULT now());
CREATE FUNCTION public.is_member(t uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT EXISTS (SELECT 1 FROM public.team_members WHERE team_id = t AND user_id = auth.uid())
$$;
ALTER TABLE public.teams ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.team_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.tasks ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Members read their teams" ON public.teams FOR SELECT TO authenticated
  USING (public.is_member(id));
CREATE POLICY "Users see themselves" ON public.users FOR SELECT TO authenticated
  USING (id = auth.uid());
CREATE POLICY "Members see their teams' members" ON public.team_members FOR SELECT
  TO authenticated USING (public.is_member(team_id));
CREATE POLICY "Members read tasks" ON public.tasks FOR SELECT TO authenticated
  USING (public.is_member(team_id));
CREATE POLICY "Members add tasks" ON public.tasks FOR INSERT TO authenticated
  WITH CHECK (public.is_member(team_id));
CREATE POLICY "Members edit tasks" ON public.tasks FOR UPDATE TO authenticated
  USING (public.is_member(team_id)) WITH CHECK (public.is_member(team_id));

CREATE TABLE public.profiles (id uuid PRIMARY KEY, username text UNIQUE, avatar_url text);
ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Public profiles are viewable by everyone." ON public.profiles
  FOR SELECT USING (true);
CREATE POLICY "Users can update own profile." ON public.profiles
  FOR UPDATE USING (auth.uid() = id);

INSERT INTO public.teams (id, name) VALUES
  ('a0000000-0000-4000-8000-00000000000a', 'A'), ('b0000000-0000-4000-8000-00000000000b', 'B');
INSERT INTO public.users (id, email) VALUES
  ('11111111-1111-4111-8111-111111111111', 'one@example.com'),
  ('22222222-2222-4222-8222-222222222222', 'two@example.com');
INSERT INTO public.team_members (team_id, user_id) VALUES
  ('a0000000-0000-4000-8000-00000000000a', '11111111-1111-4111-8111-111111111111'),
  ('b0000000-0000-4000-8000-00000000000b', '22222222-2222-4222-8222-222222222222');
INSERT INTO public.tasks (id, team_id, title) VALUES
  ('a1000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-00000000000a', 'from before');
INSERT INTO public.profiles (id, username) VALUES ('11111111-1111-4111-8111-111111111111', 'one');
)sql";

// Everything of Supabase's and of the project's that we must not touch, as
// one text: auth's functions (definition and owner), schema owner and
// grants, auth.users' columns, the policies of the project's tables, RLS flags, the
// project's function, and the unrelated table's columns and triggers.
constexpr char kFingerprint[] = R"sql(
SELECT concat_ws(E'\n',
  (SELECT string_agg(p.oid::regprocedure::text || ' owner=' || pg_get_userbyid(p.proowner) ||
                     ' def=' || md5(pg_get_functiondef(p.oid)), E'\n' ORDER BY 1)
   FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname = 'auth' OR p.oid = 'public.is_member(uuid)'::regprocedure),
  (SELECT 'auth schema owner=' || pg_get_userbyid(nspowner) || ' acl=' || nspacl::text
   FROM pg_namespace WHERE nspname = 'auth'),
  (SELECT string_agg(attname || ':' || format_type(atttypid, atttypmod), ',' ORDER BY attnum)
   FROM pg_attribute WHERE attrelid = 'auth.users'::regclass AND attnum > 0),
  (SELECT string_agg(tablename || '/' || policyname || '/' || cmd || '/' || roles::text || '/' ||
                     coalesce(qual, '') || '/' || coalesce(with_check, ''), E'\n'
                     ORDER BY tablename, policyname)
   FROM pg_policies WHERE schemaname = 'public'
     AND tablename IN ('teams', 'users', 'team_members', 'tasks', 'profiles')),
  (SELECT string_agg(relname || ' rls=' || relrowsecurity, ',' ORDER BY relname)
   FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'
     AND relname IN ('teams', 'users', 'team_members', 'tasks', 'profiles')),
  (SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute
   WHERE attrelid = 'public.profiles'::regclass AND attnum > 0 AND NOT attisdropped),
  (SELECT 'profiles triggers=' || count(*) FROM pg_trigger
   WHERE tgrelid = 'public.profiles'::regclass AND NOT tgisinternal))
)sql";

std::string Token(const std::string& sub, const std::string& role) {
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  std::string claims = absl::StrCat(R"({"aud":"authenticated","role":")", role, R"(","iat":)",
                                    now, R"(,"exp":)", now + 3600);
  if (!sub.empty()) absl::StrAppend(&claims, R"(,"sub":")", sub, "\"");
  return SignHs256ForTest(claims + "}", kSecret);
}

// SQL as PostgREST runs it for a request with this user's JWT.
std::string AsUser(const std::string& user, const std::string& sql) {
  return absl::StrCat("BEGIN; SET LOCAL ROLE authenticated; SET LOCAL request.jwt.claims = '",
                      R"({"sub":")", user, R"(","role":"authenticated"})", "'; ", sql, "; COMMIT;");
}

class SupabasePgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create(/*migrated=*/false));
    ASSERT_OK(db_->Execute(kRoles));
    ASSERT_OK(db_->Execute(absl::StrCat("ALTER DATABASE \"", db_->name(), "\" OWNER TO ", kOwner)));
    ASSERT_OK(db_->Execute(kSupabaseInit));
    owner_url_ = absl::StrCat(db_->url(), db_->url().find('?') == std::string::npos ? "?" : "&",
                              "user=", kOwner);
    ASSERT_OK(OwnerExecute(kProject));
  }

  absl::Status OwnerExecute(const std::string& sql) {
    absl::StatusOr<testing::CommandResult> r =
        testing::RunCommand({"psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", owner_url_, "-c", sql});
    if (!r.ok()) return r.status();
    if (r->exit_code != 0) return absl::InternalError(r->errors);
    return absl::OkStatus();
  }

  // Runs as the project's owner (through psql: the one way a test here has
  // to log in as another role); the first column of the result.
  std::string OwnerQuery(const std::string& sql) {
    absl::StatusOr<testing::CommandResult> r = testing::RunCommand(
        {"psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", owner_url_, "-c", sql});
    EXPECT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->errors : r.status().ToString());
    if (!r.ok()) return "";
    std::string out = r->output;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }

  void Migrate() {
    ASSERT_OK_AND_ASSIGN(
        testing::CommandResult migrate,
        testing::RunCommand({testing::PulsesyncdPath(), "migrate", "--database_url=" + owner_url_}));
    ASSERT_EQ(migrate.exit_code, 0) << migrate.errors;
  }

  std::unique_ptr<TestDatabase> db_;
  std::string owner_url_;
};

TEST_F(SupabasePgTest, MigrationsLeaveSupabaseAndTheProjectsObjectsAsTheyWere) {
  const std::string before = *db_->QueryValue(kFingerprint);
  ASSERT_NE(before.find("auth.uid() owner=supabase_auth_admin"), std::string::npos) << before;
  Migrate();
  EXPECT_EQ(*db_->QueryValue(kFingerprint), before);
  // Running them again changes nothing either.
  Migrate();
  EXPECT_EQ(*db_->QueryValue(kFingerprint), before);

  // The existing tables are registered for sync with their rows; the
  // unrelated table is not; the new projects table gets the default policies.
  EXPECT_EQ(*db_->QueryValue("SELECT string_agg(object_type, ',' ORDER BY object_type) "
                             "FROM pulsesync.synced_tables"),
            "conflict,project,task,team,team_member,user");
  EXPECT_EQ(*db_->QueryValue(absl::StrCat("SELECT title FROM tasks WHERE id = '", kOldTask, "'")),
            "from before");
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.tasks'::regclass "
                             "AND tgname IN ('pulsesync_stamp', 'pulsesync_capture_insert', "
                             "'pulsesync_capture_update', 'pulsesync_capture_delete')"),
            "4");
  EXPECT_EQ(*db_->QueryValue("SELECT string_agg(policyname, ',' ORDER BY policyname) FROM pg_policies "
                             "WHERE tablename = 'projects'"),
            "projects_of_my_teams");
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM pg_attribute WHERE attrelid = "
                             "'public.teams'::regclass AND attname = 'created_by'"),
            "0");
  // The owner is no superuser: it ran the migrations with a Supabase
  // project owner's privileges.
  EXPECT_EQ(*db_->QueryValue(absl::StrCat("SELECT rolsuper FROM pg_roles WHERE rolname = '",
                                          kOwner, "'")),
            "f");
}

TEST_F(SupabasePgTest, GrpcAndSqlWritesMeetUnderTheProjectsPolicies) {
  Migrate();
  ServerProcess server(owner_url_, testing::MakeTempDir("supabase") + "/pulsesyncd.log",
                       {absl::StrCat("--jwt_secret=", kSecret), "--feed_poll_ms=100"});
  ASSERT_OK(server.Start());
  auto stub = v1::SyncService::NewStub(
      grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
  const std::string user1 = Token(kUser1, "authenticated");

  // User 1 follows the feed.
  grpc::ClientContext stream_ctx;
  stream_ctx.AddMetadata("authorization", "Bearer " + user1);
  v1::StreamChangesRequest stream_req;
  stream_req.set_from_now(true);
  auto reader = stub->StreamChanges(&stream_ctx, stream_req);
  v1::StreamChangesResponse msg;
  ASSERT_TRUE(reader->Read(&msg));  // live

  // gRPC writes as user 1: a new task in their team, an edit of the task
  // that was there before, and a task in a team they are not in (refused by
  // the project's own INSERT policy).
  const std::string created = NewUuid(), intruder = NewUuid();
  v1::ApplyRevisionsRequest req;
  int seq = 0;
  auto add = [&](const std::string& id, const std::string& payload) {
    v1::Revision* r = req.add_revisions();
    r->set_id(NewUuid());
    r->set_object_type("task");
    r->set_object_id(id);
    r->set_origin_id("supabase-test");
    r->set_seq(++seq);
    r->set_op(v1::OPERATION_UPSERT);
    r->set_payload(payload);
    r->set_created_at(1700000000000 + seq);
    r->mutable_clock()->set_physical_ms(absl::ToUnixMillis(absl::Now()) + seq);
    r->set_schema_version(1);
  };
  add(created, absl::StrCat(R"({"team_id":")", kTeamA, R"(","title":"via gRPC"})"));
  add(kOldTask, R"({"status":"done"})");
  add(intruder, absl::StrCat(R"({"team_id":")", kTeamB, R"(","title":"not my team"})"));
  v1::ApplyRevisionsResponse resp;
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer " + user1);
  grpc::Status s = stub->ApplyRevisions(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(resp.results_size(), 3);
  EXPECT_EQ(resp.results(0).outcome(), v1::RevisionResult::OUTCOME_APPLIED);
  EXPECT_EQ(resp.results(1).outcome(), v1::RevisionResult::OUTCOME_APPLIED);
  EXPECT_EQ(resp.results(2).outcome(), v1::RevisionResult::OUTCOME_REJECTED);

  // Plain SQL under the project's policies, as PostgREST would read them.
  EXPECT_EQ(OwnerQuery(AsUser(kUser1, "SELECT string_agg(title || '=' || status, ',' ORDER BY "
                                      "title) FROM tasks")),
            "from before=done,via gRPC=todo");
  EXPECT_EQ(OwnerQuery(AsUser(kUser2, "SELECT count(*) FROM tasks")), "0");
  EXPECT_EQ(*db_->QueryValue(absl::StrCat("SELECT count(*) FROM tasks WHERE id = '", intruder, "'")),
            "0");

  // SQL writes, as PostgREST makes them for user 1 and for user 2 (in team
  // B): user 1's stream gets its team's changes (the gRPC ones first) and
  // never team B's.
  ASSERT_OK(OwnerExecute(AsUser(
      kUser2, absl::StrCat("INSERT INTO tasks (team_id, title) VALUES ('", kTeamB, "', 'B only')"))));
  ASSERT_OK(OwnerExecute(AsUser(
      kUser1, absl::StrCat("INSERT INTO tasks (team_id, title) VALUES ('", kTeamA,
                           "', 'via PostgREST')"))));
  std::vector<std::string> titles;
  while (titles.size() < 3 && reader->Read(&msg)) {
    for (const v1::Change& c : msg.changes()) {
      EXPECT_EQ(c.table(), "tasks");
      absl::StatusOr<JsonValue> record = ParseJson(c.new_record());
      ASSERT_TRUE(record.ok() && record->Find("title") != nullptr) << c.new_record();
      titles.push_back(record->Find("title")->text());
    }
  }
  EXPECT_EQ(titles, (std::vector<std::string>{"via gRPC", "from before", "via PostgREST"}));
  stream_ctx.TryCancel();
  while (reader->Read(&msg)) {
  }
  (void)reader->Finish();
}

}  // namespace
}  // namespace pulsesync
