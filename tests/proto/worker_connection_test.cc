// proto::WorkerConnection driven by bytes shaped like the Python SDK's (python/bulkhead/worker.py
// and zygote.py): every event, every split of the stream, every schema violation, the HELLO rule,
// latching, EOF and size limits. No sockets: the connection is sans-I/O.
#include "proto/worker_connection.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace bulkhead::proto {
namespace {

using Role = WorkerConnection::Role;
constexpr std::uint32_t kMaxBody = 4096;

const std::string kWorkerHello =
    R"({"protocol":1,"pid":4242,"sdk":"python","sdk_version":"0.1.0","runtime":"CPython 3.11.2"})";
const std::string kZygoteHello =
    R"({"protocol":1,"pid":4243,"sdk":"python","sdk_version":"0.1.0","runtime":"CPython 3.11.2",)"
    R"("role":"zygote"})";
const std::string kErrorBody =
    R"({"type":"ValueError","message":"bad input","traceback":"Traceback (most recent call last):\n"})";

std::string frame(FrameType type, std::uint64_t id, std::string_view body) {
  return encodeFrame(type, id, body);
}

std::string workerHello() { return frame(FrameType::kHello, 0, kWorkerHello); }
std::string zygoteHello() { return frame(FrameType::kHello, 0, kZygoteHello); }

// One line per event, so a whole session compares as a list of strings.
std::string describe(const ConnectionEvent& event) {
  struct Describe {
    std::string operator()(const NeedMore&) const { return "NeedMore"; }
    std::string operator()(const PeerError& e) const { return "PeerError " + e.reason; }
    std::string operator()(const Closed&) const { return "Closed"; }
    std::string operator()(const Hello&) const { return "Hello"; }
    std::string operator()(const Ready& r) const {
      if (!r.payloadView) return "Ready";
      return *r.payloadView ? "Ready view" : "Ready bytes";
    }
    std::string operator()(const StartFailed& e) const {
      return "StartFailed " + e.error.type + "|" + e.error.message + "|" + e.error.traceback;
    }
    std::string operator()(const Result& r) const {
      const char* kind = r.kind == ResultKind::kBytes  ? "bytes"
                         : r.kind == ResultKind::kJson ? "json"
                                                       : "text";
      if (r.fileSize)
        return "Result " + std::to_string(r.jobId) + " file " + std::to_string(*r.fileSize);
      return "Result " + std::to_string(r.jobId) + " " + kind + " " + r.body;
    }
    std::string operator()(const JobError& e) const {
      return "JobError " + std::to_string(e.jobId) + " " + e.error.type + "|" + e.error.message +
             "|" + e.error.traceback;
    }
    std::string operator()(const Heartbeat& h) const {
      return "Heartbeat " + std::to_string(h.jobId) + " progress=" + std::to_string(h.progress) +
             " cpu=" + std::to_string(h.cpuSeconds) + " stack=" + h.stack;
    }
    std::string operator()(const Forked& f) const {
      return "Forked " + std::to_string(f.requestId) + " pid=" + std::to_string(f.pid);
    }
    std::string operator()(const ForkRefused& f) const {
      return "ForkRefused " + std::to_string(f.requestId) + " " + f.message +
             (f.permanent ? " permanent" : " transient");
    }
    std::string operator()(const PayloadKept& k) const {
      return "PayloadKept " + std::to_string(k.jobId);
    }
  };
  return std::visit(Describe{}, event);
}

// Every event up to NeedMore, or up to and including the first Closed or PeerError.
std::vector<std::string> drain(WorkerConnection& conn) {
  std::vector<std::string> out;
  for (;;) {
    ConnectionEvent event = conn.next();
    if (std::holds_alternative<NeedMore>(event)) return out;
    out.push_back(describe(event));
    if (std::holds_alternative<Closed>(event) || std::holds_alternative<PeerError>(event)) {
      return out;
    }
  }
}

std::vector<std::string> eventsOf(Role role, const std::string& wire, bool eof = false) {
  WorkerConnection conn(role, kMaxBody);
  conn.receive(wire);
  if (eof) conn.receiveEof();
  return drain(conn);
}

// The reason of the PeerError that `wire` ends in, or "" (and a failure) when there is none.
std::string peerErrorOf(Role role, const std::string& wire, bool eof = false) {
  auto events = eventsOf(role, wire, eof);
  if (events.empty() || events.back().rfind("PeerError ", 0) != 0) {
    ADD_FAILURE() << "no PeerError; last event: " << (events.empty() ? "none" : events.back());
    return "";
  }
  return events.back().substr(std::string("PeerError ").size());
}

// A worker's whole life as the SDK writes it: HELLO, READY, one job with heartbeats and each
// result kind, a handler error, then EOF.
std::string workerSession() {
  return workerHello() +
         frame(FrameType::kReady, 0, R"({"preload_seconds":0.012345,"init_seconds":0.000001})") +
         frame(FrameType::kHeartbeat, 7,
               R"({"progress":3,"cpu_seconds":1.5,"stack":"00ff00ff00ff00ff"})") +
         frame(FrameType::kResultBytes, 7, std::string("\x00\x01\xff", 3)) +
         frame(FrameType::kResultJson, 8, R"({"answer":[1,2,3]})") +
         frame(FrameType::kResultText, 9, "h\xc3\xa9llo") +
         frame(FrameType::kHandlerError, 10, kErrorBody);
}

const std::vector<std::string> kWorkerSessionEvents = {
    "Hello",
    "Ready",
    "Heartbeat 7 progress=3 cpu=1.500000 stack=00ff00ff00ff00ff",
    std::string("Result 7 bytes ") + std::string("\x00\x01\xff", 3),
    R"(Result 8 json {"answer":[1,2,3]})",
    "Result 9 text h\xc3\xa9llo",
    "JobError 10 ValueError|bad input|Traceback (most recent call last):\n",
    "Closed",
};

std::string zygoteSession() {
  return zygoteHello() + frame(FrameType::kReady, 0, "{}") +
         frame(FrameType::kForked, 5, R"({"pid":31337})") +
         frame(FrameType::kForkRefused, 6,
               R"({"type":"ForkUnsafe","message":"CUDA is initialized","permanent":true})") +
         frame(FrameType::kForkRefused, 7,
               R"({"type":"OSError","message":"fork: EAGAIN","permanent":false})") +
         frame(FrameType::kForkRefused, 8, R"({"message":"no permanent field"})");
}

const std::vector<std::string> kZygoteSessionEvents = {
    "Hello",
    "Ready",
    "Forked 5 pid=31337",
    "ForkRefused 6 CUDA is initialized permanent",
    "ForkRefused 7 fork: EAGAIN transient",
    "ForkRefused 8 no permanent field permanent",
    "Closed",
};

TEST(WorkerConnection, EveryWorkerEventFromSdkShapedBytes) {
  EXPECT_EQ(eventsOf(Role::kWorker, workerSession(), /*eof=*/true), kWorkerSessionEvents);
}

TEST(WorkerConnection, EveryZygoteEventFromSdkShapedBytes) {
  EXPECT_EQ(eventsOf(Role::kZygote, zygoteSession(), /*eof=*/true), kZygoteSessionEvents);
}

TEST(WorkerConnection, StartFailedAfterHello) {
  EXPECT_EQ(eventsOf(Role::kWorker, workerHello() + frame(FrameType::kStartFailed, 0, kErrorBody)),
            (std::vector<std::string>{
                "Hello", "StartFailed ValueError|bad input|Traceback (most recent call last):\n"}));
  EXPECT_EQ(eventsOf(Role::kZygote, zygoteHello() + frame(FrameType::kStartFailed, 0, kErrorBody)),
            (std::vector<std::string>{
                "Hello", "StartFailed ValueError|bad input|Traceback (most recent call last):\n"}));
}

TEST(WorkerConnection, ErrorInfoNeedsOnlyANonEmptyType) {
  EXPECT_EQ(eventsOf(Role::kWorker,
                     workerHello() + frame(FrameType::kHandlerError, 3, R"({"type":"E"})")),
            (std::vector<std::string>{"Hello", "JobError 3 E||"}));
}

TEST(WorkerConnection, HeartbeatFieldsOfTheWrongTypeAreLeftAtDefaults) {
  // progress negative, cpu a string, stack a number: a heartbeat all the same, with no values.
  EXPECT_EQ(eventsOf(Role::kWorker, workerHello() +
                                        frame(FrameType::kHeartbeat, 4,
                                              R"({"progress":-1,"cpu_seconds":"1","stack":5})") +
                                        frame(FrameType::kHeartbeat, 4, "{}")),
            (std::vector<std::string>{"Hello", "Heartbeat 4 progress=0 cpu=0.000000 stack=",
                                      "Heartbeat 4 progress=0 cpu=0.000000 stack="}));
}

// READY's timings are informational; payload_view is read when it is a boolean, and any other
// body is a READY all the same.
TEST(WorkerConnection, ReadyReadsOnlyPayloadView) {
  for (auto [body, expected] : {std::pair<std::string, std::string>{"", "Ready"},
                                {"not json", "Ready"},
                                {"[true]", "Ready"},
                                {R"({"payload_view":"yes"})", "Ready"},
                                {R"({"payload_view":1})", "Ready"},
                                {R"({"preload_seconds":0.5,"payload_view":true})", "Ready view"},
                                {R"({"payload_view":false})", "Ready bytes"}}) {
    EXPECT_EQ(eventsOf(Role::kWorker, workerHello() + frame(FrameType::kReady, 0, body)),
              (std::vector<std::string>{"Hello", expected}))
        << body;
  }
  // A zygote's READY body is not read: it runs no handler.
  EXPECT_EQ(eventsOf(Role::kZygote,
                     zygoteHello() + frame(FrameType::kReady, 0, R"({"payload_view":true})")),
            (std::vector<std::string>{"Hello", "Ready"}));
}

TEST(WorkerConnection, SameEventsWhateverByteTheStreamIsSplitAt) {
  for (auto [role, wire, expected] :
       {std::tuple{Role::kWorker, workerSession(), kWorkerSessionEvents},
        std::tuple{Role::kZygote, zygoteSession(), kZygoteSessionEvents}}) {
    for (std::size_t split = 0; split <= wire.size(); ++split) {
      WorkerConnection conn(role, kMaxBody);
      conn.receive(std::string_view(wire).substr(0, split));
      auto events = drain(conn);
      conn.receive(std::string_view(wire).substr(split));
      conn.receiveEof();
      auto rest = drain(conn);
      events.insert(events.end(), rest.begin(), rest.end());
      ASSERT_EQ(events, expected) << "split at byte " << split;
    }
  }
}

TEST(WorkerConnection, SameEventsFedOneByteAtATime) {
  WorkerConnection conn(Role::kWorker, kMaxBody);
  std::vector<std::string> events;
  for (char c : workerSession()) {
    conn.receive(std::string_view(&c, 1));
    auto some = drain(conn);
    events.insert(events.end(), some.begin(), some.end());
  }
  conn.receiveEof();
  auto rest = drain(conn);
  events.insert(events.end(), rest.begin(), rest.end());
  EXPECT_EQ(events, kWorkerSessionEvents);
}

TEST(WorkerConnection, HelloMustComeFirst) {
  EXPECT_EQ(peerErrorOf(Role::kWorker, frame(FrameType::kReady, 0, "{}")),
            "expected HELLO first, got READY");
  EXPECT_EQ(peerErrorOf(Role::kWorker, frame(FrameType::kResultBytes, 1, "x")),
            "expected HELLO first, got RESULT_BYTES");
  EXPECT_EQ(peerErrorOf(Role::kZygote, frame(FrameType::kForked, 1, R"({"pid":99})")),
            "expected HELLO first, got FORKED");
}

TEST(WorkerConnection, HelloBodyMustSayProtocolOne) {
  for (std::string body : {"", "not json", "[1]", "{}", R"({"protocol":2})", R"({"protocol":"1"})",
                           R"({"protocol":1.5})", R"({"protocol":null})", "{\"protocol\":1"}) {
    for (Role role : {Role::kWorker, Role::kZygote}) {
      EXPECT_EQ(peerErrorOf(role, frame(FrameType::kHello, 0, body)),
                "HELLO body is not {\"protocol\": 1, ...}")
          << body;
    }
  }
}

TEST(WorkerConnection, HelloOnlyOnce) {
  EXPECT_EQ(peerErrorOf(Role::kWorker, workerHello() + workerHello()), "HELLO sent twice");
  EXPECT_EQ(peerErrorOf(Role::kZygote, zygoteHello() + zygoteHello()), "the zygote sent HELLO");
}

struct Violation {
  Role role;
  FrameType type;
  std::string body;
  std::string reason;
};

TEST(WorkerConnection, EverySchemaViolationIsAPeerErrorThatNamesTheFrame) {
  const std::string kErrorShape = " body is not {type, message, traceback}";
  const std::vector<Violation> violations = {
      {Role::kWorker, FrameType::kStartFailed, "", "START_FAILED" + kErrorShape},
      {Role::kWorker, FrameType::kStartFailed, "[]", "START_FAILED" + kErrorShape},
      {Role::kWorker, FrameType::kStartFailed, "{}", "START_FAILED" + kErrorShape},
      {Role::kWorker, FrameType::kStartFailed, R"({"type":""})", "START_FAILED" + kErrorShape},
      {Role::kWorker, FrameType::kStartFailed, R"({"type":1})", "START_FAILED" + kErrorShape},
      {Role::kZygote, FrameType::kStartFailed, R"({"type":"E","message":2})",
       "START_FAILED" + kErrorShape},
      {Role::kWorker, FrameType::kHandlerError, "{", "HANDLER_ERROR" + kErrorShape},
      {Role::kWorker, FrameType::kHandlerError, R"({"type":"E","traceback":[]})",
       "HANDLER_ERROR" + kErrorShape},
      {Role::kWorker, FrameType::kHandlerError, R"("E")", "HANDLER_ERROR" + kErrorShape},
      {Role::kWorker, FrameType::kResultJson, "{\"a\":", "RESULT_JSON body is not valid JSON"},
      {Role::kWorker, FrameType::kResultJson, "", "RESULT_JSON body is not valid JSON"},
      {Role::kWorker, FrameType::kResultJson, "\"\xff\"", "RESULT_JSON body is not valid JSON"},
      {Role::kWorker, FrameType::kHeartbeat, "", "HEARTBEAT body is not a JSON object"},
      {Role::kWorker, FrameType::kHeartbeat, "[]", "HEARTBEAT body is not a JSON object"},
      {Role::kWorker, FrameType::kHeartbeat, "3", "HEARTBEAT body is not a JSON object"},
      {Role::kZygote, FrameType::kForked, "", "FORKED body is not {\"pid\": int}"},
      {Role::kZygote, FrameType::kForked, "{}", "FORKED body is not {\"pid\": int}"},
      {Role::kZygote, FrameType::kForked, R"({"pid":"12"})", "FORKED body is not {\"pid\": int}"},
      {Role::kZygote, FrameType::kForked, R"({"pid":1})", "FORKED body is not {\"pid\": int}"},
      {Role::kZygote, FrameType::kForked, R"({"pid":0})", "FORKED body is not {\"pid\": int}"},
      {Role::kZygote, FrameType::kForked, R"({"pid":-5})", "FORKED body is not {\"pid\": int}"},
      {Role::kZygote, FrameType::kForked, R"({"pid":12.5})", "FORKED body is not {\"pid\": int}"},
      {Role::kZygote, FrameType::kForked, R"({"pid":2147483648})",
       "FORKED body is not {\"pid\": int}"},
      {Role::kZygote, FrameType::kForkRefused, "{}",
       "FORK_REFUSED body is not {type, message, permanent}"},
      {Role::kZygote, FrameType::kForkRefused, R"({"message":7})",
       "FORK_REFUSED body is not {type, message, permanent}"},
      {Role::kZygote, FrameType::kForkRefused, R"({"message":"m","permanent":"yes"})",
       "FORK_REFUSED body is not {type, message, permanent}"},
      // Frames legal only for the other role.
      {Role::kWorker, FrameType::kForked, R"({"pid":99})", "a worker sent a zygote frame"},
      {Role::kWorker, FrameType::kForkRefused, R"({"message":"m"})",
       "a worker sent a zygote frame"},
      {Role::kZygote, FrameType::kResultBytes, "x", "the zygote sent RESULT_BYTES"},
      {Role::kZygote, FrameType::kResultJson, "{}", "the zygote sent RESULT_JSON"},
      {Role::kZygote, FrameType::kResultText, "x", "the zygote sent RESULT_TEXT"},
      {Role::kZygote, FrameType::kHandlerError, kErrorBody, "the zygote sent HANDLER_ERROR"},
      {Role::kZygote, FrameType::kHeartbeat, "{}", "the zygote sent HEARTBEAT"},
  };
  for (const Violation& v : violations) {
    std::string hello = v.role == Role::kWorker ? workerHello() : zygoteHello();
    EXPECT_EQ(peerErrorOf(v.role, hello + frame(v.type, 1, v.body)), v.reason)
        << frameTypeName(v.type) << " body " << v.body;
  }
}

TEST(WorkerConnection, SupervisorFramesAreUnknownTypesFromAPeer) {
  for (FrameType type : {FrameType::kJob, FrameType::kShutdown, FrameType::kFork}) {
    EXPECT_EQ(peerErrorOf(Role::kWorker, workerHello() + frame(type, 1, "")),
              "unknown frame type " + std::to_string(static_cast<int>(type)));
  }
}

TEST(WorkerConnection, FramingErrorsAreTheDecodersReason) {
  EXPECT_EQ(peerErrorOf(Role::kWorker, "NOT A FRAME \x00\xff garbage"), "bad magic bytes 0x4e4f");
  std::string wrongVersion = workerHello();
  wrongVersion[2] = 9;
  EXPECT_EQ(peerErrorOf(Role::kWorker, wrongVersion), "unsupported protocol version 9");
}

TEST(WorkerConnection, APeerErrorLatches) {
  WorkerConnection conn(Role::kWorker, kMaxBody);
  // The bad frame is followed, in the same read, by frames that would be fine on their own.
  conn.receive(workerHello() + frame(FrameType::kHeartbeat, 1, "[]") +
               frame(FrameType::kResultBytes, 1, "late"));
  EXPECT_EQ(drain(conn),
            (std::vector<std::string>{"Hello", "PeerError HEARTBEAT body is not a JSON object"}));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(describe(conn.next()), "PeerError HEARTBEAT body is not a JSON object");
  }
  conn.receive(frame(FrameType::kReady, 0, "{}"));
  conn.receiveEof();
  EXPECT_EQ(describe(conn.next()), "PeerError HEARTBEAT body is not a JSON object");
  ASSERT_TRUE(conn.peerError());
  EXPECT_EQ(conn.peerError()->reason, "HEARTBEAT body is not a JSON object");
}

