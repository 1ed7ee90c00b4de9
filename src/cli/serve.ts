// `kiln serve`: a model repository over KServe v2 HTTP and gRPC (Triton-compatible), metrics on their own port.
import { Command } from 'commander';
import { InputError } from '../index.js';
import { startServer, type ControlMode } from '../server/server.js';

const int = (flag: string, min: number) => (v: string) => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new InputError(`${flag} needs an integer >= ${min}, got '${v}'.`);
  return n;
};

export function serveCommand(): Command {
  return new Command('serve')
    .description('serve a model repository over KServe v2 HTTP and gRPC with dynamic batching and Prometheus metrics; LLM folders (Hugging Face config.json + *.safetensors, or config.json with backend "kiln_llm") also get OpenAI-compatible /v1/completions, /v1/chat/completions, /v1/models and KServe generate/generate_stream')
    .requiredOption('--model-repository <dir>', 'repository: <dir>/<model>/config.json|config.pbtxt and <dir>/<model>/<version>/model.onnx|model.plan')
    .option('--host <host>', 'address to listen on (0.0.0.0 to accept remote clients)', '127.0.0.1')
    .option('--http-port <n>', 'HTTP port (-1 = off)', int('--http-port', -1), 8000)
    .option('--grpc-port <n>', 'gRPC port (-1 = off)', int('--grpc-port', -1), 8001)
    .option('--metrics-port <n>', 'Prometheus /metrics port (-1 = off)', int('--metrics-port', -1), 8002)
    .option('--model-control-mode <mode>', 'none | explicit | poll', 'none')
    .option('--load-model <name...>', "models to load at startup in explicit mode ('*' = all)", [])
    .option('--repository-poll-secs <n>', 'rescan interval in poll mode', int('--repository-poll-secs', 1), 15)
    .option('--device <name>', 'device to build ONNX models for (instance_group KIND_GPU picks cuda)', 'cpu')
    .option('--api-key <key>', 'require "Authorization: Bearer <key>" (default: $KILN_API_KEY, none when unset)')
    .option('--max-request-bytes <n>', 'largest request body accepted', int('--max-request-bytes', 1), 64 * 1024 * 1024)
    .option('--max-queue-size <n>', "per-model queue bound (429 when full) unless the config's max_queue_size is set", int('--max-queue-size', 1), 4096)
    .option('--decode-threads <n>', 'threads decoding large infer bodies off the event loop (0 = on it; default: 0 on 2 cores or fewer, else cores - 1, at most 4)', int('--decode-threads', 0))
    .option('--cpu-instances <where>', "where KIND_CPU instances run: 'main' (execution contexts on the server's thread; native kernels run on their own threads), 'workers' (one worker thread each), or 'auto': main when every compute layer of the model has a native kernel, else workers", 'auto')
    .action(async (o) => {
      if (!['none', 'explicit', 'poll'].includes(o.modelControlMode)) throw new InputError(`--model-control-mode must be none, explicit or poll, got '${o.modelControlMode}'.`);
      if (!['auto', 'workers', 'main'].includes(o.cpuInstances)) throw new InputError(`--cpu-instances must be auto, main or workers, got '${o.cpuInstances}'.`);
      const server = await startServer({
        repository: o.modelRepository, host: o.host, httpPort: o.httpPort, grpcPort: o.grpcPort, metricsPort: o.metricsPort,
        modelControlMode: o.modelControlMode as ControlMode, loadModels: o.loadModel, pollSeconds: o.repositoryPollSecs, device: o.device,
        apiKey: o.apiKey ?? process.env.KILN_API_KEY, maxRequestBytes: o.maxRequestBytes, maxQueueSize: o.maxQueueSize,
        decode: { threads: o.decodeThreads }, workers: o.cpuInstances === 'auto' ? undefined : o.cpuInstances === 'workers',
      });
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        server.core.log('info', 'shutting down: draining in-flight requests', { signal });
        void server.close().then(() => process.exit(0));
      };
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGTERM', () => stop('SIGTERM'));
    });
}
