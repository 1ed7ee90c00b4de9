// The CUDA driver API through koffi. Every call's status is checked and turned into a KilnError naming the call,
// the decoded status, and the layer being built or run.
import { KilnError } from '../../../ir/errors.js';
import { koffi, loadLibrary } from './libs.js';

type Fn = (...args: any[]) => any;

export interface Driver {
  cuInit: Fn; cuDriverGetVersion: Fn; cuDeviceGetCount: Fn; cuDeviceGet: Fn; cuDeviceGetName: Fn; cuDeviceGetAttribute: Fn;
  cuDeviceTotalMem_v2: Fn; cuDevicePrimaryCtxRetain: Fn; cuDevicePrimaryCtxRelease_v2: Fn; cuCtxSetCurrent: Fn; cuCtxSynchronize: Fn;
  cuMemAlloc_v2: Fn; cuMemFree_v2: Fn; cuMemcpyHtoD_v2: Fn; cuMemcpyDtoH_v2: Fn; cuMemcpyDtoD_v2: Fn; cuMemcpyHtoDAsync_v2: Fn;
  cuMemcpyDtoHAsync_v2: Fn; cuMemcpyDtoDAsync_v2: Fn; cuMemsetD8_v2: Fn; cuMemsetD8Async: Fn; cuMemGetInfo_v2: Fn; cuMemHostAlloc: Fn; cuMemFreeHost: Fn;
  cuStreamCreate: Fn; cuStreamSynchronize: Fn; cuStreamDestroy_v2: Fn; cuStreamQuery: Fn;
  cuModuleLoadData: Fn; cuModuleGetFunction: Fn; cuModuleUnload: Fn; cuFuncSetAttribute: Fn; cuLaunchKernel: Fn; cuLaunchKernelEx: Fn;
  cuEventCreate: Fn; cuEventRecord: Fn; cuEventRecordWithFlags: Fn; cuEventSynchronize: Fn; cuEventElapsedTime: Fn; cuEventDestroy_v2: Fn; cuEventQuery: Fn;
  cuStreamBeginCapture_v2: Fn; cuStreamEndCapture: Fn; cuGraphInstantiateWithFlags: Fn; cuGraphLaunch: Fn; cuGraphExecDestroy: Fn; cuGraphDestroy: Fn;
  cuGetErrorName: Fn; cuTensorMapEncodeTiled: Fn; cuTensorMapEncodeIm2col: Fn; cuProfilerStart: Fn; cuProfilerStop: Fn; cuGraphGetEdges_v2: Fn;
}

