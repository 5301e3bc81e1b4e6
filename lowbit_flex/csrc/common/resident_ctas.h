// How many CTAs (or clusters) of a kernel the current GPU holds at once (the persistent decode GEMVs size their grids
// with it, the split-K GEMM decides whether its splits may form clusters), and how much shared memory one CTA may take.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <mutex>
#include <vector>

namespace lowbit {

namespace detail {
// `kernel`'s occupancy with this block and shared memory on the current GPU, cached per device (the occupancy
// queries cost host time on every decode step otherwise): CTAs on the whole GPU (cluster 0), or clusters of
// `cluster` CTAs along z resident at once (GPCs hold whole clusters, so fewer CTAs than the SMs may fit).
inline int occupancy(const void* kernel, int threads, size_t smem, int cluster) {
  struct Entry {
    const void* kernel;
    int threads;
    size_t smem;
    int cluster, device, count;
  };
  static std::mutex mu;
  static std::vector<Entry> cache;
  int device = 0;
  cudaGetDevice(&device);
  std::lock_guard<std::mutex> lock(mu);
  for (const Entry& e : cache)
    if (e.kernel == kernel && e.threads == threads && e.smem == smem && e.cluster == cluster && e.device == device)
      return e.count;
  int count = 0;
  if (cluster == 0) {
    int ctas = 1, sms = 1;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, kernel, threads, smem) != cudaSuccess || ctas < 1)
      ctas = 1;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms < 1) sms = 1;
    count = ctas * sms;
  } else {
    cudaLaunchConfig_t config{};
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = 1;
    attr.val.clusterDim.y = 1;
    attr.val.clusterDim.z = static_cast<unsigned>(cluster);
    config.gridDim = dim3(1, 1, static_cast<unsigned>(cluster));
    config.blockDim = dim3(static_cast<unsigned>(threads));
    config.dynamicSmemBytes = smem;
    config.attrs = &attr;
    config.numAttrs = 1;
    if (cudaOccupancyMaxActiveClusters(&count, kernel, &config) != cudaSuccess) count = 0;
  }
  cudaGetLastError();  // a failed query leaves no sticky error for the next launch to report
  cache.push_back({kernel, threads, smem, cluster, device, count});
  return count;
}
}  // namespace detail

// CTAs of `kernel` resident on the whole current GPU with this block and shared memory (cached).
inline int resident_ctas(const void* kernel, int threads, size_t smem) {
  return detail::occupancy(kernel, threads, smem, 0);
}

// Clusters of `cluster` CTAs (along z) of `kernel` resident at once on the current GPU; 0 where none can run
// (cached). The kernel's dynamic shared memory attribute must already allow `smem`.
inline int resident_clusters(const void* kernel, int threads, size_t smem, int cluster) {
  return detail::occupancy(kernel, threads, smem, cluster);
}

// The dynamic shared memory one CTA may opt in to on the current GPU (cached per device, as above).
inline size_t max_shared_per_cta() {
  constexpr int kDevices = 64;
  static int bytes[kDevices] = {};  // 0: not yet asked
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kDevices) return 48 * 1024;
  if (bytes[device] == 0 &&
      cudaDeviceGetAttribute(&bytes[device], cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess)
    bytes[device] = 48 * 1024;
  return static_cast<size_t>(bytes[device]);
}

// The current GPU's SM count (cached per device, as above): split-K plans size their grids with it.
inline int multiprocessors() {
  constexpr int kDevices = 64;
  static int count[kDevices] = {};  // 0: not yet asked
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kDevices) return 1;
  if (count[device] == 0 &&
      (cudaDeviceGetAttribute(&count[device], cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
       count[device] < 1))
    count[device] = 1;
  return count[device];
}

}  // namespace lowbit
