// Build-time side of the native CPU kernels: on the first tactic query for a model, generate every eligible
// layer's kernels, compile them into one library (in parallel units), and load it so the builder can time the
// variants. The chosen variants' metadata and the library go into the plan.
import os from 'node:os';
import type { Model, Node, ValueType } from '../../ir/graph.js';
import { TensorData, sameDims, type Value } from '../../ir/tensor.js';
import type { Tactic } from '../backend.js';
import { MIN_MODEL_WORK, layerKernel, tilesOf, type Arg, type LayerKernel, type Variant } from './codegen.js';
import { tconvTilesOf, pwTilesOf } from './conv.js';
import { compileLibrary, findCompiler, hostIsa, type Isa } from './compiler.js';
import { NativeLibrary, nativeUnavailable, type Ptr } from './native.js';
import { inferShapes } from '../../passes/infer.js';
import { RUNTIME_C, RUNTIME_H } from './kernels/runtime.c.js';
import { renderGemm, renderTconv, renderPointwise, POINTWISE_H, TRANSPOSE16 } from './kernels/tiles.c.js';
import { INT8_C, INT8_H } from './kernels/int8.c.js';
import { outValue, outWords, type QuantOut } from './int8.js';
import { bf16Kernels, bf16Library, isBf16Tactic } from './bf16.js';

/** What the plan stores per native layer (the chosen variant only). */
export interface LayerMeta {
  node: string;
  tactic: string;
  fn: string;
  pack?: Variant['pack'];
  args: Arg[];
  inputDims: (number[] | null)[];
  outDims: number[];
  /** Set when the code takes the leading dim at run time: per input, whether it carries it. */
  batch?: boolean[];
  /** Rough work at the generated shapes (see LayerKernel.work). */
  work?: number;
  /** int8/uint8 output (quantized layers); absent: float32. */
  outDtype?: QuantOut;
  /** This layer and its producer in one function (see LayerKernel.pair). */
  pair?: LayerKernel['pair'];
  /** The function accepts its residual's buffer as its output (see Variant.accumulate). */
  accumulate?: boolean;
}

export interface KernelsMeta {
  isa: Isa;
  layers: LayerMeta[];
  /** Some chosen variant multiplies in bf16 (the bf16 math mode, bf16.ts): the host must have AVX-512 BF16. */
  bf16?: true;
}

export const KERNELS_BLOB = 'cpu/kernels.so';
export const META_BLOB = 'cpu/kernels.json';

const warned = new Set<string>();
/** Warn once per process per message (a model with 50 convolutions says "no compiler" once). */
export function warnOnce(msg: string): void {
  if (warned.has(msg)) return;
  warned.add(msg);
  process.emitWarning(msg, 'KilnWarning');
}

export const defaultThreads = () => (typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length);

/** A layer's pointer arguments, from its inputs, packed weights and output. */
export function layerArgs(args: Arg[], inputs: (Value | undefined)[], packed: Ptr, out: Float32Array): Ptr[] {
  // a plain loop: this runs for every layer of every run (a closure per call showed in MobileNetV2's run profile)
  const r: Ptr[] = new Array(args.length);
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    r[i] = 'in' in a ? offHeap((inputs[a.in] as TensorData | undefined)?.data as Float32Array | undefined) : 'packed' in a ? packed : 'out' in a ? offHeap(out) : null;
  }
  return r;
}

/** V8 keeps small typed arrays inside its heap, where the GC may move them while a worker thread uses them; asking
 * for `.buffer` moves them out for good. */
function offHeap(a: Float32Array | Uint8Array | undefined): Ptr {
  if (!a) return null;
  void a.buffer;
  return a;
}

export function dimsMatch(meta: Pick<LayerMeta, 'inputDims'>, inputs: (Value | undefined)[]): boolean {
  const want = meta.inputDims;
  for (let i = 0; i < want.length; i++) {
    const d = want[i], v = inputs[i];
    if (!d) {
      if (v) return false;
      continue;
    }
    if (!(v instanceof TensorData) || !sameDims(v.dims, d)) return false;
  }
  return true;
}

/**
 * The batch (leading dim of the output) a layer's code runs these inputs at, or undefined when they differ from the
 * shapes it was generated for. Batch-generic layers accept any leading dim on the inputs that carry it.
 */