const PROTOS = [
  'int cuInit(unsigned int flags)',
  'int cuDriverGetVersion(_Out_ int *v)',
  'int cuDeviceGetCount(_Out_ int *n)',
  'int cuDeviceGet(_Out_ int *dev, int ordinal)',
  'int cuDeviceGetName(_Out_ uint8_t *name, int len, int dev)',
  'int cuDeviceGetAttribute(_Out_ int *v, int attr, int dev)',
  'int cuDeviceTotalMem_v2(_Out_ size_t *bytes, int dev)',
  'int cuDevicePrimaryCtxRetain(_Out_ void **ctx, int dev)',
  'int cuDevicePrimaryCtxRelease_v2(int dev)',
  'int cuCtxSetCurrent(void *ctx)',
  'int cuCtxSynchronize()',
  'int cuMemAlloc_v2(_Out_ uint64_t *ptr, size_t bytes)',
  'int cuMemFree_v2(uint64_t ptr)',
  'int cuMemcpyHtoD_v2(uint64_t dst, const void *src, size_t bytes)',
  'int cuMemcpyDtoH_v2(void *dst, uint64_t src, size_t bytes)',
  'int cuMemcpyDtoD_v2(uint64_t dst, uint64_t src, size_t bytes)',
  'int cuMemcpyHtoDAsync_v2(uint64_t dst, const void *src, size_t bytes, void *stream)',
  'int cuMemcpyDtoHAsync_v2(void *dst, uint64_t src, size_t bytes, void *stream)',
  'int cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t bytes, void *stream)',
  'int cuMemsetD8_v2(uint64_t dst, uint8_t value, size_t n)',
  'int cuMemsetD8Async(uint64_t dst, uint8_t value, size_t n, void *stream)',
  'int cuMemGetInfo_v2(_Out_ size_t *free, _Out_ size_t *total)',
  'int cuMemHostAlloc(_Out_ void **ptr, size_t bytes, unsigned int flags)',
  'int cuMemFreeHost(void *ptr)',
  'int cuStreamCreate(_Out_ void **stream, unsigned int flags)',
  'int cuStreamSynchronize(void *stream)',
  'int cuStreamDestroy_v2(void *stream)',
  'int cuStreamQuery(void *stream)',
  'int cuModuleLoadData(_Out_ void **module, const void *image)',
  'int cuModuleGetFunction(_Out_ void **fn, void *module, const char *name)',
  'int cuModuleUnload(void *module)',
  'int cuFuncSetAttribute(void *fn, int attr, int value)',
  'int cuLaunchKernel(void *fn, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, unsigned int bz, unsigned int shared, void *stream, void **params, void **extra)',
  // the CUlaunchConfig by address (see launchConfig): it points at attribute memory koffi cannot express in a Buffer
  'int cuLaunchKernelEx(const void *config, void *fn, void **params, void **extra)',
  'int cuEventCreate(_Out_ void **event, unsigned int flags)',
  'int cuEventRecord(void *event, void *stream)',
  'int cuEventRecordWithFlags(void *event, void *stream, unsigned int flags)',
  'int cuEventSynchronize(void *event)',
  'int cuEventElapsedTime(_Out_ float *ms, void *start, void *end)',
  'int cuEventDestroy_v2(void *event)',
  'int cuEventQuery(void *event)',
  'int cuStreamBeginCapture_v2(void *stream, int mode)',
  'int cuStreamEndCapture(void *stream, _Out_ void **graph)',
  'int cuGraphInstantiateWithFlags(_Out_ void **exec, void *graph, unsigned long long flags)',
  'int cuGraphLaunch(void *exec, void *stream)',
  'int cuGraphExecDestroy(void *exec)',
  'int cuGraphDestroy(void *graph)',
  // edges with their data (CUgraphEdgeData, 8 bytes: from port, to port, type): whether a capture made programmatic edges
  'int cuGraphGetEdges_v2(void *graph, uint64_t *from, uint64_t *to, uint8_t *edgeData, _Inout_ size_t *numEdges)',
  'int cuGetErrorName(int status, _Out_ const char **name)',
  // Nsight Compute's --profile-from-start off range (bench/quant/bert-ncu.ts)
  'int cuProfilerStart()',
  'int cuProfilerStop()',
  // the map by address (uint64): it must be 64-byte aligned, which a Node Buffer is not (see encodeTensorMap2d)
  'int cuTensorMapEncodeTiled(uint64_t map, int dtype, unsigned int rank, uint64_t addr, const uint64_t *dims, const uint64_t *strides, const uint32_t *box, const uint32_t *elementStrides, int interleave, int swizzle, int l2Promotion, int oobFill)',
  'int cuTensorMapEncodeIm2col(uint64_t map, int dtype, unsigned int rank, uint64_t addr, const uint64_t *dims, const uint64_t *strides, const int *lower, const int *upper, unsigned int channels, unsigned int pixels, const uint32_t *elementStrides, int interleave, int swizzle, int l2Promotion, int oobFill)',
];

let driver: Driver | undefined;

