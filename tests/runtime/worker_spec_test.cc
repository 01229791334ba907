#include "runtime/worker_spec.h"

#include <gtest/gtest.h>

namespace bulkhead::runtime {
namespace {

config::PoolConfig pool() {
  config::PoolConfig p;
  p.name = "faces";
  p.handler = "faces:handle";
  p.pythonPath = {"/srv/handlers"};
  return p;
}

const std::vector<std::string> kSupervisorEnv = {
    "PATH=/usr/bin",      "HOME=/root",
    "LC_ALL=C.UTF-8",     "AWS_SECRET_ACCESS_KEY=hunter2",
    "OMP_NUM_THREADS=64", "BULKHEAD_HANDLER=evil:override",
    "HF_HOME=/cache"};

TEST(WorkerEnvironment, InheritsOnlyTheWhitelist) {
  auto env = buildWorkerEnvironment(pool(), "faces-1", 0, kSupervisorEnv, "/sdk");
  EXPECT_EQ(env.at("PATH").value, "/usr/bin");
  EXPECT_EQ(env.at("LC_ALL").source, "inherited");
  EXPECT_FALSE(env.count("AWS_SECRET_ACCESS_KEY")) << "credentials stay out";
  EXPECT_FALSE(env.count("OMP_NUM_THREADS")) << "a stray thread count stays out";
  EXPECT_FALSE(env.count("HF_HOME"));
  EXPECT_EQ(env.at("BULKHEAD_HANDLER").value, "faces:handle");
  EXPECT_EQ(env.at("PYTHONPATH").value, "/srv/handlers:/sdk");
}

TEST(WorkerEnvironment, MemfdThresholdsReachTheWorkerAndZeroTurnsBothOff) {
  config::PoolConfig p = pool();
  p.memfdThreshold = 256 * 1024;
  p.memfdResultThreshold = 16ull << 20;
  auto env = buildWorkerEnvironment(p, "faces-1", 0, kSupervisorEnv, "/sdk");
  EXPECT_EQ(env.at("BULKHEAD_MEMFD_THRESHOLD").value, "262144");
  EXPECT_EQ(env.at("BULKHEAD_MEMFD_RESULT_THRESHOLD").value, "16777216");
  EXPECT_EQ(env.at("BULKHEAD_MEMFD_RESULT_THRESHOLD").source, "memfd_result_threshold");
  p.memfdThreshold = 0;  // memfds off: results too, whatever their own threshold says
  env = buildWorkerEnvironment(p, "faces-1", 0, kSupervisorEnv, "/sdk");
  EXPECT_EQ(env.at("BULKHEAD_MEMFD_RESULT_THRESHOLD").value, "0");
}

TEST(WorkerEnvironment, InheritEnvExtendsTheWhitelistWithPrefixes) {
  auto p = pool();
  p.inheritEnv = {"HF_HOME", "AWS_*"};
  auto env = buildWorkerEnvironment(p, "faces-1", 0, kSupervisorEnv, "");
  EXPECT_EQ(env.at("HF_HOME").value, "/cache");
  EXPECT_TRUE(env.count("AWS_SECRET_ACCESS_KEY"));
}

TEST(WorkerEnvironment, ThreadsBecomeEveryVariableOfTheProfiles) {
  auto p = pool();
  p.profiles = {"tensorflow"};
  p.threads = 2;
  auto env = buildWorkerEnvironment(p, "faces-1", 0, kSupervisorEnv, "");
  for (const char* v : {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                        "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"}) {
    ASSERT_TRUE(env.count(v)) << v;
    EXPECT_EQ(env.at(v).value, "2") << v;
    EXPECT_EQ(env.at(v).source, "threads");
  }
  EXPECT_EQ(env.at("TF_FORCE_GPU_ALLOW_GROWTH").source, "profile tensorflow");
  EXPECT_FALSE(env.count("TF_DISABLE_POOL_ALLOCATOR")) << "not a TensorFlow variable";
}

TEST(WorkerEnvironment, ThreadsWithoutAProfileSetTheCommonVariables) {
  auto p = pool();
  p.threads = 1;
  auto env = buildWorkerEnvironment(p, "faces-1", 0, {}, "");
  EXPECT_EQ(env.at("OMP_NUM_THREADS").value, "1");
  EXPECT_FALSE(env.count("TF_NUM_INTRAOP_THREADS"));
}

TEST(WorkerEnvironment, GpuSlotsArePinnedAndWrapAround) {
  auto p = pool();
  p.gpus = {0, 1};
  EXPECT_EQ(buildWorkerEnvironment(p, "w", 0, {}, "").at("CUDA_VISIBLE_DEVICES").value, "0");
  EXPECT_EQ(buildWorkerEnvironment(p, "w", 1, {}, "").at("CUDA_VISIBLE_DEVICES").value, "1");
  EXPECT_EQ(buildWorkerEnvironment(p, "w", 2, {}, "").at("CUDA_VISIBLE_DEVICES").value, "0");
  p.gpus = {0, 1, 2, 3};
  p.gpusPerWorker = 2;
  EXPECT_EQ(buildWorkerEnvironment(p, "w", 1, {}, "").at("CUDA_VISIBLE_DEVICES").value, "2,3");
}

TEST(WorkerEnvironment, LayersOverrideInOrder) {
  auto p = pool();
  p.profiles = {"cpu-only"};
  p.threads = 4;
  p.env = {{"OMP_NUM_THREADS", "3"}, {"BULKHEAD_POOL", "spoof"}};
  auto env = buildWorkerEnvironment(p, "faces-1", 0, {}, "");
  EXPECT_EQ(env.at("CUDA_VISIBLE_DEVICES").value, "");
  EXPECT_EQ(env.at("OMP_NUM_THREADS").value, "3") << "the pool's env wins over threads";
  EXPECT_EQ(env.at("BULKHEAD_POOL").value, "faces") << "bulkhead's own variables win last";
}

}  // namespace
}  // namespace bulkhead::runtime
