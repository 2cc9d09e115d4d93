// SPDX-License-Identifier: Apache-2.0
// CPU MSDA forward built on the maths the CUDA kernel uses (msdaMath.h), with a C API for ctypes: the native
// kernel of detr_deploy.runtime.msda_native and of the tests. No CUDA needed.
//
// Per (n, q, m) output row, each (level, point) gets its coordinates, bilinear corners (bilinearCorners) and
// attention weight once, and its corner rows are prefetched (pass 1); the D channels are then accumulated point by
// point by a contiguous loop the compiler vectorises (pass 2). The gathers of a row's L*P points are in flight
// together, which is where the time goes.
// Per channel the operations and their order are those of msdaOutputElement (float32 throughout), so the result
// does not depend on the thread count. Threads (std::thread) take contiguous ranges of (n, q).
#include "msdaMath.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(_WIN32)
#define DETR_MSDA_API __declspec(dllexport)
#else
#define DETR_MSDA_API __attribute__((visibility("default")))
#endif

#if defined(_MSC_VER)
#define DD_RESTRICT __restrict
#else
#define DD_RESTRICT __restrict__
#endif

namespace detr_deploy
{

//! IEEE-754 binary16 stored as raw bits (the host side of CUDA's __half).
struct HalfBits
{
    uint16_t bits;
};

inline float halfToFloat(uint16_t h)
{
    uint32_t const sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0x1fu)
    {
        bits = sign | 0x7f800000u | (mantissa << 13); // inf / nan
    }
    else if (exponent == 0)
    {
        if (mantissa == 0)
        {
            bits = sign; // +-0
        }
        else
        {
            // subnormal: normalise
            exponent = 127 - 15 + 1;
            while ((mantissa & 0x400u) == 0)
            {
                mantissa <<= 1;
                --exponent;
            }
            mantissa &= 0x3ffu;
            bits = sign | (exponent << 23) | (mantissa << 13);
        }
    }
    else
    {
        bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
    }
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    return f;
}

//! float -> binary16 with round-to-nearest-even (what __float2half does).
inline uint16_t floatToHalf(float f)
{
    uint32_t x;
    std::memcpy(&x, &f, sizeof(x));
    uint32_t const sign = (x >> 16) & 0x8000u;
    uint32_t const absBits = x & 0x7fffffffu;
    if (absBits >= 0x7f800000u)
    {
        return static_cast<uint16_t>(sign | 0x7c00u | (absBits > 0x7f800000u ? 0x200u : 0u)); // inf / nan
    }
    if (absBits >= 0x477ff000u)
    {
        return static_cast<uint16_t>(sign | 0x7c00u); // rounds to inf
    }
    if (absBits < 0x38800000u)
    {
        // result is subnormal or zero: shift the mantissa (with implicit 1) and round to nearest even
        if (absBits < 0x33000000u)
        {
            return static_cast<uint16_t>(sign);
        }
        uint32_t const exponent = absBits >> 23;
        uint32_t const mantissa = (absBits & 0x7fffffu) | 0x800000u;
        uint32_t const shift = 126 - exponent; // 14..24
        uint32_t const value = mantissa >> shift;
        uint32_t const remainder = mantissa & ((1u << shift) - 1u);
        uint32_t const halfway = 1u << (shift - 1);
        uint32_t rounded = value + ((remainder > halfway || (remainder == halfway && (value & 1u))) ? 1u : 0u);
        return static_cast<uint16_t>(sign | rounded);
    }
    uint32_t const rebiased = absBits - ((127u - 15u) << 23);
    uint32_t const value = rebiased >> 13;
    uint32_t const remainder = rebiased & 0x1fffu;
    uint32_t const rounded = value + ((remainder > 0x1000u || (remainder == 0x1000u && (value & 1u))) ? 1u : 0u);
    return static_cast<uint16_t>(sign | rounded);
}

template <>
struct Scalar<HalfBits>
{
    static float load(HalfBits v)
    {
        return halfToFloat(v.bits);
    }
    static HalfBits store(float v)
    {
        return HalfBits{floatToHalf(v)};
    }
};

//! Storage -> float32 rows of D channels: float rows are used in place, half rows are converted into scratch.
template <typename T>
struct RowSource;

