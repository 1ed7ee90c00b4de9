// Programmatic dependent launch (codegen/pdl.ts, CudaDevice.launch): where each mode puts griddepcontrol.wait and
// launch_dependents (never after a global access: every byte a kernel reads or writes may still be its predecessor's),
// that a variant has its own name and otherwise the plain kernel's text, which kernel CudaDevice launches (the PDL
// variant whenever a mode is on, never plain code under the attribute), the CUlaunchConfig bytes, and (with nvcc) an
// sm_90 / sm_90a compile of variants. Whole models replayed with PDL on are held byte for byte to PDL off on a GPU by
// bench/quant/bert-ncu.ts (ab) and the GPU check scripts.
import { afterEach, describe, expect, it } from 'vitest';
import { withPdl, isPdlName } from '../../../src/backends/cuda/codegen/pdl.js';
import { qgemmTma } from '../../../src/backends/cuda/codegen/quant-tma.js';
import { elementwise } from '../../../src/backends/cuda/codegen/elementwise.js';
import type { QGemmArgs } from '../../../src/backends/cuda/codegen/quant.js';
import type { KernelSource } from '../../../src/backends/cuda/codegen/types.js';
import { CudaDevice } from '../../../src/backends/cuda/device.js';
import { launchConfig } from '../../../src/backends/cuda/ffi/driver.js';
import { expectCleanCompile, hasNvcc } from '../../helpers/nvcc.js';

const qkv: QGemmArgs = { M: 1024, N: 2304, K: 768, a: 'int8', activation: '', params: [], out: 'float16', staged: true, wgmma: true };
const add = (): KernelSource => elementwise({ expr: '(add $0 $1)', inputs: [{ dtype: 'float16', dims: [8, 128, 768] }, { dtype: 'float16', dims: [8, 128, 768] }], out: { dtype: 'float16', dims: [8, 128, 768] } });

/** The body of the variant's kernel function, from its opening brace. */
const body = (k: KernelSource) => k.source.slice(k.source.indexOf('{', k.source.indexOf('__global__')));

