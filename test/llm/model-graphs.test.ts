// The decoder's layer graphs as the GPU builds them: fp16 graphs (weights, inputs, outputs in fp16) must optimize to
// fused layers with no Cast kernels between them (only the logits leave as fp32), and the fp32 graphs must keep
// computing what transformers computes (engine.test.ts checks the logits on the CPU provider).
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { layerModels, graphDtype } from '../../src/llm/model.js';
import { loadModelConfig } from '../../src/llm/config.js';
import { loadWeights } from '../../src/llm/safetensors.js';
import { optimize } from '../../src/passes/pipeline.js';
import { assignPrecision } from '../../src/passes/precision.js';
import type { Model } from '../../src/ir/graph.js';

const FIX = path.join(__dirname, '..', 'fixtures', 'llm');

async function lowered(m: Model): Promise<string[]> {
  await optimize(m, { inputShapes: new Map(m.graph.inputs.map((x) => [x.name, (x.type as { shape: (number | string)[] }).shape])) });
  assignPrecision(m.graph, { precision: 'fp16' });
  return m.graph.nodes.map((n) => `${n.domain ? 'kiln:' : ''}${n.opType}`);
}

describe('decoder layer graphs', () => {
  it('are fp16 end to end only for reduced-precision GPU builds', () => {
    expect(graphDtype({ provider: 'cuda', precision: 'fp16' })).toBe('float16');
    expect(graphDtype({ provider: 'cuda', precision: 'bf16' })).toBe('bfloat16');
    expect(graphDtype({ provider: 'cuda', precision: 'fp32' })).toBe('float32');
    expect(graphDtype({ provider: 'cpu', precision: 'fp16' })).toBe('float32');
  });

  it.each(['gpt2-tiny', 'llama-tiny'])('%s fp16: fused layers, no casts but the logits', async (name) => {
    const dir = path.join(FIX, name);
    const cfg = loadModelConfig(dir);
    const models = layerModels(cfg, loadWeights(dir), dir, 'float16');
    expect(models).toHaveLength(cfg.numLayers + 1);
    for (const [i, m] of models.entries()) {
      for (const v of [...m.graph.inputs, ...m.graph.outputs]) {
        const t = v.type as { dtype: string };
        if (v.name === 'logits') expect(t.dtype).toBe('float32');
        else if (!['ids', 'pos'].includes(v.name)) expect(t.dtype, v.name).toBe('float16');
      }
      const ops = await lowered(m);
      const last = i === cfg.numLayers;
      expect(ops.filter((o) => o === 'Cast')).toHaveLength(last ? 1 : 0);
      // the MLP's activation rides in a GEMM epilogue (GELU) or one fused elementwise kernel (SiLU x up)
      expect(ops.filter((o) => ['Pow', 'Tanh', 'Sigmoid', 'Slice'].includes(o))).toEqual([]);
      if (cfg.family === 'gpt2' && i > 0) expect(ops.length).toBeLessThanOrEqual(7);
    }
  });
});
