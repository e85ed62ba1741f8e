# Reads and writes .safetensors files with numpy only (header: 8-byte little-endian length, JSON,
# then the raw little-endian data), decoding the dtypes DeepSeek checkpoints use.
import json
import struct

import numpy as np


def _fp8_e4m3_table():
    table = np.zeros(256, dtype=np.float64)
    for b in range(256):
        sign = -1.0 if b & 0x80 else 1.0
        exp, man = (b >> 3) & 0xF, b & 0x7
        if exp == 0xF and man == 0x7:
            table[b] = np.nan
        elif exp == 0:
            table[b] = sign * man / 8.0 * 2.0 ** -6
        else:
            table[b] = sign * (1 + man / 8.0) * 2.0 ** (exp - 7)
    return table


_FP8 = _fp8_e4m3_table()


def write_f32(path, tensors):
    """tensors: name -> float32 numpy array, written as F32."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, a in tensors.items():
        n = a.size * 4
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())


def read(path):
    """name -> float64 numpy array (FP8 bytes decoded, not yet scaled; BF16/F32 widened)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = data[base + b: base + end]
        dtype = e["dtype"]
        if dtype == "F8_E4M3":
            a = _FP8[np.frombuffer(raw, dtype=np.uint8)]
        elif dtype == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dtype == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        else:
            raise ValueError(f"{path}: {name} has dtype {dtype}, not one this reader knows")
        out[name] = a.astype(np.float64).reshape(e["shape"])
    return out


def read_checkpoint(folder):
    """Every tensor of a sharded checkpoint, FP8 weights multiplied by their 128x128 block scales."""
    with open(f"{folder}/model.safetensors.index.json") as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    tensors = {}
    for name in files:
        tensors.update(read(f"{folder}/{name}"))
    for name in [k for k in tensors if k.endswith("_scale_inv")]:
        scale = tensors.pop(name)
        w = tensors[name[: -len("_scale_inv")]]
        full = np.repeat(np.repeat(scale, 128, axis=0), 128, axis=1)[: w.shape[0], : w.shape[1]]
        tensors[name[: -len("_scale_inv")]] = w * full
    return tensors
