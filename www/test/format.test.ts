import assert from "node:assert/strict";
import { test } from "node:test";
import { formatBytes, formatMs, formatProgress, formatRate } from "../src/format.js";

test("bytes", () => {
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(2048), "2.0 KB");
  assert.equal(formatBytes(102_863_008), "98 MB");
  assert.equal(formatBytes(3 * 1024 ** 3), "3.0 GB");
  assert.equal(formatBytes(-1), "–");
});

test("times and rates", () => {
  assert.equal(formatMs(12.4), "12 ms");
  assert.equal(formatMs(10_123), "10.12 s");
  assert.equal(formatRate(2.071), "2.07 tok/s");
  assert.equal(formatRate(16.04), "16.0 tok/s");
  assert.equal(formatRate(0), "–");
});

test("progress", () => {
  assert.equal(formatProgress(5 * 1024 * 1024, 10 * 1024 * 1024, true), "5.0 MB / 10 MB");
  assert.equal(formatProgress(120, 273, false), "120 / 273");
  assert.equal(formatProgress(1536, null, true), "1.5 KB");
});
