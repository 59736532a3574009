/** Model files from a URL (with progress, abort and the Cache API), a Blob or File, or a buffer,
 * opened to be read in slices (`openModelFiles`: the core reads them a part at a time, so that
 * wasm memory never holds a whole model file), or read whole (`readModel`). */

import { HearthError, abortError } from "./errors.js";
import type { LoadProgress, ModelFiles, ModelSource } from "./types.js";

/** Cache Storage bucket for downloaded models. */
export const CACHE_NAME = "hearth-models-v1";

/** Whether `bytes` start like a model file: GGUF's magic, or a burnpack's (`.bpk`, the
 * little-endian u32 0x4255524E). */
export function looksLikeModel(bytes: Uint8Array): boolean {
  const magic = String.fromCharCode(...bytes.subarray(0, 4));
  return magic === "GGUF" || magic === "NRUB";
}

/** Why a response's body is not a model: it is HTML (a server's fallback page), or it starts
 * with something else. */
function notAModel(url: string, bytes: Uint8Array, contentType: string | null): HearthError {
  const head = new TextDecoder().decode(bytes.subarray(0, 64)).trimStart().toLowerCase();
  const html = head.startsWith("<!doctype") || head.startsWith("<html") || (contentType ?? "").includes("text/html");
  const what = html ? "an HTML page (a missing file behind a fallback route?)" : "not a GGUF or .bpk file";
  return new HearthError("model_load", `${url} returned ${what}: refusing to load or cache it`);
}

function hasCacheStorage(): boolean {
  return typeof caches !== "undefined";
}

function absoluteUrl(source: string | URL): string {
  const base = typeof location !== "undefined" ? location.href : undefined;
  return new URL(String(source), base).href;
}

/** Most shards downloaded at once. */
const PARALLEL_SHARDS = 3;

/** The URLs of every shard of a split model, given its first shard's (named as gguf-split
 * names them: `name-00001-of-00003.gguf`); null for any other URL. */
export function shardUrls(first: string | URL): string[] | null {
  const url = new URL(absoluteUrl(first));
  const m = /^(.*)-00001-of-(\d{5})\.gguf$/.exec(url.pathname);
  if (!m) return null;
  const count = Number(m[2]);
  if (count < 2) return null;
  return Array.from({ length: count }, (_, i) => {
    const shard = new URL(url.href);
    shard.pathname = `${m[1]}-${String(i + 1).padStart(5, "0")}-of-${m[2]}.gguf`;
    return shard.href;
  });
}

/** Removes a model downloaded from `url` from Cache Storage; true if it was there. */
export async function deleteCachedModel(url: string | URL): Promise<boolean> {
  if (!hasCacheStorage()) return false;
  return (await caches.open(CACHE_NAME)).delete(absoluteUrl(url));
}

/** Whether a model from `url` is in Cache Storage. */
export async function isModelCached(url: string | URL): Promise<boolean> {
  if (!hasCacheStorage()) return false;
  return (await (await caches.open(CACHE_NAME)).match(absoluteUrl(url))) !== undefined;
}

/** A model file the core reads in slices (`WasmEngine.load_stream`): `read` resolves to a
 * `Uint8Array` of exactly `length` bytes. */
export interface SlicedFile {
  readonly size: number;
  read(offset: number, length: number): Promise<Uint8Array>;
}

function blobFile(blob: Blob, signal: AbortSignal | undefined): SlicedFile {
  return {
    size: blob.size,
    async read(offset: number, length: number) {
      if (signal?.aborted) throw abortError();
      return new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer());
    },
  };
}

function bufferFile(bytes: Uint8Array): SlicedFile {
  return { size: bytes.length, read: async (offset, length) => bytes.subarray(offset, offset + length) };
}

