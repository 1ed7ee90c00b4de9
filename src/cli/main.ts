#!/usr/bin/env node
// `kiln <command>`: each command is a thin file over the library.
import { Command } from 'commander';
import { runCommand } from './run.js';
import { inspectCommand } from './inspect.js';
import { startCommand } from './start.js';
import { buildCommand } from './build.js';
import { compareCommand } from './compare.js';
import { surgeonCommand } from './surgeon.js';
import { debugCommand } from './debug.js';
import { benchCommand } from './bench.js';
import { profileCommand } from './profile.js';
import { quantizeCommand } from './quantize.js';
import { KilnError } from '../ir/errors.js';

const program = new Command('kiln')
  .description('Kiln: build, run, benchmark and serve ONNX models from Node.js')
  .version('0.1.0')
  .showHelpAfterError();

for (const make of [buildCommand, runCommand, inspectCommand, startCommand, compareCommand, surgeonCommand, debugCommand, benchCommand, profileCommand, quantizeCommand]) program.addCommand(make());
program.addCommand((await import('./serve.js')).serveCommand());
program.addCommand((await import('./generate.js')).generateCommand());

program.parseAsync(process.argv).catch((e: unknown) => {
  if (e instanceof KilnError) console.error(`kiln: ${e.message}`);
  else console.error(e);
  process.exitCode = 1;
});
