/** Where a model runs: WebGPU on a hardware adapter, else the CPU (the wasm core's simd128
 * kernels). A software adapter (SwiftShader, llvmpipe, WARP) emulates a GPU on the CPU through
 * a shader interpreter, far slower than the CPU path itself, so `auto` treats it as none. */

import { HearthError } from "./errors.js";
import { threadPlan } from "./threads.js";
import type { AdapterInfo, DeviceChoice } from "./types.js";

/** The part of WebGPU's API this package touches (TypeScript's DOM types do not include WebGPU). */
interface GpuAdapterLike {
  features: Iterable<string>;
  limits: { maxBufferSize: number; maxStorageBufferBindingSize: number };
  info?: { vendor?: string; architecture?: string; description?: string; isFallbackAdapter?: boolean };
  isFallbackAdapter?: boolean;
}
interface GpuLike {
  requestAdapter(options?: { powerPreference?: "high-performance" | "low-power" }): Promise<GpuAdapterLike | null>;
}

export const DEVICES = ["auto", "webgpu", "cpu"] as const;

/** Names software rasterizers give themselves in an adapter's info. */
const SOFTWARE = /swiftshader|llvmpipe|lavapipe|softpipe|microsoft basic render|\bwarp\b/i;

/** What was decided, and the adapter seen (if any). */
export interface Resolved {
  device: "webgpu" | "cpu";
  reason: string;
  adapter: AdapterInfo | null;
}

function webGpu(): GpuLike | undefined {
  return (globalThis.navigator as unknown as { gpu?: GpuLike } | undefined)?.gpu;
}

function describe(adapter: GpuAdapterLike): AdapterInfo {
  return {
    vendor: adapter.info?.vendor ?? "",
    architecture: adapter.info?.architecture ?? "",
    description: adapter.info?.description ?? "",
    features: [...adapter.features],
    max_buffer_size: adapter.limits.maxBufferSize,
    max_storage_buffer_binding_size: adapter.limits.maxStorageBufferBindingSize,
    is_fallback_adapter: Boolean(adapter.info?.isFallbackAdapter ?? adapter.isFallbackAdapter),
  };
}

/** Resolves `requested` to a device: `cpu` as asked; `webgpu` only with an adapter (else
 * `no_webgpu`); `auto` to WebGPU on a hardware adapter, the CPU otherwise, saying why. */
export async function resolveDevice(requested: DeviceChoice): Promise<Resolved> {
  if (requested === "cpu") return { device: "cpu", reason: "requested", adapter: null };
  const gpu = webGpu();
  if (!gpu) {
    if (requested === "webgpu") {
      throw new HearthError(
        "no_webgpu",
        "this browser has no WebGPU (navigator.gpu is missing): use Chrome or Edge 113+, enable WebGPU " +
          "(chrome://flags/#enable-unsafe-webgpu, Firefox's dom.webgpu.enabled, Safari's WebGPU feature flag), " +
          'or load with device "cpu"',
      );
    }
    return { device: "cpu", reason: "this browser has no WebGPU (navigator.gpu is missing)", adapter: null };
  }
  let raw: GpuAdapterLike | null = null;
  try {
    raw = await gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch {
    raw = null;
  }
  if (!raw) {
    if (requested === "webgpu") {
      throw new HearthError("no_webgpu", 'WebGPU is present but the browser offers no GPU adapter: load with device "cpu"');
    }
    return { device: "cpu", reason: "WebGPU offers no adapter (blocklisted or missing GPU)", adapter: null };
  }
  const adapter = describe(raw);
  if (requested === "webgpu") return { device: "webgpu", reason: "requested", adapter };
  const name = [adapter.vendor, adapter.architecture, adapter.description].filter(Boolean).join(" ");
  if (adapter.is_fallback_adapter) {
    return { device: "cpu", reason: `the WebGPU adapter is a software fallback (${name || "isFallbackAdapter"})`, adapter };
  }
  if (SOFTWARE.test(name)) {
    return { device: "cpu", reason: `the WebGPU adapter is a software renderer (${name}), slower than the CPU path`, adapter };
  }
  return { device: "webgpu", reason: `hardware WebGPU adapter (${name || "unnamed"})`, adapter };
}

/** Where a load with `device` (default `"auto"`) and `threads` would run, on how many threads,
 * and why, without loading anything: for a page to say so before it loads. `worker` (default
 * true): for the worker engine (the in-page engine runs the CPU path on one thread). Rejects as
 * `load` would for a forced `"webgpu"` the browser cannot give. */
export async function chooseDevice(
  device: DeviceChoice = "auto",
  options: { threads?: number; worker?: boolean } = {},
): Promise<{ device: "webgpu" | "cpu"; threads: number; reason: string }> {
  checkDevice(device);
  const { device: chosen, reason } = await resolveDevice(device);
  if (chosen === "webgpu") return { device: chosen, threads: 1, reason };
  const plan = threadPlan(options.threads, options.worker ?? true);
  return { device: chosen, threads: plan.threads, reason: `${reason}; ${plan.reason}` };
}

/** Refuses a device choice that is not one of `DEVICES` (`bad_options`). */
export function checkDevice(device: unknown): asserts device is DeviceChoice {
  if (!(DEVICES as readonly unknown[]).includes(device)) {
    throw new HearthError("bad_options", `device must be one of ${DEVICES.join(", ")}, got ${JSON.stringify(device)}`);
  }
}
