/**
 * A minimal protobuf codec for the part of ONNX's ModelProto that imiad reads and writes (onnx/onnx.proto3, IR
 * version 3+): model, graph, node, attribute, tensor, value info and type, opset imports. It needs no dependency
 * (onnxruntime-node ships none that is public).
 *
 * Decoding is lossless for re-encoding: every field this module does not model is kept as its raw wire bytes
 * (`unknownFields`) and written back unchanged, so a model with metadata, functions, training info or sparse
 * initializers survives decode -> edit -> encode. Tensor payloads (`rawData`) are views into the source buffer, not
 * copies, so decoding a 270 MB model costs little memory.
 */

/** ONNX TensorProto.DataType values used here. */
export const TensorDataType = {
  UNDEFINED: 0,
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  INT32: 6,
  INT64: 7,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
} as const;

/** ONNX AttributeProto.AttributeType values. */
export const AttributeType = {
  UNDEFINED: 0,
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  GRAPH: 5,
  FLOATS: 6,
  INTS: 7,
  STRINGS: 8,
  TENSORS: 9,
  GRAPHS: 10,
} as const;

export interface OperatorSetId {
  domain: string;
  version: number;
}

export interface TensorProto {
  name: string;
  dims: number[];
  dataType: number;
  /** Little-endian element bytes (the usual encoding); may be a view into the decoded buffer. */
  rawData?: Uint8Array;
  floatData?: number[];
  int32Data?: number[];
  int64Data?: number[];
  doubleData?: number[];
  unknownFields?: Uint8Array[];
}

export interface TensorShapeDimension {
  value?: number;
  param?: string;
}

export interface TypeProto {
  tensorType?: { elemType: number; shape?: TensorShapeDimension[] };
  unknownFields?: Uint8Array[];
}

export interface ValueInfoProto {
  name: string;
  type?: TypeProto;
  docString?: string;
  unknownFields?: Uint8Array[];
}

export interface AttributeProto {
  name: string;
  type: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  t?: TensorProto;
  g?: GraphProto;
  floats?: number[];
  ints?: number[];
  strings?: Uint8Array[];
  tensors?: TensorProto[];
  graphs?: GraphProto[];
  unknownFields?: Uint8Array[];
}

export interface NodeProto {
  input: string[];
  output: string[];
  name: string;
  opType: string;
  domain: string;
  attribute: AttributeProto[];
  docString?: string;
  unknownFields?: Uint8Array[];
}

export interface GraphProto {
  name: string;
  node: NodeProto[];
  initializer: TensorProto[];
  input: ValueInfoProto[];
  output: ValueInfoProto[];
  valueInfo: ValueInfoProto[];
  docString?: string;
  unknownFields?: Uint8Array[];
}

export interface ModelProto {
  irVersion: number;
  opsetImport: OperatorSetId[];
  producerName: string;
  producerVersion: string;
  domain: string;
  modelVersion: number;
  docString?: string;
  graph: GraphProto;
  unknownFields?: Uint8Array[];
}

// ---------------------------------------------------------------------------------------------------------------
// Wire format

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LENGTH = 2;
const WIRE_FIXED32 = 5;

const utf8Decoder = new TextDecoder('utf-8');
const utf8Encoder = new TextEncoder();

/** Thrown for bytes that are not a well-formed protobuf message. */
export class ProtobufError extends Error {
  code = 'ERR_IMIAD_FILE';
}

class Reader {
  pos: number;
  constructor(
    readonly buf: Uint8Array,
    start = 0,
    readonly end = buf.length,
  ) {
    this.pos = start;
  }

  done(): boolean {
    return this.pos >= this.end;
  }