TEST(WorkerConnection, NoPeerErrorBeforeOne) {
  WorkerConnection conn(Role::kWorker, kMaxBody);
  conn.receive(workerHello());
  EXPECT_EQ(drain(conn), std::vector<std::string>{"Hello"});
  EXPECT_FALSE(conn.peerError());
}

TEST(WorkerConnection, EofBetweenFramesIsClosedAndStaysClosed) {
  WorkerConnection conn(Role::kWorker, kMaxBody);
  conn.receiveEof();
  EXPECT_EQ(describe(conn.next()), "Closed");
  EXPECT_EQ(describe(conn.next()), "Closed");
  EXPECT_FALSE(conn.peerError());
}

TEST(WorkerConnection, EofInsideAFrameIsAPeerError) {
  const std::string wire = workerHello() + frame(FrameType::kResultBytes, 2, "0123456789");
  const std::size_t helloSize = workerHello().size();
  for (std::size_t cut = helloSize + 1; cut < wire.size(); ++cut) {
    auto events = eventsOf(Role::kWorker, wire.substr(0, cut), /*eof=*/true);
    ASSERT_EQ(events.size(), 2u) << "cut at " << cut;
    EXPECT_EQ(events[0], "Hello");
    EXPECT_EQ(events[1], "PeerError stream ended inside a frame (" +
                             std::to_string(cut - helloSize) + " bytes pending)");
  }
}

