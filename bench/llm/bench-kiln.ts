// Kiln's side of the LLM speed comparison on the GPU machine: the same in-process benchmark as `kiln bench --llm`
// (src/tools/bench-llm.ts), without the CLI's server dependencies (not packed for the GPU machine), plus load time.
// Each level runs twice: `first` as the level's first traffic after load (what a fresh server sees; the engine
// captures its step sizes at load, so this should be no slower), then `levels` (timed again, warm, as transformers'
// peer is timed after a warm-up run of the same batch).
// Usage: node bench/llm/bench-kiln.js MODEL_DIR [dtype=float16] [concurrency=1,32] [promptLen=128] [outputLen=128]
import { LlmEngine } from '../../src/llm/engine.js';
import { benchLlm, formatLlmBench, parseConcurrency, type LlmBenchLevel } from '../../src/tools/bench-llm.js';

const [dir, dtype = 'float16', conc = '1,32', prompt = '128', output = '128'] = process.argv.slice(2);
const concurrency = parseConcurrency(conc);
const t0 = performance.now();
const engine = await LlmEngine.load(dir, { provider: 'cuda', dtype: dtype as 'float16', maxBatch: Math.max(...concurrency) });
const loadS = (performance.now() - t0) / 1000;
console.error(`loaded ${dir} (${dtype}) in ${loadS.toFixed(1)} s`);
// one batch of requests per level (at least 3), as transformers' generate() over one batch of prompts
const first: LlmBenchLevel[] = [], levels: LlmBenchLevel[] = [];
for (const c of concurrency) {
  for (const into of [first, levels]) {
    const r = await benchLlm(engine, { concurrency: [c], requests: Math.max(3, c), promptLen: Number(prompt), outputLen: Number(output) });
    console.error(`${into === first ? 'first' : 'warm'}: ${formatLlmBench(r)}`);
    into.push(...r.levels);
  }
}
console.log(JSON.stringify({ model: dir, dtype, loadS, promptLen: Number(prompt), outputLen: Number(output), levels, first }));
await engine.close();
