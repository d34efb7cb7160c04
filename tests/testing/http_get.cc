#include "tests/testing/http_get.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace pulsesync::testing {

absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError("socket failed");
  timeval timeout{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to 127.0.0.1:", port));
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return absl::UnavailableError("send failed");
  }
  std::string response;
  char buf[65536];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) response.append(buf, static_cast<size_t>(n));
  ::close(fd);
  const size_t header_end = response.find("\r\n\r\n");
  if (header_end == std::string::npos) return absl::UnavailableError("no HTTP answer");
  const std::string status_line = response.substr(0, response.find("\r\n"));
  if (!absl::StrContains(status_line, " 200 ")) {
    return absl::UnavailableError(absl::StrCat("HTTP answer: ", status_line));
  }
  std::string body = response.substr(header_end + 4);
  if (absl::StrContains(absl::AsciiStrToLower(response.substr(0, header_end)),
                        "transfer-encoding: chunked")) {
    // Undo chunked encoding: <hex size>\r\n<data>\r\n ... 0\r\n\r\n
    std::string plain;
    size_t pos = 0;
    while (pos < body.size()) {
      const size_t eol = body.find("\r\n", pos);
      if (eol == std::string::npos) break;
      const size_t size = std::strtoul(body.substr(pos, eol - pos).c_str(), nullptr, 16);
      if (size == 0) break;
      plain.append(body, eol + 2, size);
      pos = eol + 2 + size + 2;
    }
    body = std::move(plain);
  }
  return body;
}

std::optional<double> PrometheusSample(const std::string& text, const std::string& name,
                                       const std::map<std::string, std::string>& labels) {
  std::optional<double> total;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    const size_t end_of_name = line.find_first_of("{ ");
    if (end_of_name == absl::string_view::npos || line.substr(0, end_of_name) != name) continue;
    absl::string_view label_text;
    if (line[end_of_name] == '{') {
      const size_t close = line.find('}', end_of_name);
      if (close == absl::string_view::npos) continue;
      label_text = line.substr(end_of_name, close - end_of_name + 1);
    }
    bool all = true;
    for (const auto& [key, value] : labels) {
      if (!absl::StrContains(label_text, absl::StrCat(key, "=\"", value, "\""))) all = false;
    }
    if (!all) continue;
    const size_t space = line.rfind(' ');
    double v;
    if (!absl::SimpleAtod(line.substr(space + 1), &v)) continue;
    total = total.value_or(0) + v;
  }
  return total;
}

}  // namespace pulsesync::testing
