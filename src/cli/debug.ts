// `kiln debug precision|reduce` (Polygraphy's `debug`).
import fs from 'node:fs';
import { Command } from 'commander';
import { loadOnnx } from '../onnx/reader.js';
import { saveOnnx } from '../onnx/writer.js';
import { InputError } from '../ir/errors.js';
import { debugPrecision, debugReduce } from '../tools/debug.js';
import { writeTensors } from '../tools/compare-io.js';
import { addCompareOptions, compareOptionsFrom } from './compare.js';

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function debugCommand(): Command {
  const cmd = new Command('debug').description('find the layers an fp16/bf16 build must keep in fp32; reduce a failing model to a minimal one');
  cmd.addCommand(addCompareOptions(new Command('precision')
    .description('bisect which layers to keep in fp32 so the reduced-precision build passes the comparison with fp32')
    .argument('<model>', 'ONNX model')
    .option('--fp16', 'debug an fp16 build (default)')
    .option('--bf16', 'debug a bf16 build')
    .option('--mode <dir>', 'forward (from the inputs) or reverse (from the outputs)', 'forward')
    .option('--layer-precisions <spec>', 'pins every build keeps'))
    .action(async (file: string, o) => {
      if (!['forward', 'reverse'].includes(o.mode)) throw new InputError(`--mode: '${o.mode}' is not forward or reverse.`);
      const opts = compareOptionsFrom(o);
      const precision = o.bf16 ? 'bf16' : 'fp16';
      const r = await debugPrecision(await loadOnnx(file), {
        ...opts, precision, mode: o.mode,
        onCheck: (l, ok) => console.log(`  ${ok ? 'PASSED' : 'FAILED'} with ${l.length ? `fp32: ${l.join(', ')}` : 'no fp32 layers'}`),
      });
      console.log(`${r.candidates.length} layers run in ${precision}; ${r.checks} builds compared.`);
      if (!r.layers.length) console.log(`The ${precision} build already passes; no layer needs fp32.`);
      else console.log(`Keep ${r.layers.length} layer${r.layers.length > 1 ? 's' : ''} in fp32: ${r.layers.join(', ')}\nUse: ${r.flag}`);
    }));
  cmd.addCommand(addCompareOptions(new Command('reduce')
    .description('shrink a failing model (a runner errors, or two runners disagree) to a minimal failing subgraph')
    .argument('<model>', 'ONNX model')
    .requiredOption('-o, --output <file>', 'where to write the reduced ONNX model')
    .option('--runner <name>', 'reference and tested runner (default kiln-ref, kiln-cpu); one runner: only its errors count', collect, [])
    .option('--fp16', 'build kiln-cpu runners in fp16')
    .option('--bf16', 'build kiln-cpu runners in bf16')
    .option('--mode <mode>', 'bisect (default) or linear', 'bisect')
    .option('--fail-regex <regex>', 'count only errors whose message matches')
    .option('--save-inputs <file>', 'save the reduced model\'s inputs (values from the full model), .npz or .json'))
    .action(async (file: string, o) => {
      if (!['bisect', 'linear'].includes(o.mode)) throw new InputError(`--mode: '${o.mode}' is not bisect or linear.`);
      const r = await debugReduce(await loadOnnx(file), {
        ...compareOptionsFrom(o), runners: o.runner.length ? o.runner : undefined, mode: o.mode,
        failRegex: o.failRegex ? new RegExp(o.failRegex) : undefined,
      });
      await saveOnnx(r.model, o.output);
      const inputs = o.saveInputs ?? o.output.replace(/\.onnx$/, '') + '.inputs.npz';
      writeTensors(inputs, Object.fromEntries(r.feeds));
      console.log(`Reduced to ${r.nodes.length} node${r.nodes.length > 1 ? 's' : ''} after ${r.checks} checks: ${r.nodes.join(', ')}`);
      console.log(`  wrote ${o.output} (inputs: ${r.model.graph.inputs.map((i) => i.name).join(', ')}; outputs: ${r.model.graph.outputs.map((x) => x.name).join(', ')})`);
      console.log(`  its inputs as the full model computed them: ${inputs}${fs.existsSync(inputs) ? '' : ' (not written)'}`);
      console.log(`  reproduce: kiln compare ${o.output} --load-inputs ${inputs}${o.runner.map((x: string) => ` --runner ${x}`).join('')}`);
    }));
  return cmd;
}
