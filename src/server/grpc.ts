// KServe v2 GRPCInferenceService (@grpc/grpc-js) over the same core as HTTP.
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { InputError } from '../index.js';
import { ServeError } from './batcher.js';
import { infer, tensorBytes, type InferRequest, type InferResponse } from './infer.js';
import type { ServerCore } from './server.js';

/** The .proto next to this module (src/), or in the source tree when running from dist/. */
export function protoPath(): string {
  const here = fileURLToPath(new URL('./kserve.proto', import.meta.url));
  if (fs.existsSync(here)) return here;
  return fileURLToPath(new URL('../../src/server/kserve.proto', import.meta.url));
}

export const PROTO_OPTIONS: protoLoader.Options = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };

export function loadService(): grpc.GrpcObject {
  return grpc.loadPackageDefinition(protoLoader.loadSync(protoPath(), PROTO_OPTIONS));
}

export interface GrpcHandle {
  address: string;
  close(): Promise<void>;
}

const CODES: Record<number, grpc.status> = {
  400: grpc.status.INVALID_ARGUMENT, 401: grpc.status.UNAUTHENTICATED, 404: grpc.status.NOT_FOUND, 415: grpc.status.INVALID_ARGUMENT,
  429: grpc.status.RESOURCE_EXHAUSTED, 503: grpc.status.UNAVAILABLE, 504: grpc.status.DEADLINE_EXCEEDED,
};

type Call = { request: Record<string, unknown>; metadata: grpc.Metadata };
type Handler = (call: Call) => unknown;

function toStatus(e: unknown): Partial<grpc.StatusObject> {
  const err = e as Error;
  const code = e instanceof ServeError ? (CODES[e.status] ?? grpc.status.INTERNAL) : e instanceof InputError ? grpc.status.INVALID_ARGUMENT : grpc.status.INTERNAL;
  return { code, details: err.message };
}

export async function createGrpcServer(core: ServerCore, host: string, port: number): Promise<GrpcHandle> {
  const pkg = loadService().inference as grpc.GrpcObject;
  const service = (pkg.GRPCInferenceService as grpc.ServiceClientConstructor).service;
  const server = new grpc.Server({ 'grpc.max_receive_message_length': core.options.maxRequestBytes, 'grpc.max_send_message_length': -1 });
  const auth = (md: grpc.Metadata) => {
    if (!core.options.apiKey) return;
    const v = String(md.get('authorization')[0] ?? '');
    if (v !== `Bearer ${core.options.apiKey}`) throw new ServeError('missing or wrong API key; send metadata "authorization: Bearer <key>".', 401);
  };
  const unary = (fn: Handler, open = false) => (call: Call, cb: grpc.sendUnaryData<unknown>) => {
    Promise.resolve()
      .then(() => (open ? undefined : auth(call.metadata)))
      .then(() => fn(call))
      .then((r) => cb(null, r), (e: unknown) => cb(toStatus(e)));
  };
  const s = (v: unknown) => (v ? String(v) : undefined);
  const handlers: grpc.UntypedServiceImplementation = {
    ServerLive: unary(() => ({ live: core.live }), true),
    ServerReady: unary(() => ({ ready: core.ready() }), true),
    ModelReady: unary((c) => ({ ready: core.modelReady(String(c.request.name), s(c.request.version)) })),
    ServerMetadata: unary(() => core.serverMetadata()),
    ModelMetadata: unary((c) => core.modelMetadata(String(c.request.name), s(c.request.version))),
    ModelInfer: unary(async (c) => toGrpcResponse(await infer(core.repo, core.metrics, String(c.request.model_name), s(c.request.model_version), fromGrpcRequest(c.request)))),
    ModelConfig: unary((c) => ({ config: grpcConfig(core.repo.get(String(c.request.name), s(c.request.version)).model.config!) })),
    ModelStatistics: unary((c) => core.statistics(s(c.request.name), s(c.request.version))),
    RepositoryIndex: unary((c) => ({ models: core.repositoryIndex(c.request.ready === true) })),
    RepositoryModelLoad: unary(async (c) => core.loadModel(String(c.request.model_name)).then(() => ({}))),
    RepositoryModelUnload: unary(async (c) => core.unloadModel(String(c.request.model_name)).then(() => ({}))),
    ModelStreamInfer: (call: grpc.ServerDuplexStream<Record<string, unknown>, unknown>) => {
      let pending = 0;
      let ended = false;
      const finish = () => ended && pending === 0 && call.end();
      call.on('data', (req: Record<string, unknown>) => {
        pending++;
        Promise.resolve()
          .then(() => auth(call.metadata))
          .then(() => infer(core.repo, core.metrics, String(req.model_name), s(req.model_version), fromGrpcRequest(req)))
          .then((r) => call.write({ error_message: '', infer_response: toGrpcResponse(r) }), (e: Error) => call.write({ error_message: e.message }))
          .finally(() => {
            pending--;
            finish();
          });
      });
      call.on('end', () => {
        ended = true;
        finish();
      });
    },
  };
  server.addService(service, handlers);
  const bound = await new Promise<number>((res, rej) => server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  return {
    address: `${host}:${bound}`,
    close: () => new Promise<void>((r) => server.tryShutdown(() => r())),
  };
}

function params(m: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries((m ?? {}) as Record<string, Record<string, unknown>>)) out[k] = v[v.parameter_choice as string];
  return out;
}

