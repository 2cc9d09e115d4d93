// SPDX-License-Identifier: Apache-2.0
// TensorRT IPluginV3 wrapper of the MSDA kernel, its creator, and the library's registration entry points.
#include "msdaPlugin.h"

#include "msdaKernel.h"

#include <cstdio>
#include <mutex>
#include <new>

using namespace nvinfer1;

namespace detr_deploy
{
namespace
{

std::mutex gLoggerMutex;
ILoggerFinder* gLoggerFinder{nullptr};

void logError(char const* message) noexcept
{
    std::lock_guard<std::mutex> lock(gLoggerMutex);
    ILogger* logger = gLoggerFinder != nullptr ? gLoggerFinder->findLogger() : nullptr;
    if (logger != nullptr)
    {
        logger->log(ILogger::Severity::kERROR, message);
    }
    else
    {
        std::fprintf(stderr, "[DetrDeployMSDA_TRT] %s\n", message);
    }
}

constexpr int32_t kVALUE = 0;
constexpr int32_t kSHAPES = 1;
constexpr int32_t kSTARTS = 2;
constexpr int32_t kLOCATIONS = 3;
constexpr int32_t kWEIGHTS = 4;
constexpr int32_t kNB_INPUTS = 5;

bool ranksAreValid(int32_t valueRank, int32_t shapesRank, int32_t startsRank, int32_t locationsRank,
    int32_t weightsRank) noexcept
{
    return valueRank == 4 && shapesRank == 2 && startsRank == 1 && locationsRank == 6 && weightsRank == 5;
}

} // namespace

MsdaPlugin::MsdaPlugin(std::string pluginNamespace)
    : mNamespace(std::move(pluginNamespace))
{
}

IPluginCapability* MsdaPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* MsdaPlugin::clone() noexcept
{
    return new (std::nothrow) MsdaPlugin(mNamespace);
}

char const* MsdaPlugin::getPluginName() const noexcept
{
    return kMSDA_PLUGIN_NAME;
}

char const* MsdaPlugin::getPluginVersion() const noexcept
{
    return kMSDA_PLUGIN_VERSION;
}

char const* MsdaPlugin::getPluginNamespace() const noexcept
{
    return mNamespace.c_str();
}

int32_t MsdaPlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t MsdaPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kNB_INPUTS || nbOutputs != 1)
    {
        logError("expects 5 inputs (value, spatial_shapes, level_start_index, sampling_locations, "
                 "attention_weights) and 1 output");
        return -1;
    }
    outputTypes[0] = inputTypes[kVALUE];
    return 0;
}

int32_t MsdaPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != kNB_INPUTS || nbOutputs != 1
        || !ranksAreValid(inputs[kVALUE].nbDims, inputs[kSHAPES].nbDims, inputs[kSTARTS].nbDims,
            inputs[kLOCATIONS].nbDims, inputs[kWEIGHTS].nbDims))
    {
        logError("input ranks must be value 4, spatial_shapes 2, level_start_index 1, sampling_locations 6, "
                 "attention_weights 5");
        return -1;
    }
    // [N, S, M, D] and [N, Lq, M, L, P, 2] -> [N, Lq, M*D]
    outputs[0].nbDims = 3;
    outputs[0].d[0] = inputs[kVALUE].d[0];
    outputs[0].d[1] = inputs[kLOCATIONS].d[1];
    outputs[0].d[2] = exprBuilder.operation(DimensionOperation::kPROD, *inputs[kVALUE].d[2], *inputs[kVALUE].d[3]);
    return 0;
}

bool MsdaPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNB_INPUTS || nbOutputs != 1 || pos < 0 || pos > kNB_INPUTS)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == kSHAPES || pos == kSTARTS)
    {
        return desc.type == DataType::kINT32;
    }
    if (pos == kVALUE)
    {
        return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
    }
    // sampling_locations, attention_weights and the output follow value's type
    return desc.type == inOut[kVALUE].desc.type;
}

