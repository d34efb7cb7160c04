// Who is calling, as the database should see it: the PostgREST model. Each
// request's database work runs with `SET LOCAL ROLE <role>` and
// `request.jwt.claims = <claims>`, so the Row Level Security policies of the
// synced tables decide what the caller may read and write.
//
// Until JWT verification lands, the principal comes from request metadata
// ("x-pulsesync-user-id") through MetadataAuthenticator; the interface stays
// when the JWT authenticator replaces it.
#ifndef PULSESYNC_SERVER_CORE_PRINCIPAL_H_
#define PULSESYNC_SERVER_CORE_PRINCIPAL_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace pulsesync {

struct Principal {
  // Database role for the request: "authenticated", "anon" or
  // "service_role". Empty: the server's own database role (a trusted caller,
  // e.g. in development or tests without auth).
  std::string role;
  std::string user_id;      // the token's sub; empty for anon/service_role
  std::string claims_json;  // what request.jwt.claims holds
  // When the credentials stop being valid; long calls (streams) end then.
  absl::Time expires = absl::InfiniteFuture();

  bool trusted() const { return role.empty(); }
  static Principal Trusted() { return Principal(); }
  // A signed-in user: role "authenticated", claims {"sub":..., "role":...}.
  static Principal User(const std::string& user_id);
};

// Looks up one request metadata value (lowercase key) or nullopt.
using MetadataLookup = std::function<std::optional<std::string>(absl::string_view key)>;

class Authenticator {
 public:
  virtual ~Authenticator() = default;
  // kUnauthenticated with a reason when the request's credentials are bad
  // or missing where required.
  virtual absl::StatusOr<Principal> Authenticate(const MetadataLookup& metadata) const = 0;
};

inline constexpr char kUserIdMetadata[] = "x-pulsesync-user-id";

// Development authenticator: "x-pulsesync-user-id: <uuid>" makes the caller
// that user; no metadata makes it trusted. Not for production.
class MetadataAuthenticator final : public Authenticator {
 public:
  absl::StatusOr<Principal> Authenticate(const MetadataLookup& metadata) const override;
};

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_CORE_PRINCIPAL_H_
