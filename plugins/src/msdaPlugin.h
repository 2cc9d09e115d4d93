// SPDX-License-Identifier: Apache-2.0
// TensorRT plugin for multi-scale deformable attention (IPluginV3, TensorRT >= 10.0).
//
// Name "DetrDeployMSDA_TRT", version "1", namespace "" (detr-export --msda-plugin-name DetrDeployMSDA_TRT).
// Inputs: value [N,S,M,D] (float|half), spatial_shapes [L,2] int32, level_start_index [L] int32,
// sampling_locations [N,Lq,M,L,P,2], attention_weights [N,Lq,M,L,P] (same type as value).
// Output: [N,Lq,M*D], same type as value. Coordinates and accumulation in float32 for both types.
// No attributes, no workspace, linear formats.
#pragma once

#include <NvInferRuntime.h>

#include <string>

namespace detr_deploy
{

constexpr char const* kMSDA_PLUGIN_NAME = "DetrDeployMSDA_TRT";
constexpr char const* kMSDA_PLUGIN_VERSION = "1";

class MsdaPlugin : public nvinfer1::IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuild,
                   public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit MsdaPlugin(std::string pluginNamespace);
    ~MsdaPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    std::string mNamespace;
    nvinfer1::PluginFieldCollection mNoFields{0, nullptr};
};

class MsdaPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    MsdaPluginCreator() = default;
    ~MsdaPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    nvinfer1::PluginFieldCollection mNoFields{0, nullptr};
    std::string mNamespace;
};

} // namespace detr_deploy
