// GPU check of the TMA-fed int8 GEMM (codegen/quant-tma.ts) on whole models: the same quantized model built with
// KILN_QGEMM=tma and =tma-cluster (every plain-GEMM layer on the TMA kernel's 128x128 tile, without / with 2-block
// clusters; convolutions with implicit im2col keep the tactic) and with KILN_QGEMM=wgmma64 (the cp.async kernel's 64x64 staged tile), run twice (eager, then the captured
// graph), and with KILN_QTMA=pp KILN_QGEMM=tma (the persistent ping-pong kernel's 64x128 tile): all are exact integer
// GEMMs with the same epilogue, so every output value must be identical.
// bert-mid (hidden 256, FFN 1024: QMatMuls with head split, K up to 1024) in fp32 and fp16 builds; a ResNet-50 of
// width 16 at 64 px in an fp16 build (its 1x1 stride-1 convolutions are plain GEMMs; residual + second outputs).
// Usage (GPU machine): node bench/quant/tma-check.js [epi | epi2]
import { resnet50, RESNET_SMALL, bertBase, BERT_SMALL } from '../models/zoo.js';
import type { Model } from '../../src/ir/graph.js';
import { quantizedRoutes } from './feeds.js';

let failures = 0;
/** One PASS / FAIL row: the two builds' outputs value for value (NaN equals NaN); a build that throws is a FAIL. */
async function compare(what: string, pair: () => Promise<Float32Array[][]>): Promise<void> {
  try {
    const [a, b] = await pair();
    let diff = 0, n = 0;
    a.forEach((x, i) => x.forEach((v, k) => { n++; if (v !== b[i][k] && !(Number.isNaN(v) && Number.isNaN(b[i][k]))) diff++; }));
    const ok = diff === 0 && n > 0;
    if (!ok) failures++;
    console.log(`${ok ? 'PASS' : 'FAIL'} ${what}: ${diff} of ${n} output values differ`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${what}: ${(e as Error).stack?.split('\n').slice(0, 4).join(' | ')}`);
  }
}
async function same(name: string, make: () => Model, precision: 'fp32' | 'fp16', extra: string[] = []): Promise<void> {
  const routes = quantizedRoutes(make, precision);
  // tma-pp: the persistent ping-pong kernel's first tile (KILN_QTMA=pp offers its tiles alone; =tma forces the first)
  const run = (route: string) => routes(route === 'tma-pp' ? { KILN_QTMA: 'pp', KILN_QGEMM: 'tma' } : { KILN_QGEMM: route });
  const ref = await run('wgmma64');
  for (const route of ['tma', 'tma-cluster', 'tma-pp', ...extra]) {
    await compare(`${name} int8${precision === 'fp16' ? ' [fp16 build]' : ''}: ${route} vs wgmma64, run + replay`, async () => [ref, await run(route)]);
  }
}
const BERT_MID = { ...BERT_SMALL, hidden: 256, heads: 4, intermediate: 1024 };
const epi2 = process.argv.includes('epi2');
if (!epi2) {
  await same('bert-mid', () => bertBase(BERT_MID), 'fp32');
  await same('bert-mid', () => bertBase(BERT_MID), 'fp16');
  // stem: KILN_QGEMM=stem puts the 7x7 stem (C = 3) on the gathered convolution (codegen/quant-stem.ts), tma-conv the
  // implicit-im2col convolutions with C % 128 == 0 on the TMA kernel (codegen/quant-tma-conv.ts); the other layers timed
  await same('resnet50-w16', () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1], width: 16, image: 64 }), 'fp16', ['stem', 'tma-conv']);
  await same('resnet50-w16', () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1], width: 16, image: 64 }), 'fp32', ['stem', 'tma-conv']);
}
// epi: the staged epilogue before helper qepi2's options (KILN_QEPI=qepi: float tile pitch BN + 4 outside the 8-bit
// residual kernels, the 2^-12 slow-path window, per-id pass-2 rows) against the default, route by route: the wgmma,
// gathered stem, TMA (plain, ping-pong, im2col) kernels must store the same values
// epi2 (alone): the staged epilogue before helper qepi3's fp16 residual tile (KILN_QEPI=qepi2) against the default, in
// the fp16 build (fp16 residuals) on the cp.async wgmma routes, whose K <= 64 layers take the tile
if (process.argv.includes('epi') || epi2) {
  for (const precision of epi2 ? (['fp16'] as const) : (['fp16', 'fp32'] as const)) {
    const routes = quantizedRoutes(() => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1], width: 16, image: 64 }), precision);
    const before = epi2 ? 'qepi2' : 'qepi';
    for (const route of epi2 ? ['wgmma64', 'wgmma-staged'] : ['wgmma64', 'wgmma-staged', 'stem', 'tma', 'tma-pp', 'tma-conv']) {
      const env = (qepi: boolean) => ({ ...(route === 'tma-pp' ? { KILN_QTMA: 'pp', KILN_QGEMM: 'tma' } : { KILN_QGEMM: route }), ...(qepi ? { KILN_QEPI: before } : {}) });
      await compare(`resnet50-w16 int8${precision === 'fp16' ? ' [fp16 build]' : ''}: ${route}, epilogue default vs KILN_QEPI=${before}, run + replay`, async () => [await routes(env(true)), await routes(env(false))]);
    }
  }
}
console.log(`tma-check: ${failures} failure(s)`);
process.exit(failures ? 1 : 0);
