// Constants shared by the page (app.js) and the worker (worker.js).

/** Cache API bucket for downloaded checkpoint files; bump the suffix when the format changes. */
export const CACHE_NAME = "blipq-models-v1";

/**
 * Cache API bucket for the checkpoints made in this browser ("Make INT8", www/store.js): apart
 * from the download cache, so clearing downloads keeps them.
 */
export const MADE_CACHE = "blipq-made-v1";

/** MB as the reports count them (2^20 bytes). */
export const MB = 1024 * 1024;

/**
 * A model label as report files and kept checkpoints name it: runs of anything but letters,
 * digits, ".", "_" and "-" become one "-" (a Hub name's "/" and "@" included).
 */
export const fileLabel = (label) => label.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "") || "model";

/** The mixed scheme's default size budget, as a percentage of the source file (the CLI's 0.2). */
export const MIXED_BUDGET_PERCENT = 20;

/**
 * The schemes `calibrate` applies to (`blipq quantize --calibrate`): the 4-bit ones choose their
 * scales with the model's activations, int8-channel smooths the activations into its weights.
 */
export const CALIBRATED_SCHEMES = ["q4_0", "q4_g128", "mixed", "int8-channel"];

/**
 * A made model's label suffix: the scheme's, for mixed with the budget (`mixed-b20`), and `-cal`
 * when calibrated, so that different recipes are kept apart.
 */
export const madeSuffix = (scheme, options) =>
  (scheme === "mixed" ? `mixed-b${+(100 * (options?.sizeBudget ?? MIXED_BUDGET_PERCENT / 100)).toFixed(2)}` : SCHEMES[scheme].suffix) +
  (options?.calibrate ? "-cal" : "");

/**
 * The schemes "Make" offers (the engine's `blipq quantize --scheme`, checked by
 * `quantizeCheckpoint`): the name shown, and the suffix of a made model's label.
 */
export const SCHEMES = {
  q8_0: { name: "INT8", suffix: "int8", format: "blipq INT8 (Q8_0: int8 blocks of 32, f16 scales)" },
  "int8-channel": {
    name: "INT8/channel",
    suffix: "int8ch",
    format: "per-channel INT8 (int8 weights, an f32 scale per output channel, activations per token)",
  },
  q4_0: { name: "Q4_0", suffix: "q4-0", format: "4-bit Q4_0 (blocks of 32 with an f16 scale; word embeddings INT8)" },
  q4_g128: { name: "Q4/g128", suffix: "q4-g128", format: "4-bit in groups of 128 with an f16 scale (word embeddings INT8)" },
  mixed: {
    name: "Mixed",
    suffix: "mixed",
    format:
      "mixed precision (a per-layer plan of INT8 Q8_0 and 4-bit Q4_0 from a sensitivity sweep on the built-in validation images, within a size budget)",
  },
  f16: { name: "F16", suffix: "f16", format: "F16 (every weight in half precision; computed in f32)" },
  bf16: { name: "BF16", suffix: "bf16", format: "BF16 (every weight in bfloat16; computed in f32)" },
};
