// jest's node environment runs tests in a vm context whose typed-array constructors differ from the main context's.
// Arrays created by native code (the imiad addon, onnxruntime-node's outputs) belong to the main context, so
// onnxruntime-common's `data instanceof Float32Array` rejects them there. Sharing the main context's constructors
// (as jest already does for ArrayBuffer and Uint8Array) makes the tests see what a plain Node process sees.
const { TestEnvironment } = require('jest-environment-node');

const SHARED = [
  'Int8Array', 'Uint8ClampedArray', 'Int16Array', 'Uint16Array', 'Int32Array', 'Uint32Array',
  'Float32Array', 'Float64Array', 'BigInt64Array', 'BigUint64Array',
];

class ImiadEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context);
    for (const name of SHARED) this.global[name] = globalThis[name];
  }
}

module.exports = ImiadEnvironment;
