#include "tests/testing/pg_cluster.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "tests/testing/subprocess.h"

namespace pulsesync::testing {
namespace {

std::string LibPath() { return SourceDir() + "/scripts/lib.sh"; }

}  // namespace

absl::StatusOr<std::unique_ptr<PgCluster>> PgCluster::Create(bool durable) {
  absl::StatusOr<CommandResult> port_result = RunCommand(
      {"/bin/bash", "-c", "source \"$0\" && ps_free_port", LibPath()}, {}, absl::Seconds(30));
  if (!port_result.ok()) return port_result.status();
  int port = 0;
  if (port_result->exit_code != 0 ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(port_result->output), &port)) {
    return absl::InternalError(absl::StrCat("ps_free_port failed: ", port_result->errors));
  }
  std::unique_ptr<PgCluster> cluster(new PgCluster(MakeTempDir("pgcluster") + "/pgdata", port));
  absl::Status st =
      cluster->RunLibScript(durable ? "ps_pg_init \"$D\"" : "ps_pg_init \"$D\" throwaway");
  if (!st.ok()) return st;
  st = cluster->Start();
  if (!st.ok()) return st;
  return cluster;
}

PgCluster::~PgCluster() {
  (void)Stop(/*immediate=*/true);
  (void)RunCommand({"/bin/rm", "-rf", dir_}, {}, absl::Seconds(60));
}

absl::Status PgCluster::RunLibScript(const std::string& script) const {
  absl::StatusOr<CommandResult> r =
      RunCommand({"/bin/bash", "-c", absl::StrCat("source \"$0\" && ", script), LibPath()},
                 {"D=" + dir_, absl::StrCat("P=", port_)}, absl::Seconds(120));
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(
        absl::StrCat("`", script, "` exited with ", r->exit_code, ": ", r->errors));
  }
  return absl::OkStatus();
}

absl::Status PgCluster::Start() {
  absl::Status st = RunLibScript("ps_pg_start \"$D\" \"$P\"");
  if (st.ok()) running_ = true;
  return st;
}

absl::Status PgCluster::Stop(bool immediate) {
  if (!running_) return absl::OkStatus();
  running_ = false;
  return RunLibScript(absl::StrCat("ps_pg_as_owner \"$PULSESYNC_PG_BIN/pg_ctl\" -D \"$D\" -m ",
                                   immediate ? "immediate" : "fast", " -w -t 60 stop >/dev/null"));
}

std::string PgCluster::url(const std::string& dbname) const {
  return absl::StrCat("postgresql://postgres@127.0.0.1:", port_, "/", dbname);
}

}  // namespace pulsesync::testing