export function runBatch(meta: Pick<LayerMeta, 'inputDims' | 'outDims' | 'batch'>, inputs: (Value | undefined)[]): number | undefined {
  if (dimsMatch(meta, inputs)) return meta.outDims[0] ?? 1;
  if (!meta.batch) return undefined;
  let nb = -1;
  for (let i = 0; i < meta.inputDims.length; i++) {
    const d = meta.inputDims[i], v = inputs[i];
    if (!d) {
      if (v) return undefined;
      continue;
    }
    if (!(v instanceof TensorData) || v.dims.length !== d.length) return undefined;
    const from = meta.batch[i] ? 1 : 0;
    if (meta.batch[i]) {
      if (nb < 0) nb = v.dims[0];
      if (v.dims[0] !== nb) return undefined;
    }
    for (let k = from; k < d.length; k++) if (v.dims[k] !== d[k]) return undefined;
  }
  return nb < 0 ? undefined : nb;
}

/** Output dims at a run-time batch. */
export const outDimsAt = (meta: Pick<LayerMeta, 'outDims' | 'batch'>, nb: number): number[] =>
  meta.batch ? [nb, ...meta.outDims.slice(1)] : meta.outDims;

/** The batch a batch-generic layer is also timed at (see NativeTactic.time). */
const REP_BATCH = 16;

/** \`v\` with its leading dim repeated \`times\` times (the same images again). */
function repeatBatch(v: TensorData, times: number): TensorData {
  const src = v.data as Float32Array;
  const data = new (src.constructor as Float32ArrayConstructor)(src.length * times);
  for (let i = 0; i < times; i++) data.set(src, i * src.length);
  return new TensorData(v.dtype, [v.dims[0] * times, ...v.dims.slice(1)], data);
}

class NativeTactic implements Tactic {
  readonly name: string;
  readonly precision?: 'bf16';
  packed: Ptr = null;
  constructor(readonly build: NativeBuild, readonly kernel: LayerKernel, readonly variant: Variant) {
    this.name = variant.tactic;
    if (isBf16Tactic(this.name)) this.precision = 'bf16';
  }

  run(node: Node, inputs: (Value | undefined)[]): Value[] {
    const nb = runBatch(this.kernel, inputs);
    if (nb === undefined) throw new Error(`${node.name}: inputs differ from the shapes the kernel was generated for`);
    const lib = this.build.lib;
    if (this.variant.pack && this.packed === null) {
      this.packed = lib.pack(this.variant.pack.fn, this.variant.pack.inputs.map((i) => (inputs[i] as TensorData).data));
      this.build.packedBuffers.push(this.packed);
    }
    const dims = outDimsAt(this.kernel, nb);
    const out = new Float32Array(outWords(dims, this.kernel.outDtype));
    lib.threads(defaultThreads());
    if (out.length) lib.callSync(this.variant.fn, layerArgs(this.kernel.args, inputs, this.packed, out), nb);
    return [outValue(out, dims, this.kernel.outDtype)];
  }

  /**
   * The builder's timing: the CPU time of the native call alone (one thread, one output buffer reused), where the
   * weights are most of the layer's traffic with them evicted from the caches before each call (a run meets them
   * cold: the other layers ran in between), the quickest of a few ms of calls (kiln_time_cold; where the library
   * lacks it, process CPU time hot, the best of four rounds). Wall time around \`run\` on a shared machine mostly
   * measures other processes and the output allocation. Timing at the engines' default thread count as well (the mean
   * of 1-thread and n x n-thread times) was tried: SqueezeNet's plans were no quicker at either count, paired (1.04 /
   * 1.00, 1.00 / 1.02), and builds slower. A batch-generic layer is also timed at a representative batch, and the two
   * per-image costs are averaged, so a dynamic-batch build (opt batch 1) does not keep a tactic that only wins at
   * batch 1.
   */
  time(node: Node, inputs: (Value | undefined)[], consts?: boolean[]): number | undefined {
    const nb = runBatch(this.kernel, inputs);
    if (nb === undefined) return undefined;
    this.run(node, inputs); // packs the weights, and fails here if the layer cannot run
    const at1 = this.cpuMs(inputs, nb, consts);
    if (!this.kernel.batch || nb >= REP_BATCH) return at1;
    const times = Math.ceil(REP_BATCH / nb);
    const big = inputs.map((v, i) => (this.kernel.batch![i] && v instanceof TensorData ? repeatBatch(v, times) : v));
    return (at1 + this.cpuMs(big, nb * times, consts) / times) / 2;
  }

