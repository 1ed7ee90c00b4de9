// Wire compatibility of src/server/kserve.proto: field numbers and enum values must equal those of KServe v2 /
// Triton (grpc_service.proto and model_config.proto in triton-inference-server/common), or Triton's own clients
// would read the wrong fields. The expected numbers below were checked against those files.
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { protoPath } from '../../src/server/grpc.js';

const FIELDS: Record<string, Record<string, number>> = {
  ServerMetadataResponse: { name: 1, version: 2, extensions: 3 },
  ModelMetadataRequest: { name: 1, version: 2 },
  ModelMetadataResponse: { name: 1, versions: 2, platform: 3, inputs: 4, outputs: 5 },
  'ModelMetadataResponse.TensorMetadata': { name: 1, datatype: 2, shape: 3 },
  InferParameter: { bool_param: 1, int64_param: 2, string_param: 3, double_param: 4, uint64_param: 5 },
  InferTensorContents: { bool_contents: 1, int_contents: 2, int64_contents: 3, uint_contents: 4, uint64_contents: 5, fp32_contents: 6, fp64_contents: 7, bytes_contents: 8 },
  ModelInferRequest: { model_name: 1, model_version: 2, id: 3, parameters: 4, inputs: 5, outputs: 6, raw_input_contents: 7 },
  'ModelInferRequest.InferInputTensor': { name: 1, datatype: 2, shape: 3, parameters: 4, contents: 5 },
  'ModelInferRequest.InferRequestedOutputTensor': { name: 1, parameters: 2 },
  ModelInferResponse: { model_name: 1, model_version: 2, id: 3, parameters: 4, outputs: 5, raw_output_contents: 6 },
  'ModelInferResponse.InferOutputTensor': { name: 1, datatype: 2, shape: 3, parameters: 4, contents: 5 },
  ModelStreamInferResponse: { error_message: 1, infer_response: 2 },
  ModelConfigRequest: { name: 1, version: 2 },
  ModelConfigResponse: { config: 1 },
  StatisticDuration: { count: 1, ns: 2 },
  InferStatistics: { success: 1, fail: 2, queue: 3, compute_input: 4, compute_infer: 5, compute_output: 6 },
  ModelStatistics: { name: 1, version: 2, last_inference: 3, inference_count: 4, execution_count: 5, inference_stats: 6 },
  ModelStatisticsResponse: { model_stats: 1 },
  RepositoryIndexRequest: { repository_name: 1, ready: 2 },
  'RepositoryIndexResponse.ModelIndex': { name: 1, version: 2, state: 3, reason: 4 },
  RepositoryModelLoadRequest: { repository_name: 1, model_name: 2 },
  RepositoryModelUnloadRequest: { repository_name: 1, model_name: 2 },
  // model_config.proto
  ModelInput: { name: 1, data_type: 2, dims: 4 },
  ModelOutput: { name: 1, data_type: 2, dims: 3 },
  'ModelVersionPolicy.Latest': { num_versions: 1 },
  'ModelVersionPolicy.Specific': { versions: 1 },
  ModelVersionPolicy: { latest: 1, all: 2, specific: 3 },
  ModelInstanceGroup: { name: 1, count: 2, gpus: 3, kind: 4 },
  ModelQueuePolicy: { timeout_action: 1, default_timeout_microseconds: 2, allow_timeout_override: 3, max_queue_size: 4 },
  ModelDynamicBatching: { preferred_batch_size: 1, max_queue_delay_microseconds: 2, preserve_ordering: 3, priority_levels: 4, default_priority_level: 5, default_queue_policy: 6 },
  'ModelEnsembling.Step': { model_name: 1, model_version: 2, input_map: 3, output_map: 4 },
  ModelEnsembling: { step: 1 },
  ModelConfig: { name: 1, platform: 2, version_policy: 3, max_batch_size: 4, input: 5, output: 6, instance_group: 7, dynamic_batching: 11, ensemble_scheduling: 15, backend: 17 },
};

const ENUMS: Record<string, Record<string, number>> = {
  DataType: { TYPE_INVALID: 0, TYPE_BOOL: 1, TYPE_UINT8: 2, TYPE_UINT16: 3, TYPE_UINT32: 4, TYPE_UINT64: 5, TYPE_INT8: 6, TYPE_INT16: 7, TYPE_INT32: 8, TYPE_INT64: 9, TYPE_FP16: 10, TYPE_FP32: 11, TYPE_FP64: 12, TYPE_STRING: 13, TYPE_BF16: 14 },
  'ModelInstanceGroup.Kind': { KIND_AUTO: 0, KIND_GPU: 1, KIND_CPU: 2, KIND_MODEL: 3 },
  'ModelQueuePolicy.TimeoutAction': { REJECT: 0, DELAY: 1 },
};

describe('kserve.proto against the KServe v2 / Triton protos', () => {
  const root = new protobuf.Root().loadSync(protoPath(), { keepCase: true });
  it.each(Object.entries(FIELDS))('%s has the spec field numbers', (msg, fields) => {
    const t = root.lookupType(`inference.${msg}`);
    const ours = Object.fromEntries(Object.entries(fields).map(([f]) => [f, t.fields[f]?.id]));
    expect(ours).toEqual(fields);
  });
  it.each(Object.entries(ENUMS))('enum %s has the spec values', (name, values) => {
    expect(root.lookupEnum(`inference.${name}`).values).toEqual(values);
  });
  it('keeps the two scheduling choices in one oneof, as in ModelConfig', () => {
    expect(root.lookupType('inference.ModelConfig').oneofs.scheduling_choice.fieldsArray.map((f) => f.name).sort()).toEqual(['dynamic_batching', 'ensemble_scheduling']);
  });
});
