// SPDX-License-Identifier: Apache-2.0
// Launching the MSDA CUDA kernel (used by the TensorRT plugin and by the GPU tests' C API).
#pragma once

#include "msdaMath.h"

#include <cuda_runtime_api.h>
#include <cstdint>

namespace detr_deploy
{

//! Element type of value / sampling_locations / attention_weights / output.
enum class MsdaType : int32_t
{
    kFLOAT = 0,
    kHALF = 1,
};

//! Enqueue the kernel on `stream`. All pointers are device memory; spatialShapes and levelStartIndex are int32.
//! Returns the launch error (cudaSuccess if the work was queued).
cudaError_t launchMsda(MsdaType type, MsdaShape const& shape, void const* value, int32_t const* spatialShapes,
    int32_t const* levelStartIndex, void const* samplingLocations, void const* attentionWeights, void* output,
    cudaStream_t stream);

} // namespace detr_deploy