const CONTENTS: Record<string, string> = {
  BOOL: 'bool_contents', INT8: 'int_contents', INT16: 'int_contents', INT32: 'int_contents', INT64: 'int64_contents',
  UINT8: 'uint_contents', UINT16: 'uint_contents', UINT32: 'uint_contents', UINT64: 'uint64_contents', FP32: 'fp32_contents', FP64: 'fp64_contents',
  BYTES: 'bytes_contents',
};

function fromGrpcRequest(r: Record<string, unknown>): InferRequest {
  const raw = (r.raw_input_contents as Buffer[] | undefined) ?? [];
  const inputs = (r.inputs as Record<string, unknown>[] | undefined) ?? [];
  if (raw.length > 0 && raw.length !== inputs.length) throw new ServeError(`raw_input_contents has ${raw.length} entries for ${inputs.length} inputs; give one per input.`, 400);
  return {
    id: r.id ? String(r.id) : undefined,
    parameters: params(r.parameters),
    inputs: inputs.map((t, i) => {
      const datatype = String(t.datatype);
      const contents = (t.contents ?? {}) as Record<string, unknown[]>;
      return { name: String(t.name), datatype, shape: (t.shape as number[]).map(Number), ...(raw.length ? { raw: raw[i] } : { data: contents[CONTENTS[datatype] ?? 'fp32_contents'] ?? [] }) };
    }),
    outputs: ((r.outputs as Record<string, unknown>[] | undefined) ?? []).map((o) => ({ name: String(o.name), parameters: params(o.parameters) })),
  };
}

function toGrpcResponse(res: InferResponse) {
  return {
    model_name: res.model_name,
    model_version: res.model_version,
    id: res.id ?? '',
    outputs: res.outputs.map((o) => ({ name: o.name, datatype: o.datatype, shape: o.shape })),
    raw_output_contents: res.outputs.map((o) => Buffer.from(tensorBytes(o.tensor))),
  };
}

function grpcConfig(cfg: NonNullable<ReturnType<ServerCore['repo']['get']>['model']['config']>) {
  const vp = cfg.version_policy;
  return {
    ...cfg,
    version_policy: vp.all ? { all: {} } : vp.specific ? { specific: vp.specific } : { latest: vp.latest ?? { num_versions: 1 } },
    dynamic_batching: cfg.dynamic_batching,
    ensemble_scheduling: cfg.ensemble_scheduling,
  };
}
