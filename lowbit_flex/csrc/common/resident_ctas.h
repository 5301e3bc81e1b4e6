// How many CTAs of a kernel the current GPU holds at once (the persistent decode GEMVs size their grids with it),
// and how much shared memory one CTA may take.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <mutex>
#include <vector>

namespace lowbit {

// CTAs of `kernel` resident on the whole current GPU with this block and shared memory (cached: the occupancy query
// costs host time on every decode step otherwise).
inline int resident_ctas(const void* kernel, int threads, size_t smem) {
  struct Entry {
    const void* kernel;
    int threads;
    size_t smem;
    int device, ctas;
  };
  static std::mutex mu;
  static std::vector<Entry> cache;
  int device = 0;
  cudaGetDevice(&device);
  std::lock_guard<std::mutex> lock(mu);
  for (const Entry& e : cache)
    if (e.kernel == kernel && e.threads == threads && e.smem == smem && e.device == device) return e.ctas;
  int ctas = 1, sms = 1;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, kernel, threads, smem) != cudaSuccess || ctas < 1) ctas = 1;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms < 1) sms = 1;
  cache.push_back({kernel, threads, smem, device, ctas * sms});
  return ctas * sms;
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