  private cpuMs(inputs: (Value | undefined)[], nb: number, consts?: boolean[]): number {
    const lib = this.build.lib;
    const out = new Float32Array(outWords(outDimsAt(this.kernel, nb), this.kernel.outDtype));
    const args = layerArgs(this.kernel.args, inputs, this.packed, out);
    lib.threads(1);
    if (process.env.KILN_TIME_HOT !== '1') {
      // the weights as a whole model's run meets them, evicted before every call (kiln_time_cold), where they are most
      // of what the layer reads and writes (batch 1's deeper layers): at batch 8 the activations dominate and stream
      // through the caches in a run as in the timing loop, and choices timed with the weights evicted as well were
      // 2-4 % slower (ResNet-50, paired)
      const weights: ArrayBufferView[] = [];
      let otherBytes = out.byteLength;
      inputs.forEach((v, i) => {
        if (!(v instanceof TensorData) || !ArrayBuffer.isView(v.data)) return;
        if (consts?.[i]) weights.push(v.data);
        else otherBytes += v.data.byteLength;
      });
      const cold = weights.reduce((a, w) => a + w.byteLength, 0) >= otherBytes;
      const evict: Ptr[] = !cold ? [] : this.packed !== null ? [this.packed, ...weights] : weights;
      const once = lib.timeCold(this.variant.fn, args, nb, evict, 1);
      if (once) {
        // about 4 ms of calls, 4 to 40 of them; the quickest (each call is cold by construction: what else happened
        // on the machine only adds time)
        const reps = Math.max(4, Math.min(40, Math.ceil(4e6 / Math.max(once[0], 1e3))));
        const t = lib.timeCold(this.variant.fn, args, nb, evict, reps)!;
        lib.threads(defaultThreads());
        return Math.min(...t) / 1e6;
      }
    }
    const call = () => lib.callSync(this.variant.fn, args, nb);
    const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
    let t0 = cpu();
    call();
    // enough calls per round for the clock's resolution (~2 ms of CPU per round), at most 50
    const reps = Math.max(1, Math.min(50, Math.ceil(2 / Math.max(cpu() - t0, 0.01))));
    let best = Infinity;
    for (let r = 0; r < 4; r++) {
      t0 = cpu();
      for (let i = 0; i < reps; i++) call();
      best = Math.min(best, (cpu() - t0) / reps);
    }
    lib.threads(defaultThreads());
    return best;
  }

  meta(): LayerMeta {
    const k = this.kernel;
    return { node: k.node, tactic: this.name, fn: this.variant.fn, pack: this.variant.pack, args: k.args, inputDims: k.inputDims, outDims: k.outDims,
      work: k.work, ...(k.batch ? { batch: k.batch } : {}), ...(k.outDtype ? { outDtype: k.outDtype } : {}), ...(k.pair && (!k.pair.tactics || k.pair.tactics.includes(this.name)) ? { pair: k.pair } : {}),
      ...(this.variant.accumulate ? { accumulate: true } : {}) };
  }
}

export class NativeBuild {
  readonly packedBuffers: Ptr[] = [];
  private tacticsByNode = new Map<Node, NativeTactic[]>();
  constructor(readonly isa: Isa, readonly lib: NativeLibrary, kernels: Map<Node, LayerKernel>) {
    for (const [n, k] of kernels) this.tacticsByNode.set(n, k.variants.map((v) => new NativeTactic(this, k, v)));
  }

  tactics(n: Node): Tactic[] {
    return this.tacticsByNode.get(n) ?? [];
  }

  /** The library and the chosen layers' metadata, or nothing when no layer chose a native tactic. */
  serialize(layers: { node: Node; tactic: Tactic }[]): [string, Uint8Array][] {
    const chosen = layers.map((l) => l.tactic).filter((t): t is NativeTactic => t instanceof NativeTactic && t.build === this);
    for (const p of this.packedBuffers.splice(0)) this.lib.free(p);
    if (!chosen.length) return [];
    const meta: KernelsMeta = { isa: this.isa, layers: chosen.map((t) => t.meta()), ...(chosen.some((t) => t.precision === 'bf16') ? { bf16: true as const } : {}) };
    return [[KERNELS_BLOB, this.lib.bytes], [META_BLOB, new TextEncoder().encode(JSON.stringify(meta))]];
  }
}

