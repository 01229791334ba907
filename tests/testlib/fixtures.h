#pragma once
// Fixture files under tests/data/<folder>/, found from this header's own path.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace bulkhead::testlib {

inline std::filesystem::path dataDir(const std::string& folder) {
  return std::filesystem::path(__FILE__).parent_path().parent_path() / "data" / folder;
}

inline std::string readFixture(const std::string& folder, const std::string& name) {
  std::ifstream in(dataDir(folder) / name, std::ios::binary);
  EXPECT_TRUE(in.good()) << "missing fixture " << (dataDir(folder) / name);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace bulkhead::testlib
