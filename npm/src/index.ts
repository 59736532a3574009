/**
 * hearth: LLM inference in the browser on WebGPU.
 *
 * ```ts
 * import { HearthEngine } from "hearth";
 * const engine = new HearthEngine();
 * await engine.load("/models/SmolLM2-135M-Instruct.Q4_1.gguf", { onProgress: console.log });
 * const chunks = await engine.chat.completions.create({ messages: [{ role: "user", content: "Hi" }], stream: true });
 * for await (const chunk of chunks) console.log(chunk.choices[0].delta.content ?? "");
 * ```
 *
 * Off the main thread: `new WorkerEngine(new Worker(new URL("hearth/worker", import.meta.url), { type: "module" }))`
 * offers the same API.
 */

export { HearthEngine, testBreakGpuSelfCheck as __testBreakGpuSelfCheck, testPanic as __testPanic } from "./engine.js";
export { WorkerEngine } from "./worker-engine.js";
export { chooseDevice } from "./device.js";
export { ERROR_KINDS, HearthError } from "./errors.js";
export type { ErrorKind } from "./errors.js";
export { deleteCachedModel, isModelCached, CACHE_NAME } from "./loader.js";
export type * from "./types.js";