  /**
   * A varint as a JS number. int64 values are two's complement on the wire (negative ones take 10 bytes); they are
   * exact while |value| < 2^53, which covers every dimension, axis and attribute an ONNX vision model uses.
   */
  varint(): number {
    let lo = 0;
    let hi = 0;
    let shift = 0;
    for (;;) {
      if (this.pos >= this.end) throw new ProtobufError('truncated varint');
      const b = this.buf[this.pos++];
      if (shift < 28) lo |= (b & 0x7f) << shift;
      else if (shift === 28) {
        lo |= (b & 0x0f) << 28;
        hi |= (b & 0x7f) >>> 4;
      } else if (shift < 64) hi |= (b & 0x7f) << (shift - 32);
      if ((b & 0x80) === 0) break;
      shift += 7;
      if (shift > 63) throw new ProtobufError('varint longer than 10 bytes');
    }
    // hi as signed 32-bit gives the two's complement int64.
    return (hi | 0) * 4294967296 + (lo >>> 0);
  }

  fixed32Float(): number {
    if (this.pos + 4 > this.end) throw new ProtobufError('truncated fixed32');
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 4).getFloat32(0, true);
    this.pos += 4;
    return v;
  }

  fixed64Double(): number {
    if (this.pos + 8 > this.end) throw new ProtobufError('truncated fixed64');
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 8).getFloat64(0, true);
    this.pos += 8;
    return v;
  }

  /** A length-delimited field's bytes, as a view. */
  bytes(): Uint8Array {
    const len = this.varint();
    if (len < 0 || this.pos + len > this.end) throw new ProtobufError('truncated length-delimited field');
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  string(): string {
    return utf8Decoder.decode(this.bytes());
  }

  /** Skips a field's value and returns the raw bytes of the whole field (tag included), for unknownFields. */
  skip(tagStart: number, wire: number): Uint8Array {
    switch (wire) {
      case WIRE_VARINT:
        this.varint();
        break;
      case WIRE_FIXED64:
        this.pos += 8;
        break;
      case WIRE_LENGTH:
        this.bytes();
        break;
      case WIRE_FIXED32:
        this.pos += 4;
        break;
      default:
        throw new ProtobufError(`unsupported wire type ${wire}`);
    }
    if (this.pos > this.end) throw new ProtobufError('truncated field');
    return this.buf.subarray(tagStart, this.pos);
  }
}

/** Reads fields of one message; `onField` returns false for a field it does not model (kept as unknown). */
function readMessage(buf: Uint8Array, onField: (field: number, wire: number, r: Reader) => boolean): Uint8Array[] {
  const r = new Reader(buf);
  const unknown: Uint8Array[] = [];
  while (!r.done()) {
    const tagStart = r.pos;
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (field === 0) throw new ProtobufError('field number 0');
    const before = r.pos;
    if (!onField(field, wire, r)) {
      r.pos = before;
      unknown.push(r.skip(tagStart, wire));
    }
  }
  return unknown;
}

/** Repeated numeric fields arrive packed (one length-delimited run) or one value per tag; both are accepted. */
function readRepeated(wire: number, r: Reader, one: (r: Reader) => number, out: number[]): void {
  if (wire === WIRE_LENGTH) {
    const bytes = r.bytes();
    const inner = new Reader(bytes);
    while (!inner.done()) out.push(one(inner));
  } else {
    out.push(one(r));
  }
}

const readVarint = (r: Reader): number => r.varint();
const readFloat = (r: Reader): number => r.fixed32Float();
const readDouble = (r: Reader): number => r.fixed64Double();

// ---------------------------------------------------------------------------------------------------------------
// Decoding

function decodeOperatorSetId(buf: Uint8Array): OperatorSetId {
  const out: OperatorSetId = { domain: '', version: 0 };
  readMessage(buf, (f, w, r) => {
    if (f === 1 && w === WIRE_LENGTH) out.domain = r.string();
    else if (f === 2 && w === WIRE_VARINT) out.version = r.varint();
    else return false;
    return true;
  });
  return out;
}