/** A downloaded body as a Blob (the browser may keep a large one on disk), with progress. */
async function bodyBlob(
  response: Response,
  total: number | null,
  onProgress: ((p: LoadProgress) => void) | undefined,
  signal: AbortSignal | undefined,
): Promise<Blob> {
  if (!response.body) {
    const blob = await response.blob();
    onProgress?.({ stage: "fetch", loaded: blob.size, total: blob.size });
    return blob;
  }
  const reader = response.body.getReader();
  // Gathered in Blobs of ~64 MB, so the pieces need not stay in the JS heap until the end.
  const blobs: Blob[] = [];
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let loaded = 0;
  for (;;) {
    if (signal?.aborted) {
      await reader.cancel();
      throw abortError();
    }
    const { done, value } = await reader.read();
    if (done) break;
    pending.push(value);
    pendingBytes += value.length;
    loaded += value.length;
    if (pendingBytes >= 64 << 20) {
      blobs.push(new Blob(pending as BlobPart[]));
      pending = [];
      pendingBytes = 0;
    }
    onProgress?.({ stage: "fetch", loaded, total });
  }
  blobs.push(new Blob(pending as BlobPart[]));
  return new Blob(blobs);
}

/** The first bytes of a Blob. */
async function head(blob: Blob, n = 64): Promise<Uint8Array> {
  return new Uint8Array(await blob.slice(0, n).arrayBuffer());
}

/** Opens a model source to be read in slices. URLs are served from Cache Storage when cached
 * (and stored there after a download) unless `cache` is false; a download is kept as a Blob,
 * outside wasm memory. */
