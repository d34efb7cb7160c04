#include "common/net_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace pulsesync {
namespace {

// One "host:port" or "[v6]:port" (or a bare host).
bool IsLoopbackHostPort(absl::string_view address) {
  absl::string_view host;
  if (absl::StartsWith(address, "[")) {
    const size_t close = address.find(']');
    if (close == absl::string_view::npos) return false;
    host = address.substr(1, close - 1);
  } else {
    const size_t colon = address.rfind(':');
    host = colon == absl::string_view::npos ? address : address.substr(0, colon);
    // A bare IPv6 address without brackets ("::1") has more than one colon.
    if (address.find(':') != colon) host = address;
  }
  if (absl::EqualsIgnoreCase(host, "localhost")) return true;
  const std::string h(host);
  in_addr v4;
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6;
  if (inet_pton(AF_INET6, h.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

}  // namespace

bool IsLoopbackAddress(absl::string_view address) {
  if (absl::StartsWith(address, "unix:") || absl::StartsWith(address, "unix-abstract:")) {
    return true;
  }
  if (absl::ConsumePrefix(&address, "ipv4:") || absl::ConsumePrefix(&address, "ipv6:")) {
    if (address.empty()) return false;
    for (absl::string_view one : absl::StrSplit(address, ',')) {
      if (!IsLoopbackHostPort(one)) return false;
    }
    return true;
  }
  if (absl::ConsumePrefix(&address, "dns:")) {
    // "dns:[//authority/]host:port": the authority names a DNS server.
    if (absl::ConsumePrefix(&address, "//")) {
      const size_t slash = address.find('/');
      if (slash == absl::string_view::npos) return false;
      address.remove_prefix(slash + 1);
    }
  }
  return IsLoopbackHostPort(address);
}

}  // namespace pulsesync