template <>
struct RowSource<float>
{
    static float const* row(float const* src, int64_t /*channels*/, float* /*scratch*/)
    {
        return src;
    }
};

template <>
struct RowSource<HalfBits>
{
    static float const* row(HalfBits const* src, int64_t channels, float* scratch)
    {
        for (int64_t d = 0; d < channels; ++d)
        {
            scratch[d] = halfToFloat(src[d].bits);
        }
        return scratch;
    }
};

//! acc[d] += a * (c0 * r0[d] + c1 * r1[d] + c2 * r2[d] + c3 * r3[d]), summed left to right like
//! sampleBilinearZeroPad (a corner outside the map reads the zero row with weight 0, which adds exactly 0).
inline void accumulatePoint(float* DD_RESTRICT acc, float const* DD_RESTRICT r0, float const* DD_RESTRICT r1,
    float const* DD_RESTRICT r2, float const* DD_RESTRICT r3, float c0, float c1, float c2, float c3, float a,
    int64_t channels)
{
    for (int64_t d = 0; d < channels; ++d)
    {
        acc[d] += a * (((c0 * r0[d] + c1 * r1[d]) + c2 * r2[d]) + c3 * r3[d]);
    }
}

//! One sampling point, prepared before the channel loop: its four corner rows (the zero row outside the map),
//! their bilinear weights and the attention weight.
template <typename T>
struct PreparedPoint
{
    T const* row[4];
    float corner[4];
    float weight;
};

//! Per-thread buffers: a zero row of the storage type (corners outside the map), the prepared points of one
//! output row, and for half storage the four converted corner rows and the float32 accumulator.
template <typename T>
struct Scratch
{
    static constexpr bool kConverts = !std::is_same<T, float>::value;
    explicit Scratch(MsdaShape const& s)
        : zeros(static_cast<size_t>(s.channels), T{})
        , points(static_cast<size_t>(s.levels * s.points))
        , rows(kConverts ? static_cast<size_t>(4 * s.channels) : 0, 0.0f)
        , acc(kConverts ? static_cast<size_t>(s.channels) : 0, 0.0f)
    {
    }
    std::vector<T> zeros; // T{}: 0.0f, or binary16 bits 0 (+0)
    std::vector<PreparedPoint<T>> points;
    std::vector<float> rows;
    std::vector<float> acc;
};

template <typename T>
inline float* accumulatorFor(T* /*out*/, Scratch<T>& scratch)
{
    return scratch.acc.data();
}

template <>
inline float* accumulatorFor<float>(float* out, Scratch<float>& /*scratch*/)
{
    return out;
}

template <typename T>
inline void storeRow(T* out, float const* acc, int64_t channels)
{
    for (int64_t d = 0; d < channels; ++d)
    {
        out[d] = Scalar<T>::store(acc[d]);
    }
}

template <>
inline void storeRow<float>(float* /*out*/, float const* /*acc*/, int64_t /*channels*/)
{
    // accumulated in place
}

inline void prefetchRow(void const* p, int64_t bytes)
{
#if defined(__GNUC__) || defined(__clang__)
    char const* c = static_cast<char const*>(p);
    for (int64_t b = 0; b < bytes; b += 64)
    {
        __builtin_prefetch(c + b);
    }
#else
    (void) p;
    (void) bytes;
#endif
}

