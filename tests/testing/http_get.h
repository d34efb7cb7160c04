// A minimal HTTP/1.1 GET over loopback TCP, for scraping /metrics in tests.
#ifndef PULSESYNC_TESTS_TESTING_HTTP_GET_H_
#define PULSESYNC_TESTS_TESTING_HTTP_GET_H_

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace pulsesync::testing {

// GET http://127.0.0.1:<port><path>; the body of a 200 answer, else an error
// naming the status line.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

// The value of the sample `name` whose labels include every one of `labels`
// in Prometheus text exposition `text`; nullopt if there is none. With
// several matches, their sum.
std::optional<double> PrometheusSample(const std::string& text, const std::string& name,
                                       const std::map<std::string, std::string>& labels = {});

}  // namespace pulsesync::testing

#endif  // PULSESYNC_TESTS_TESTING_HTTP_GET_H_
