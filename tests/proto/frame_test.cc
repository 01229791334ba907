#include "proto/frame.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <span>

namespace bulkhead::proto {
namespace {

Frame expectFrame(FrameDecoder& d) {
  auto r = d.next();
  if (auto* err = std::get_if<DecodeError>(&r)) ADD_FAILURE() << err->reason;
  EXPECT_TRUE(std::holds_alternative<Frame>(r));
  return std::holds_alternative<Frame>(r) ? std::get<Frame>(r) : Frame{};
}

std::string expectError(FrameDecoder& d) {
  auto r = d.next();
  EXPECT_TRUE(std::holds_alternative<DecodeError>(r));
  return std::holds_alternative<DecodeError>(r) ? std::get<DecodeError>(r).reason : "";
}

TEST(FrameCodec, RoundTripsEveryWorkerFrameType) {
  FrameDecoder d(Sender::kWorker, 1 << 20);
  for (FrameType t : {FrameType::kHello, FrameType::kReady, FrameType::kStartFailed,
                      FrameType::kResultBytes, FrameType::kResultJson, FrameType::kResultText,
                      FrameType::kHandlerError, FrameType::kHeartbeat}) {
    d.feed(encodeFrame(t, 0x0102030405060708ull, "body"));
    Frame f = expectFrame(d);
    EXPECT_EQ(f.type, t);
    EXPECT_EQ(f.jobId, 0x0102030405060708ull);
    EXPECT_EQ(f.body, "body");
  }
  EXPECT_TRUE(std::holds_alternative<NeedMore>(d.next()));
  EXPECT_FALSE(d.finish());
}

TEST(FrameCodec, HeaderLayoutIsLittleEndianAsDocumented) {
  std::string h = encodeHeader(FrameType::kJob, 7, 0x01020304);
  ASSERT_EQ(h.size(), kHeaderSize);
  EXPECT_EQ(h.substr(0, 2), "BK");
  EXPECT_EQ(h[2], 1);
  EXPECT_EQ(static_cast<unsigned char>(h[3]), 0x80);
  EXPECT_EQ(h[4], 4);
  EXPECT_EQ(h[7], 1);
  EXPECT_EQ(h[8], 7);
}

TEST(FrameCodec, AcceptsBytesOneAtATime) {
  FrameDecoder d(Sender::kWorker, 1 << 20);
  std::string wire = encodeFrame(FrameType::kResultBytes, 3, std::string(1000, 'x')) +
                     encodeFrame(FrameType::kHeartbeat, 3, "{}");
  int frames = 0;
  for (char c : wire) {
    d.feed(std::string_view(&c, 1));
    for (;;) {
      auto r = d.next();
      if (std::holds_alternative<NeedMore>(r)) break;
      ASSERT_TRUE(std::holds_alternative<Frame>(r));
      ++frames;
    }
  }
  EXPECT_EQ(frames, 2);
}

TEST(FrameCodec, RefusesGarbageAtTheFirstByte) {
  FrameDecoder d(Sender::kWorker, 1 << 20);
  d.feed("g");
  EXPECT_NE(expectError(d).find("bad magic"), std::string::npos);
}

TEST(FrameCodec, RefusesAnotherVersion) {
  FrameDecoder d(Sender::kWorker, 1 << 20);
  std::string f = encodeFrame(FrameType::kHello, 0, "{}");
  f[2] = 2;
  d.feed(f);
  EXPECT_NE(expectError(d).find("version 2"), std::string::npos);
}

TEST(FrameCodec, RefusesUnknownTypesAndTheOtherSidesTypes) {
  FrameDecoder d(Sender::kWorker, 1 << 20);
  d.feed(encodeFrame(FrameType::kJob, 1, "x"));
  EXPECT_NE(expectError(d).find("unknown frame type 128"), std::string::npos);
  FrameDecoder s(Sender::kSupervisor, 1 << 20);
  s.feed(encodeFrame(FrameType::kHello, 0, "{}"));
  EXPECT_FALSE(expectError(s).empty());
}

TEST(FrameCodec, RefusesOversizeBodiesBeforeBufferingThem) {
  FrameDecoder d(Sender::kWorker, 1000);
  d.feed(encodeHeader(FrameType::kResultBytes, 1, 1001));
  EXPECT_NE(expectError(d).find("exceeds the limit of 1000"), std::string::npos);
  FrameDecoder c(Sender::kWorker, 1u << 30);
  c.feed(encodeHeader(FrameType::kHello, 0, kMaxControlBody + 1));
  EXPECT_NE(expectError(c).find("HELLO"), std::string::npos) << "control frames have their own cap";
}

TEST(FrameCodec, ErrorsLatch) {
  FrameDecoder d(Sender::kWorker, 1 << 20);
  d.feed("garbage");
  expectError(d);
  d.feed(encodeFrame(FrameType::kHello, 0, "{}"));
  expectError(d);
  EXPECT_TRUE(d.failed());
}

TEST(FrameCodec, EndOfStreamInsideAFrameIsThePeersError) {
  FrameDecoder d(Sender::kWorker, 1 << 20);
  std::string f = encodeFrame(FrameType::kResultBytes, 1, "abcdef");
  d.feed(f.substr(0, f.size() - 2));
  EXPECT_TRUE(std::holds_alternative<NeedMore>(d.next()));
  ASSERT_TRUE(d.finish());
  EXPECT_NE(d.finish()->reason.find("inside a frame"), std::string::npos);
}

TEST(FrameCodec, RandomBytesNeverCrashAndAlwaysEndInAnError) {
  std::mt19937 rng(42);
  for (int round = 0; round < 2000; ++round) {
    FrameDecoder d(Sender::kWorker, 4096);
    std::string junk(1 + rng() % 200, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    if (round % 2) junk.replace(0, 3, "BK\x01");  // get past the magic sometimes
    d.feed(junk);
    for (int i = 0; i < 300; ++i) {
      auto r = d.next();
      if (!std::holds_alternative<Frame>(r)) break;
    }
  }
  SUCCEED();
}

// A large body is received straight into its own buffer: bodyBuffer() hands out exactly the part
// not yet filled, mixed with feed(), and the frame after it still decodes.
TEST(FrameCodec, LargeBodyIsReceivedInPlaceThroughBodyBuffer) {
  FrameDecoder d(Sender::kWorker, 1 << 20, /*directBodyMin=*/1000);
  std::string body(5000, '\0');
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 7);
  const std::string wire =
      encodeFrame(FrameType::kResultBytes, 9, body) + encodeFrame(FrameType::kHeartbeat, 9, "{}");
  EXPECT_TRUE(d.bodyBuffer().empty());  // nothing pending yet
  d.feed(std::string_view(wire).substr(0, kHeaderSize + 100));
  EXPECT_TRUE(std::holds_alternative<NeedMore>(d.next()));
  std::size_t at = kHeaderSize + 100;
  bool fed = false;
  while (at < kHeaderSize + body.size()) {
    std::span<char> into = d.bodyBuffer();
    ASSERT_EQ(into.size(), kHeaderSize + body.size() - at);  // never past the body's end
    const std::size_t n = std::min<std::size_t>(into.size(), fed ? 1500 : 700);
    if (!fed) {
      d.feed(std::string_view(wire).substr(at, n));  // feed() fills the same buffer
    } else {
      std::memcpy(into.data(), wire.data() + at, n);
      d.bodyReceived(n);
    }
    fed = !fed;
    at += n;
    EXPECT_EQ(d.buffered(), at);
  }
  EXPECT_TRUE(d.bodyBuffer().empty());
  d.feed(std::string_view(wire).substr(at));
  Frame f = expectFrame(d);
  EXPECT_EQ(f.type, FrameType::kResultBytes);
  EXPECT_EQ(f.jobId, 9u);
  EXPECT_EQ(f.body, body);
  EXPECT_EQ(expectFrame(d).type, FrameType::kHeartbeat);
  EXPECT_EQ(d.buffered(), 0u);
  EXPECT_FALSE(d.finish());
}

TEST(FrameCodec, StreamEndingInsideAnInPlaceBodyIsAnError) {
  FrameDecoder d(Sender::kWorker, 1 << 20, /*directBodyMin=*/1000);
  const std::string wire = encodeFrame(FrameType::kResultBytes, 1, std::string(4000, 'x'));
  d.feed(std::string_view(wire).substr(0, 2000));
  EXPECT_TRUE(std::holds_alternative<NeedMore>(d.next()));
  auto err = d.finish();
  ASSERT_TRUE(err);
  EXPECT_NE(err->reason.find("1984 of 4000"), std::string::npos) << err->reason;
}

TEST(FrameCodec, OversizedLargeBodyIsRefusedBeforeAnyBufferIsMade) {
  FrameDecoder d(Sender::kWorker, 4096, /*directBodyMin=*/1000);
  d.feed(encodeHeader(FrameType::kResultBytes, 1, 1u << 30));
  EXPECT_NE(expectError(d).find("exceeds the limit"), std::string::npos);
  EXPECT_TRUE(d.bodyBuffer().empty());
}
}  // namespace
}  // namespace bulkhead::proto
