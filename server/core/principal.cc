#include "server/core/principal.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/json.h"
#include "common/uuid.h"

namespace pulsesync {

Principal Principal::User(const std::string& user_id) {
  Principal p;
  p.role = "authenticated";
  p.user_id = absl::AsciiStrToLower(user_id);
  p.claims_json = absl::StrCat("{\"sub\":", JsonQuote(p.user_id),
                               ",\"role\":\"authenticated\",\"aud\":\"authenticated\"}");
  return p;
}

absl::StatusOr<Principal> MetadataAuthenticator::Authenticate(
    const MetadataLookup& metadata) const {
  std::optional<std::string> user = metadata(kUserIdMetadata);
  if (!user.has_value()) return Principal::Trusted();
  if (!IsUuid(*user)) {
    return absl::UnauthenticatedError(
        absl::StrCat(kUserIdMetadata, " \"", *user, "\" is not a UUID"));
  }
  return Principal::User(*user);
}

}  // namespace pulsesync