export async function openModel(
  source: ModelSource,
  options: { cache?: boolean; onProgress?: (p: LoadProgress) => void; signal?: AbortSignal } = {},
): Promise<SlicedFile> {
  const { onProgress, signal } = options;
  if (signal?.aborted) throw abortError();
  if (source instanceof Uint8Array) return bufferFile(source);
  if (source instanceof ArrayBuffer) return bufferFile(new Uint8Array(source));
  if (typeof Blob !== "undefined" && source instanceof Blob) {
    onProgress?.({ stage: "fetch", loaded: source.size, total: source.size });
    return blobFile(source, signal);
  }
  if (typeof source !== "string" && !(source instanceof URL)) {
    throw new HearthError("bad_options", "a model source is a URL, an ArrayBuffer, a Uint8Array, a Blob or a File");
  }
  const url = absoluteUrl(source);
  const useCache = (options.cache ?? true) && hasCacheStorage();
  if (useCache) {
    const cache = await caches.open(CACHE_NAME);
    const hit = await cache.match(url);
    if (hit) {
      const blob = await hit.blob();
      if (looksLikeModel(await head(blob))) {
        onProgress?.({ stage: "cache", loaded: blob.size, total: blob.size });
        return blobFile(blob, signal);
      }
      // Stored by an older version that cached whatever came back: drop it and download.
      await cache.delete(url);
    }
  }
  let response: Response;
  try {
    response = await fetch(url, { signal });
  } catch (e) {
    if (signal?.aborted) throw abortError();
    throw new HearthError("network", `could not fetch ${url}: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!response.ok) throw new HearthError("network", `could not fetch ${url}: HTTP ${response.status}`);
  const length = response.headers.get("content-length");
  const encoded = (response.headers.get("content-encoding") ?? "identity") !== "identity";
  const expected = length !== null && /^\d+$/.test(length) && !encoded ? Number(length) : null;
  if (useCache && response.body) {
    const stored = await downloadToCache(url, response, expected, onProgress, signal);
    if (stored) return blobFile(stored, signal);
    // A full or unavailable cache: download again, into memory.
    response = await fetch(url, { signal });
  }
  const blob = await bodyBlob(response, expected, onProgress, signal);
  if (expected !== null && expected !== blob.size) {
    throw new HearthError("network", `${url}: the download ended after ${blob.size} of ${length} bytes`);
  }
  const first = await head(blob);
  if (!looksLikeModel(first)) throw notAModel(url, first, response.headers.get("content-type"));
  return blobFile(blob, signal);
}

/** Streams a download into Cache Storage (counting it, and checking that it starts like a
 * model) and returns the cached body: a Blob the browser keeps on disk, so a model of
 * gigabytes is never in memory whole (a Blob gathered in memory past the browser's blob
 * storage became unreadable mid-load in Chromium). `null` when the cache refused it. */
async function downloadToCache(
  url: string,
  response: Response,
  expected: number | null,
  onProgress: ((p: LoadProgress) => void) | undefined,
  signal: AbortSignal | undefined,
): Promise<Blob | null> {
  let loaded = 0;
  let first = new Uint8Array(0);
  let refused: HearthError | null = null;
  const counted = response.body!.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        if (first.length < 64) {
          const joined = new Uint8Array(first.length + chunk.length);
          joined.set(first);
          joined.set(chunk, first.length);
          first = joined.subarray(0, 64);
          if (first.length >= 4 && !looksLikeModel(first)) {
            refused = notAModel(url, first, response.headers.get("content-type"));
            controller.error(refused);
            return;
          }
        }
        loaded += chunk.length;
        onProgress?.({ stage: "fetch", loaded, total: expected });
        controller.enqueue(chunk);
      },
    }),
  );
  const cache = await caches.open(CACHE_NAME);
  const headers: Record<string, string> = { "content-type": "application/octet-stream" };
  try {
    await cache.put(url, new Response(counted, { headers }));
  } catch (e) {
    await cache.delete(url).catch(() => false);
    if (signal?.aborted) throw abortError();
    if (refused) throw refused;
    // Out of quota (a private window keeps the cache in memory): the caller downloads anew.
    const quota = e instanceof DOMException && e.name === "QuotaExceededError";
    if (!quota && expected !== null && loaded < expected) {
      throw new HearthError("network", `${url}: the download ended after ${loaded} of ${expected} bytes`);
    }
    return null;
  }
  if ((expected !== null && loaded !== expected) || !looksLikeModel(first)) {
    await cache.delete(url);
    if (!looksLikeModel(first)) throw notAModel(url, first, response.headers.get("content-type"));
    throw new HearthError("network", `${url}: the download ended after ${loaded} of ${expected} bytes`);
  }
  const hit = await cache.match(url);
  return hit ? hit.blob() : null;
}

/** Opens a model's files: one source, a list of them (every shard of a split model), or the
 * URL of a first shard (its siblings are opened too). Shards download a few at a time, each
 * cached on its own, with one progress over them all. */
export async function openModelFiles(
  source: ModelFiles,
  options: { cache?: boolean; onProgress?: (p: LoadProgress) => void; signal?: AbortSignal } = {},
): Promise<SlicedFile[]> {
  const list: readonly ModelSource[] = Array.isArray(source)
    ? source
    : ((typeof source === "string" || source instanceof URL) && shardUrls(source)) || [source as ModelSource];
  if (list.length === 0) throw new HearthError("bad_options", "a model needs at least one file");
  if (list.length === 1) return [await openModel(list[0], options)];
  const seen = list.map(() => ({ loaded: 0, total: null as number | null }));
  const report = (i: number, p: LoadProgress) => {
    seen[i] = { loaded: p.loaded, total: p.total };
    const totals = seen.map((s) => s.total);
    const total = totals.every((t) => t !== null) ? totals.reduce((a, t) => a + (t ?? 0), 0) : null;
    options.onProgress?.({ stage: p.stage, loaded: seen.reduce((a, s) => a + s.loaded, 0), total });
  };
  const out: SlicedFile[] = new Array(list.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < list.length; i = next++) {
      out[i] = await openModel(list[i], { ...options, onProgress: (p) => report(i, p) });
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL_SHARDS, list.length) }, worker));
  return out;
}

/** Reads a model file whole (a draft model, a `.bpk`, a pruned load), opened as `openModel`
 * opens it. */
export async function readModel(
  source: ModelSource,
  options: { cache?: boolean; onProgress?: (p: LoadProgress) => void; signal?: AbortSignal } = {},
): Promise<Uint8Array> {
  const file = await openModel(source, options);
  return file.read(0, file.size);
}

/** Whether a sliced file is a GGUF file (the only format read in slices). */
export async function isGguf(file: SlicedFile): Promise<boolean> {
  const magic = await file.read(0, Math.min(4, file.size));
  return String.fromCharCode(...magic) === "GGUF";
}
