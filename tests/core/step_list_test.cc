// parseStepList: ranges, lists, mixed, and every error, one rule per test.

#include "core/step_list.h"

#include <gtest/gtest.h>

namespace bulkhead::core {
namespace {

std::vector<std::string> ok(std::string_view text) {
  auto r = parseStepList(text);
  EXPECT_TRUE(std::holds_alternative<std::vector<std::string>>(r)) << text;
  if (auto* e = std::get_if<StepListError>(&r)) ADD_FAILURE() << e->message;
  return std::holds_alternative<std::vector<std::string>>(r) ? std::get<0>(r)
                                                             : std::vector<std::string>{};
}
std::string error(std::string_view text) {
  auto r = parseStepList(text);
  EXPECT_TRUE(std::holds_alternative<StepListError>(r)) << text;
  return std::holds_alternative<StepListError>(r) ? std::get<1>(r).message : "";
}

using V = std::vector<std::string>;

TEST(StepList, ARange) { EXPECT_EQ(ok("1-3"), (V{"1", "2", "3"})); }
TEST(StepList, AList) { EXPECT_EQ(ok("a,b,c"), (V{"a", "b", "c"})); }
TEST(StepList, Mixed) { EXPECT_EQ(ok("1-3,7,x"), (V{"1", "2", "3", "7", "x"})); }
TEST(StepList, OneStep) { EXPECT_EQ(ok("5"), (V{"5"})); }
TEST(StepList, ARangeOfOne) { EXPECT_EQ(ok("4-4"), (V{"4"})); }
TEST(StepList, ANameWithADashIsAName) { EXPECT_EQ(ok("all-in-one"), (V{"all-in-one"})); }
TEST(StepList, ZeroBased) { EXPECT_EQ(ok("0-1"), (V{"0", "1"})); }

TEST(StepList, Errors) {
  EXPECT_NE(error("").find("no steps"), std::string::npos);
  EXPECT_NE(error("1,,2").find("empty item"), std::string::npos);
  EXPECT_NE(error("1,").find("empty item"), std::string::npos);
  EXPECT_NE(error("3-1").find("backwards"), std::string::npos);
  EXPECT_NE(error("1-3,2").find("twice"), std::string::npos);
  EXPECT_NE(error("a b").find("bad step name"), std::string::npos);
  EXPECT_NE(error("../x").find("bad step name"), std::string::npos);
  EXPECT_NE(error(".hidden").find("bad step name"), std::string::npos);
  EXPECT_NE(error("-1").find("bad step name"), std::string::npos);
  EXPECT_NE(error("1-100000").find("more than"), std::string::npos);
  EXPECT_NE(error(std::string(65, 'a')).find("bad step name"), std::string::npos);
}

}  // namespace
}  // namespace bulkhead::core