export function decodeTensor(buf: Uint8Array): TensorProto {
  const out: TensorProto = { name: '', dims: [], dataType: 0 };
  const unknown = readMessage(buf, (f, w, r) => {
    if (f === 1) readRepeated(w, r, readVarint, out.dims);
    else if (f === 2 && w === WIRE_VARINT) out.dataType = r.varint();
    else if (f === 4) readRepeated(w, r, readFloat, (out.floatData ??= []));
    else if (f === 5) readRepeated(w, r, readVarint, (out.int32Data ??= []));
    else if (f === 7) readRepeated(w, r, readVarint, (out.int64Data ??= []));
    else if (f === 8 && w === WIRE_LENGTH) out.name = r.string();
    else if (f === 9 && w === WIRE_LENGTH) out.rawData = r.bytes();
    else if (f === 10) readRepeated(w, r, readDouble, (out.doubleData ??= []));
    else return false;
    return true;
  });
  if (unknown.length > 0) out.unknownFields = unknown;
  return out;
}

function decodeTensorShape(buf: Uint8Array): TensorShapeDimension[] {
  const dims: TensorShapeDimension[] = [];
  readMessage(buf, (f, w, r) => {
    if (f !== 1 || w !== WIRE_LENGTH) return false;
    const dim: TensorShapeDimension = {};
    readMessage(r.bytes(), (df, dw, dr) => {
      if (df === 1 && dw === WIRE_VARINT) dim.value = dr.varint();
      else if (df === 2 && dw === WIRE_LENGTH) dim.param = dr.string();
      else return false;
      return true;
    });
    dims.push(dim);
    return true;
  });
  return dims;
}

function decodeType(buf: Uint8Array): TypeProto {
  const out: TypeProto = {};
  const unknown = readMessage(buf, (f, w, r) => {
    if (f !== 1 || w !== WIRE_LENGTH) return false;
    const tensorType: { elemType: number; shape?: TensorShapeDimension[] } = { elemType: 0 };
    readMessage(r.bytes(), (tf, tw, tr) => {
      if (tf === 1 && tw === WIRE_VARINT) tensorType.elemType = tr.varint();
      else if (tf === 2 && tw === WIRE_LENGTH) tensorType.shape = decodeTensorShape(tr.bytes());
      else return false;
      return true;
    });
    out.tensorType = tensorType;
    return true;
  });
  if (unknown.length > 0) out.unknownFields = unknown;
  return out;
}

function decodeValueInfo(buf: Uint8Array): ValueInfoProto {
  const out: ValueInfoProto = { name: '' };
  const unknown = readMessage(buf, (f, w, r) => {
    if (f === 1 && w === WIRE_LENGTH) out.name = r.string();
    else if (f === 2 && w === WIRE_LENGTH) out.type = decodeType(r.bytes());
    else if (f === 3 && w === WIRE_LENGTH) out.docString = r.string();
    else return false;
    return true;
  });
  if (unknown.length > 0) out.unknownFields = unknown;
  return out;
}

function decodeAttribute(buf: Uint8Array): AttributeProto {
  const out: AttributeProto = { name: '', type: 0 };
  const unknown = readMessage(buf, (f, w, r) => {
    if (f === 1 && w === WIRE_LENGTH) out.name = r.string();
    else if (f === 20 && w === WIRE_VARINT) out.type = r.varint();
    else if (f === 2 && w === WIRE_FIXED32) out.f = r.fixed32Float();
    else if (f === 3 && w === WIRE_VARINT) out.i = r.varint();
    else if (f === 4 && w === WIRE_LENGTH) out.s = r.bytes();
    else if (f === 5 && w === WIRE_LENGTH) out.t = decodeTensor(r.bytes());
    else if (f === 6 && w === WIRE_LENGTH) out.g = decodeGraph(r.bytes());
    else if (f === 7) readRepeated(w, r, readFloat, (out.floats ??= []));
    else if (f === 8) readRepeated(w, r, readVarint, (out.ints ??= []));
    else if (f === 9 && w === WIRE_LENGTH) (out.strings ??= []).push(r.bytes());
    else if (f === 10 && w === WIRE_LENGTH) (out.tensors ??= []).push(decodeTensor(r.bytes()));
    else if (f === 11 && w === WIRE_LENGTH) (out.graphs ??= []).push(decodeGraph(r.bytes()));
    else return false;
    return true;
  });
  if (unknown.length > 0) out.unknownFields = unknown;
  return out;
}

