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