describe('PDL variants of generated kernels', () => {
  it('entry: waits and then triggers first thing in the body, under a new name, the rest unchanged', () => {
    const k = add(), p = withPdl(k, 'entry')!;
    expect(p.name).toBe(`${k.name}_pdl`);
    expect(isPdlName(p.name)).toBe(true);
    expect(p.source).not.toContain(`${k.name}(`);
    expect(p.source).toContain(`void __launch_bounds__(256) ${p.name}(`);
    const b = body(p);
    expect(b.indexOf('griddepcontrol.wait')).toBeGreaterThan(0);
    expect(b.indexOf('griddepcontrol.wait')).toBeLessThan(b.indexOf('griddepcontrol.launch_dependents'));
    // nothing but the guarded instructions between the brace and the plain body
    const plain = body(k);
    expect(b.replace(/\n#if[\s\S]*?#endif\n/, '')).toBe(plain);
    expect(p.source.replace(/\n#if defined\(__CUDA_ARCH__\)[\s\S]*?#endif\n/, '').split(p.name).join(k.name)).toBe(k.source);
    expect({ ...p, name: k.name, source: k.source }).toEqual(k); // same launch shape, parameters
    expect(withPdl(k, 'entry')).toBe(p); // rendered once per kernel and mode
  });

  it('wait: waits first thing and never triggers; late without anchors is the same', () => {
    const k = add(), w = withPdl(k, 'wait')!, l = withPdl(k, 'late')!;
    expect(w.name).toBe(`${k.name}_pdw`);
    expect(body(w)).toMatch(/^\{\n#if[^\n]*\n {2}asm volatile\("griddepcontrol\.wait;"/);
    expect(w.source).not.toContain('launch_dependents');
    expect(l).toBe(w); // one kernel, one cubin
  });

  it('mixed: GEMMs take their late (or wait) variant, every other kernel its entry variant: same names, same cubins', () => {
    const k = add(), t = qgemmTma({ ...qkv, tile: { BM: 64, BN: 128 }, occupancy: 3 });
    expect(withPdl(k, 'mixed')).toBe(withPdl(k, 'entry'));
    expect(withPdl(t, 'mixed')).toBe(withPdl(t, 'late'));
    expect(withPdl(t, 'mixed')!.name).toBe(`${t.name}_pdt`);
    // a GEMM without anchors waits first and lets nothing in before it exits
    const g = { ...k, name: k.name.replace(/^kiln_[a-z]+/, 'kiln_qwgmma_int8'), source: k.source.split(k.name).join(k.name.replace(/^kiln_[a-z]+/, 'kiln_qwgmma_int8')) };
    expect(withPdl(g, 'mixed')!.name).toBe(`${g.name}_pdw`);
    expect(withPdl(g, 'mixed')!.source).not.toContain('launch_dependents');
  });

  it('late: the TMA GEMM waits after barrier init and tensor-map prefetch and triggers after its main loop', () => {
    const k = qgemmTma({ ...qkv, tile: { BM: 64, BN: 128 }, occupancy: 3 });
    const p = withPdl(k, 'late')!, s = p.source;
    const wait = s.indexOf('griddepcontrol.wait'), trig = s.indexOf('griddepcontrol.launch_dependents');
    expect(wait).toBeGreaterThan(s.lastIndexOf('prefetch.tensormap'));
    expect(wait).toBeGreaterThan(s.indexOf('__syncthreads();', s.indexOf('__global__')));
    // before either role reads anything: the producer's first load, the consumers' first barrier wait
    expect(wait).toBeLessThan(s.search(/if \(threadIdx\.x >= \d+\) \{ \/\/ the producer/));
    expect(wait).toBeLessThan(s.indexOf('kq_tma(sa', s.indexOf('__global__')));
    // after the consumers' last MMA is issued, before the epilogue's first global access
    expect(trig).toBeGreaterThan(s.lastIndexOf('wgmma.commit_group'));
    expect(trig).toBeLessThan(s.indexOf('wgmma.wait_group.sync.aligned 0'));
    expect(p.tma).toEqual(k.tma);
    // the ping-pong kernel: the same wait, no explicit trigger (its blocks' last tiles end at different times)
    const pp = withPdl(qgemmTma({ ...qkv, tile: { BM: 64, BN: 128 } }, { persistent: 132 }), 'late')!.source;
    expect(pp.indexOf('griddepcontrol.wait')).toBeGreaterThan(pp.lastIndexOf('prefetch.tensormap'));
    expect(pp.indexOf('griddepcontrol.wait')).toBeLessThan(pp.indexOf('if (threadIdx.x >= 256)'));
    expect(pp).not.toContain('launch_dependents');
    // the plain kernels' text is untouched by the anchors (cubin caches and plans stay valid)
    expect(k.source).not.toContain('griddepcontrol');
  });

  it('early: the TMA GEMMs trigger first, load their first weight tiles before the wait and the activations after', () => {
    for (const k of [qgemmTma({ ...qkv, tile: { BM: 64, BN: 128 }, occupancy: 3 }), qgemmTma({ ...qkv, tile: { BM: 64, BN: 128 } }, { persistent: 132 })]) {
      const p = withPdl(k, 'early')!, s = body(p);
      expect(p.name).toBe(`${k.name}_pde`);
      expect(s).toMatch(/^\{\n {2}asm volatile\("griddepcontrol\.launch_dependents;"/);
      const split = s.search(/if \(threadIdx\.x >= \d+\) \{ \/\/ the producer/), waits = [...s.matchAll(/griddepcontrol\.wait/g)].map((m) => m.index!);
      expect(waits).toHaveLength(2); // the producer thread's, then the consumers'
      const [prodWait, consWait] = waits;
      // before the producer's wait: barrier init, tensor-map prefetch and B (weight) loads only
      const before = s.slice(0, prodWait);
      expect(before).not.toMatch(/&tmA, kt/);
      expect(before.match(/kq_tma\(sa \+ \d+, &tmB/g)).toHaveLength(1);
      expect(prodWait).toBeGreaterThan(split);
      // every A load after it; the consumers wait before their first barrier wait, epilogue and stores
      expect(s.indexOf('&tmA, kt')).toBeGreaterThan(prodWait);
      expect(consWait).toBeGreaterThan(s.indexOf('return;', prodWait));
      expect(consWait).toBeLessThan(s.indexOf('kq_bar_wait(full0'));
      expect(s.slice(prodWait, consWait)).toMatch(/if \((kt|step) >= \d+\) \{\n\s+asm volatile\("mbarrier\.arrive\.expect_tx/);
    }
    // clusters (multicast B): the entry variant; other kernels too
    const cl = qgemmTma({ ...qkv, tile: { BM: 128, BN: 128 }, occupancy: 2 }, { cluster: 2 });
    expect(withPdl(cl, 'early')).toBe(withPdl(cl, 'entry'));
    const ew = add();
    expect(withPdl(ew, 'early')).toBe(withPdl(ew, 'entry'));
  });

  it('leaves alone what it cannot inject into safely', () => {
    const k = add();
    expect(withPdl({ ...k, source: `${k.source}\nextern "C" __global__ void other() {}` })).toBeUndefined();
    expect(withPdl({ ...k, source: k.source.replace('__global__', '__device__') })).toBeUndefined();
    expect(withPdl(withPdl(k, 'wait')!, 'entry')).toBeUndefined();
    const t = qgemmTma({ ...qkv, tile: { BM: 64, BN: 128 }, occupancy: 3 });
    expect(withPdl({ ...t, pdlAnchors: { wait: 'no such text' } }, 'late')).toBeUndefined();
  });
});

describe('CudaDevice and the PDL attribute', () => {
  const saved = process.env.KILN_PDL;
  afterEach(() => { if (saved === undefined) delete process.env.KILN_PDL; else process.env.KILN_PDL = saved; });
  /** A device object with no context: only its kernel choice is exercised. */
  const device = (sm: number) => Object.assign(Object.create(CudaDevice.prototype) as CudaDevice, { info: { sm }, cubins: new Map<string, Uint8Array>() });
  const pick = (d: CudaDevice, k: KernelSource) => (d as unknown as { variant(k: KernelSource): KernelSource }).variant(k);

  it('launches plainly by default and a PDL variant on Hopper when asked, whatever cubins are already known', () => {
    const k = add();
    delete process.env.KILN_PDL;
    expect(pick(device(90), k)).toBe(k);
    for (const [v, suffix] of [['entry', '_pdl'], ['wait', '_pdw'], ['late', '_pdw'], ['1', '_pdw']]) {
      process.env.KILN_PDL = v;
      expect(pick(device(90), k).name).toBe(k.name + suffix);
      expect(pick(device(80), k)).toBe(k); // no griddepcontrol before sm_90
    }
    const t = qgemmTma({ ...qkv, tile: { BM: 64, BN: 128 }, occupancy: 3 });
    expect(pick(device(90), t).name).toBe(`${t.name}_pdt`); // a kernel with anchors: its own late variant
    // the plain kernel's cubin already loaded (a plan built with PDL off, or a context captured with it off first):
    // still the variant, never the plain code under the attribute
    const d = device(90);
    d.cubins.set(k.name, new Uint8Array(4));
    expect(pick(d, k).name).toBe(`${k.name}_pdw`);
    process.env.KILN_PDL = '0';
    expect(pick(device(90), k)).toBe(k);
  });

  it('lays out CUlaunchConfig with the programmatic-serialization attribute only when asked', () => {
    const plain = launchConfig([8, 18, 1], [288, 1, 1], 99328, null, false);
    expect(plain.length).toBe(56);
    expect([0, 1, 2, 3, 4, 5, 6].map((i) => plain.readUInt32LE(4 * i))).toEqual([8, 18, 1, 288, 1, 1, 99328]);
    expect(plain.readBigUInt64LE(32)).toBe(0n); // the null stream
    expect(plain.readBigUInt64LE(40)).toBe(0n);
    expect(plain.readUInt32LE(48)).toBe(0);
    const p = launchConfig([1, 1, 1], [32, 1, 1], 0, null, true);
    expect(p.readBigUInt64LE(40)).not.toBe(0n);
    expect(p.readUInt32LE(48)).toBe(1);
    expect(launchConfig([1, 1, 1], [32, 1, 1], 0, null, true).readBigUInt64LE(40)).toBe(p.readBigUInt64LE(40)); // one attribute block
  });

  it.skipIf(!hasNvcc)('compiles the variants for sm_90 / sm_90a with no warnings, spills or local memory', () => {
    const k = add();
    expectCleanCompile([['entry', withPdl(k, 'entry')!.source], ['wait', withPdl(k, 'wait')!.source]], 'sm_90');
    expectCleanCompile([
      ['tma', withPdl(qgemmTma({ ...qkv, tile: { BM: 64, BN: 128 }, occupancy: 3 }), 'late')!.source],
      ['tmacl', withPdl(qgemmTma({ ...qkv, tile: { BM: 128, BN: 128 }, occupancy: 2 }, { cluster: 2 }), 'late')!.source],
      ['pp', withPdl(qgemmTma({ ...qkv, tile: { BM: 64, BN: 128 } }, { persistent: 132 }), 'late')!.source],
      ['tmae', withPdl(qgemmTma({ ...qkv, tile: { BM: 64, BN: 128 }, occupancy: 3 }), 'early')!.source],
      ['tmae1', withPdl(qgemmTma({ ...qkv, tile: { BM: 128, BN: 256 } }), 'early')!.source],
      ['ppe', withPdl(qgemmTma({ ...qkv, tile: { BM: 64, BN: 128 } }, { persistent: 132 }), 'early')!.source],
      ['ppe2', withPdl(qgemmTma({ ...qkv, K: 64, tile: { BM: 64, BN: 64 }, occupancy: 2 }, { persistent: 132 }), 'early')!.source],
    ], 'sm_90a');
  }, 120_000);
});
