import { Command } from 'commander';
import { loadOnnx } from '../onnx/reader.js';
import { InputError } from '../ir/errors.js';
import {
  inspectModel, formatSummary, formatModelDetail, modelLayers, modelWeights, inspectCapability, formatCapability,
  summarizeTensor, formatDataSummaries,
} from '../tools/inspect.js';
import { formatPlan } from '../tools/inspect-plan.js';
import { readTensors } from '../tools/compare-io.js';
import { readPlanFile } from '../build/plan.js';
import { isPlanFile } from '../runtime/engine.js';

const SUBCOMMANDS = ['model', 'plan', 'capability', 'data'];
const SHOW = ['layers', 'attrs', 'weights'];

async function inspectPlan(file: string, o: Record<string, any>): Promise<void> {
  const { header } = await readPlanFile(file);
  console.log(o.json ? JSON.stringify(o.layers ? header : { ...header, layers: undefined }, null, 2) : formatPlan(header, !!o.layers));
}

async function inspectModelFile(file: string, o: Record<string, any>): Promise<void> {
  const m = await loadOnnx(file);
  const show = new Set<string>(String(o.show ?? '').split(',').map((s: string) => s.trim()).filter(Boolean));
  for (const s of show) if (!SHOW.includes(s)) throw new InputError(`--show: unknown '${s}'. Choose from ${SHOW.join(', ')}.`);
  const s = inspectModel(m);
  if (o.json) {
    console.log(JSON.stringify({
      ...s,
      ...(show.has('layers') || show.has('attrs') ? { layers: modelLayers(m, show.has('attrs')) } : {}),
      ...(show.has('weights') ? { weights: modelWeights(m) } : {}),
    }, null, 2));
  } else console.log(show.size ? formatModelDetail(m, { layers: show.has('layers'), attrs: show.has('attrs'), weights: show.has('weights') }) : formatSummary(s));
  if (s.unsupported.length) process.exitCode = 2;
}

export function inspectCommand(): Command {
  return new Command('inspect')
    .description('inspect a model, plan, backend capability or tensor data: kiln inspect [model|plan|capability|data] FILE (kiln inspect FILE picks model or plan)')
    .argument('<what-or-file>', 'model | plan | capability | data, or directly an ONNX model or Kiln plan')
    .argument('[file]', 'the file, after a subcommand')
    .option('--layers', 'plans: one row per layer (fused ops, tactic, precision, shapes, weights, workspace)')
    .option('--show <items>', 'models: comma-separated layers,attrs,weights')
    .option('--json', 'print JSON')
    .action(async (what: string, file: string | undefined, o) => {
      if (!SUBCOMMANDS.includes(what) || !file) {
        if (file) throw new InputError(`inspect: unknown subcommand '${what}'. Use one of ${SUBCOMMANDS.join(', ')}, or kiln inspect FILE.`);
        return isPlanFile(what) ? inspectPlan(what, o) : inspectModelFile(what, o);
      }
      switch (what) {
        case 'plan':
          if (!isPlanFile(file)) throw new InputError(`inspect plan: '${file}' is not a Kiln plan.`, { hint: `For ONNX models use kiln inspect model ${file}.` });
          return inspectPlan(file, { ...o, layers: o.layers ?? true });
        case 'model':
          return inspectModelFile(file, o);
        case 'capability': {
          const c = inspectCapability(await loadOnnx(file));
          console.log(o.json ? JSON.stringify(c, null, 2) : formatCapability(c));
          if (c.ops.some((x) => x.providers.cpu?.status !== 'supported')) process.exitCode = 2;
          return;
        }
        case 'data': {
          const list = Object.entries(readTensors(file)).map(([k, t]) => summarizeTensor(k, t));
          console.log(o.json ? JSON.stringify(list, null, 2) : formatDataSummaries(list));
          return;
        }
      }
    });
}
