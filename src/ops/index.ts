// Every operator family registers here, once. Adding an op = adding one defineOp entry to its family file.
import { registerOps } from '../ir/schema.js';
import elementwise from './elementwise.js';
import shape from './shape.js';
import reduce from './reduce.js';
import normalization from './normalization.js';
import nn from './nn.js';
import image from './image.js';
import signal from './signal.js';
import random from './random.js';
import control from './control.js';
import sequence from './sequence.js';
import rnn from './rnn.js';
import cast from './cast.js';
import quantize from './quantize.js';
import string from './string.js';
import attention from './attention.js';
import fused from './fused.js';
import fusedQuant from './fused-quant.js';

registerOps([
  ...elementwise, ...shape, ...reduce, ...normalization, ...nn, ...image, ...signal, ...random, ...control,
  ...sequence, ...rnn, ...cast, ...quantize, ...string, ...attention, ...fused, ...fusedQuant,
]);
