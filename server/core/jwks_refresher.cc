#include "server/core/jwks_refresher.h"

#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/log.h"
#include "common/net_address.h"
#include "common/status_macros.h"

namespace pulsesync {
namespace {

void GlobalInitCurl() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct CurlUrlDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};
struct CurlStringDeleter {
  void operator()(char* s) const { curl_free(s); }
};

struct Transfer {
  std::string body;
  size_t max_bytes = 0;
  bool too_large = false;
  const std::function<bool()>* cancelled = nullptr;
};

size_t OnWrite(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  if (t->body.size() + n > t->max_bytes) {
    t->too_large = true;
    return 0;  // aborts the transfer
  }
  t->body.append(data, n);
  return n;
}

int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  return t->cancelled != nullptr && *t->cancelled && (*t->cancelled)() ? 1 : 0;
}

// kInvalidArgument unless `url` is https, or http to a loopback host.
absl::Status CheckJwksUrl(const std::string& url) {
  GlobalInitCurl();
  std::unique_ptr<CURLU, CurlUrlDeleter> parsed(curl_url());
  if (parsed == nullptr) return absl::ResourceExhaustedError("curl_url failed");
  if (curl_url_set(parsed.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) {
    return absl::InvalidArgumentError(absl::StrCat("--jwks_url \"", url, "\" is not a URL"));
  }
  char* scheme_raw = nullptr;
  char* host_raw = nullptr;
  curl_url_get(parsed.get(), CURLUPART_SCHEME, &scheme_raw, 0);
  curl_url_get(parsed.get(), CURLUPART_HOST, &host_raw, 0);
  std::unique_ptr<char, CurlStringDeleter> scheme(scheme_raw), host(host_raw);
  const std::string s = scheme != nullptr ? scheme.get() : "";
  const std::string h = host != nullptr ? host.get() : "";
  if (s == "https") return absl::OkStatus();
  if (s == "http") {
    if (IsLoopbackAddress(h)) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        "--jwks_url ", url, ": http is accepted only for a loopback host (whoever can change "
        "the key set in transit can mint tokens); use https"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--jwks_url ", url, ": want an https:// (or loopback http://) URL"));
}

}  // namespace

absl::StatusOr<std::string> HttpGet(const std::string& url, const HttpFetchOptions& options,
                                    const std::function<bool()>& cancelled) {
  GlobalInitCurl();
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (curl == nullptr) return absl::ResourceExhaustedError("curl_easy_init failed");
  Transfer transfer;
  transfer.max_bytes = options.max_bytes;
  transfer.cancelled = &cancelled;
  char error[CURL_ERROR_SIZE] = {0};
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  // Redirects only to https: never from TLS down to plaintext.
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 3L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!options.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, options.ca_file.c_str());
  const long timeout_ms = static_cast<long>(absl::ToInt64Milliseconds(options.timeout));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, std::min(timeout_ms, 5000L));
  curl_easy_setopt(c, CURLOPT_USERAGENT, "pulsesyncd");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnWrite);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, OnProgress);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, &transfer);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  const CURLcode rc = curl_easy_perform(c);
  if (transfer.too_large) {
    return absl::ResourceExhaustedError(
        absl::StrCat("GET ", url, ": the body is larger than ", options.max_bytes, " bytes"));
  }
  if (rc == CURLE_ABORTED_BY_CALLBACK) return absl::CancelledError(absl::StrCat("GET ", url));
  if (rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT) {
    return absl::InvalidArgumentError(absl::StrCat("GET ", url, ": ", curl_easy_strerror(rc)));
  }
  if (rc != CURLE_OK) {
    return absl::UnavailableError(
        absl::StrCat("GET ", url, ": ", error[0] != '\0' ? error : curl_easy_strerror(rc)));
  }
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) return absl::UnavailableError(absl::StrCat("GET ", url, ": HTTP ", status));
  return std::move(transfer.body);
}

struct JwksRefresher::State {
  absl::Mutex mu;
  absl::CondVar cv;
  bool stop ABSL_GUARDED_BY(mu) = false;
  bool refetch_requested ABSL_GUARDED_BY(mu) = false;
  std::string requested_kid ABSL_GUARDED_BY(mu);  // the first since the last fetch
  std::atomic<bool> stopping{false};  // polled by a fetch in progress

