// Tensors that live in GPU memory the user owns: inputs an engine reads without a host copy (another engine's
// output, a GPU preprocessing step) and outputs left on the device for the next stage. A GpuTensor holds one block
// of its device's memory until `dispose()`; Kiln never frees it behind the user's back.
import type { DType, TypedArray } from '../ir/dtype.js';
import { allocStorage } from '../ir/dtype.js';
import { InputError } from '../ir/errors.js';
import { TensorData } from '../ir/tensor.js';
import type { DeviceRef } from '../backends/backend.js';
import { Tensor, toTensorData, fromTensorData, type TensorType } from './tensor.js';

async function device(deviceId: number) {
  const { getDevice } = await import('../backends/cuda/device.js'); // loads CUDA only when GPU tensors are used
  return getDevice(deviceId);
}

export class GpuTensor implements DeviceRef {
  readonly kind = 'device';
  private live = true;

  private constructor(readonly dtype: DType, readonly dims: number[], readonly deviceId: number, readonly ptr: number, readonly bytes: number) {}

  get type(): TensorType {
    return this.dtype as TensorType;
  }

  /** Device memory for a tensor of this type and shape (contents undefined). */
  static async allocate(type: TensorType, dims: readonly number[], deviceId = 0): Promise<GpuTensor> {
    if (type === 'string') throw new InputError('string tensors cannot live on the GPU.');
    const n = dims.reduce((a, b) => a * b, 1);
    const bytes = n * (allocStorage(type as DType, 1) as TypedArray).BYTES_PER_ELEMENT; // Kiln's element storage
    const dev = await device(deviceId);
    return new GpuTensor(type as DType, [...dims], deviceId, dev.alloc(Math.max(bytes, 1), true), bytes);
  }

  /** Copy a host tensor to the GPU. */
  static async fromTensor(t: Tensor, deviceId = 0): Promise<GpuTensor> {
    const g = await GpuTensor.allocate(t.type, t.dims, deviceId);
    const data = toTensorData(t).data as TypedArray;
    const dev = await device(deviceId);
    dev.upload(g.ptr, data, null);
    dev.sync(null);
    return g;
  }

  /** Wrap a block the runtime allocated (outputs left on the device). */
  static adopt(ref: DeviceRef): GpuTensor {
    return new GpuTensor(ref.dtype, [...ref.dims], ref.deviceId, ref.ptr, ref.bytes);
  }

  /** Copy to a host Tensor. */
  async toTensor(): Promise<Tensor> {
    this.check();
    const dev = await device(this.deviceId);
    const data = allocStorage(this.dtype, this.dims.reduce((a, b) => a * b, 1)) as TypedArray;
    dev.download(this.ptr, data, null);
    return fromTensorData(new TensorData(this.dtype, this.dims, data));
  }

  /** Give the memory back to Kiln's pool on its device (no run that reads or writes it may be in flight). */
  async dispose(): Promise<void> {
    if (!this.live) return;
    this.live = false;
    (await device(this.deviceId)).release(this.ptr);
  }

  get disposed(): boolean {
    return !this.live;
  }

  private check(): void {
    if (!this.live) throw new InputError('this GpuTensor was disposed.');
  }
}
