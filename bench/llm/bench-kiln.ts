// Kiln's side of the LLM speed comparison on the GPU machine: the same in-process benchmark as `kiln bench --llm`
// (src/tools/bench-llm.ts), without the CLI's server dependencies (not packed for the GPU machine), plus load time.
// Usage: node bench/llm/bench-kiln.js MODEL_DIR [dtype=float16] [concurrency=1,32] [promptLen=128] [outputLen=128]
import { LlmEngine } from '../../src/llm/engine.js';
import { benchLlm, formatLlmBench, parseConcurrency } from '../../src/tools/bench-llm.js';

const [dir, dtype = 'float16', conc = '1,32', prompt = '128', output = '128'] = process.argv.slice(2);
const concurrency = parseConcurrency(conc);
const t0 = performance.now();
const engine = await LlmEngine.load(dir, { provider: 'cuda', dtype: dtype as 'float16', maxBatch: Math.max(...concurrency) });
const loadS = (performance.now() - t0) / 1000;
console.error(`loaded ${dir} (${dtype}) in ${loadS.toFixed(1)} s`);
const r = await benchLlm(engine, { concurrency, promptLen: Number(prompt), outputLen: Number(output), onLevel: (c) => console.error(`concurrency ${c}...`) });
console.error(formatLlmBench(r));
console.log(JSON.stringify({ model: dir, dtype, loadS, ...r }));
await engine.close();