  void RequestRefetch(absl::string_view kid) {
    absl::MutexLock lock(&mu);
    if (refetch_requested) return;
    refetch_requested = true;
    requested_kid = std::string(kid.substr(0, 100));
    cv.Signal();
  }
};

absl::StatusOr<std::unique_ptr<JwksRefresher>> JwksRefresher::Start(
    JwksRefresherOptions options, JwtVerifierOptions verifier_options) {
  PS_RETURN_IF_ERROR(CheckJwksUrl(options.url));
  auto state = std::make_shared<State>();
  verifier_options.jwks_json.clear();
  verifier_options.on_unknown_kid = [state](absl::string_view kid) {
    state->RequestRefetch(kid);
  };
  PS_ASSIGN_OR_RETURN(std::unique_ptr<JwtVerifier> verifier,
                      JwtVerifier::Create(std::move(verifier_options)));
  std::unique_ptr<JwksRefresher> refresher(new JwksRefresher(std::move(options), state));
  refresher->verifier_ = std::shared_ptr<JwtVerifier>(std::move(verifier));
  const bool loaded = refresher->FetchOnce();  // a failure is logged; Run retries it
  JwksRefresher* r = refresher.get();
  refresher->thread_ = std::thread([r, loaded] { r->Run(loaded); });
  return refresher;
}

JwksRefresher::JwksRefresher(JwksRefresherOptions options, std::shared_ptr<State> state)
    : options_(std::move(options)), state_(std::move(state)) {}

JwksRefresher::~JwksRefresher() {
  state_->stopping.store(true);
  {
    absl::MutexLock lock(&state_->mu);
    state_->stop = true;
    state_->cv.Signal();
  }
  if (thread_.joinable()) thread_.join();
}

bool JwksRefresher::FetchOnce() {
  absl::StatusOr<std::string> body =
      HttpGet(options_.url, options_.fetch, [state = state_] { return state->stopping.load(); });
  if (!body.ok()) {
    if (body.status().code() != absl::StatusCode::kCancelled) {
      LogWarning("JWKS fetch failed; keeping the last key set",
                 {{"url", options_.url},
                  {"status", body.status()},
                  {"jwks_keys", static_cast<int64_t>(verifier_->jwks_key_count())}});
    }
    return false;
  }
  if (absl::Status s = verifier_->SetJwks(*body); !s.ok()) {
    LogWarning("JWKS document refused; keeping the last key set",
               {{"url", options_.url},
                {"status", s},
                {"jwks_keys", static_cast<int64_t>(verifier_->jwks_key_count())}});
    return false;
  }
  const bool changed = *body != last_body_;
  Log(changed ? LogLevel::kInfo : LogLevel::kDebug, changed ? "JWKS loaded" : "JWKS unchanged",
      {{"url", options_.url}, {"jwks_keys", static_cast<int64_t>(verifier_->jwks_key_count())}});
  last_body_ = *std::move(body);
  return true;
}

void JwksRefresher::Run(bool last_ok) {
  State& st = *state_;
  absl::Time last_fetch = absl::Now();
  const absl::Duration retry = std::min(options_.refresh_interval, options_.min_refetch_interval);
  absl::Time next = last_fetch + (last_ok ? options_.refresh_interval : retry);
  while (true) {
    std::string kid;
    {
      absl::MutexLock lock(&st.mu);
      while (!st.stop) {
        const absl::Time now = absl::Now();
        const absl::Time early = last_fetch + options_.min_refetch_interval;
        if (now >= next || (st.refetch_requested && now >= early)) break;
        const absl::Time deadline = st.refetch_requested ? std::min(next, early) : next;
        st.cv.WaitWithDeadline(&st.mu, deadline);
      }
      if (st.stop) return;
      if (st.refetch_requested && absl::Now() < next) kid = st.requested_kid;
      st.refetch_requested = false;
      st.requested_kid.clear();
    }
    if (!kid.empty()) {
      LogInfo("fetching the JWKS early: a token named a key id it does not have",
              {{"url", options_.url}, {"kid", kid}});
    }
    last_ok = FetchOnce();
    last_fetch = absl::Now();
    next = last_fetch + (last_ok ? options_.refresh_interval : retry);
  }
}

}  // namespace pulsesync
