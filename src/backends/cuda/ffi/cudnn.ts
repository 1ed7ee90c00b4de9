// cuDNN 9 (its convolution API) through koffi: NHWC convolutions on tensor cores, the algorithm picked by cuDNN's
// own heuristic. Bias, residual and activation run in Kiln's epilogue kernel after it.
import { KilnError } from '../../../ir/errors.js';
import { loadLibrary } from './libs.js';
import { current } from './driver.js';

type Fn = (...args: any[]) => any;
let api: Record<string, Fn> | undefined;

function load(): Record<string, Fn> {
  if (api) return api;
  const lib = loadLibrary('cuDNN', ['libcudnn.so.9', 'libcudnn.so', 'libcudnn.so.*']);
  api = {
    create: lib.func('int cudnnCreate(_Out_ void **handle)'),
    setStream: lib.func('int cudnnSetStream(void *handle, void *stream)'),
    tensorCreate: lib.func('int cudnnCreateTensorDescriptor(_Out_ void **desc)'),
    tensorSet: lib.func('int cudnnSetTensor4dDescriptor(void *desc, int format, int dtype, int n, int c, int h, int w)'),
    tensorDestroy: lib.func('int cudnnDestroyTensorDescriptor(void *desc)'),
    filterCreate: lib.func('int cudnnCreateFilterDescriptor(_Out_ void **desc)'),
    filterSet: lib.func('int cudnnSetFilter4dDescriptor(void *desc, int dtype, int format, int k, int c, int h, int w)'),
    filterDestroy: lib.func('int cudnnDestroyFilterDescriptor(void *desc)'),
    convCreate: lib.func('int cudnnCreateConvolutionDescriptor(_Out_ void **desc)'),
    convSet: lib.func('int cudnnSetConvolution2dDescriptor(void *desc, int padH, int padW, int u, int v, int dilH, int dilW, int mode, int computeType)'),
    convMath: lib.func('int cudnnSetConvolutionMathType(void *desc, int mathType)'),
    convDestroy: lib.func('int cudnnDestroyConvolutionDescriptor(void *desc)'),
    algo: lib.func('int cudnnGetConvolutionForwardAlgorithm_v7(void *h, void *x, void *w, void *conv, void *y, int requested, _Out_ int *returned, _Out_ uint8_t *perf)'),
    wsSize: lib.func('int cudnnGetConvolutionForwardWorkspaceSize(void *h, void *x, void *w, void *conv, void *y, int algo, _Out_ size_t *size)'),
    forward: lib.func('int cudnnConvolutionForward(void *h, const void *alpha, void *xDesc, uint64_t x, void *wDesc, uint64_t w, void *conv, int algo, uint64_t ws, size_t wsSize, const void *beta, void *yDesc, uint64_t y)'),
    error: lib.func('const char *cudnnGetErrorString(int status)'),
  };
  return api;
}

function check(st: number, call: string, what: string): void {
  if (st !== 0) throw new KilnError(`cuDNN ${call} failed with ${api?.error(st) ?? st} while ${what}.`);
}

export function cudnnAvailable(): string | undefined {
  try {
    load();
    return undefined;
  } catch (e) {
    return (e as Error).message.split('\n')[0];
  }
}

const NHWC = 1;
const DTYPE = { float32: 0, float16: 2, bfloat16: 9 } as const;
const PERF_BYTES = 48; // cudnnConvolutionFwdAlgoPerf_t: algo, status, time, memory (8-aligned), determinism, mathType, reserved[3]

// per device ordinal: a handle belongs to the device current at creation, and remembers the stream last set on it
const handles = new Map<number, { h: unknown; stream: unknown }>();

export interface PreparedConv {
  workspaceBytes: number;
  run(x: number, w: number, y: number, ws: number, stream: unknown): void;
  destroy(): void;
}

/** An NHWC 2-D convolution (W as [M, kh, kw, C]) with cuDNN's fastest algorithm for these shapes. */
export function prepareConv(a: {
  n: number; c: number; h: number; w: number; m: number; kh: number; kw: number; oh: number; ow: number;
  pads: number[]; strides: number[]; dilations: number[]; dtype: 'float32' | 'float16' | 'bfloat16';
}, what: string): PreparedConv {
  const n = load();
  let entry = handles.get(current.ordinal);
  if (!entry) {
    const h = [null];
    check(n.create(h), 'cudnnCreate', what);
    handles.set(current.ordinal, entry = { h: h[0], stream: null });
  }
  const state = entry, handle = entry.h;
  const dt = DTYPE[a.dtype];
  const x = [null], y = [null], f = [null], conv = [null];
  check(n.tensorCreate(x), 'cudnnCreateTensorDescriptor', what);
  check(n.tensorSet(x[0], NHWC, dt, a.n, a.c, a.h, a.w), 'cudnnSetTensor4dDescriptor(x)', what);
  check(n.tensorCreate(y), 'cudnnCreateTensorDescriptor', what);
  check(n.tensorSet(y[0], NHWC, dt, a.n, a.m, a.oh, a.ow), 'cudnnSetTensor4dDescriptor(y)', what);
  check(n.filterCreate(f), 'cudnnCreateFilterDescriptor', what);
  check(n.filterSet(f[0], dt, NHWC, a.m, a.c, a.kh, a.kw), 'cudnnSetFilter4dDescriptor', what);
  check(n.convCreate(conv), 'cudnnCreateConvolutionDescriptor', what);
  if (a.pads[0] !== a.pads[2] || a.pads[1] !== a.pads[3]) throw new KilnError(`${what}: asymmetric padding is not supported by the cuDNN tactic`);
  check(n.convSet(conv[0], a.pads[0], a.pads[1], a.strides[0], a.strides[1], a.dilations[0], a.dilations[1], 1 /* cross-correlation */, DTYPE.float32), 'cudnnSetConvolution2dDescriptor', what);
  check(n.convMath(conv[0], a.dtype === 'float32' ? 0 : 1 /* tensor-op math */), 'cudnnSetConvolutionMathType', what);
  const perf = Buffer.alloc(PERF_BYTES * 8), count = [0];
  check(n.algo(handle, x[0], f[0], conv[0], y[0], 8, count, perf), 'cudnnGetConvolutionForwardAlgorithm_v7', what);
  let algo = -1, wsBytes = 0;
  for (let i = 0; i < count[0]; i++) {
    if (perf.readInt32LE(i * PERF_BYTES + 4) !== 0) continue; // status
    algo = perf.readInt32LE(i * PERF_BYTES);
    const s = [0];
    check(n.wsSize(handle, x[0], f[0], conv[0], y[0], algo, s), 'cudnnGetConvolutionForwardWorkspaceSize', what);
    wsBytes = Number(s[0]);
    break;
  }
  if (algo < 0) throw new KilnError(`${what}: cuDNN offers no algorithm for this convolution`);
  const alpha = Buffer.alloc(4), beta = Buffer.alloc(4);
  alpha.writeFloatLE(1);
  return {
    workspaceBytes: wsBytes,
    run(xp, wp, yp, ws, stream) {
      if (state.stream !== stream) {
        check(n.setStream(handle, stream), 'cudnnSetStream', what);
        state.stream = stream;
      }
      check(n.forward(handle, alpha, x[0], xp, f[0], wp, conv[0], algo, ws, wsBytes, beta, y[0], yp), 'cudnnConvolutionForward', what);
    },
    destroy() {
      n.tensorDestroy(x[0]); n.tensorDestroy(y[0]); n.filterDestroy(f[0]); n.convDestroy(conv[0]);
    },
  };
}