function decodeNode(buf: Uint8Array): NodeProto {
  const out: NodeProto = { input: [], output: [], name: '', opType: '', domain: '', attribute: [] };
  const unknown = readMessage(buf, (f, w, r) => {
    if (w !== WIRE_LENGTH) return false;
    if (f === 1) out.input.push(r.string());
    else if (f === 2) out.output.push(r.string());
    else if (f === 3) out.name = r.string();
    else if (f === 4) out.opType = r.string();
    else if (f === 5) out.attribute.push(decodeAttribute(r.bytes()));
    else if (f === 6) out.docString = r.string();
    else if (f === 7) out.domain = r.string();
    else return false;
    return true;
  });
  if (unknown.length > 0) out.unknownFields = unknown;
  return out;
}

export function decodeGraph(buf: Uint8Array): GraphProto {
  const out: GraphProto = { name: '', node: [], initializer: [], input: [], output: [], valueInfo: [] };
  const unknown = readMessage(buf, (f, w, r) => {
    if (w !== WIRE_LENGTH) return false;
    if (f === 1) out.node.push(decodeNode(r.bytes()));
    else if (f === 2) out.name = r.string();
    else if (f === 5) out.initializer.push(decodeTensor(r.bytes()));
    else if (f === 10) out.docString = r.string();
    else if (f === 11) out.input.push(decodeValueInfo(r.bytes()));
    else if (f === 12) out.output.push(decodeValueInfo(r.bytes()));
    else if (f === 13) out.valueInfo.push(decodeValueInfo(r.bytes()));
    else return false;
    return true;
  });
  if (unknown.length > 0) out.unknownFields = unknown;
  return out;
}

/** Decodes a serialized ONNX ModelProto. Throws ProtobufError (code ERR_IMIAD_FILE) on malformed bytes. */
export function decodeModel(buf: Uint8Array): ModelProto {
  let graph: GraphProto | undefined;
  const out: Omit<ModelProto, 'graph'> & { graph?: GraphProto } = {
    irVersion: 0,
    opsetImport: [],
    producerName: '',
    producerVersion: '',
    domain: '',
    modelVersion: 0,
  };
  const unknown = readMessage(buf, (f, w, r) => {
    if (f === 1 && w === WIRE_VARINT) out.irVersion = r.varint();
    else if (f === 2 && w === WIRE_LENGTH) out.producerName = r.string();
    else if (f === 3 && w === WIRE_LENGTH) out.producerVersion = r.string();
    else if (f === 4 && w === WIRE_LENGTH) out.domain = r.string();
    else if (f === 5 && w === WIRE_VARINT) out.modelVersion = r.varint();
    else if (f === 6 && w === WIRE_LENGTH) out.docString = r.string();
    else if (f === 7 && w === WIRE_LENGTH) graph = decodeGraph(r.bytes());
    else if (f === 8 && w === WIRE_LENGTH) out.opsetImport.push(decodeOperatorSetId(r.bytes()));
    else return false;
    return true;
  });
  if (graph === undefined) throw new ProtobufError('the model has no graph');
  if (unknown.length > 0) out.unknownFields = unknown;
  return { ...out, graph };
}

// ---------------------------------------------------------------------------------------------------------------
// Encoding: each message becomes a list of chunks plus its byte length, so nested payloads (initializers) are
// copied once, into the final buffer.

class Writer {
  readonly chunks: Uint8Array[] = [];
  length = 0;
  private scratch: number[] = [];

  private flushScratch(): void {
    if (this.scratch.length === 0) return;
    const bytes = Uint8Array.from(this.scratch);
    this.chunks.push(bytes);
    this.length += bytes.length;
    this.scratch = [];
  }

  private pushVarint(value: number): void {
    if (value < 0) {
      // int64 two's complement: ten bytes.
      let v = BigInt.asUintN(64, BigInt(value));
      while (v >= 0x80n) {
        this.scratch.push(Number(v & 0x7fn) | 0x80);
        v >>= 7n;
      }
      this.scratch.push(Number(v));
      return;
    }
    let v = value;
    while (v >= 0x80) {
      this.scratch.push((v % 128) | 0x80);
      v = Math.floor(v / 128);
    }
    this.scratch.push(v);
  }

