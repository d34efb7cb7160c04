#include "server/service/sync_service.h"

#include <memory>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/brotli_codec.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/uuid.h"
#include "server/core/change_feed.h"
#include "server/core/database_info.h"
#include "server/core/feed_hub.h"
#include "server/core/task_stats.h"
#include "server/core/team_scope.h"
#include "server/service/call_interceptor.h"
#include "server/service/change_stream.h"
#include "server/service/metrics.h"
#include "server/service/snapshot_stream.h"
#include <pqxx/pqxx>
#include "server/storage/worker_pool.h"

namespace pulsesync {
namespace {

constexpr char kServerVersion[] = "0.1.0";
constexpr uint32_t kProtocolVersion = 1;

// Finishes `reactor` from a worker, or at once if the pool refuses the job.
// The worker logs with the call's request id. `after` (optional) runs on
// the same worker once the answer is on its way: work the caller need not
// wait for (it must not touch the call: it may be gone).
void RunOnWorker(WorkerPool* pool, grpc::CallbackServerContext* context,
                 grpc::ServerUnaryReactor* reactor, std::function<absl::Status(PgSession&)> work,
                 std::function<void(PgSession&)> after = nullptr) {
  const absl::Status queued =
      pool->Submit([reactor, work = std::move(work), after = std::move(after),
                    request_id = RequestIdOf(context)](PgSession& session) {
        LogRequestScope log_scope(request_id);
        reactor->Finish(ToGrpcStatus(work(session)));
        if (after) after(session);
      });
  if (!queued.ok()) reactor->Finish(ToGrpcStatus(queued));
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

MetadataLookup MetadataOf(const grpc::ServerContextBase* context) {
  return [context](absl::string_view key) -> std::optional<std::string> {
    const auto& metadata = context->client_metadata();
    auto it = metadata.find(grpc::string_ref(key.data(), key.size()));
    if (it == metadata.end()) return std::nullopt;
    return std::string(it->second.data(), it->second.size());
  };
}

absl::StatusOr<Principal> SyncServiceImpl::Authenticate(
    const grpc::CallbackServerContext* context) const {
  return auth_->Authenticate(MetadataOf(context));
}

SyncServiceImpl::SyncServiceImpl(WorkerPool* pool, FeedHub* hub, const Authenticator* auth,
                                 SyncServiceOptions options)
    : pool_(pool),
      hub_(hub),
      auth_(auth),
      options_(std::move(options)),
      snapshots_(std::make_unique<SnapshotLimiter>(options_.max_concurrent_snapshots)),
      limits_(std::make_unique<PrincipalLimits>(options_.principal_limits)) {}

absl::StatusOr<Principal> SyncServiceImpl::AuthenticateStream(
    const grpc::CallbackServerContext* context,
    std::unique_ptr<PrincipalLimits::StreamLease>* lease) {
  absl::StatusOr<Principal> principal = Authenticate(context);
  if (!principal.ok()) return principal;
  absl::StatusOr<std::unique_ptr<PrincipalLimits::StreamLease>> slot =
      limits_->AcquireStream(*principal);
  if (!slot.ok()) return slot.status();
  *lease = std::move(*slot);
  return principal;
}

SyncServiceImpl::~SyncServiceImpl() = default;

void SyncServiceImpl::CancelSnapshots() { snapshots_->CancelAll(); }

grpc::ServerWriteReactor<v1::SnapshotResponse>* SyncServiceImpl::Snapshot(
    grpc::CallbackServerContext* context, const v1::SnapshotRequest* request) {
  std::unique_ptr<PrincipalLimits::StreamLease> lease;
  absl::StatusOr<Principal> principal = AuthenticateStream(context, &lease);
  return new SnapshotReactor(request, pool_, snapshots_.get(), std::move(principal),
                             std::move(lease));
}

namespace {

// A stream refused before it began.
class RefusedStream final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  explicit RefusedStream(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerWriteReactor<grpc::ByteBuffer>* SyncServiceImpl::StreamChanges(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  // Parsed as the typed method's handler would, by gRPC's own deserializer,
  // which also releases the request's bytes now rather than when the stream
  // ends (their slices may hold a larger buffer the transport read them
  // into: 0.7 KiB per idle stream, feed_bench scenario 2). gRPC's handler
  // only destroys the emptied buffer afterwards.
  v1::StreamChangesRequest parsed;
  if (!grpc::SerializationTraits<v1::StreamChangesRequest>::Deserialize(
           const_cast<grpc::ByteBuffer*>(request), &parsed)
           .ok()) {
    return new RefusedStream(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                          "malformed StreamChangesRequest: not a valid "
                                          "serialized pulsesync.v1.StreamChangesRequest"));
  }
  std::unique_ptr<PrincipalLimits::StreamLease> lease;
  absl::StatusOr<Principal> principal = AuthenticateStream(context, &lease);
  return new ChangeStreamReactor(&parsed, pool_, hub_, std::move(principal), std::move(lease),
                                 ChangeStreamOptions());
}

grpc::ServerUnaryReactor* SyncServiceImpl::ApplyRevisions(
    grpc::CallbackServerContext* context, const v1::ApplyRevisionsRequest* request,
    v1::ApplyRevisionsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<Principal> principal = Authenticate(context);
  if (!principal.ok()) {
    reactor->Finish(ToGrpcStatus(principal.status()));
    return reactor;
  }
  absl::StatusOr<std::vector<v1::Revision>> revisions =
      DecodeRevisions(*request, options_.apply_limits);
  if (!revisions.ok()) {
    reactor->Finish(ToGrpcStatus(revisions.status()));
    return reactor;
  }
  const absl::Status charged =
      limits_->ChargeRevisions(*principal, static_cast<int64_t>(revisions->size()));
  if (!charged.ok()) {
    reactor->Finish(ToGrpcStatus(charged));
    return reactor;
  }
  TxIdentity identity{principal->role, principal->claims_json};
  // Set by the work when it applied something; read by `after` on the same
  // worker thread.
  auto applied_some = std::make_shared<bool>(false);
  RunOnWorker(pool_, context, reactor,
              [this, response, applied_some, identity = std::move(identity),
               revisions = std::move(*revisions)](PgSession& s) -> absl::Status {
                absl::StatusOr<std::vector<v1::RevisionResult>> results =
                    ApplyRevisionBatch(s, revisions, options_.apply_limits, identity);
                if (!results.ok()) {
                  LogWarning("apply failed",
                             {{"revisions", static_cast<int64_t>(revisions.size())},
                              {"status", results.status()}});
                  if (results.status().code() == absl::StatusCode::kUnknown) {
                    // The commit may or may not have happened; a retry is
                    // safe because revisions are idempotent.
                    return absl::UnavailableError(results.status().message());
                  }
                  return results.status();
                }
                int64_t applied = 0, duplicate = 0, rejected = 0;
                for (v1::RevisionResult& r : *results) {
                  switch (r.outcome()) {
                    case v1::RevisionResult::OUTCOME_APPLIED: ++applied; break;
                    case v1::RevisionResult::OUTCOME_DUPLICATE: ++duplicate; break;
                    default: ++rejected; break;
                  }
                  *response->add_results() = std::move(r);
                }
                if (options_.metrics != nullptr) {
                  options_.metrics->RevisionsApplied(applied, duplicate, rejected);
                }
                LogDebug("applied batch", {{"applied", applied},
                                           {"duplicate", duplicate},
                                           {"rejected", rejected}});
                if (applied > 0) {
                  hub_->Wake();
                  *applied_some = true;
                }
                return absl::OkStatus();
              },
              [this, applied_some](PgSession& s) {
                if (!*applied_some || !options_.notify_after_apply) return;
                // The other replicas' feeds. After the answer, so the
                // client's next batch need not wait for it; outside the data
                // transaction, so writers never queue on NOTIFY's commit
                // lock. A lost one only delays (replicas also poll).
                absl::Status notified =
                    s.RunTransaction(TxMode::kReadWrite, [&](pqxx::transaction_base& tx) {
                      tx.exec(absl::StrCat("NOTIFY ", options_.notify_channel));
                      return absl::OkStatus();
                    });
                if (!notified.ok()) LogDebug("notify failed", {{"status", notified}});
              });
  return reactor;
}

grpc::ServerUnaryReactor* SyncServiceImpl::PullChanges(grpc::CallbackServerContext* context,
                                                       const v1::PullChangesRequest* request,
                                                       v1::PullChangesResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<Principal> principal = Authenticate(context);
  if (!principal.ok()) {
    reactor->Finish(ToGrpcStatus(principal.status()));
    return reactor;
  }
  uint32_t limit = request->limit() == 0 ? options_.default_pull_limit : request->limit();
  if (limit > options_.max_pull_limit) limit = options_.max_pull_limit;
  const bool brotli = request->accept_encoding() == v1::PAYLOAD_ENCODING_BROTLI;
  RunOnWorker(pool_, context, reactor,
              [request, response, limit, brotli,
               principal = std::move(*principal)](PgSession& s) -> absl::Status {
                absl::StatusOr<TeamScope> scope = TeamScope::For(s, principal);
                if (!scope.ok()) return scope.status();
                absl::StatusOr<PullPage> page = ReadChanges(s, request->cursor(), limit);
                if (!page.ok()) return page.status();
                if (scope->restricted()) {
                  // The same rule as the stream's, in the same order: the
                  // cursor moves past what the caller may not see.
                  std::shared_ptr<FeedBatch> batch =
                      MakeFeedBatch(std::move(page->changes), page->next_cursor);
                  page->changes.clear();
                  for (FeedEvent& e : batch->events) {
                    if (scope->Admit(e)) page->changes.push_back(std::move(e.change));
                  }
                }
                response->set_next_cursor(std::move(page->next_cursor));
                response->set_has_more(page->has_more);
                if (brotli && !page->changes.empty()) {
                  v1::ChangeBatch batch;
                  for (v1::Change& c : page->changes) *batch.add_changes() = std::move(c);
                  response->set_encoding(v1::PAYLOAD_ENCODING_BROTLI);
                  response->set_compressed_changes(BrotliCompress(batch.SerializeAsString()));
                } else {
                  for (v1::Change& c : page->changes) *response->add_changes() = std::move(c);
                }
                return absl::OkStatus();
              });
  return reactor;
}

grpc::ServerUnaryReactor* SyncServiceImpl::GetServerInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetServerInfoRequest* request,
                                                         v1::GetServerInfoResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  RunOnWorker(pool_, context, reactor, [this, response](PgSession& s) -> absl::Status {
    absl::StatusOr<DatabaseInfo> info = DescribeDatabase(s);
    if (!info.ok()) return info.status();
    response->set_server_version(kServerVersion);
    response->set_protocol_version(kProtocolVersion);
    response->set_schema_migration(info->latest_migration);
    response->set_database_id(absl::StrCat(info->system_id));
    response->set_max_batch_revisions(options_.apply_limits.max_batch_revisions);
    response->set_max_pull_limit(options_.max_pull_limit);
    for (const std::string& t : info->object_types) response->add_object_types(t);
    response->set_schema_version(info->schema_version);
    return absl::OkStatus();
  });
  return reactor;
}

grpc::ServerUnaryReactor* SyncServiceImpl::GetStats(grpc::CallbackServerContext* context,
                                                    const v1::GetStatsRequest* request,
                                                    v1::GetStatsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<Principal> principal = Authenticate(context);
  if (!principal.ok()) {
    reactor->Finish(ToGrpcStatus(principal.status()));
    return reactor;
  }
  if (options_.task_stats == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "GetStats is not enabled"));
    return reactor;
  }
  if (!IsUuid(request->project_id())) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 absl::StrCat("project_id \"", request->project_id(),
                                              "\" is not a UUID")));
    return reactor;
  }
  TaskStats* stats = options_.task_stats;
  RunOnWorker(pool_, context, reactor,
              [request, response, stats,
               principal = std::move(*principal)](PgSession& s) -> absl::Status {
                const std::string project = absl::AsciiStrToLower(request->project_id());
                // Whether the caller may see the project: its Row Level
                // Security, one primary-key lookup.
                bool visible = false;
                PS_RETURN_IF_ERROR(s.RunTransaction(
                    TxMode::kReadWrite, TxIdentity{principal.role, principal.claims_json},
                    [&](pqxx::transaction_base& tx) -> absl::Status {
                      visible = !tx.exec_params("SELECT 1 FROM public.projects WHERE id = $1",
                                                project)
                                     .empty();
                      return absl::OkStatus();
                    }));
                if (!visible) {
                  return absl::NotFoundError(absl::StrCat("project ", project, " not found"));
                }
                // Current to every write committed before this call.
                PS_RETURN_IF_ERROR(stats->CatchUp(s).status());
                response->set_project_id(project);
                response->set_cursor(stats->cursor());
                if (std::optional<ProjectTaskStats> p = stats->Get(project); p.has_value()) {
                  response->set_total(p->total);
                  for (const auto& [k, n] : p->by_status) (*response->mutable_by_status())[k] = n;
                  for (const auto& [k, n] : p->by_assignee) {
                    (*response->mutable_by_assignee())[k] = n;
                  }
                  for (const auto& [k, n] : p->archived) (*response->mutable_by_archived())[k] = n;
                }
                return absl::OkStatus();
              });
  return reactor;
}

}  // namespace pulsesync
