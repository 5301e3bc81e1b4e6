// Thread-block clusters (sm_90): reading another CTA's shared memory, and the barrier every thread of a cluster
// meets. The split-K kernels (float_weight_gemm, w4a8_gemv) add a tile's per-split sums this way, with no workspace
// and no second kernel.
#pragma once

#include <cstdint>

namespace lowbit {

// 16 bytes of CTA `rank`'s shared memory (this cluster's), at the address `addr` has in this CTA's. Integer sums
// travel as their bits (__float_as_int).
__device__ __forceinline__ float4 ld_cluster_f4(uint32_t addr, int rank) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(addr), "r"(rank));
  float4 v;
  asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "r"(remote));
  return v;
}

// Every thread of the cluster arrives, then waits for all: `release` (the default) makes this CTA's shared-memory
// stores visible to the cluster's reads after the wait; relaxed orders nothing (a CTA only keeps its memory alive
// for the others' reads). All threads of a warp call it together (.aligned).
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
__device__ __forceinline__ void cluster_sync_relaxed() {
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\n\tbarrier.cluster.wait.aligned;" ::: "memory");
}

}  // namespace lowbit
