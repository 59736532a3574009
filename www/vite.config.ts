import { defineConfig } from "vite";

// Relative asset paths: the built page works from any directory it is served from.
export default defineConfig({
  base: "./",
  worker: { format: "es" },
  build: { target: "es2022" },
});