  private tag(field: number, wire: number): void {
    this.pushVarint(field * 8 + wire);
  }

  varint(field: number, value: number): void {
    if (!Number.isSafeInteger(value)) throw new ProtobufError(`field ${field}: ${value} is not an integer`);
    this.tag(field, WIRE_VARINT);
    this.pushVarint(value);
  }

  float(field: number, value: number): void {
    this.tag(field, WIRE_FIXED32);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    for (const x of b) this.scratch.push(x);
  }

  bytes(field: number, value: Uint8Array): void {
    this.tag(field, WIRE_LENGTH);
    this.pushVarint(value.length);
    this.raw(value);
  }

  string(field: number, value: string): void {
    this.bytes(field, utf8Encoder.encode(value));
  }

  message(field: number, child: Writer): void {
    this.tag(field, WIRE_LENGTH);
    this.pushVarint(child.finish());
    this.flushScratch();
    for (const c of child.chunks) {
      this.chunks.push(c);
      this.length += c.length;
    }
  }

  packedVarints(field: number, values: number[]): void {
    if (values.length === 0) return;
    const inner = new Writer();
    for (const v of values) inner.pushVarint(v);
    this.message(field, inner);
  }

  packedFloats(field: number, values: number[]): void {
    if (values.length === 0) return;
    const b = new Uint8Array(values.length * 4);
    const dv = new DataView(b.buffer);
    values.forEach((v, i) => dv.setFloat32(i * 4, v, true));
    this.bytes(field, b);
  }

  packedDoubles(field: number, values: number[]): void {
    if (values.length === 0) return;
    const b = new Uint8Array(values.length * 8);
    const dv = new DataView(b.buffer);
    values.forEach((v, i) => dv.setFloat64(i * 8, v, true));
    this.bytes(field, b);
  }

  /** Bytes written as they are (a field kept from decoding, or a payload). */
  raw(bytes: Uint8Array): void {
    if (bytes.length < 64) {
      for (const x of bytes) this.scratch.push(x);
      return;
    }
    this.flushScratch();
    this.chunks.push(bytes);
    this.length += bytes.length;
  }

  unknown(fields: Uint8Array[] | undefined): void {
    for (const f of fields ?? []) this.raw(f);
  }

  /** Closes the message; returns its byte length. */
  finish(): number {
    this.flushScratch();
    return this.length;
  }

  concat(): Uint8Array {
    const out = new Uint8Array(this.finish());
    let off = 0;
    for (const c of this.chunks) {
      out.set(c, off);
      off += c.length;
    }
    return out;
  }
}

function writeTensor(t: TensorProto): Writer {
  const w = new Writer();
  w.packedVarints(1, t.dims);
  w.varint(2, t.dataType);
  if (t.floatData) w.packedFloats(4, t.floatData);
  if (t.int32Data) w.packedVarints(5, t.int32Data);
  if (t.int64Data) w.packedVarints(7, t.int64Data);
  if (t.name) w.string(8, t.name);
  if (t.rawData) w.bytes(9, t.rawData);
  if (t.doubleData) w.packedDoubles(10, t.doubleData);
  w.unknown(t.unknownFields);
  return w;
}

function writeType(t: TypeProto): Writer {
  const w = new Writer();
  if (t.tensorType) {
    const tt = new Writer();
    tt.varint(1, t.tensorType.elemType);
    if (t.tensorType.shape) {
      const shape = new Writer();
      for (const d of t.tensorType.shape) {
        const dim = new Writer();
        if (d.value !== undefined) dim.varint(1, d.value);
        if (d.param !== undefined) dim.string(2, d.param);
        shape.message(1, dim);
      }
      tt.message(2, shape);
    }
    w.message(1, tt);
  }
  w.unknown(t.unknownFields);
  return w;
}

