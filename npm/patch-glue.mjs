// Gives wasm-bindgen's glue an asynchronous twin of its `__wbg_reset_state`: the generated one
// instantiates the module synchronously, which Chromium refuses on a page's main thread for
// modules over 8 MB. The twin does the same resets, then awaits `WebAssembly.instantiate`.
// Also makes its string passing refuse values that are not strings.
// Run by pkg-scripts/build-npm.sh on npm/wasm/hearth.js and hearth.d.ts; fails loudly if the
// generated code no longer has the shape it expects (wasm-bindgen is pinned in Cargo.lock).
import { readFileSync, writeFileSync } from "node:fs";

// `--threads`: the threaded artifact's glue, which has no reset function (its memory is shared
// with its pool, so it is replaced with its worker instead).
const args = process.argv.slice(2);
const threads = args.includes("--threads");
const [js, dts] = args.filter((a) => a !== "--threads");
let glue = readFileSync(js, "utf8");
if (!threads) addResetTwin();
refuseNonStrings();
writeFileSync(js, glue);
if (!threads) {
  const types = readFileSync(dts, "utf8");
  writeFileSync(
    dts,
    types.replace(
      "export function __wbg_reset_state(): void;",
      "export function __wbg_reset_state(): void;\n/** `__wbg_reset_state`, instantiating asynchronously (allowed on a page's main thread). */\nexport function __wbg_reset_state_async(): Promise<void>;",
    ),
  );
}

function addResetTwin() {
  const start = glue.indexOf("export function __wbg_reset_state () {");
  const sync = "wasmInstance = new WebAssembly.Instance(wasmModule, __wbg_get_imports());";
  const end = start < 0 ? -1 : glue.indexOf("\n}\n", start);
  if (start < 0 || end < 0 || !glue.slice(start, end).includes(sync)) {
    console.error(`patch-glue: ${js} has no __wbg_reset_state of the expected shape`);
    process.exit(1);
}
const body = glue.slice(start, end + 2);
const twin = body
  .replace("export function __wbg_reset_state () {", "export async function __wbg_reset_state_async () {")
  .replace(sync, "wasmInstance = await WebAssembly.instantiate(wasmModule, __wbg_get_imports());");
glue = glue.slice(0, end + 3) + "\n" + twin + "\n" + glue.slice(end + 3);
}

function refuseNonStrings() {
  // The glue writes any value it is given as a string into the core's memory; a value that is
  // not a string (an object from a hostile caller) makes it reallocate a zero-sized block, which
  // corrupts the allocator's heap. Refused before it reaches the core.
  const pass = "function passStringToWasm0(arg, malloc, realloc) {\n";
  if (!glue.includes(pass)) {
    console.error(`patch-glue: ${js} has no passStringToWasm0 of the expected shape`);
    process.exit(1);
}
glue = glue.replace(
  pass,
  pass +
    '    if (typeof arg !== "string") throw Object.assign(new Error(`expected a string, got ${typeof arg}`), { kind: "bad_options" });\n',
);
}
