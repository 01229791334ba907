#include "cli/http_client.h"

#include <algorithm>
#include <array>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <stdexcept>

namespace bulkhead::cli {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

struct TcpAddress {
  std::string host, port, hostHeader;
};

// "http://host:port[/...]" (or "host:port") -> its parts; port 80 when absent.
TcpAddress parseTcpUrl(const std::string& url) {
  std::string rest = url.rfind("http://", 0) == 0 ? url.substr(7) : url;
  rest = rest.substr(0, rest.find('/'));
  auto colon = rest.rfind(':');
  return {colon == std::string::npos ? rest : rest.substr(0, colon),
          colon == std::string::npos ? "80" : rest.substr(colon + 1), rest};
}

template <class Stream>
HttpResult exchange(Stream& stream, const std::string& host, const std::string& method,
                    const std::string& target, const std::string& body,
                    const std::map<std::string, std::string>& headers) {
  http::request<http::string_body> req{http::string_to_verb(method), target, 11};
  req.set(http::field::host, host);
  req.set(http::field::user_agent, "bulkhead-cli");
  for (const auto& [k, v] : headers) req.set(k, v);
  req.body() = body;
  req.prepare_payload();
  // A server may answer before it has read the whole request (413 for a body over its limit) and
  // close; our write then fails (EPIPE, ECONNRESET), but its answer was delivered before that
  // and is still there to read. Only when no answer can be read is the write error the news.
  beast::error_code writeError;
  http::write(stream, req, writeError);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(1ull << 32);
  beast::error_code readError;
  http::read(stream, buffer, parser, readError);
  if (readError) throw beast::system_error(writeError ? writeError : readError);
  auto res = parser.release();
  HttpResult out;
  out.status = static_cast<int>(res.result_int());
  out.body = std::move(res.body());
  for (const auto& field : res) {
    std::string name(field.name_string());
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    out.headers[name] = std::string(field.value());
  }
  return out;
}

}  // namespace

HttpResult httpRequest(const std::string& url, const std::string& method, const std::string& target,
                       const std::string& body, const std::map<std::string, std::string>& headers,
                       double timeoutSeconds) {
  asio::io_context io;
  try {
    if (url.rfind("unix:", 0) == 0) {
      beast::basic_stream<asio::local::stream_protocol> stream(io);
      stream.expires_after(std::chrono::milliseconds(static_cast<long>(timeoutSeconds * 1000)));
      stream.connect(asio::local::stream_protocol::endpoint(url.substr(5)));
      return exchange(stream, "localhost", method, target, body, headers);
    }
    TcpAddress address = parseTcpUrl(url);
    asio::ip::tcp::resolver resolver(io);
    beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::milliseconds(static_cast<long>(timeoutSeconds * 1000)));
    stream.connect(resolver.resolve(address.host, address.port));
    return exchange(stream, address.hostHeader, method, target, body, headers);
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error("cannot talk to bulkhead at " + url + ": " + e.code().message());
  }
}

namespace {

template <class Socket>
void readEventStream(Socket& socket, const std::string& host, const std::string& target,
                     const std::function<void(const std::string&)>& onData) {
  std::string request =
      "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\nAccept: text/event-stream\r\n\r\n";
  asio::write(socket, asio::buffer(request));
  std::string pending;
  bool inBody = false;
  std::array<char, 8192> buffer;
  for (;;) {
    boost::system::error_code ec;
    std::size_t n = socket.read_some(asio::buffer(buffer), ec);
    if (ec) return;
    pending.append(buffer.data(), n);
    if (!inBody) {
      auto end = pending.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      if (pending.rfind("HTTP/1.1 200", 0) != 0) {
        throw std::runtime_error("event stream refused: " + pending.substr(0, pending.find('\r')));
      }
      pending.erase(0, end + 4);
      inBody = true;
    }
    std::size_t lineEnd;
    while ((lineEnd = pending.find('\n')) != std::string::npos) {
      std::string line = pending.substr(0, lineEnd);
      pending.erase(0, lineEnd + 1);
      if (line.rfind("data: ", 0) == 0) onData(line.substr(6));
    }
  }
}

}  // namespace

void streamEvents(const std::string& url, const std::string& target,
                  const std::function<void(const std::string& data)>& onData) {
  asio::io_context io;
  try {
    if (url.rfind("unix:", 0) == 0) {
      asio::local::stream_protocol::socket socket(io);
      socket.connect(asio::local::stream_protocol::endpoint(url.substr(5)));
      return readEventStream(socket, "localhost", target, onData);
    }
    TcpAddress address = parseTcpUrl(url);
    asio::ip::tcp::resolver resolver(io);
    asio::ip::tcp::socket socket(io);
    asio::connect(socket, resolver.resolve(address.host, address.port));
    readEventStream(socket, address.hostHeader, target, onData);
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error("cannot talk to bulkhead at " + url + ": " + e.code().message());
  }
}

}  // namespace bulkhead::cli
