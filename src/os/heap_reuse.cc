#include "os/heap_reuse.h"

#include <malloc.h>

#include <climits>

namespace bulkhead::os {

void keepFreedBlocksForReuse() {
  ::mallopt(M_MMAP_MAX, 0);              // every block from the heap, so a freed one can be reused
  ::mallopt(M_TRIM_THRESHOLD, INT_MAX);  // trimming is HeapRelease's call, not free()'s
}

HeapUse heapUse() {
  const struct mallinfo2 info = ::mallinfo2();
  return HeapUse{info.uordblks, info.fordblks};
}

void releaseFreeHeap() { ::malloc_trim(0); }

}  // namespace bulkhead::os
