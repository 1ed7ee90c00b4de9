// Regenerates the bundled example models in examples/ (run: npx tsx scripts/make-examples.ts).
import { saveOnnx } from '../src/onnx/writer.js';
import { tinyCnn } from '../bench/models/zoo.js';

await saveOnnx(tinyCnn(), 'examples/tiny-cnn.onnx');
console.log('wrote examples/tiny-cnn.onnx');