//! Output rows r = n * Lq + q in [rowBegin, rowEnd), all heads.
template <typename T>
void msdaRowsCpu(MsdaShape const& s, T const* value, int32_t const* spatialShapes, int32_t const* levelStartIndex,
    T const* samplingLocations, T const* attentionWeights, T* output, int64_t rowBegin, int64_t rowEnd,
    Scratch<T>& scratch)
{
    int64_t const channels = s.channels;
    int64_t const pixelStride = s.heads * channels;
    int64_t const rowBytes = channels * static_cast<int64_t>(sizeof(T));
    T const* const zeros = scratch.zeros.data();
    PreparedPoint<T>* const points = scratch.points.data();
    float* const rows = scratch.rows.data();
    for (int64_t row = rowBegin; row < rowEnd; ++row)
    {
        int64_t const n = row / s.queries;
        for (int64_t m = 0; m < s.heads; ++m)
        {
            int64_t const outRow = row * s.heads + m; // (n, q, m) in [N, Lq, M]
            int64_t const weightBase = outRow * s.levels * s.points; // [N, Lq, M, L, P] of (n, q, m, 0, 0)
            // pass 1: coordinates, corners and weights of every point; start fetching their rows
            size_t count = 0;
            for (int64_t l = 0; l < s.levels; ++l)
            {
                int32_t const height = spatialShapes[2 * l];
                int32_t const width = spatialShapes[2 * l + 1];
                T const* level = value + (n * s.values + levelStartIndex[l]) * pixelStride + m * channels;
                for (int64_t p = 0; p < s.points; ++p)
                {
                    int64_t const k = weightBase + l * s.points + p;
                    float const x = Scalar<T>::load(samplingLocations[2 * k]);
                    float const y = Scalar<T>::load(samplingLocations[2 * k + 1]);
                    float const weight = Scalar<T>::load(attentionWeights[k]);
                    float const h = y * static_cast<float>(height) - 0.5f;
                    float const w = x * static_cast<float>(width) - 0.5f;
                    BilinearCorners const c = bilinearCorners(height, width, h, w);
                    if (c.valid == 0 && std::isfinite(weight))
                    {
                        continue; // adds weight * 0 = 0 to every channel
                    }
                    PreparedPoint<T>& point = points[count++];
                    point.weight = weight;
                    for (int32_t i = 0; i < 4; ++i)
                    {
                        bool const inside = (c.valid & (1 << i)) != 0;
                        point.row[i] = inside ? level + c.pixel[i] * pixelStride : zeros;
                        point.corner[i] = c.weight[i];
                        if (inside)
                        {
                            prefetchRow(point.row[i], rowBytes);
                        }
                    }
                }
            }
            // pass 2: the channel loops, in point order
            T* const out = output + outRow * channels;
            float* const acc = accumulatorFor(out, scratch);
            std::fill(acc, acc + channels, 0.0f);
            for (size_t j = 0; j < count; ++j)
            {
                PreparedPoint<T> const& point = points[j];
                float const* r[4];
                for (int32_t i = 0; i < 4; ++i)
                {
                    r[i] = RowSource<T>::row(point.row[i], channels, rows + i * channels);
                }
                accumulatePoint(acc, r[0], r[1], r[2], r[3], point.corner[0], point.corner[1], point.corner[2],
                    point.corner[3], point.weight, channels);
            }
            storeRow(out, acc, channels);
        }
    }
}

//! Threads used for `rows` output rows of `workPerRow` multiply-adds each (requested <= 0: one per core).
inline int64_t threadCount(int32_t requested, int64_t rows, int64_t workPerRow)
{
    int64_t threads = requested > 0 ? requested : static_cast<int64_t>(std::thread::hardware_concurrency());
    threads = std::max<int64_t>(threads, 1);
    // at least ~64k multiply-adds per thread: below that, starting a thread costs more than it saves
    constexpr int64_t kMinWorkPerThread = int64_t{1} << 16;
    int64_t const byWork = std::max<int64_t>(1, rows * std::max<int64_t>(workPerRow, 1) / kMinWorkPerThread);
    return std::min({threads, rows, byWork});
}

