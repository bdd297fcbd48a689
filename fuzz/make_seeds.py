#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/<target>/ from the repository's fixtures (Python stdlib only).

    python3 fuzz/make_seeds.py          # then `scripts/fuzz.sh cmin TARGET` where useful

Seeds are the real files (models/demo*, tests/fixtures/*, data/demo-eval) plus small variants
built from them, so that every format and code path starts covered without megabytes of input:
safetensors subsets in F32/F16/BF16/F64 and blipq INT8 (block and per-row scales), one-layer
checkpoints that load completely, `pytorch_model.bin` files re-pickled from the tiny-bin fixture
(float/half/bf16/double/long storages, offsets, strides, shared storages), tokenizer.json files of
each model type, configs in each accepted shape, COCO annotation/result pairs (`annotations NUL
results`), and checkpoint folders in the files target's entry format (fuzz/targets.rs).
"""

import collections
import io
import json
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def out(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


def read(rel):
    return (ROOT / rel).read_bytes()


# ---------------------------------------------------------------------------------------------
# safetensors

DTYPE_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1, "I64": 8}


def read_st(rel):
    b = read(rel)
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    data = b[8 + n :]
    tensors = collections.OrderedDict()
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        s, t = e["data_offsets"]
        tensors[name] = (e["dtype"], e["shape"], data[s:t])
    return meta, tensors


def write_st(tensors, meta=None):
    header = collections.OrderedDict()
    if meta is not None:
        header["__metadata__"] = meta
    blob = bytearray()
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + bytes(blob)


def f32s(data):
    return struct.unpack(f"<{len(data) // 4}f", data)


def convert(dtype, data):
    """F32 bytes to another float dtype."""
    vals = f32s(data)
    if dtype == "F32":
        return data
    if dtype == "F64":
        return struct.pack(f"<{len(vals)}d", *vals)
    if dtype == "F16":
        return struct.pack(f"<{len(vals)}e", *vals)
    if dtype == "BF16":
        return b"".join(struct.pack("<I", struct.unpack("<I", struct.pack("<f", v))[0])[2:] for v in vals)
    raise ValueError(dtype)


def one_layer(tensors):
    """Only layer 0 of each encoder (the config is changed to match)."""
    keep = collections.OrderedDict()
    for name, t in tensors.items():
        if (".layers." in name or ".layer." in name) and not (".layers.0." in name or ".layer.0." in name):
            continue
        keep[name] = t
    return keep


def one_layer_config():
    c = json.loads(read("models/demo/config.json"))
    c["vision_config"]["num_hidden_layers"] = 1
    c["text_config"]["num_hidden_layers"] = 1
    return json.dumps(c, indent=2)


def safetensors_seeds():
    meta8, int8 = read_st("models/demo-int8/model.safetensors")
    meta32, f32 = read_st("models/demo/model.safetensors")
    out("safetensors", "demo-int8.safetensors", read("models/demo-int8/model.safetensors"))

    # INT8: the smallest quantized weights with their scales, plus a few f32 tensors.
    small_i8 = sorted((len(d), n) for n, (dt, _, d) in int8.items() if dt == "I8")[:3]
    sub = collections.OrderedDict()
    for _, n in small_i8:
        sub[n] = int8[n]
        sub[n + "_scale"] = int8[n + "_scale"]
    for n in [n for n, (dt, s, _) in int8.items() if dt == "F32" and len(s) == 1][:4]:
        sub[n] = int8[n]
    out("safetensors", "int8-subset.safetensors", write_st(sub, meta8))

    # INT8 with per-row scales ([rows, 1]) and a scale of the wrong dtype / shape.
    n = small_i8[0][1]
    dt, shape, q = int8[n]
    _, sshape, scales = int8[n + "_scale"]
    per_row = b"".join(scales[r * sshape[1] * 2 : r * sshape[1] * 2 + 2] for r in range(sshape[0]))
    out(
        "safetensors",
        "int8-per-row.safetensors",
        write_st({n: (dt, shape, q), n + "_scale": ("F16", [sshape[0], 1], per_row)}, meta8),
    )
    out(
        "safetensors",
        "int8-bad-scale.safetensors",
        write_st({n: (dt, shape, q), n + "_scale": ("F32", [sshape[0], 1], per_row * 2)}, meta8),
    )
    out("safetensors", "int8-no-scale.safetensors", write_st({n: (dt, shape, q)}, meta8))

    # Float subsets in every float dtype.
    small_f = [n for n, (_, _, d) in f32.items() if len(d) <= 16384][:12]
    for dtype in ["F32", "F16", "BF16", "F64"]:
        sub = collections.OrderedDict(
            (n, (dtype, f32[n][1], convert(dtype, f32[n][2]))) for n in small_f
        )
        out("safetensors", f"float-{dtype.lower()}.safetensors", write_st(sub, meta32))

    # Edge cases: no tensors, a scalar, an empty tensor, an unsupported dtype.
    out("safetensors", "empty.safetensors", write_st({}))
    out("safetensors", "metadata-only.safetensors", write_st({}, {"format": "blipq-int8", "version": "1", "block_size": "32"}))
    out(
        "safetensors",
        "odd-shapes.safetensors",
        write_st(
            {
                "scalar": ("F32", [], struct.pack("<f", 1.5)),
                "empty": ("F32", [0, 32], b""),
                "empty_i8": ("I8", [0, 32], b""),
                "empty_i8_scale": ("F16", [0, 1], b""),
                "row": ("F16", [1, 3], struct.pack("<3e", 1, 2, 3)),
                "ids": ("I64", [2], struct.pack("<2q", 1, 2)),
            }
        ),
    )
    _, exp = read_st("tests/fixtures/expected.safetensors")
    sub = collections.OrderedDict((n, t) for n, t in exp.items() if len(t[2]) <= 4096)
    out("safetensors", "expected-subset-u8.safetensors", write_st(sub, {"generator": "fixture"}))

    # One-layer models that load completely (used by the files seeds too).
    return write_st(one_layer(int8), meta8), write_st(one_layer(f32), meta32)


# ---------------------------------------------------------------------------------------------
# pytorch_model.bin

class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda *a: ("tensor",) + a
        if module == "torch" and name.endswith("Storage"):
            return name
        raise pickle.UnpicklingError(f"{module}.{name}")

    def persistent_load(self, pid):
        return tuple(pid)


def _fake_torch():
    """Modules named like torch's, so that pickle writes the globals torch.load expects."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise NotImplementedError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    storages = {}
    for name in ["FloatStorage", "HalfStorage", "BFloat16Storage", "DoubleStorage", "LongStorage", "IntStorage", "ByteStorage", "BoolStorage"]:
        cls = type(name, (), {})
        cls.__module__ = "torch"
        setattr(torch, name, cls)
        storages[name] = cls
    sys.modules["torch"] = torch
    sys.modules["torch._utils"] = utils
    return _rebuild_tensor_v2, storages


class _Storage:
    def __init__(self, cls, key, numel):
        self.cls, self.key, self.numel = cls, key, numel


class _Tensor:
    def __init__(self, rebuild, storage, offset, size, stride):
        self.rebuild, self.args = rebuild, (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (self.rebuild, self.args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def write_pth(tensors, storages_data, prefix="pytorch_model", extra=None):
    """`tensors`: name -> _Tensor; `storages_data`: key -> bytes."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(collections.OrderedDict(tensors))
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", buf.getvalue())
        for name, data in (extra or {}).items():
            zf.writestr(f"{prefix}/{name}", data)
        for key, data in storages_data.items():
            zf.writestr(f"{prefix}/data/{key}", data)
        zf.writestr(f"{prefix}/version", "3\n")
    return z.getvalue()


def pth_seeds():
    src = zipfile.ZipFile(ROOT / "tests/fixtures/tiny-bin/pytorch_model.bin")
    names = src.namelist()
    pkl = next(n for n in names if n.endswith("/data.pkl"))
    prefix = pkl.rsplit("/", 1)[0]
    state = _Unpickler(io.BytesIO(src.read(pkl))).load()
    extra = {
        n[len(prefix) + 1 :]: src.read(n)
        for n in names
        if n.startswith(prefix + "/") and "/data/" not in n and not n.endswith(("data.pkl", "/version"))
    }
    rebuild, S = _fake_torch()

    # The small tensors of the fixture, as torch wrote them.
    tensors, data = collections.OrderedDict(), {}
    for name, (_, pid, offset, size, stride, *_rest) in state.items():
        _, cls, key, _, numel = pid
        raw = src.read(f"{prefix}/data/{key}")
        if len(raw) > 8192:
            continue
        data[key] = raw
        tensors[name] = _Tensor(rebuild, _Storage(S[cls], key, numel), offset, size, stride)
    out("pth", "tiny-bin-subset.bin", write_pth(tensors, data, prefix, extra))

    # Every storage dtype, a storage offset, a transposed (strided) view, a shared storage.
    base = struct.pack("<24f", *[i / 7 for i in range(24)])
    vals = f32s(base)
    stores = {
        "0": ("FloatStorage", base),
        "1": ("HalfStorage", struct.pack("<24e", *vals)),
        "2": ("BFloat16Storage", convert("BF16", base)),
        "3": ("DoubleStorage", struct.pack("<24d", *vals)),
        "4": ("LongStorage", struct.pack("<24q", *range(24))),
    }
    st = {k: _Storage(S[c], k, 24) for k, (c, _) in stores.items()}
    tensors = collections.OrderedDict(
        [
            ("f32", _Tensor(rebuild, st["0"], 0, [4, 6], [6, 1])),
            ("f32_offset", _Tensor(rebuild, st["0"], 6, [3, 6], [6, 1])),
            ("f32_transposed", _Tensor(rebuild, st["0"], 0, [6, 4], [1, 6])),
            ("f32_shared", _Tensor(rebuild, st["0"], 0, [24], [1])),
            ("f16", _Tensor(rebuild, st["1"], 0, [2, 12], [12, 1])),
            ("bf16", _Tensor(rebuild, st["2"], 0, [24], [1])),
            ("f64", _Tensor(rebuild, st["3"], 0, [2, 3, 4], [12, 4, 1])),
            ("i64", _Tensor(rebuild, st["4"], 0, [24], [1])),
            ("scalar", _Tensor(rebuild, st["0"], 3, [], [])),
        ]
    )
    out("pth", "dtypes-strides.bin", write_pth(tensors, {k: d for k, (_, d) in stores.items()}, "archive"))
    # Storage shorter than its tensor claims.
    tensors = collections.OrderedDict([("short", _Tensor(rebuild, _Storage(S["FloatStorage"], "0", 24), 0, [8, 8], [8, 1]))])
    out("pth", "short-storage.bin", write_pth(tensors, {"0": base}, "archive"))
    out("pth", "empty-state.bin", write_pth({}, {}, "archive"))
    return (CORPUS / "pth" / "tiny-bin-subset.bin").read_bytes()


# ---------------------------------------------------------------------------------------------
# JSON configs

def config_seeds():
    for d in ["models/demo", "tests/fixtures/tiny", "tests/fixtures/tiny-bin"]:
        for f in sorted((ROOT / d).glob("*.json")):
            if f.name in ("tokenizer.json", "training_report.json", "quantized_results.json"):
                continue
            out("config", f"{d.replace('/', '_')}_{f.name}", f.read_bytes())
    pre = json.loads(read("models/demo/preprocessor_config.json"))
    for tag, size in [("int", 48), ("list", [40, 56]), ("shortest-edge", {"shortest_edge": 32})]:
        out("config", f"preprocessor-size-{tag}.json", json.dumps(dict(pre, size=size, resample=2)))
    out("config", "one-layer-config.json", one_layer_config())
    cfg = json.loads(read("models/demo/config.json"))
    del cfg["text_config"]["encoder_hidden_size"]
    out("config", "config-no-encoder-hidden.json", json.dumps(cfg))
    out("config", "generation-new-tokens.json", json.dumps({"max_new_tokens": 12, "min_length": 3, "num_beams": 3}))


# ---------------------------------------------------------------------------------------------
# tokenizer.json

def tokenizer_seeds():
    out("tokenizer", "demo-tokenizer.json", read("models/demo/tokenizer.json"))
    t = json.loads(read("tests/fixtures/tiny/tokenizer.json"))
    vocab = t["model"]["vocab"]
    keep = {k: v for k, v in vocab.items() if v < 1200 or v in (1037, 6302, 1997)}
    t["model"]["vocab"] = dict(sorted(keep.items(), key=lambda kv: kv[1]))
    out("tokenizer", "bert-small-vocab.json", json.dumps(t, separators=(",", ":")))

    common = {"version": "1.0", "truncation": None, "padding": None}
    specials = [
        {"id": 0, "content": "[CLS]", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
        {"id": 1, "content": "[SEP]", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
    ]
    post = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [0], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [1], "tokens": ["[SEP]"]}},
    }
    words = ["a", "photo", "of", "cat", "dog", "the", "on"]
    bpe_vocab = {"[CLS]": 0, "[SEP]": 1}
    for ch in "aphotfcdgen\u0120":
        bpe_vocab.setdefault(ch, len(bpe_vocab))
    merges = ["p h", "o t", "ph ot", "pho t", "\u0120 a", "o f", "\u0120 of"]
    for m in merges:
        bpe_vocab.setdefault(m.replace(" ", ""), len(bpe_vocab))
    out(
        "tokenizer",
        "bpe-bytelevel.json",
        json.dumps(
            dict(
                common,
                added_tokens=specials,
                normalizer={"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}, {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}]},
                pre_tokenizer={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
                post_processor=post,
                decoder={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
                model={"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False, "vocab": bpe_vocab, "merges": merges},
            )
        ),
    )
    out(
        "tokenizer",
        "unigram-metaspace.json",
        json.dumps(
            dict(
                common,
                added_tokens=specials,
                normalizer={"type": "NFD"},
                pre_tokenizer={"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
                post_processor=post,
                decoder={"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
                model={"type": "Unigram", "unk_id": 2, "byte_fallback": True, "vocab": [["[CLS]", 0.0], ["[SEP]", 0.0], ["<unk>", 0.0]] + [["\u2581" + w, -1.0 - i] for i, w in enumerate(words)] + [[f"<0x{b:02X}>", -20.0] for b in range(256)]},
            )
        ),
    )
    out(
        "tokenizer",
        "wordlevel-split.json",
        json.dumps(
            dict(
                common,
                added_tokens=specials,
                normalizer={"type": "Sequence", "normalizers": [{"type": "Strip", "strip_left": True, "strip_right": True}, {"type": "StripAccents"}, {"type": "Prepend", "prepend": " "}]},
                pre_tokenizer={"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "(?<=a)\\s|\\b"}, "behavior": "Isolated", "invert": False}, {"type": "Whitespace"}, {"type": "Punctuation", "behavior": "Isolated"}, {"type": "Digits", "individual_digits": True}]},
                post_processor={"type": "BertProcessing", "sep": ["[SEP]", 1], "cls": ["[CLS]", 0]},
                decoder={"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "_"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}, {"type": "CTC", "pad_token": "<pad>", "word_delimiter_token": "|", "cleanup": True}]},
                model={"type": "WordLevel", "vocab": dict({"[CLS]": 0, "[SEP]": 1, "[UNK]": 2}, **{w: i + 3 for i, w in enumerate(words)}), "unk_token": "[UNK]"},
            )
        ),
    )


# ---------------------------------------------------------------------------------------------
# images

def image_seeds():
    for f in sorted((ROOT / "tests/fixtures/images").iterdir()):
        out("image", f.name, f.read_bytes())
    for name in [
        "chelsea.gif", "astronaut.bmp", "chelsea.webp", "chelsea_lossy.webp", "coffee_rgb16.png",
        "logo_rgba16.png", "camera_gray16_trns.png", "camera_la.png", "camera_1bit.png",
        "chelsea_palette_trns.png", "camera_gray16.png", "coffee.jpg", "tiny.png", "camera_la16.png",
    ]:
        f = ROOT / "tests/fixtures/resize" / name
        if f.exists():
            out("image", "resize_" + name, f.read_bytes())
    for i in range(3):
        out("image", f"scene_{i}.png", read(f"data/demo-eval/scene_00000{i}.png"))


# ---------------------------------------------------------------------------------------------
# COCO

def coco_pair(images, ids_as_str=False):
    """`images`: list of (id, hypothesis, references)."""
    ann = {
        "images": [{"id": i, "file_name": f"{i}.png"} for i, _, _ in images],
        "annotations": [{"image_id": i, "id": n, "caption": r} for i, _, refs in images for n, r in enumerate(refs)],
    }
    res = [{"image_id": i, "caption": h} for i, h, _ in images]
    return json.dumps(ann, ensure_ascii=False) + "\0" + json.dumps(res, ensure_ascii=False)


def coco_seeds():
    cases = json.loads(read("tests/fixtures/metrics/cases.json"))["cases"]
    for n, case in enumerate(cases):
        imgs = [(im["image_id"], im["hypothesis"], im["references"]) for im in case["images"]]
        text = coco_pair(imgs)
        if len(text) <= 60000:
            out("coco", f"case-{n:02}.json", text)
    caps = json.loads(read("data/demo-eval/captions.json"))
    ids = [im["id"] for im in caps["images"][:6]]
    sub = dict(caps, images=caps["images"][:6], annotations=[a for a in caps["annotations"] if a["image_id"] in ids])
    res = [{"image_id": i, "caption": next(a["caption"] for a in sub["annotations"] if a["image_id"] == i)} for i in ids]
    out("coco", "demo-eval-subset.json", json.dumps(sub) + "\0" + json.dumps(res))
    out("coco", "demo-eval-annotations-only.json", json.dumps(sub))
    out("coco", "results-only.json", json.dumps(res))
    out("coco", "string-ids.json", coco_pair([("img_a", "A dog's toy, 3 1/2 in. (u.s.)", ["a dog can't play.", "Mr. T. The dog."]), ("img_b", "\"gonna\" $5 50%", ["cannot -- well-known; etc."])]))


# ---------------------------------------------------------------------------------------------
# checkpoint folders (files target)

def entries(pairs):
    b = bytearray()
    for name, data in pairs:
        if isinstance(data, str):
            data = data.encode()
        name = name.encode()[:255]
        b.append(len(name))
        b += name
        b += struct.pack("<I", len(data))
        b += data
    return bytes(b)


def files_seeds(int8_1layer, pth_small):
    small = {f: read(f"models/demo/{f}") for f in ["tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json", "generation_config.json"]}
    cfg1 = one_layer_config()
    out("files", "demo-int8-1layer.bin", entries([("demo/config.json", cfg1), ("demo/model.safetensors", int8_1layer)] + [(f"demo/{k}", v) for k, v in small.items()]))
    out("files", "processor-config-only.bin", entries([("config.json", cfg1), ("model.safetensors", int8_1layer), ("tokenizer.json", small["tokenizer.json"]), ("processor_config.json", small["processor_config.json"])]))
    out("files", "pth.bin", entries([("x\\config.json", read("tests/fixtures/tiny-bin/config.json")), ("x\\pytorch_model.bin", pth_small), ("x\\tokenizer.json", small["tokenizer.json"]), ("x\\preprocessor_config.json", read("tests/fixtures/tiny-bin/preprocessor_config.json"))]))
    # The weights last: a long run with a small -max_len (scripts/fuzz.sh long files N
    # -max_len=65536) keeps every other file whole and truncates only the weights.
    out("files", "weights-last.bin", entries([(f"demo/{k}", v) for k, v in small.items()] + [("demo/config.json", cfg1), ("demo/model.safetensors", int8_1layer)]))
    out("files", "duplicate.bin", entries([("a/config.json", "{}"), ("b/config.json", "{}")]))
    out("files", "mismatch.bin", entries([("config.json", read("models/demo/config.json")), ("model.safetensors", int8_1layer), ("tokenizer.json", small["tokenizer.json"]), ("preprocessor_config.json", small["preprocessor_config.json"]), ("vocab.txt", "a\nb\n")]))


def main():
    int8_1layer, _f32_1layer = safetensors_seeds()
    pth_small = pth_seeds()
    config_seeds()
    tokenizer_seeds()
    image_seeds()
    coco_seeds()
    files_seeds(int8_1layer, pth_small)
    for d in sorted(CORPUS.iterdir()):
        files = list(d.iterdir())
        print(f"{d.name}: {len(files)} files, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