int32_t MsdaPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNB_INPUTS || nbOutputs != 1
        || !ranksAreValid(in[kVALUE].desc.dims.nbDims, in[kSHAPES].desc.dims.nbDims, in[kSTARTS].desc.dims.nbDims,
            in[kLOCATIONS].desc.dims.nbDims, in[kWEIGHTS].desc.dims.nbDims))
    {
        logError("configurePlugin: unexpected input count or ranks");
        return -1;
    }
    // The number of levels appears three times; refuse an inconsistent graph at build time (-1 = unknown yet).
    int64_t const levels = in[kLOCATIONS].desc.dims.d[3];
    int64_t const shapeLevels = in[kSHAPES].desc.dims.d[0];
    int64_t const startLevels = in[kSTARTS].desc.dims.d[0];
    if ((levels >= 0 && shapeLevels >= 0 && levels != shapeLevels)
        || (shapeLevels >= 0 && startLevels >= 0 && shapeLevels != startLevels)
        || (in[kSHAPES].desc.dims.d[1] >= 0 && in[kSHAPES].desc.dims.d[1] != 2))
    {
        logError("configurePlugin: spatial_shapes must be [L, 2] and level_start_index [L], with L equal to "
                 "sampling_locations' level axis");
        return -1;
    }
    return 0;
}

size_t MsdaPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0;
}

int32_t MsdaPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNB_INPUTS || nbOutputs != 1
        || !ranksAreValid(in[kVALUE].dims.nbDims, in[kSHAPES].dims.nbDims, in[kSTARTS].dims.nbDims,
            in[kLOCATIONS].dims.nbDims, in[kWEIGHTS].dims.nbDims))
    {
        logError("onShapeChange: unexpected input count or ranks");
        return -1;
    }
    return 0;
}

int32_t MsdaPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    Dims const& value = inputDesc[kVALUE].dims;
    Dims const& locations = inputDesc[kLOCATIONS].dims;
    MsdaShape const shape{value.d[0], value.d[1], value.d[2], value.d[3], locations.d[1], locations.d[3],
        locations.d[4]};
    MsdaType const type = inputDesc[kVALUE].type == DataType::kHALF ? MsdaType::kHALF : MsdaType::kFLOAT;
    cudaError_t const status = launchMsda(type, shape, inputs[kVALUE], static_cast<int32_t const*>(inputs[kSHAPES]),
        static_cast<int32_t const*>(inputs[kSTARTS]), inputs[kLOCATIONS], inputs[kWEIGHTS], outputs[0], stream);
    if (status != cudaSuccess)
    {
        logError(cudaGetErrorString(status));
        return -1;
    }
    return 0;
}

IPluginV3* MsdaPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* MsdaPlugin::getFieldsToSerialize() noexcept
{
    return &mNoFields; // stateless: nothing to serialize
}

char const* MsdaPluginCreator::getPluginName() const noexcept
{
    return kMSDA_PLUGIN_NAME;
}

char const* MsdaPluginCreator::getPluginVersion() const noexcept
{
    return kMSDA_PLUGIN_VERSION;
}

char const* MsdaPluginCreator::getPluginNamespace() const noexcept
{
    return mNamespace.c_str();
}

PluginFieldCollection const* MsdaPluginCreator::getFieldNames() noexcept
{
    return &mNoFields;
}

IPluginV3* MsdaPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* /*fc*/, TensorRTPhase /*phase*/) noexcept
{
    return new (std::nothrow) MsdaPlugin(mNamespace);
}

namespace
{

MsdaPluginCreator& creator()
{
    static MsdaPluginCreator instance;
    return instance;
}

// Registration. Two ways to load this library must both work, and a creator registered twice is an error:
// - ctypes.CDLL / dlopen / linking: the static object below registers the creator when the library is loaded;
// - IPluginRegistry::loadLibrary (Python load_library, trtexec --dynamicPlugins): TensorRT registers what
//   getCreators() returns, so getCreators() first withdraws the load-time registration.
bool gRegisteredAtLoad{false};

struct LoadTimeRegistration
{
    LoadTimeRegistration()
    {
        IPluginRegistry* registry = getPluginRegistry();
        if (registry != nullptr && registry->getCreator(kMSDA_PLUGIN_NAME, kMSDA_PLUGIN_VERSION, "") == nullptr)
        {
            gRegisteredAtLoad = registry->registerCreator(creator(), "");
        }
    }
};

LoadTimeRegistration const gLoadTimeRegistration;

} // namespace
} // namespace detr_deploy

extern "C" TENSORRTAPI void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    std::lock_guard<std::mutex> lock(detr_deploy::gLoggerMutex);
    detr_deploy::gLoggerFinder = finder;
}

extern "C" TENSORRTAPI nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    if (detr_deploy::gRegisteredAtLoad)
    {
        getPluginRegistry()->deregisterCreator(detr_deploy::creator());
        detr_deploy::gRegisteredAtLoad = false;
    }
    nbCreators = 1;
    static nvinfer1::IPluginCreatorInterface* const kCreators[] = {&detr_deploy::creator()};
    return kCreators;
}