/** Backend.serializeKernels: the library of the build whose native tactics were chosen. */
export function serializeNative(layers: { node: Node; tactic: Tactic }[]): [string, Uint8Array][] {
  const t = layers.map((l) => l.tactic).find((x): x is NativeTactic => x instanceof NativeTactic);
  return t ? t.build.serialize(layers) : [];
}

const builds = new WeakMap<Model, NativeBuild | null>();

/** The native kernels of a model being built (generated and compiled on first use), or null without them. `bf16`:
 * the build's bf16 math mode (bf16.ts). */
export function nativeBuildFor(model: Model, typeOf: (name: string) => ValueType | undefined, bf16 = false): NativeBuild | null {
  if (builds.has(model)) return builds.get(model)!;
  let b: NativeBuild | null = null;
  try {
    b = compileModel(model, typeOf, bf16);
  } catch (e) {
    warnOnce(`Kiln: compiling native CPU kernels failed; those layers use reference kernels. ${(e as Error).message}`);
  }
  builds.set(model, b);
  return b;
}

function compileModel(model: Model, typeOf: (name: string) => ValueType | undefined, wantBf16: boolean): NativeBuild | null {
  const names = new Map<string, number>();
  for (const n of model.graph.nodes) names.set(n.name, (names.get(n.name) ?? 0) + 1);
  const isa = hostIsa();
  const bf16 = bf16Kernels(wantBf16, isa);
  if (wantBf16 && !bf16) warnOnce('Kiln: this CPU has no AVX-512 BF16; the bf16 build keeps fp32 kernels.');
  const kernels = new Map<Node, LayerKernel>();
  const batchOf = batchCarriers(model, typeOf);
  for (const n of model.graph.nodes) {
    // plans name layers by node name, so a native kernel needs a unique one
    if (!n.name || names.get(n.name) !== 1) continue;
    const k = layerKernel(n, model, typeOf, isa, String(kernels.size), batchOf(n), bf16);
    if (k) kernels.set(n, k);
  }
  if (![...kernels.values()].some((k) => k.work >= MIN_MODEL_WORK)) return null;
  const cc = findCompiler();
  if (!cc) {
    warnOnce('Kiln: no C compiler found (tried $KILN_CC, cc, gcc, clang); the CPU build uses reference kernels. Install gcc or clang for compiled kernels.');
    return null;
  }
  const why = nativeUnavailable();
  if (why) {
    warnOnce(`Kiln: native CPU kernels are unavailable (${why}); the CPU build uses reference kernels.`);
    return null;
  }
  const gemms = tilesOf(isa).map(([mr, nv]) => `void kiln_gemm_${mr}x${nv}(const gemm_t *g);\nvoid kiln_dconv_${mr}x${nv}(const dconv_t *g);`).join('\n');
  const tconvs = tconvTilesOf(isa).map(([mr, nv]) => `void kiln_tconv_${mr}x${nv}(const tconv_t *g);`).join('\n');
  const pws = pwTilesOf(isa).map(([mr, nv]) => `void kiln_pw_${mr}x${nv}(const pw_t *g);\nvoid kiln_pw_tile_${mr}x${nv}(int K, const float *a, const float *b, size_t ldb, float *c, int ldc);`).join('\n');
  const units = splitUnits([...kernels.values()].map((k) => k.source), defaultThreads());
  const bl = bf16 ? bf16Library() : undefined;
  const runtime = RUNTIME_C + INT8_C + tilesOf(isa).map(([mr, nv]) => renderGemm(mr, nv)).join('') + pwTilesOf(isa).map(([mr, nv]) => renderPointwise(mr, nv)).join('') + (bl?.runtime ?? '');
  // the transposed convolutions compile as a unit of their own, in parallel with the rest; it and the runtime are
  // the same for every model (their objects are cached apart), the symbol table goes with the layers
  const tunit = TRANSPOSE16 + tconvTilesOf(isa).map(([mr, nv]) => renderTconv(mr, nv)).join('') + (bl?.tconv ?? '');
  units[0] = symbolTable(kernels.values()) + units[0];
  const bytes = compileLibrary(cc, isa, `${RUNTIME_H}\n${INT8_H}\n${POINTWISE_H}\n${gemms}\n${tconvs}\n${pws}\n${bl?.header ?? ''}`, [runtime, tunit, ...units]);
  return new NativeBuild(isa, new NativeLibrary(bytes), kernels);
}

