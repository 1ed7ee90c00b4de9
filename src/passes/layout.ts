// Layout: a backend may prefer channels-last (NHWC) convolutions (the GPU's tensor-core GEMMs read NHWC without an
// im2col for 1x1 convolutions and take bias/ReLU/residual in the GEMM epilogue). This pass turns each 2-D FusedConv
// into its NHWC form — weights reordered once to [M, kh, kw, C], Transposes inserted at its edges — and the clean-up
// stages that follow cancel the Transpose pairs between consecutive NHWC layers, leaving them at the graph's edges
// and around the few ops that stay NCHW. Quantized convolutions (kiln:QConv) move the same way, so int8 ResNets stay
// NHWC from the first layer to the last.
import type { Node } from '../ir/graph.js';
import { TensorData } from '../ir/tensor.js';
import { KILN_DOMAIN } from '../ops/fused.js';
import type { GraphView } from './view.js';

const TO_NHWC = [0, 2, 3, 1];
const TO_NCHW = [0, 3, 1, 2];

function transpose(v: GraphView, input: string, perm: number[], like: Node, before: Node): string {
  const out = v.fresh(`${input}_${perm.join('')}`);
  v.insertNode({ name: v.fresh(`${like.name}/layout`), opType: 'Transpose', domain: '', inputs: [input], outputs: [out], attrs: { perm: { type: 'ints', value: perm } } }, before);
  return out;
}

/** Reorder a constant [M, C, kh, kw] weight to [M, kh, kw, C] (stored values moved as they are: int8, fp8 bits too). */
function weightsToNHWC(w: TensorData): TensorData {
  const [M, C, KH, KW] = w.dims;
  const raw = w.data as unknown as ArrayLike<number> & { constructor: new (n: number) => Float64Array };
  const exact = ArrayBuffer.isView(raw) && raw.length === w.size && typeof raw[0] === 'number';
  const src = exact ? raw : w.toFloat64(), dst = exact ? new raw.constructor(src.length) : new Float64Array(src.length);
  for (let m = 0; m < M; m++) for (let c = 0; c < C; c++) for (let y = 0; y < KH; y++) for (let x = 0; x < KW; x++) {
    dst[((m * KH + y) * KW + x) * C + c] = src[((m * C + c) * KH + y) * KW + x];
  }
  return exact ? new TensorData(w.dtype, [M, KH, KW, C], dst as never) : TensorData.fromNumbers(w.dtype, [M, KH, KW, C], dst);
}

const NHWC_CONVS = new Set(['FusedConv', 'QConv']);

export function convsToNHWC(v: GraphView): number {
  let n = 0;
  for (const conv of [...v.graph.nodes]) {
    if (conv.domain !== KILN_DOMAIN || !NHWC_CONVS.has(conv.opType) || conv.attrs.layout) continue;
    const w = v.constant(conv.inputs[1]);
    const group = (conv.attrs.group?.value as number | undefined) ?? 1;
    if (!w || w.rank !== 4 || group !== 1) continue;
    const out = conv.outputs[0];
    const inner = v.fresh(`${out}_nhwc`);
    conv.inputs = [
      transpose(v, conv.inputs[0], TO_NHWC, conv, conv),
      v.addConstant(`${conv.name}.weight_nhwc`, weightsToNHWC(w)),
      conv.inputs[2] ?? '',
      ...(conv.inputs[3] ? [transpose(v, conv.inputs[3], TO_NHWC, conv, conv)] : []),
    ];
    while (conv.inputs.length > 2 && !conv.inputs[conv.inputs.length - 1]) conv.inputs.pop();
    conv.attrs = { ...conv.attrs, layout: { type: 'string', value: 'NHWC' } };
    conv.outputs = [inner];
    const back = { name: v.fresh(`${conv.name}/layout`), opType: 'Transpose', domain: '', inputs: [inner], outputs: [out], attrs: { perm: { type: 'ints' as const, value: TO_NCHW } } };
    const i = v.graph.nodes.indexOf(conv);
    v.graph.nodes.splice(i + 1, 0, back);
    v.reindex();
    n++;
  }
  return n;
}

/**
 * A 2-D MaxPool reading an NHWC layer's output (through the Transpose the conv pass put there) -> kiln:MaxPoolNHWC on
 * the channels-last tensor, with the Transpose back to NCHW after it instead: between two NHWC layers that pair then
 * cancels, and the pool's reads run along contiguous channels. A pool fed NCHW data stays as it is (moving it would
 * add transposes, not remove them).
 */
export function poolsToNHWC(v: GraphView): number {
  let n = 0;
  for (const pool of [...v.graph.nodes]) {
    if (pool.domain !== '' || pool.opType !== 'MaxPool' || pool.outputs.slice(1).some(Boolean)) continue;
    const t = v.producer(pool.inputs[0]);
    const perm = t?.opType === 'Transpose' && t.domain === '' ? (t.attrs.perm?.value as number[] | undefined) : undefined;
    if (!t || perm?.join() !== TO_NCHW.join() || ((pool.attrs.kernel_shape?.value as number[] | undefined)?.length ?? 0) !== 2) continue;
    const { storage_order: _order, ...attrs } = pool.attrs;
    const inner = v.fresh(`${pool.outputs[0]}_nhwc`);
    v.insertNode({ ...pool, name: v.fresh(`${pool.name}_nhwc`), opType: 'MaxPoolNHWC', domain: KILN_DOMAIN, attrs, inputs: [t.inputs[0]], outputs: [inner] }, pool);
    v.insertNode({ name: v.fresh(`${pool.name}/layout`), opType: 'Transpose', domain: '', inputs: [inner], outputs: [pool.outputs[0]], attrs: { perm: { type: 'ints', value: TO_NCHW } } }, pool);
    v.removeNodes([pool]);
    n++;
  }
  return n;
}