function writeValueInfo(v: ValueInfoProto): Writer {
  const w = new Writer();
  w.string(1, v.name);
  if (v.type) w.message(2, writeType(v.type));
  if (v.docString) w.string(3, v.docString);
  w.unknown(v.unknownFields);
  return w;
}

function writeAttribute(a: AttributeProto): Writer {
  const w = new Writer();
  w.string(1, a.name);
  if (a.f !== undefined) w.float(2, a.f);
  if (a.i !== undefined) w.varint(3, a.i);
  if (a.s !== undefined) w.bytes(4, a.s);
  if (a.t !== undefined) w.message(5, writeTensor(a.t));
  if (a.g !== undefined) w.message(6, writeGraph(a.g));
  if (a.floats) w.packedFloats(7, a.floats);
  if (a.ints) w.packedVarints(8, a.ints);
  for (const s of a.strings ?? []) w.bytes(9, s);
  for (const t of a.tensors ?? []) w.message(10, writeTensor(t));
  for (const g of a.graphs ?? []) w.message(11, writeGraph(g));
  w.varint(20, a.type);
  w.unknown(a.unknownFields);
  return w;
}

function writeNode(n: NodeProto): Writer {
  const w = new Writer();
  for (const i of n.input) w.string(1, i);
  for (const o of n.output) w.string(2, o);
  if (n.name) w.string(3, n.name);
  w.string(4, n.opType);
  for (const a of n.attribute) w.message(5, writeAttribute(a));
  if (n.docString) w.string(6, n.docString);
  if (n.domain) w.string(7, n.domain);
  w.unknown(n.unknownFields);
  return w;
}

function writeGraph(g: GraphProto): Writer {
  const w = new Writer();
  for (const n of g.node) w.message(1, writeNode(n));
  if (g.name) w.string(2, g.name);
  for (const t of g.initializer) w.message(5, writeTensor(t));
  if (g.docString) w.string(10, g.docString);
  for (const v of g.input) w.message(11, writeValueInfo(v));
  for (const v of g.output) w.message(12, writeValueInfo(v));
  for (const v of g.valueInfo) w.message(13, writeValueInfo(v));
  w.unknown(g.unknownFields);
  return w;
}

/** Serializes a ModelProto. */
export function encodeModel(m: ModelProto): Uint8Array {
  const w = new Writer();
  w.varint(1, m.irVersion);
  if (m.producerName) w.string(2, m.producerName);
  if (m.producerVersion) w.string(3, m.producerVersion);
  if (m.domain) w.string(4, m.domain);
  if (m.modelVersion) w.varint(5, m.modelVersion);
  if (m.docString) w.string(6, m.docString);
  w.message(7, writeGraph(m.graph));
  for (const o of m.opsetImport) {
    const op = new Writer();
    if (o.domain) op.string(1, o.domain);
    op.varint(2, o.version);
    w.message(8, op);
  }
  w.unknown(m.unknownFields);
  return w.concat();
}

// ---------------------------------------------------------------------------------------------------------------
// Small constructors used by the builder and the tests.

export function floatTensor(name: string, dims: number[], values: Float32Array): TensorProto {
  const rawData = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  return { name, dims, dataType: TensorDataType.FLOAT, rawData: isLittleEndian ? rawData : swap32(values) };
}

export function intsAttribute(name: string, ints: number[]): AttributeProto {
  return { name, type: AttributeType.INTS, ints };
}

export function intAttribute(name: string, i: number): AttributeProto {
  return { name, type: AttributeType.INT, i };
}

export function floatAttribute(name: string, f: number): AttributeProto {
  return { name, type: AttributeType.FLOAT, f };
}

export function tensorValueInfo(name: string, elemType: number, shape?: Array<number | string>): ValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: shape?.map((d) => (typeof d === 'number' ? { value: d } : { param: d })),
      },
    },
  };
}

const isLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function swap32(values: Float32Array): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const dv = new DataView(out.buffer);
  values.forEach((v, i) => dv.setFloat32(i * 4, v, true));
  return out;
}