const numericDims = (t: ValueType | undefined): number[] | undefined =>
  t?.kind === 'tensor' && t.shape && t.shape.every((d) => typeof d === 'number') ? (t.shape as number[]) : undefined;

/**
 * Which layers can take their leading dim at run time, and through which inputs. Shapes are inferred a second time
 * with every dynamic leading input dim changed (a probe): a value "carries the batch" when only its leading dim moved,
 * and is static when nothing did. A layer qualifies when its output carries the batch and each input either carries
 * the same leading dim or is static. Returns, per node, the inputs that carry it (undefined: the layer does not
 * qualify).
 */
function batchCarriers(model: Model, typeOf: (name: string) => ValueType | undefined): (n: Node) => boolean[] | undefined {
  const none = () => undefined;
  const g = model.graph;
  const inits = g.initializers;
  const probe = new Map<string, number[]>();
  for (const i of g.inputs) {
    if (inits.has(i.name) || i.type.kind !== 'tensor' || !i.type.shape?.length) continue;
    const opt = numericDims(typeOf(i.name));
    if (!opt) return none;
    if (typeof i.type.shape[0] !== 'number') probe.set(i.name, [opt[0] + 3, ...opt.slice(1)]);
    else probe.set(i.name, opt);
  }
  if (![...probe].some(([k, d]) => d[0] !== numericDims(typeOf(k))![0])) return none;
  const saved = g.valueInfo;
  let probed: Map<string, ValueType>;
  try {
    g.valueInfo = new Map(saved);
    inferShapes(g, model.opsets, { inputShapes: probe });
    probed = g.valueInfo;
  } catch {
    return none;
  } finally {
    g.valueInfo = saved;
  }
  // [opt dim0, probe dim0] for a value that carries the batch, 'static', or undefined
  const kind = (name: string): [number, number] | 'static' | undefined => {
    if (inits.has(name)) return 'static';
    const o = numericDims(typeOf(name)), p = probe.get(name) ?? numericDims(probed.get(name));
    if (!o || !p || o.length !== p.length || !o.length) return undefined;
    if (o.slice(1).some((d, k) => d !== p[k + 1])) return undefined;
    return o[0] === p[0] ? 'static' : o[0] > 0 ? [o[0], p[0]] : undefined;
  };
  return (n) => {
    const out = n.outputs[0] ? kind(n.outputs[0]) : undefined;
    if (!Array.isArray(out)) return undefined;
    const flags: boolean[] = [];
    for (const x of n.inputs) {
      const k = x ? kind(x) : 'static';
      if (k === undefined || (Array.isArray(k) && (k[0] !== out[0] || k[1] !== out[1]))) return undefined;
      flags.push(Array.isArray(k));
    }
    return flags;
  };
}

/** The runtime's strided row copy (Splits inside a chain of calls; see runner.ts). */
export const COPY_ROWS = 'kiln_copy_rows';

/** \`kiln_symbol(name)\`: the address of a layer function by name, for chains of calls (see kiln_run_chain). */
function symbolTable(kernels: Iterable<LayerKernel>): string {
  const fns = [...[...kernels].flatMap((k) => [...k.variants.map((v) => v.fn), ...(k.pair ? [k.pair.fn] : [])]), COPY_ROWS];
  const args = Array(8).fill('void *').join(', ');
  return `${fns.map((f) => `void ${f}(${args}, int);`).join('\n')}
static const struct { const char *name; void *fn; } kiln_syms[] = { ${fns.map((f) => `{ "${f}", (void *)${f} }`).join(', ')}${fns.length ? '' : '{ 0, 0 }'} };
KEXPORT void *kiln_symbol(const char *name) {
  for (size_t i = 0; i < sizeof(kiln_syms) / sizeof(kiln_syms[0]); i++) if (kiln_syms[i].name && !strcmp(kiln_syms[i].name, name)) return kiln_syms[i].fn;
  return NULL;
}
`;
}

/** Spread layer sources over `n` units of similar size (one per core: the runtime units are usually cached). */
function splitUnits(sources: string[], n: number): string[] {
  const units = Array.from({ length: Math.min(n, sources.length) }, () => '');
  sources.forEach((s, i) => (units[i % units.length] += s));
  return units;
}
