// What the e2e runners share: the built page served from 127.0.0.1 (with extra directories
// mounted), and Debian's Chromium with WebGPU (SwiftShader) and no network chatter.
import { spawn } from "node:child_process";
import { chromium } from "playwright-core";

/** Serves dist/ on a random port; `mounts` are `/PREFIX=DIR` arguments of serve.py. */
export async function serve(mounts = []) {
  const port = 8000 + Math.floor(Math.random() * 2000);
  const args = ["../../pkg-scripts/serve.py", "dist", "--port", String(port), ...mounts.flatMap((m) => ["--mount", m])];
  const server = spawn("python3", args, { stdio: "inherit" });
  await new Promise((r) => setTimeout(r, 800));
  return { origin: `http://127.0.0.1:${port}`, stop: () => server.kill() };
}

export function launch() {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--enable-unsafe-webgpu", "--no-sandbox", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-quic"],
  });
}
