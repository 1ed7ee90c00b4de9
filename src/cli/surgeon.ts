// `kiln surgeon extract|sanitize|insert|prune` (Polygraphy's `surgeon`): edit a model, write ONNX.
import { Command } from 'commander';
import { loadOnnx } from '../onnx/reader.js';
import { saveOnnx } from '../onnx/writer.js';
import { InputError } from '../ir/errors.js';
import { parseShapes } from '../tools/inputs.js';
import { extractSubgraph, insertNode, parseTensorRequests, pruneNodes, sanitizeModel } from '../tools/surgeon.js';

const output = (cmd: Command) => cmd.requiredOption('-o, --output <file>', 'where to write the ONNX model');

export function surgeonCommand(): Command {
  const cmd = new Command('surgeon').description('edit ONNX models: extract a subgraph, sanitize (fold constants, clean up), insert or prune nodes');
  cmd.addCommand(output(new Command('extract')
    .description('the subgraph between tensors: --inputs a,b --outputs c (NAME, NAME:SHAPE or NAME:SHAPE:DTYPE, SHAPE like 1x3x8x8 or auto)')
    .argument('<model>', 'ONNX model')
    .option('--inputs <tensors>', 'tensors that become the inputs (default: the graph inputs needed)', '')
    .requiredOption('--outputs <tensors>', 'tensors that become the outputs'))
    .action(async (file: string, o) => {
      const { model, addedInputs } = extractSubgraph(await loadOnnx(file), { inputs: parseTensorRequests(o.inputs), outputs: parseTensorRequests(o.outputs) });
      await saveOnnx(model, o.output);
      console.log(`Extracted ${model.graph.nodes.length} nodes to ${o.output}`);
      console.log(`  inputs: ${model.graph.inputs.map((i) => `${i.name}${addedInputs.includes(i.name) ? ' (graph input)' : ''}`).join(', ')}`);
      console.log(`  outputs: ${model.graph.outputs.map((x) => x.name).join(', ')}`);
    }));
  cmd.addCommand(output(new Command('sanitize')
    .description('fold constants, remove unused nodes and initializers, infer shapes')
    .argument('<model>', 'ONNX model')
    .option('--no-fold-constants', 'do not fold constants')
    .option('--override-input-shapes <spec>', 'new input shapes, e.g. input:1x3x224x224 (lets shape computations fold)'))
    .action(async (file: string, o) => {
      const { model, report: r } = sanitizeModel(await loadOnnx(file), {
        foldConstants: o.foldConstants, overrideInputShapes: o.overrideInputShapes ? Object.fromEntries(parseShapes(o.overrideInputShapes)) : undefined,
      });
      await saveOnnx(model, o.output);
      console.log(`Sanitized ${file} -> ${o.output}: ${r.nodesBefore} -> ${r.nodesAfter} nodes (${r.folded} folded, ${r.removed} removed), initializers ${r.initializersBefore} -> ${r.initializersAfter}`);
    }));
  cmd.addCommand(output(new Command('insert')
    .description('insert one node right after (or before) a tensor')
    .argument('<model>', 'ONNX model')
    .requiredOption('--op <type>', 'ONNX op type, e.g. Relu')
    .option('--after <tensor>', 'the node reads this tensor; its consumers read the node\'s output')
    .option('--before <tensor>', 'the node writes this tensor; its producer writes a new one the node reads')
    .option('--name <name>', 'node name')
    .option('--inputs <tensors>', 'further inputs of the node (comma separated)', '')
    .option('--attrs <json>', 'attributes as JSON, e.g. \'{"alpha":0.1}\''))
    .action(async (file: string, o) => {
      let attrs: Record<string, never> | undefined;
      if (o.attrs) {
        try {
          attrs = JSON.parse(o.attrs);
        } catch (e) {
          throw new InputError(`--attrs: not valid JSON (${(e as Error).message}).`, { hint: 'Quote it for the shell: --attrs \'{"alpha": 0.1}\'' });
        }
      }
      const model = insertNode(await loadOnnx(file), {
        op: o.op, after: o.after, before: o.before, name: o.name, attrs,
        extraInputs: String(o.inputs).split(',').map((s: string) => s.trim()).filter(Boolean),
      });
      await saveOnnx(model, o.output);
      console.log(`Inserted ${o.op} ${o.after ? `after '${o.after}'` : `before '${o.before}'`} -> ${o.output}`);
    }));
  cmd.addCommand(output(new Command('prune')
    .description('remove nodes by name, reconnecting single-input pass-through nodes')
    .argument('<model>', 'ONNX model')
    .requiredOption('--nodes <names>', 'comma-separated node names'))
    .action(async (file: string, o) => {
      const names = String(o.nodes).split(',').map((s) => s.trim()).filter(Boolean);
      const model = pruneNodes(await loadOnnx(file), names);
      await saveOnnx(model, o.output);
      console.log(`Removed ${names.length} node${names.length > 1 ? 's' : ''} -> ${o.output} (${model.graph.nodes.length} nodes)`);
    }));
  return cmd;
}
