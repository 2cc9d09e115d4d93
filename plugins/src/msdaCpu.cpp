// SPDX-License-Identifier: Apache-2.0
// CPU build of the MSDA maths (msdaMath.h), with a C API for tests (ctypes). No CUDA needed.
#include "msdaMath.h"

#include <cstdint>
#include <cstring>

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

template <typename T>
int32_t msdaForwardCpu(MsdaShape const& shape, T const* value, int32_t const* spatialShapes,
    int32_t const* levelStartIndex, T const* samplingLocations, T const* attentionWeights, T* output)
{
    int64_t const total = shape.numOutputs();
    for (int64_t i = 0; i < total; ++i)
    {
        output[i] = Scalar<T>::store(msdaOutputElement(
            shape, value, spatialShapes, levelStartIndex, samplingLocations, attentionWeights, i));
    }
    return 0;
}

} // namespace detr_deploy

using detr_deploy::HalfBits;
using detr_deploy::MsdaShape;

extern "C"
{

int32_t detr_msda_cpu_f32(float const* value, int32_t const* spatialShapes, int32_t const* levelStartIndex,
    float const* samplingLocations, float const* attentionWeights, float* output, int64_t batch, int64_t values,
    int64_t heads, int64_t channels, int64_t queries, int64_t levels, int64_t points)
{
    MsdaShape const shape{batch, values, heads, channels, queries, levels, points};
    return detr_deploy::msdaForwardCpu(
        shape, value, spatialShapes, levelStartIndex, samplingLocations, attentionWeights, output);
}

//! Half-precision inputs and output as raw binary16 bits (numpy float16); float32 maths inside.
int32_t detr_msda_cpu_f16(uint16_t const* value, int32_t const* spatialShapes, int32_t const* levelStartIndex,
    uint16_t const* samplingLocations, uint16_t const* attentionWeights, uint16_t* output, int64_t batch,
    int64_t values, int64_t heads, int64_t channels, int64_t queries, int64_t levels, int64_t points)
{
    MsdaShape const shape{batch, values, heads, channels, queries, levels, points};
    return detr_deploy::msdaForwardCpu(shape, reinterpret_cast<HalfBits const*>(value), spatialShapes,
        levelStartIndex, reinterpret_cast<HalfBits const*>(samplingLocations),
        reinterpret_cast<HalfBits const*>(attentionWeights), reinterpret_cast<HalfBits*>(output));
}

} // extern "C"
