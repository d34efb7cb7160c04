// JwtAuthenticator: Supabase-compatible authentication. Every call carries
// "authorization: Bearer <JWT>" (Supabase Auth's access token, or the
// project's anon / service_role key); the verified claims become the
// request's Principal: role from the `role` claim (anon, authenticated or
// service_role), user from `sub`, claims as request.jwt.claims.
#ifndef PULSESYNC_SERVER_CORE_JWT_AUTHENTICATOR_H_
#define PULSESYNC_SERVER_CORE_JWT_AUTHENTICATOR_H_

#include <memory>

#include "common/jwt.h"
#include "server/core/principal.h"

namespace pulsesync {

class JwtAuthenticator final : public Authenticator {
 public:
  // `verifier` is shared so that a JWKS refresher can swap its keys.
  explicit JwtAuthenticator(std::shared_ptr<const JwtVerifier> verifier)
      : verifier_(std::move(verifier)) {}

  // kUnauthenticated: no or malformed authorization metadata, a token that
  // does not verify (the verifier's reason), or a role a request may not
  // take.
  absl::StatusOr<Principal> Authenticate(const MetadataLookup& metadata) const override;

 private:
  std::shared_ptr<const JwtVerifier> verifier_;
};

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_CORE_JWT_AUTHENTICATOR_H_
