// Builds the int8 plan of the zoo's ResNet-50 (random weights, quantized as resnet50-int8.ts does: 4 seeded
// calibration images) and saves it, so that two trees' plans can be timed against each other by bench/cpu/ab-plans.ts
// (resnet50 <planA> <planB> 1 20) or profiled per layer by bench/cpu/chain-prof.ts (resnet50 1 10 --plan=<file>).
// Usage: npx tsx bench/quant/int8-plan.ts <out.plan> [--uint8] [--residual: kiln quantize --quantize-residual] [--fp32: the float plan instead]
import fs from 'node:fs';
import { resnet50 } from '../models/zoo.js';
import { build } from '../../src/build/builder.js';
import { quantizeModel } from '../../src/tools/quantize.js';
import { randomCalibrationData } from '../../src/quant/data.js';

const [file] = process.argv.slice(2).filter((a) => !a.startsWith('--'));
if (!file) throw new Error('usage: int8-plan.ts <out.plan> [--uint8] [--fp32]');
const m = resnet50();
const activationType = process.argv.includes('--uint8') ? 'uint8' : 'int8';
const model = process.argv.includes('--fp32') ? m : quantizeModel(m, {
  mode: 'int8', calibrationData: randomCalibrationData(m.graph, 4, { seed: 1 }), evalData: randomCalibrationData(m.graph, 1, { seed: 2 }), batchSize: 1, activationType, quantizeResidual: process.argv.includes('--residual'),
}).model;
const plan = await build(model, { shapes: { input: [1, 3, 224, 224] } });
fs.writeFileSync(file, plan.bytes);
console.log(`${file}: ${plan.header.layers.length} layers, ${plan.header.layers.filter((l) => l.tactic.includes('int8')).length} int8`);
