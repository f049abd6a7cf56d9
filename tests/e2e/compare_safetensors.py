#!/usr/bin/env python3
"""Compares two safetensors files tensor by tensor, without numpy or torch (the e2e machines
have neither): the header parsed with json/struct, the data decoded with array.

    compare_safetensors.py A B [--atol X] [--rtol Y]

Both files must hold the same tensor names, each with the same dtype and shape; every element
must satisfy |a - b| <= atol + rtol * |b| (integer tensors, and non-finite values, must be
equal). Prints the largest absolute difference and the tensor it is in. Exit 0 when the files
agree, 1 when they do not (naming the first tensor that differs), 2 when a file cannot be read
as safetensors.
"""
import argparse
import json
import math
import struct
import sys
from array import array

# safetensors dtype -> (array typecode, bytes per element); BF16 and F16 are decoded specially.
FLOAT_CODES = {"F64": "d", "F32": "f"}
INT_CODES = {"I64": "q", "U64": "Q", "I32": "i", "U32": "I", "I16": "h", "U16": "H",
             "I8": "b", "U8": "B", "BOOL": "B"}


class BadFile(Exception):
    pass


def read_safetensors(path):
    """{name: (dtype, shape, bytes)} of the file at `path`."""
    try:
        data = open(path, "rb").read()
    except OSError as e:
        raise BadFile(f"{path}: {e.strerror}")
    if len(data) < 8:
        raise BadFile(f"{path}: shorter than the 8-byte header length")
    n = struct.unpack("<Q", data[:8])[0]
    if 8 + n > len(data):
        raise BadFile(f"{path}: header of {n} bytes runs past the end of the file")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as e:
        raise BadFile(f"{path}: header is not JSON ({e})")
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end <= len(data) - 8 - n:
            raise BadFile(f"{path}: {name}: data_offsets {begin}..{end} outside the file")
        tensors[name] = (info["dtype"], info["shape"], data[8 + n + begin:8 + n + end])
    return tensors


def decode(dtype, raw):
    """The elements of `raw` as Python numbers (floats for float dtypes)."""
    if dtype in FLOAT_CODES:
        a = array(FLOAT_CODES[dtype])
        a.frombytes(raw)
        return a
    if dtype == "BF16":
        halves = array("H")
        halves.frombytes(raw)
        a = array("f")
        a.frombytes(array("I", (h << 16 for h in halves)).tobytes())
        return a
    if dtype == "F16":
        return [v[0] for v in struct.iter_unpack("<e", raw)]
    if dtype in INT_CODES:
        a = array(INT_CODES[dtype])
        a.frombytes(raw)
        return a
    raise BadFile(f"dtype {dtype} is not supported")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--atol", type=float, default=0.0)
    parser.add_argument("--rtol", type=float, default=0.0)
    args = parser.parse_args()
    if sys.byteorder != "little":
        print("compare_safetensors.py: only little-endian hosts", file=sys.stderr)
        return 2
    try:
        a, b = read_safetensors(args.a), read_safetensors(args.b)
    except BadFile as e:
        print(f"compare_safetensors.py: {e}", file=sys.stderr)
        return 2
    if sorted(a) != sorted(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        print(f"tensor names differ: only in {args.a}: {only_a[:5]}; only in {args.b}: {only_b[:5]}")
        return 1
    worst, worst_name, compared = 0.0, None, 0
    for name in sorted(a):
        (dtype_a, shape_a, raw_a), (dtype_b, shape_b, raw_b) = a[name], b[name]
        if (dtype_a, shape_a) != (dtype_b, shape_b):
            print(f"{name}: {dtype_a}{shape_a} vs {dtype_b}{shape_b}")
            return 1
        try:
            va, vb = decode(dtype_a, raw_a), decode(dtype_b, raw_b)
        except BadFile as e:
            print(f"compare_safetensors.py: {name}: {e}", file=sys.stderr)
            return 2
        if len(va) != len(vb):
            print(f"{name}: {len(va)} vs {len(vb)} elements")
            return 1
        exact = dtype_a in INT_CODES
        for i, (x, y) in enumerate(zip(va, vb)):
            if exact or not (math.isfinite(x) and math.isfinite(y)):
                same = x == y or (x != x and y != y)
                diff = 0.0 if same else math.inf
            else:
                diff = abs(x - y)
                same = diff <= args.atol + args.rtol * abs(y)
            if not same:
                print(f"{name}[{i}]: {x!r} vs {y!r} (|diff| {diff:.3g}, allowed "
                      f"{args.atol:g} + {args.rtol:g} * |b|)")
                return 1
            if diff > worst:
                worst, worst_name = diff, name
        compared += len(va)
    print(f"{compared} elements in {len(a)} tensors agree; largest |diff| {worst:.3g}"
          + (f" in {worst_name}" if worst_name else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
