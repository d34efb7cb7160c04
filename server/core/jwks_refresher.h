// JwksRefresher: the JWKS document of an auth server (e.g. Supabase's
// https://<ref>.supabase.co/auth/v1/.well-known/jwks.json), fetched over
// HTTP(S) with libcurl and re-read periodically into a JwtVerifier.
//
// Invariants:
//  1. The verifier always holds the last key set that fetched and loaded
//     without error: a failed fetch (network, HTTP status, size, a document
//     SetJwks refuses) changes nothing and is logged; the next attempt is
//     min_refetch_interval later (then every refresh_interval again once one
//     succeeds).
//  2. https is verified: the server's certificate must chain to ca_file (or
//     the system's roots) and name the URL's host. http is accepted only for
//     a loopback host (a sidecar, a test), since whoever can change the
//     document in transit can mint tokens.
//  3. A token naming an unknown kid (JwtVerifierOptions::on_unknown_kid)
//     asks for an early fetch; the thread fetches at most once per
//     min_refetch_interval however many ask, so unauthenticated callers
//     cannot make the server hammer the auth server. The token that asked is
//     refused; calls after the fetch see the new keys.
//  4. Nothing blocks a verifying thread: fetching happens on the refresher's
//     own thread, and the verifier swaps key sets atomically.
//
// Thread safety: thread-safe. The destructor stops the thread, aborting a
// fetch in progress.
#ifndef PULSESYNC_SERVER_CORE_JWKS_REFRESHER_H_
#define PULSESYNC_SERVER_CORE_JWKS_REFRESHER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/jwt.h"

namespace pulsesync {

struct HttpFetchOptions {
  std::string ca_file;  // PEM roots for https; "" = the system's
  absl::Duration timeout = absl::Seconds(10);
  size_t max_bytes = 1 << 20;  // a larger body is an error
};

// GETs `url` (http or https only; no redirects to other schemes, at most
// 3). Returns the body of a 200 response. kUnavailable for network and TLS
// failures (including a certificate that does not verify) and HTTP statuses
// other than 200, kResourceExhausted for a body over max_bytes,
// kInvalidArgument for a URL that is not http(s). `cancelled`, when given,
// is polled during the transfer; the fetch ends with kCancelled once it
// returns true.
absl::StatusOr<std::string> HttpGet(const std::string& url, const HttpFetchOptions& options,
                                    const std::function<bool()>& cancelled = nullptr);

struct JwksRefresherOptions {
  std::string url;  // https://..., or http:// to a loopback host
  HttpFetchOptions fetch;
  absl::Duration refresh_interval = absl::Minutes(10);
  // Least time between two fetches asked for by unknown kids, and between a
  // failed fetch and the next attempt.
  absl::Duration min_refetch_interval = absl::Seconds(30);
};

class JwksRefresher {
 public:
  // Checks the URL (kInvalidArgument: not http(s), or http to a host that
  // is not loopback), fetches the document once and creates the verifier
  // with it (`verifier_options.jwks_json` is ignored; on_unknown_kid is set
  // here). A first fetch that fails is logged and retried; until one
  // succeeds only HS256 tokens verify. Errors from JwtVerifier::Create (a
  // bad secret) are returned.
  static absl::StatusOr<std::unique_ptr<JwksRefresher>> Start(
      JwksRefresherOptions options, JwtVerifierOptions verifier_options);
  ~JwksRefresher();
  JwksRefresher(const JwksRefresher&) = delete;
  JwksRefresher& operator=(const JwksRefresher&) = delete;

  // The verifier whose keys this refresher keeps current.
  std::shared_ptr<const JwtVerifier> verifier() const { return verifier_; }

 private:
  struct State;
  JwksRefresher(JwksRefresherOptions options, std::shared_ptr<State> state);
  // The thread: fetches when due until stopped. `last_ok`: the first fetch
  // (in Start) succeeded.
  void Run(bool last_ok);
  // One fetch and load; true when the verifier now has the fetched set.
  bool FetchOnce();

  const JwksRefresherOptions options_;
  const std::shared_ptr<State> state_;  // shared with the on_unknown_kid hook
  std::shared_ptr<JwtVerifier> verifier_;
  std::string last_body_;  // the document loaded last; FetchOnce only (one thread at a time)
  std::thread thread_;
};

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_CORE_JWKS_REFRESHER_H_