TEST(WorkerConnection, BytesAfterEofAreIgnored) {
  WorkerConnection conn(Role::kWorker, kMaxBody);
  conn.receive(workerHello());
  conn.receiveEof();
  conn.receive(frame(FrameType::kReady, 0, "{}"));
  EXPECT_EQ(drain(conn), (std::vector<std::string>{"Hello", "Closed"}));
}

TEST(WorkerConnection, ResultsUpToMaxBodyPassAndLargerOnesAreRefusedFromTheHeader) {
  EXPECT_EQ(eventsOf(Role::kWorker,
                     workerHello() + frame(FrameType::kResultText, 1, std::string(kMaxBody, 'a')))
                .size(),
            2u);
  // Only the header: the limit is checked before any body is buffered.
  EXPECT_EQ(peerErrorOf(Role::kWorker,
                        workerHello() + encodeHeader(FrameType::kResultBytes, 1, kMaxBody + 1)),
            "frame RESULT_BYTES of 4097 bytes exceeds the limit of 4096");
}

TEST(WorkerConnection, ControlFramesAreBoundedByTheControlLimitNotMaxBody) {
  WorkerConnection big(Role::kWorker, 64u << 20);
  big.receive(workerHello() + encodeHeader(FrameType::kHeartbeat, 1, kMaxControlBody + 1));
  EXPECT_EQ(drain(big),
            (std::vector<std::string>{"Hello",
                                      "PeerError frame HEARTBEAT of 1048577 bytes exceeds the "
                                      "limit of 1048576"}));
  // A control frame may be larger than a small pool's max_payload.
  const std::string message(8000, 'm');
  EXPECT_EQ(eventsOf(Role::kWorker,
                     workerHello() + frame(FrameType::kHandlerError, 1,
                                           R"({"type":"E","message":")" + message + "\"}")),
            (std::vector<std::string>{"Hello", "JobError 1 E|" + message + "|"}));
}

