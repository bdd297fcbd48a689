// Constants shared by the page (app.js) and the worker (worker.js).

/** Cache API bucket for downloaded checkpoint files; bump the suffix when the format changes. */
export const CACHE_NAME = "blipq-models-v1";

/** MB as the reports count them (2^20 bytes). */
export const MB = 1024 * 1024;