template <typename T>
int32_t msdaForwardCpu(MsdaShape const& s, T const* value, int32_t const* spatialShapes,
    int32_t const* levelStartIndex, T const* samplingLocations, T const* attentionWeights, T* output,
    int32_t numThreads)
{
    if (s.batch < 0 || s.values < 0 || s.heads < 0 || s.channels < 0 || s.queries < 0 || s.levels < 0
        || s.points < 0)
    {
        return 1;
    }
    if (s.numOutputs() == 0)
    {
        return 0;
    }
    if (output == nullptr || ((s.levels > 0 && s.points > 0)
                                 && (value == nullptr || spatialShapes == nullptr || levelStartIndex == nullptr
                                     || samplingLocations == nullptr || attentionWeights == nullptr)))
    {
        return 1;
    }
    for (int64_t l = 0; l < s.levels && s.points > 0; ++l)
    {
        int64_t const height = spatialShapes[2 * l];
        int64_t const width = spatialShapes[2 * l + 1];
        int64_t const start = levelStartIndex[l];
        if (height < 0 || width < 0 || start < 0 || start + height * width > s.values)
        {
            return 1; // a level outside value: refuse rather than read out of bounds
        }
    }
    int64_t const rows = s.batch * s.queries;
    int64_t const threads = threadCount(numThreads, rows, s.heads * s.levels * s.points * (s.channels + 8));
    auto chunkBegin = [rows, threads](int64_t t) { return rows * t / threads; };
    if (threads == 1)
    {
        Scratch<T> scratch(s);
        msdaRowsCpu(s, value, spatialShapes, levelStartIndex, samplingLocations, attentionWeights, output, 0, rows,
            scratch);
        return 0;
    }
    std::vector<std::thread> workers;
    workers.reserve(static_cast<size_t>(threads - 1));
    std::vector<std::exception_ptr> failures(static_cast<size_t>(threads));
    auto work = [&](int64_t t) {
        try
        {
            Scratch<T> scratch(s);
            msdaRowsCpu(s, value, spatialShapes, levelStartIndex, samplingLocations, attentionWeights, output,
                chunkBegin(t), chunkBegin(t + 1), scratch);
        }
        catch (...)
        {
            failures[static_cast<size_t>(t)] = std::current_exception();
        }
    };
    int64_t started = 1; // chunk 0 runs on the calling thread
    for (; started < threads; ++started)
    {
        try
        {
            workers.emplace_back(work, started);
        }
        catch (...)
        {
            break; // no more threads: the calling thread does the remaining chunks
        }
    }
    work(0);
    for (int64_t t = started; t < threads; ++t)
    {
        work(t);
    }
    for (std::thread& worker : workers)
    {
        worker.join();
    }
    for (std::exception_ptr const& f : failures)
    {
        if (f)
        {
            return 2;
        }
    }
    return 0;
}

} // namespace detr_deploy

using detr_deploy::HalfBits;
using detr_deploy::MsdaShape;

extern "C"
{

//! ABI of the functions below; the Python loader refuses a library reporting another number.
DETR_MSDA_API int32_t detr_msda_cpu_version()
{
    return 1;
}

//! float32 forward. Returns 0 on success, 1 for invalid arguments (negative sizes, a level outside value),
//! 2 if the computation failed (out of memory). num_threads <= 0: one thread per hardware thread.
DETR_MSDA_API int32_t detr_msda_cpu_f32(float const* value, int32_t const* spatialShapes,
    int32_t const* levelStartIndex, float const* samplingLocations, float const* attentionWeights, float* output,
    int64_t batch, int64_t values, int64_t heads, int64_t channels, int64_t queries, int64_t levels, int64_t points,
    int32_t numThreads)
{
    try
    {
        MsdaShape const shape{batch, values, heads, channels, queries, levels, points};
        return detr_deploy::msdaForwardCpu(
            shape, value, spatialShapes, levelStartIndex, samplingLocations, attentionWeights, output, numThreads);
    }
    catch (...)
    {
        return 2;
    }
}

//! Half-precision inputs and output as raw binary16 bits (numpy float16); float32 maths inside.
DETR_MSDA_API int32_t detr_msda_cpu_f16(uint16_t const* value, int32_t const* spatialShapes,
    int32_t const* levelStartIndex, uint16_t const* samplingLocations, uint16_t const* attentionWeights,
    uint16_t* output, int64_t batch, int64_t values, int64_t heads, int64_t channels, int64_t queries,
    int64_t levels, int64_t points, int32_t numThreads)
{
    try
    {
        MsdaShape const shape{batch, values, heads, channels, queries, levels, points};
        return detr_deploy::msdaForwardCpu(shape, reinterpret_cast<HalfBits const*>(value), spatialShapes,
            levelStartIndex, reinterpret_cast<HalfBits const*>(samplingLocations),
            reinterpret_cast<HalfBits const*>(attentionWeights), reinterpret_cast<HalfBits*>(output), numThreads);
    }
    catch (...)
    {
        return 2;
    }
}

} // extern "C"
