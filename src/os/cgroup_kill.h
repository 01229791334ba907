#pragma once
// Emptying and removing a cgroup tree: what Cgroups::remove() does to a dead worker's cgroup and
// cleanupStale() to a dead supervisor's. cgroups.cc detects hierarchies and creates cgroups; this
// file only ends them.
//
// How this works:
// - v2 on Linux 5.14+ has cgroup.kill: one write SIGKILLs every process of the subtree, and the
//   kernel also kills a child forked meanwhile (Documentation/admin-guide/cgroup-v2.rst,
//   "cgroup.kill").
// - v1 (this project's machines) and older v2 have no such file: every pid listed in cgroup.procs
//   of the cgroup and of each cgroup below it gets SIGKILL, and the lists are read again until one
//   read finds them all empty. A process that forks between our read and our kill leaves a child
//   in the same cgroup (children inherit it, man 7 cgroups), which the next read lists, so the
//   rounds end as soon as the tree stops growing. The tree of directories is listed again each
//   round too: a process running as root may make cgroups below its own.
// - The rounds are bounded (kCgroupKillRounds, pausing 1, 2, 4 ... 50 ms between them: about 0.7 s
//   in all), so a process that cannot die (uninterruptible sleep) cannot hold the event loop; the
//   error then names the pids still listed.
// - A killed process that nobody has reaped yet (a zombie) is no longer listed in cgroup.procs and
//   does not keep its cgroup from being removed (checked on this project's 6.x kernels), so
//   emptying never waits for the supervisor's own reaping.

#include <sys/types.h>

#include <string>
#include <vector>

#include "os/cgroups.h"

namespace bulkhead::os {

inline constexpr int kCgroupKillRounds = 20;

// dir and every cgroup below it (at most 16 levels), deepest first, so removal can follow the
// order.
void collectCgroupTree(const CgroupHost& host, const std::string& dir,
                       std::vector<std::string>* out);

// Kills everything in dir and below, then removes those directories, deepest first. A missing
// dir counts as removed. On failure: false and *error says what was left or which rmdir failed.
// *killed (may be null) is incremented by the kill(2) calls made (each pid per round it was seen).
bool emptyAndRemoveCgroup(CgroupHost& host, const std::string& dir, std::string* error,
                          int* killed = nullptr);

}  // namespace bulkhead::os
