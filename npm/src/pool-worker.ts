/**
 * One thread of the threaded artifact's pool (`threads.ts` starts it): instantiates the module
 * on the engine's shared memory, says it is ready, and enters the core's pool loop, which never
 * returns. If it traps (a panic, with `panic = "abort"`), it sets the core's poison flag, so
 * that the engine stops waiting for it, and tells the engine's worker.
 */

import init, { pool_poison_flag, pool_worker } from "../wasm-threads/hearth.js";

interface PoolScope {
  postMessage(message: { type: "ready" } | { type: "crashed" | "failed"; message: string }): void;
  addEventListener(type: "message", listener: (event: MessageEvent<{ module: WebAssembly.Module; memory: WebAssembly.Memory }>) => void, options?: { once: boolean }): void;
}

const scope = globalThis as unknown as PoolScope;

scope.addEventListener(
  "message",
  (event) => {
    const { module, memory } = event.data;
    const message = (e: unknown) => (e instanceof Error ? e.message : String(e));
    init({ module_or_path: module, memory }).then(() => {
      const flag = pool_poison_flag();
      scope.postMessage({ type: "ready" });
      try {
        pool_worker();
      } catch (e) {
        Atomics.store(new Int32Array(memory.buffer), flag >>> 2, 1);
        scope.postMessage({ type: "crashed", message: message(e) });
      }
    }, (e: unknown) => scope.postMessage({ type: "failed", message: message(e) }));
  },
  { once: true },
);
