#include "server/core/jwt_authenticator.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status_macros.h"

namespace pulsesync {

absl::StatusOr<Principal> JwtAuthenticator::Authenticate(const MetadataLookup& metadata) const {
  std::optional<std::string> header = metadata("authorization");
  if (!header.has_value()) {
    return absl::UnauthenticatedError(
        "missing \"authorization: Bearer <JWT>\" metadata (a Supabase access token or API key)");
  }
  absl::string_view value = absl::StripAsciiWhitespace(*header);
  if (!absl::StartsWithIgnoreCase(value, "bearer ")) {
    return absl::UnauthenticatedError("authorization metadata must be \"Bearer <JWT>\"");
  }
  value.remove_prefix(7);
  PS_ASSIGN_OR_RETURN(VerifiedToken token, verifier_->Verify(absl::StripAsciiWhitespace(value)));
  Principal p;
  p.role = token.role.empty() ? "authenticated" : token.role;
  if (p.role != "anon" && p.role != "authenticated" && p.role != "service_role") {
    return absl::UnauthenticatedError(
        absl::StrCat("role \"", p.role, "\" is not one a request may take"));
  }
  p.user_id = absl::AsciiStrToLower(token.sub);
  p.claims_json = std::move(token.claims_json);
  p.expires = absl::FromUnixSeconds(token.exp);
  return p;
}

}  // namespace pulsesync
