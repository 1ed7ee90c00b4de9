// One CUDA device: context, stream, memory (a caching allocator over cuMemAlloc), copies, modules and launches.
import { KilnError } from '../../ir/errors.js';
import { cu, check, loadDriver, ATTR, pointerArray, current } from './ffi/driver.js';
import { compileCubin } from './ffi/nvrtc.js';
import { setWorkspaceAllocator, WORKSPACE_BYTES } from './ffi/cublaslt.js';
import type { KernelSource } from './codegen/types.js';

export interface DeviceInfo {
  ordinal: number;
  name: string;
  sm: number;
  smCount: number;
  driverVersion: number;
  totalMem: number;
}

export class CudaDevice {
  readonly info: DeviceInfo;
  private ctx: unknown;
  private free = new Map<number, number[]>(); // size class -> free pointers
  private sizes = new Map<number, number>();
  private modules = new Map<string, { fn: unknown; mod: unknown }>();
  /** cubins by kernel name, filled at build time or from a plan */
  readonly cubins = new Map<string, Uint8Array>();
  /** names of kernels loaded since the last clear (what a plan must carry) */
  readonly used = new Set<string>();
  allocatedBytes = 0;

  constructor(ordinal = 0) {
    const d = loadDriver();
    cu('cuInit', 0);
    const count = [0];
    cu('cuDeviceGetCount', count);
    if (ordinal >= count[0]) throw new KilnError(`CUDA device ${ordinal} does not exist (${count[0]} found).`);
    const dev = [0];
    cu('cuDeviceGet', dev, ordinal);
    const nameBuf = Buffer.alloc(256);
    cu('cuDeviceGetName', nameBuf, 256, dev[0]);
    const attr = (a: number) => { const v = [0]; cu('cuDeviceGetAttribute', v, a, dev[0]); return v[0]; };
    const ver = [0];
    cu('cuDriverGetVersion', ver);
    const mem = [0];
    cu('cuDeviceTotalMem_v2', mem, dev[0]);
    this.info = {
      ordinal, name: nameBuf.toString('utf8').replace(/\0.*$/s, ''), sm: attr(ATTR.ccMajor) * 10 + attr(ATTR.ccMinor),
      smCount: attr(ATTR.smCount), driverVersion: ver[0], totalMem: Number(mem[0]),
    };
    const ctx = [null];
    cu('cuDevicePrimaryCtxRetain', ctx, dev[0]);
    this.ctx = ctx[0];
    this.makeCurrent();
    void d;
    setWorkspaceAllocator(ordinal, () => this.alloc(WORKSPACE_BYTES));
  }

  makeCurrent(): void {
    cu('cuCtxSetCurrent', this.ctx);
    current.ordinal = this.info.ordinal;
  }

  /** Device memory, rounded up to 256 bytes and reused from freed blocks of the same size. */
  alloc(bytes: number): number {
    const size = Math.max(256, Math.ceil(bytes / 256) * 256);
    const list = this.free.get(size);
    if (list?.length) return list.pop()!;
    const p = [0];
    const st = loadDriver().cuMemAlloc_v2(p, size);
    if (st !== 0) {
      this.trim();
      check(loadDriver().cuMemAlloc_v2(p, size), `cuMemAlloc(${size} bytes)`);
    }
    const ptr = Number(p[0]);
    this.sizes.set(ptr, size);
    this.allocatedBytes += size;
    return ptr;
  }

  release(ptr: number): void {
    const size = this.sizes.get(ptr);
    if (size === undefined) return;
    const list = this.free.get(size);
    if (list) list.push(ptr);
    else this.free.set(size, [ptr]);
  }

  /** Return cached free blocks to the driver. */
  trim(): void {
    for (const list of this.free.values()) {
      for (const p of list) {
        loadDriver().cuMemFree_v2(p);
        this.allocatedBytes -= this.sizes.get(p) ?? 0;
        this.sizes.delete(p);
      }
    }
    this.free.clear();
  }

  /** Host -> device, ordered on `stream` (the host buffer must stay alive until the stream passes this point). */
  upload(ptr: number, data: ArrayBufferView, stream: unknown): void {
    if (data.byteLength) cu('cuMemcpyHtoDAsync_v2', ptr, data, data.byteLength, stream);
  }

  /** Device -> host, complete on return. */
  download(ptr: number, into: ArrayBufferView, stream: unknown): void {
    if (!into.byteLength) return;
    cu('cuMemcpyDtoHAsync_v2', into, ptr, into.byteLength, stream);
    this.sync(stream);
  }

  copy(dst: number, src: number, bytes: number, stream: unknown): void {
    if (bytes) cu('cuMemcpyDtoDAsync_v2', dst, src, bytes, stream);
  }

  memset(ptr: number, bytes: number, stream: unknown): void {
    if (bytes) cu('cuMemsetD8Async', ptr, 0, bytes, stream);
  }

  createStream(): unknown {
    const s = [null];
    cu('cuStreamCreate', s, 1); // non-blocking with respect to the legacy default stream
    return s[0];
  }

  sync(stream: unknown): void {
    cu('cuStreamSynchronize', stream);
  }

  /** The function for a generated kernel: compiled by NVRTC unless its cubin is already known (plan or cache). */
  kernel(k: KernelSource): unknown {
    this.used.add(k.name);
    let m = this.modules.get(k.name);
    if (!m) {
      let cubin = this.cubins.get(k.name);
      if (!cubin) {
        cubin = compileCubin(k.source, k.name, this.info.sm);
        this.cubins.set(k.name, cubin);
      }
      const mod = [null];
      cu('cuModuleLoadData', mod, cubin);
      const fn = [null];
      cu('cuModuleGetFunction', fn, mod[0], k.name);
      if (k.sharedBytes > 48 * 1024) cu('cuFuncSetAttribute', fn[0], 8, k.sharedBytes);
      m = { fn: fn[0], mod: mod[0] };
      this.modules.set(k.name, m);
    }
    return m.fn;
  }

  launch(k: KernelSource, ptrs: number[], stream: unknown): void {
    const fn = this.kernel(k);
    cu('cuLaunchKernel', fn, k.grid[0], k.grid[1], k.grid[2], k.block[0], k.block[1], k.block[2], k.sharedBytes, stream, pointerArray(ptrs), null);
  }

  memInfo(): { free: number; total: number } {
    const f = [0], t = [0];
    cu('cuMemGetInfo_v2', f, t);
    return { free: Number(f[0]), total: Number(t[0]) };
  }
}

let devices: CudaDevice[] = [];
export function getDevice(ordinal = 0): CudaDevice {
  devices[ordinal] ??= new CudaDevice(ordinal);
  devices[ordinal].makeCurrent();
  return devices[ordinal];
}
/** How many CUDA devices the driver sees (0 when there is no driver). */
export function deviceCount(): number {
  try {
    loadDriver();
    cu('cuInit', 0);
    const count = [0];
    cu('cuDeviceGetCount', count);
    return count[0];
  } catch {
    return 0;
  }
}
export function resetDevicesForTests(): void {
  devices = [];
}
