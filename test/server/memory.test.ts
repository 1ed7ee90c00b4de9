// Issue 9's memory check, as bounded structures instead of timings: a server under dynamic batching sees every batch
// size from 1 to max_batch_size, and nothing it keeps may grow with the number of distinct sizes or requests.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { build, Engine, Tensor } from '../../src/index.js';
import type { Value } from '../../src/ir/tensor.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { tinyCnn } from '../../bench/models/zoo.js';
import { cnnInput, makeRepository } from './repo.js';

let root: string;
beforeAll(async () => {
  root = await makeRepository();
  fs.rmSync(`${root}/broken`, { recursive: true });
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

/** Bytes of the distinct buffers behind the layer outputs seen while running `sizes` in order. */
async function layerBufferBytes(engine: Engine, sizes: number[], seen = new Set<ArrayBufferLike>()): Promise<number> {
  const ctx = engine.createContext();
  for (const n of sizes) {
    await ctx.run({ input: new Tensor('float32', cnnInput(n), [n, 3, 32, 32]) }, undefined, {
      onLayer: (_node, outputs: Value[]) => {
        for (const v of outputs) if (v && 'data' in v && ArrayBuffer.isView(v.data)) seen.add(v.data.buffer);
      },
    });
  }
  return [...seen].reduce((s, b) => s + b.byteLength, 0);
}

describe('kiln serve memory under dynamic batching', () => {
  it("keeps the CPU engine's reused buffers bounded when every batch size from 1 to 16 runs", async () => {
    const engine = await Engine.load(await build(tinyCnn(), { device: 'cpu' }));
    const largest = await layerBufferBytes(engine, [16]);
    const seen = new Set<ArrayBufferLike>();
    await layerBufferBytes(engine, [16], seen);
    const all = await layerBufferBytes(engine, Array.from({ length: 16 }, (_, i) => 16 - i), seen);
    // one set of buffers per distinct batch size would be 1 + 2 + ... + 16 = 136 rows' worth, 8.5x the largest run
    expect(all).toBeLessThan(3 * largest);
    engine.dispose();
  }, 120_000);

  it('leaves no queued request, no unanswered worker run, and reports per-thread memory after bursts', async () => {
    let s: RunningServer | undefined;
    try {
      s = await startServer({ repository: root, httpPort: 0, grpcPort: -1, metricsPort: 0, workers: true, modelControlMode: 'explicit', loadModels: ['cnn'], log: () => {} });
      const send = (rows: number) => fetch(`${s!.httpUrl}/v2/models/cnn/infer`, {
        method: 'POST',
        body: JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [rows, 3, 32, 32], data: Array.from(cnnInput(rows)) }] }),
      });
      for (let burst = 0; burst < 3; burst++) {
        const res = await Promise.all(Array.from({ length: 24 }, (_, i) => send(1 + (i % 3))));
        expect(res.map((r) => r.status)).toEqual(res.map(() => 200));
      }
      const v = s.core.repo.get('cnn').v;
      expect(v.pending()).toBe(0);
      expect(v.instances.map((i) => i.waiting)).toEqual([0, 0]);
      const text = await (await fetch(s.metricsUrl!)).text();
      for (const thread of ['main', 'cnn/1/0', 'cnn/1/1']) expect(text).toMatch(new RegExp(`kiln_thread_memory_bytes\\{thread="${thread}",area="array_buffers"\\} \\d+`));
      expect(text).toMatch(/kiln_event_loop_utilization [0-9.]+/);
    } finally {
      await s?.close();
    }
  }, 120_000);
});
