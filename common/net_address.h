// Where an address can be reached from: only this machine, or the network.
// Used to allow plaintext gRPC without asking on loopback only.
#ifndef PULSESYNC_COMMON_NET_ADDRESS_H_
#define PULSESYNC_COMMON_NET_ADDRESS_H_

#include "absl/strings/string_view.h"

namespace pulsesync {

// True when `address` can only be reached from this machine: a host of
// 127.0.0.0/8, ::1 or "localhost", or a Unix socket. Accepts what a server
// listens on and a client dials: "host:port", "[v6]:port", "unix:path",
// "unix-abstract:name", and the gRPC target forms "dns:host:port",
// "dns:///host:port", "ipv4:a:p,b:p", "ipv6:[a]:p,..." (a list is loopback
// when every entry is). 0.0.0.0, [::], an empty host and any other name or
// address are not.
bool IsLoopbackAddress(absl::string_view address);

}  // namespace pulsesync

#endif  // PULSESYNC_COMMON_NET_ADDRESS_H_
