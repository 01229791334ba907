#pragma once
// The daemon's heap policy for large payloads. Owns: how freed blocks go back to the kernel.
//
// A request body, a worker's result and the response are each a payload-sized block. glibc gives
// blocks over its mmap threshold (at most 32 MiB) straight back to the kernel when they are freed
// and trims the heap top soon after, so the next large job gets fresh pages: one page fault per
// 4 KiB, which on a virtual machine costs 10-20 us each (a 64 MiB body is 16,384 faults, ~0.3 s
// of CPU). keepFreedBlocksForReuse() makes every block come from the heap and stay there while
// jobs keep coming; HeapRelease decides when the daemon has been quiet long enough to give the
// free part back (malloc_trim), so an idle daemon's RSS returns to its small size.
// (Under AddressSanitizer the calls do nothing useful; the rule is still tested.)
//
// May not touch: anything but the C library's allocator.

#include <cstddef>

namespace bulkhead::os {

// mallopt: no mmap'd blocks, no automatic trimming. Call once, before the event loop starts.
void keepFreedBlocksForReuse();
struct HeapUse {
  std::size_t inUse = 0;  // mallinfo2().uordblks
  std::size_t free = 0;   // mallinfo2().fordblks
};
HeapUse heapUse();
// malloc_trim(0): returns free heap pages to the kernel.
void releaseFreeHeap();

// The rule, fed one reading per tick: release when at least `threshold` bytes are free and the
// bytes in use moved less than `quiet` over the last two ticks. A burst of large jobs always has
// a free block (the last job's) but its use swings by a payload at a time; an idle daemon's
// hardly moves.
class HeapRelease {
 public:
  HeapRelease(std::size_t threshold, std::size_t quiet) : threshold_(threshold), quiet_(quiet) {}
  bool due(HeapUse now) {
    const bool still = readings_ > 0 && near(now.inUse, last_.inUse);
    stillTicks_ = still ? stillTicks_ + 1 : 0;
    last_ = now;
    ++readings_;
    if (now.free < threshold_ || stillTicks_ < 2) return false;
    stillTicks_ = 0;
    return true;
  }

 private:
  bool near(std::size_t a, std::size_t b) const { return (a > b ? a - b : b - a) < quiet_; }

  std::size_t threshold_;
  std::size_t quiet_;
  HeapUse last_;
  std::size_t readings_ = 0;
  int stillTicks_ = 0;
};

}  // namespace bulkhead::os
