// SPDX-License-Identifier: Apache-2.0
// MSDA CUDA kernel: one thread per output element (n, q, m, d), grid-stride loop, maths from msdaMath.h.
// Consecutive threads differ in d, so value reads are coalesced ([N,S,M,D] is d-contiguous) and the sampling
// locations / weights of a warp are the same few addresses (broadcast).
#include "msdaKernel.h"

#include <cuda_fp16.h>

namespace detr_deploy
{

template <>
struct Scalar<__half>
{
    static __device__ __forceinline__ float load(__half v)
    {
        return __half2float(v);
    }
    static __device__ __forceinline__ __half store(float v)
    {
        return __float2half_rn(v);
    }
};

template <typename T>
__global__ void msdaKernel(MsdaShape shape, T const* __restrict__ value, int32_t const* __restrict__ spatialShapes,
    int32_t const* __restrict__ levelStartIndex, T const* __restrict__ samplingLocations,
    T const* __restrict__ attentionWeights, T* __restrict__ output)
{
    int64_t const total = shape.numOutputs();
    int64_t const stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride)
    {
        output[i] = Scalar<T>::store(msdaOutputElement(
            shape, value, spatialShapes, levelStartIndex, samplingLocations, attentionWeights, i));
    }
}

cudaError_t launchMsda(MsdaType type, MsdaShape const& shape, void const* value, int32_t const* spatialShapes,
    int32_t const* levelStartIndex, void const* samplingLocations, void const* attentionWeights, void* output,
    cudaStream_t stream)
{
    int64_t const total = shape.numOutputs();
    if (total == 0)
    {
        return cudaSuccess;
    }
    constexpr int32_t kThreads = 256;
    // enough blocks to fill any current GPU; the grid-stride loop covers the rest (no size limit)
    int64_t const blocks = (total + kThreads - 1) / kThreads;
    int32_t const grid = static_cast<int32_t>(blocks < 65535 * 8 ? blocks : 65535 * 8);
    if (type == MsdaType::kFLOAT)
    {
        msdaKernel<float><<<grid, kThreads, 0, stream>>>(shape, static_cast<float const*>(value), spatialShapes,
            levelStartIndex, static_cast<float const*>(samplingLocations), static_cast<float const*>(attentionWeights),
            static_cast<float*>(output));
    }
    else
    {
        msdaKernel<__half><<<grid, kThreads, 0, stream>>>(shape, static_cast<__half const*>(value), spatialShapes,
            levelStartIndex, static_cast<__half const*>(samplingLocations),
            static_cast<__half const*>(attentionWeights), static_cast<__half*>(output));
    }
    return cudaGetLastError();
}

} // namespace detr_deploy

//! C API for tests and benchmarks (ctypes with torch-allocated device buffers). dtype: 0 float32, 1 float16.
extern "C" int32_t detr_msda_cuda(int32_t dtype, void const* value, int32_t const* spatialShapes,
    int32_t const* levelStartIndex, void const* samplingLocations, void const* attentionWeights, void* output,
    int64_t batch, int64_t values, int64_t heads, int64_t channels, int64_t queries, int64_t levels, int64_t points,
    void* stream)
{
    detr_deploy::MsdaShape const shape{batch, values, heads, channels, queries, levels, points};
    cudaError_t const status = detr_deploy::launchMsda(static_cast<detr_deploy::MsdaType>(dtype), shape, value,
        spatialShapes, levelStartIndex, samplingLocations, attentionWeights, output,
        static_cast<cudaStream_t>(stream));
    return static_cast<int32_t>(status);
}