TEST(WorkerConnection, DeeplyNestedJsonIsRefusedOrAcceptedWithoutCrashing) {
  // 1 MiB of '[' is a control body at the limit; the JSON parser must not recurse on it.
  const std::string nested(kMaxControlBody, '[');
  EXPECT_EQ(peerErrorOf(Role::kWorker, workerHello() + frame(FrameType::kHeartbeat, 1, nested)),
            "HEARTBEAT body is not a JSON object");
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  WorkerConnection conn(Role::kWorker, 1 << 20);
  conn.receive(workerHello() + frame(FrameType::kResultJson, 1, deep));
  EXPECT_EQ(drain(conn).size(), 2u);
}

}  // namespace
}  // namespace bulkhead::proto

namespace bulkhead::proto {
namespace {

// RESULT_BYTES_FD: the size is the whole body; the fd itself is the shell's business.
TEST(WorkerConnection, AResultInAFileIsItsSize) {
  const auto events = eventsOf(
      Role::kWorker, workerHello() + frame(FrameType::kResultBytesFd, 7, encodeFileSize(4000)));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1], "Result 7 file 4000");
}

TEST(WorkerConnection, AResultInAFileLargerThanMaxBodyIsRefused) {
  EXPECT_EQ(peerErrorOf(Role::kWorker, workerHello() + frame(FrameType::kResultBytesFd, 7,
                                                             encodeFileSize(kMaxBody + 1))),
            "RESULT_BYTES_FD of 4097 bytes exceeds the limit of 4096");
}

