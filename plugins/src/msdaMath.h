// SPDX-License-Identifier: Apache-2.0
// Multi-scale deformable attention: the per-output-element maths, written once for host and device.
//
// Contract (DESIGN.md): value [N,S,M,D], spatial_shapes [L,2] (H, W), level_start_index [L],
// sampling_locations [N,Lq,M,L,P,2] (x, y in [0,1] of the padded map), attention_weights [N,Lq,M,L,P]
// -> output [N,Lq,M*D]. Bilinear sampling with zero padding, align_corners=False: pixel = loc * size - 0.5,
// a neighbour outside the map reads 0 (the official CUDA kernel and grid_sample agree on this).
// Coordinates and the accumulation are float32 whatever the storage type (float or half).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define DD_HD __host__ __device__ __forceinline__
#else
#define DD_HD inline
#endif
#if defined(__CUDA_ARCH__)
#define DD_UNROLL _Pragma("unroll") // device pass only: the host compiler does not know the pragma
#else
#define DD_UNROLL
#endif

namespace detr_deploy
{

//! Storage type <-> float32; specialised for float here and for half by each build (CUDA __half, CPU bits).
template <typename T>
struct Scalar;

template <>
struct Scalar<float>
{
    static DD_HD float load(float v)
    {
        return v;
    }
    static DD_HD float store(float v)
    {
        return v;
    }
};

//! Sizes of one call. int64 throughout: N*Lq*M*D and S*M*D can exceed 2^31.
struct MsdaShape
{
    int64_t batch;   // N
    int64_t values;  // S = sum over levels of H_l * W_l
    int64_t heads;   // M
    int64_t channels; // D, per head
    int64_t queries; // Lq
    int64_t levels;  // L
    int64_t points;  // P

    DD_HD int64_t numOutputs() const
    {
        return batch * queries * heads * channels;
    }
};

//! The four bilinear neighbours of one sampling point in one level map, computed once per point and shared by
//! every channel. Corner i is (h0 + (i >> 1), w0 + (i & 1)): 0 top-left, 1 top-right, 2 bottom-left,
//! 3 bottom-right. A corner outside the map has weight 0, pixel 0 (a safe, in-map index) and its bit in `valid`
//! clear; callers that must not read it at all (a NaN or inf there would survive a 0 weight) test `valid`.
struct BilinearCorners
{
    int32_t pixel[4];  // row-major pixel index h * W + w within the level (int32: a level has < 2^31 pixels)
    float weight[4];   // bilinear weight; 0 outside the map
    int32_t valid;     // bit i set: corner i lies inside the map
};

//! Neighbours and weights of pixel coordinates (h, w) (pixel = loc * size - 0.5) in a height x width map.
DD_HD BilinearCorners bilinearCorners(int32_t height, int32_t width, float h, float w)
{
    BilinearCorners c{{0, 0, 0, 0}, {0.0f, 0.0f, 0.0f, 0.0f}, 0};
    // Outside the open box (-1, H) x (-1, W) every neighbour is outside (or has weight 0). Also rejects NaN.
    if (!(h > -1.0f && w > -1.0f && h < static_cast<float>(height) && w < static_cast<float>(width)))
    {
        return c;
    }
    int32_t const h0 = static_cast<int32_t>(floorf(h));
    int32_t const w0 = static_cast<int32_t>(floorf(w));
    int32_t const h1 = h0 + 1;
    int32_t const w1 = w0 + 1;
    float const lh = h - static_cast<float>(h0);
    float const lw = w - static_cast<float>(w0);
    float const hh = 1.0f - lh;
    float const hw = 1.0f - lw;
    bool const top = h0 >= 0;
    bool const bottom = h1 < height;
    bool const left = w0 >= 0;
    bool const right = w1 < width;
    int32_t const row0 = h0 * width;
    int32_t const row1 = row0 + width;
    if (top && left)
    {
        c.pixel[0] = row0 + w0;
        c.weight[0] = hh * hw;
        c.valid |= 1;
    }
    if (top && right)
    {
        c.pixel[1] = row0 + w1;
        c.weight[1] = hh * lw;
        c.valid |= 2;
    }
    if (bottom && left)
    {
        c.pixel[2] = row1 + w0;
        c.weight[2] = lh * hw;
        c.valid |= 4;
    }
    if (bottom && right)
    {
        c.pixel[3] = row1 + w1;
        c.weight[3] = lh * lw;
        c.valid |= 8;
    }
    return c;
}

//! Bilinear sample of one channel of a level at pixel coordinates (h, w), zero outside the map.
//! `level` points at channel d of pixel (0, 0); consecutive pixels are `pixelStride` elements apart.
//! Corners outside the map are never read; the inside ones are summed in corner order.
template <typename T>
DD_HD float sampleBilinearZeroPad(
    T const* level, int32_t height, int32_t width, int64_t pixelStride, float h, float w)
{
    BilinearCorners const c = bilinearCorners(height, width, h, w);
    float result = 0.0f;
    DD_UNROLL
    for (int32_t i = 0; i < 4; ++i)
    {
        if (c.valid & (1 << i))
        {
            result += c.weight[i] * Scalar<T>::load(level[static_cast<int64_t>(c.pixel[i]) * pixelStride]);
        }
    }
    return result;
}

//! One output element (n, q, m, d): sum over levels and points of weight * bilinear sample.
//! `index` is the flat position in the [N, Lq, M, D] output (= [N, Lq, M*D]).
template <typename T>
DD_HD float msdaOutputElement(MsdaShape const& s, T const* value, int32_t const* spatialShapes,
    int32_t const* levelStartIndex, T const* samplingLocations, T const* attentionWeights, int64_t index)
{
    int64_t const d = index % s.channels;
    int64_t const m = (index / s.channels) % s.heads;
    int64_t const q = (index / (s.channels * s.heads)) % s.queries;
    int64_t const n = index / (s.channels * s.heads * s.queries);
    int64_t const pixelStride = s.heads * s.channels;
    // [N, Lq, M, L, P] position of (n, q, m, level 0, point 0)
    int64_t const weightBase = ((n * s.queries + q) * s.heads + m) * s.levels * s.points;
    float accumulator = 0.0f;
    for (int64_t l = 0; l < s.levels; ++l)
    {
        int32_t const height = spatialShapes[2 * l];
        int32_t const width = spatialShapes[2 * l + 1];
        T const* level = value + (n * s.values + levelStartIndex[l]) * pixelStride + m * s.channels + d;
        for (int64_t p = 0; p < s.points; ++p)
        {
            int64_t const k = weightBase + l * s.points + p;
            float const x = Scalar<T>::load(samplingLocations[2 * k]);
            float const y = Scalar<T>::load(samplingLocations[2 * k + 1]);
            float const weight = Scalar<T>::load(attentionWeights[k]);
            float const h = y * static_cast<float>(height) - 0.5f;
            float const w = x * static_cast<float>(width) - 0.5f;
            accumulator += weight * sampleBilinearZeroPad(level, height, width, pixelStride, h, w);
        }
    }
    return accumulator;
}

} // namespace detr_deploy