export function loadDriver(): Driver {
  if (driver) return driver;
  const lib = loadLibrary('the CUDA driver', ['libcuda.so.1', 'libcuda.so']);
  const d: Record<string, Fn> = {};
  for (const p of PROTOS) {
    const name = /\s(\w+)\(/.exec(p)![1];
    d[name] = lib.func(p);
  }
  driver = d as unknown as Driver;
  return driver;
}

/** What is being done when a call fails: "building layer 'conv1' (FusedConv)". */
let activity = '';
export function setActivity(what: string): void {
  activity = what;
}

export function check(status: number, call: string): void {
  if (status === 0) return;
  const name: string[] = [''];
  try {
    driver?.cuGetErrorName(status, name);
  } catch {
    // keep the number only
  }
  throw new KilnError(`CUDA call ${call} failed with ${name[0] || 'status'} (${status})${activity ? ` while ${activity}` : ''}.`);
}

/** Call a driver function by name with status checking; out-parameters are returned by the caller's arrays. */
export function cu(name: keyof Driver, ...args: unknown[]): void {
  check(loadDriver()[name](...args), name);
}

/** Which device's context is current on this thread (set by CudaDevice.makeCurrent): per-device library handles
 * (cuBLASLt, cuDNN) and workspaces are looked up by it. */
export const current = { ordinal: 0 };

export const ATTR = { smCount: 16, ccMajor: 75, ccMinor: 76, maxSharedOptin: 97 } as const;

/**
 * A 2-D tensor map (CUtensorMap, 128 bytes) over a row-major byte matrix at device address `addr`: `rows` rows of
 * `cols` bytes (pitch `cols`, a multiple of 16), loaded in boxes of `boxRows` x `boxCols` bytes with the given
 * swizzle (CUtensorMapSwizzle: 2 = 64-byte, 3 = 128-byte), 256-byte L2 promotion, zeros outside the matrix. Returned
 * as the bytes a kernel takes by value (`const __grid_constant__` parameter): pass the Buffer in the launch's
 * parameter array in place of a pointer.
 */
export function encodeTensorMap2d(addr: number | bigint, rows: number, cols: number, boxRows: number, boxCols: number, swizzle: number): Buffer {
  if (BigInt(addr) % 16n !== 0n || cols % 16 !== 0) {
    throw new KilnError(`tensor map: the copy engine needs a 16-byte aligned address and row pitch, got address 0x${BigInt(addr).toString(16)} and ${cols}-byte rows${activity ? ` while ${activity}` : ''}.`);
  }
  return tensorMap((map) => cu('cuTensorMapEncodeTiled', map, 0 /* UINT8 */, 2, BigInt(addr), u64([cols, rows]), u64([cols]), new Uint32Array([boxCols, boxRows]), new Uint32Array([1, 1]), 0, swizzle, 3 /* L2 256B */, 0));
}

/**
 * An im2col tensor map (CUtensorMap, 128 bytes) over a uint8 tensor at `addr` of `dims` (innermost first: channels,
 * then the spatial dims, then images) with byte `strides` for the outer dims: window corners in [lower, dim - 1 +
 * upper] per spatial dim walked with `elementStrides`, `channels` bytes per pixel and `pixels` pixels per load, the
 * given swizzle, 256-byte L2 promotion, zeros outside the tensor; as the bytes a kernel takes by value.
 */
export function encodeTensorMapIm2col(addr: number | bigint, dims: number[], strides: number[], lower: number[], upper: number[], channels: number, pixels: number, elementStrides: number[], swizzle: number): Buffer {
  return tensorMap((map) => cu('cuTensorMapEncodeIm2col', map, 0 /* UINT8 */, dims.length, BigInt(addr), u64(dims), u64(strides), new Int32Array(lower), new Int32Array(upper),
    channels, pixels, new Uint32Array(elementStrides), 0, swizzle, 3 /* L2 256B */, 0));
}

const u64 = (v: number[]) => new BigUint64Array(v.map(BigInt));

/** A CUtensorMap encoded by `encode` into 64-byte aligned scratch memory (which a Node Buffer is not), as its 128 bytes. */
function tensorMap(encode: (map: bigint) => void): Buffer {
  const k = koffi();
  const scratch = k.alloc('uint8_t', 192);
  try {
    const at = k.address(scratch), aligned = (at + 63n) & ~63n;
    encode(aligned);
    const off = Number(aligned - at);
    return Buffer.from(Buffer.from(k.view(scratch, 192)).subarray(off, off + 128));
  } finally {
    k.free(scratch);
  }
}

/** Kernel parameter array: each value's 8 bytes (device pointers), or a Buffer passed as is (by-value structs). */
export function pointerArray(values: (number | bigint | Buffer)[]): Buffer[] {
  return values.map((v) => {
    if (Buffer.isBuffer(v)) return v;
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    return b;
  });
}

/**
 * A CUlaunchConfig (cuda.h, 56 bytes: grid and block dims, dynamic shared bytes, stream at 32, attribute array at
 * 40, attribute count at 48) for cuLaunchKernelEx. `programmatic` attaches the one attribute
 * CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 1 (programmatic dependent launch: see codegen/pdl.ts).
 */
export function launchConfig(grid: readonly number[], block: readonly number[], sharedBytes: number, stream: unknown, programmatic: boolean): Buffer {
  const b = Buffer.alloc(56);
  [...grid, ...block, sharedBytes].forEach((v, i) => b.writeUInt32LE(v, 4 * i));
  b.writeBigUInt64LE(stream ? BigInt(koffi().address(stream)) : 0n, 32);
  if (programmatic) {
    b.writeBigUInt64LE(pdlAttribute(), 40);
    b.writeUInt32LE(1, 48);
  }
  return b;
}

let pdlAttr: bigint | undefined;
/** The address of a CUlaunchAttribute (72 bytes: id, 4 pad bytes, a 64-byte value union) that lives for the process. */
function pdlAttribute(): bigint {
  if (pdlAttr !== undefined) return pdlAttr;
  const k = koffi();
  const mem = k.alloc('uint8_t', 72);
  const v = new DataView(k.view(mem, 72));
  for (let i = 0; i < 72; i++) v.setUint8(i, 0);
  v.setUint32(0, 6 /* CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION */, true);
  v.setInt32(8, 1 /* programmaticStreamSerializationAllowed */, true);
  pdlAttr = BigInt(k.address(mem));
  return pdlAttr;
}

export { koffi };
