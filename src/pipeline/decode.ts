// One item through the CPU executor: sharp (libvips) decodes, applies the EXIF orientation, fixes the channels and
// (for 'bilinear') resizes; our fused pass does the rest (pack.ts). Runs on worker threads or in the calling thread.
import { InputError } from '../ir/errors.js';
import type { ResolvedSpec } from './spec.js';
import { packImage, resizeArea, resizeTarget, type ItemArray, type RawImage } from './pack.js';

/** One input of a pipeline: a file (read by the decoder) or bytes already in memory, with a name for messages. */
export interface PipelineItem {
  name: string;
  path?: string;
  bytes?: Uint8Array;
}

export interface ItemResult {
  data: ItemArray;
  dims: number[];
}

type Sharp = typeof import('sharp').default;
let sharpModule: Promise<Sharp> | undefined;

/** sharp, loaded on first use so that Kiln works without it for everything but pipelines. */
export function loadSharp(): Promise<Sharp> {
  sharpModule ??= import('sharp').then((m) => m.default).catch((e: Error) => {
    sharpModule = undefined;
    throw new InputError(`image pipelines need the 'sharp' package, which failed to load: ${e.message}`, { hint: 'Install it with `npm install sharp`.' });
  });
  return sharpModule;
}

/** Decode (oriented, channels fixed) and, for bilinear, resize with libvips; 8-bit HWC out. */
export async function decodeImage(sharp: Sharp, item: PipelineItem, s: ResolvedSpec): Promise<RawImage> {
  const input = item.bytes ?? item.path;
  if (input === undefined) throw new InputError(`${item.name}: the item has neither a path nor bytes.`);
  // failOn 'error' rejects truncated and corrupt data; libvips warnings alone (odd but decodable files) pass
  let img = sharp(input, { failOn: 'error', autoOrient: s.decode.autoOrient });
  const { channels, alpha, background } = s.decode;
  if (channels !== 4 && alpha === 'flatten') img = img.flatten({ background: { r: background[0], g: background[1], b: background[2] } });
  if (channels === 1) img = img.greyscale();
  else if (channels === 3) img = img.removeAlpha();
  else img = img.ensureAlpha();
  const r = s.resize;
  if (r && r.interpolation === 'bilinear') {
    img = r.mode === 'exact' ? img.resize({ width: r.width, height: r.height, fit: 'fill', kernel: 'linear' })
      : img.resize({ width: r.size, height: r.size, fit: 'outside', kernel: 'linear' });
  }
  const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
  let raw: RawImage = { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, channels: info.channels };
  if (r && r.interpolation === 'area') {
    const [w, h] = resizeTarget(r, raw.width, raw.height);
    raw = resizeArea(raw, w, h);
  }
  return raw;
}

/** Decode and preprocess one item; errors name the item. */
export async function processItem(item: PipelineItem, s: ResolvedSpec, lut: Float32Array | Uint16Array | undefined, index: number): Promise<ItemResult> {
  const sharp = await loadSharp();
  let raw: RawImage;
  try {
    raw = await decodeImage(sharp, item, s);
  } catch (e) {
    if (e instanceof InputError) throw e;
    const msg = (e as Error).message.split('\n')[0];
    throw new InputError(`${item.name}: cannot decode the image: ${msg}`, { hint: 'Supported formats: JPEG, PNG and WebP (and others libvips reads). Check that the file is complete.' });
  }
  return packImage(raw, s, lut, index, item.name);
}
