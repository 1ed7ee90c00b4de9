// Programmatic dependent launch (PDL, Hopper): a kernel launched with the programmatic-stream-serialization attribute
// may start while the kernel before it on the stream is still finishing, so its launch latency and block
// rasterization hide behind the predecessor's tail (in a CUDA graph the capture turns the edge into a programmatic
// one). That is only safe for a kernel that waits for its predecessor before it touches global memory: it may read
// the predecessor's outputs, and the memory planner may hand it a block the predecessor still reads. `withPdl` makes
// that variant of a generated kernel: `griddepcontrol.wait` before any global access, and, by mode, an explicit
// `griddepcontrol.launch_dependents` that lets the next kernel in before this one has finished. The next kernel
// cannot run ahead of its inputs: its own wait returns only when this grid has completed and its writes are
// visible, and this grid completes only after its own wait. A kernel without the wait must never be launched with
// the attribute; each variant gets its own name, so a cubin found under that name always holds it.
import type { KernelSource } from './types.js';

/**
 * Where the variant waits and triggers:
 * - `entry`: wait, then trigger, first thing in the body (the next kernel is let in once every block has started);
 * - `wait`: wait first thing, no explicit trigger (the next kernel is let in as this one's blocks exit);
 * - `late`: a kernel that names anchors (`PdlAnchors`) waits at its `wait` anchor (after setup that touches no global
 *   memory: barrier init, tensor-map prefetch) and triggers at its `trigger` anchor (after its main loop); any other
 *   kernel as in `wait`;
 * - `early`: a kernel that renders its own early variant (`pdlEarly`: the TMA GEMMs trigger first thing and load their
 *   first weight tiles, constants, before the wait) uses it; any other kernel as in `entry`. Every kernel then lets
 *   the next one in at once, so a GEMM's weight loads overlap its predecessor's tail.
 * - `mixed`: GEMMs never let the next kernel in early (`late` where they have anchors, else `wait`), every other
 *   kernel does (`entry`). Early triggers from GEMMs cost int8 BERT 47-69 us (dependents launched at once may hold SM
 *   slots the GEMM's later blocks need); the short kernels between GEMMs (norms, attention) leave room, and the GEMM
 *   after them gets its launch and setup done behind their tails. No variant of its own: each kernel takes the
 *   named mode's (same names, same cubins).
 */
export type PdlMode = 'entry' | 'wait' | 'late' | 'early' | 'mixed';

/** The quantized GEMM kernels' name prefixes (codegen/quant*.ts): what `mixed` keeps from triggering early. */
const GEMM = /^kiln_q(tma|tmapp|tmaconv|wgmma|gemm|stem)_/;

/**
 * What a generator may say about its kernel's PDL variants: text in the source before which a `late` variant waits /
 * triggers (each must occur in the source), and the whole `early` variant's source under the plain kernel's name.
 */
export interface PdlAnchors {
  pdlAnchors?: { wait: string; trigger?: string };
  pdlEarly?: string;
}

const SUFFIX: Record<Exclude<PdlMode, 'mixed'>, string> = { entry: '_pdl', wait: '_pdw', late: '_pdt', early: '_pde' };
const WAIT = 'asm volatile("griddepcontrol.wait;" ::: "memory");';
const TRIGGER = 'asm volatile("griddepcontrol.launch_dependents;" ::: "memory");';
// before sm_90 (no griddepcontrol) a variant compiles to the plain kernel; it is then never launched with the attribute
const guarded = (s: string) => `\n#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900\n  ${s}\n#endif\n`;

const cache = new WeakMap<KernelSource, Map<PdlMode, KernelSource | null>>();

/**
 * The kernel's PDL variant for `mode` (same launch shape and parameters), or undefined where the source is not one
 * `extern "C" __global__` function (nothing to inject into safely: launch it plainly).
 */
export function withPdl<K extends KernelSource>(k: K, mode: PdlMode = 'entry'): K | undefined {
  // the same kernel as another mode's: one name, one cubin
  if (mode === 'mixed') mode = GEMM.test(k.name) ? 'late' : 'entry';
  if (mode === 'late' && !(k as PdlAnchors).pdlAnchors) mode = 'wait';
  if (mode === 'early' && !(k as PdlAnchors).pdlEarly) mode = 'entry';
  let m = cache.get(k);
  if (!m) cache.set(k, (m = new Map()));
  let v = m.get(mode);
  if (v === undefined) {
    v = render(k, mode);
    m.set(mode, v);
  }
  return (v ?? undefined) as K | undefined;
}

/** Whether `name` is a PDL variant's (of any mode). */
export const isPdlName = (name: string): boolean => Object.values(SUFFIX).some((s) => name.endsWith(s));

function render(k: KernelSource & PdlAnchors, mode: Exclude<PdlMode, 'mixed'>): KernelSource | null {
  const src = k.source, at = src.indexOf('__global__');
  if (at < 0 || src.indexOf('__global__', at + 1) >= 0 || isPdlName(k.name)) return null;
  // the parameter list and launch bounds hold no brace: the first one after __global__ opens the body
  const open = src.indexOf('{', at);
  if (open < 0 || !src.slice(at, open).includes(k.name)) return null;
  const anchors = mode === 'late' ? k.pdlAnchors : undefined;
  let source: string;
  if (mode === 'early' && k.pdlEarly) {
    if (!k.pdlEarly.includes('griddepcontrol.wait') || !k.pdlEarly.includes(k.name)) return null; // a generator bug
    source = k.pdlEarly;
  } else if (anchors) {
    const w = src.indexOf(anchors.wait, open), t = anchors.trigger === undefined ? -1 : src.indexOf(anchors.trigger, open);
    if (w < 0 || (anchors.trigger !== undefined && t < w)) return null; // a generator bug: anchors not in its source
    source = src.slice(0, w) + guarded(WAIT) + (t < 0 ? src.slice(w) : src.slice(w, t) + guarded(TRIGGER) + src.slice(t));
  } else {
    source = src.slice(0, open + 1) + guarded(mode === 'entry' ? `${WAIT}\n  ${TRIGGER}` : WAIT) + src.slice(open + 1);
  }
  const name = k.name + SUFFIX[mode];
  return { ...k, name, source: source.split(k.name).join(name) };
}
