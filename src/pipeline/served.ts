// A pipeline as a served model (backend "kiln_pipeline" in a model repository): raw image BYTES in, the batch tensor
// out, so an ensemble's first step can take encoded images. The spec comes from the config's parameters:
//   "parameters": { "spec": { "string_value": "{\"resize\": {\"size\": 256}, ...}" } }   (or the spec object itself)
//   "parameters": { "spec_file": { "string_value": "spec.json" } }   (relative to the version folder, then the model's)
// and optionally "device" ('cpu' or 'cuda'; KIND_GPU instances use their GPU) and "workers". Tensor names follow
// the config's input/output when it lists them, else INPUT and OUTPUT.
import fs from 'node:fs';
import path from 'node:path';
import { InputError } from '../ir/errors.js';
import { parsePbtxt } from '../server/config.js';
import type { ModelFactoryContext, ServedModel, ServeTensor } from '../server/model.js';
import { pipelineModel } from './model.js';
import { resolveSpec, type PipelineSpec } from './spec.js';

function param(params: unknown, key: string): unknown {
  if (typeof params !== 'object' || params === null) return undefined;
  const v = (params as Record<string, unknown>)[key];
  return typeof v === 'object' && v !== null && 'string_value' in v ? (v as { string_value: unknown }).string_value : v;
}

/** The config's `parameters` (the parsed ModelConfig keeps only what the server acts on): JSON or pbtxt map form. */
function parameters(ctx: ModelFactoryContext): unknown {
  const json = path.join(ctx.dir, 'config.json'), pbtxt = path.join(ctx.dir, 'config.pbtxt');
  if (fs.existsSync(json)) return (JSON.parse(fs.readFileSync(json, 'utf8')) as { parameters?: unknown }).parameters;
  if (!fs.existsSync(pbtxt)) return undefined;
  const p = (parsePbtxt(fs.readFileSync(pbtxt, 'utf8'), pbtxt) as { parameters?: unknown }).parameters;
  const entries = Array.isArray(p) ? p : p ? [p] : [];
  return Object.fromEntries(entries.map((e: { key?: unknown; value?: unknown }) => [String(e.key), e.value]));
}

function specOf(ctx: ModelFactoryContext, params: unknown): PipelineSpec {
  const where = `model '${ctx.name}'`;
  const inline = param(params, 'spec');
  if (inline !== undefined) {
    if (typeof inline !== 'string') return inline as PipelineSpec;
    try {
      return JSON.parse(inline) as PipelineSpec;
    } catch (e) {
      throw new InputError(`${where}: parameter 'spec' is not valid JSON: ${(e as Error).message}`);
    }
  }
  const file = param(params, 'spec_file');
  if (typeof file === 'string') {
    const found = [path.resolve(ctx.versionDir, file), path.resolve(ctx.dir, file)].find((f) => fs.existsSync(f));
    if (!found) throw new InputError(`${where}: spec_file '${file}' is in neither ${ctx.versionDir} nor ${ctx.dir}.`);
    return JSON.parse(fs.readFileSync(found, 'utf8')) as PipelineSpec;
  }
  throw new InputError(`${where}: backend kiln_pipeline needs a pipeline spec.`, {
    hint: 'Add "parameters": {"spec": {"string_value": "<spec JSON>"}} or {"spec_file": {"string_value": "spec.json"}} to its config.',
  });
}

/** The factory registered for backend "kiln_pipeline". */
export async function servedPipeline(ctx: ModelFactoryContext): Promise<ServedModel> {
  const params = parameters(ctx);
  const spec = specOf(ctx, params);
  resolveSpec(spec, `model '${ctx.name}' pipeline spec`); // its errors name the model
  const asked = param(params, 'device');
  const device = typeof asked === 'string' ? asked : ctx.deviceId !== undefined ? `cuda:${ctx.deviceId}` : 'cpu';
  const workers = param(params, 'workers');
  const m = await pipelineModel(spec, {
    name: ctx.name, device, workers: workers === undefined ? undefined : Number(workers),
    inputName: ctx.config.input[0]?.name, outputName: ctx.config.output[0]?.name,
  });
  const batched = ctx.config.max_batch_size > 0;
  const dims = (d: number[]) => (batched ? d : [-1, ...d]);
  return {
    name: ctx.name,
    inputs: m.inputs.map((t) => ({ name: t.name, data_type: t.data_type, dims: dims(t.dims) })),
    outputs: m.outputs.map((t) => ({ name: t.name, data_type: t.data_type, dims: dims(t.dims) })),
    async infer(feeds: Record<string, ServeTensor>, outputs: string[]) {
      const given = feeds[m.inputs[0].name];
      if (!given || given.type !== 'bytes') throw new InputError(`model '${ctx.name}': input '${m.inputs[0].name}' must be BYTES (encoded images).`);
      return m.infer({ [m.inputs[0].name]: given }, outputs);
    },
    close: () => m.close(),
  };
}