TEST(WorkerConnection, AFileSizeBodyMustBeEightBytesFromTheHeader) {
  EXPECT_EQ(
      peerErrorOf(Role::kWorker, workerHello() + encodeHeader(FrameType::kResultBytesFd, 7, 9)),
      "frame RESULT_BYTES_FD has a body of 9 bytes, not 8");
  EXPECT_EQ(
      peerErrorOf(Role::kWorker, workerHello() + encodeHeader(FrameType::kResultBytesFd, 7, 0)),
      "frame RESULT_BYTES_FD has a body of 0 bytes, not 8");
}

// PAYLOAD_KEPT: empty, from a worker only.
TEST(WorkerConnection, AKeptPayloadIsAnEmptyWorkerFrame) {
  const auto events =
      eventsOf(Role::kWorker, workerHello() + frame(FrameType::kPayloadKept, 7, ""));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1], "PayloadKept 7");
  EXPECT_EQ(peerErrorOf(Role::kWorker, workerHello() + frame(FrameType::kPayloadKept, 7, "x")),
            "PAYLOAD_KEPT has a body");
  EXPECT_EQ(peerErrorOf(Role::kZygote, zygoteHello() + frame(FrameType::kPayloadKept, 7, "")),
            "the zygote sent PAYLOAD_KEPT");
}

TEST(WorkerConnection, AZygoteMaySendNoResultInAFile) {
  EXPECT_EQ(peerErrorOf(Role::kZygote,
                        zygoteHello() + frame(FrameType::kResultBytesFd, 7, encodeFileSize(1))),
            "the zygote sent RESULT_BYTES_FD");
}

TEST(WorkerConnection, AJobInAFileIsASupervisorFrame) {
  EXPECT_EQ(
      peerErrorOf(Role::kWorker, workerHello() + frame(FrameType::kJobFd, 7, encodeFileSize(1))),
      "unknown frame type 131");
}

TEST(FrameCodec, FileSizesRoundTripLittleEndian) {
  for (std::uint64_t size : {0ull, 1ull, 262144ull, 64ull << 20, ~0ull}) {
    const std::string body = encodeFileSize(size);
    ASSERT_EQ(body.size(), kFileSizeBody);
    EXPECT_EQ(decodeFileSize(body), size);
  }
  EXPECT_EQ(encodeFileSize(0x0102), std::string("\x02\x01\0\0\0\0\0\0", 8));
}

}  // namespace
}  // namespace bulkhead::proto
