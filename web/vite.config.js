// Relative asset URLs ("./assets/…"): the daemon rewrites them to the CDN origin when
// `web_asset_base` is set, and chunks import each other relatively, so they follow.
// Names carry a content hash (vite's default), so the daemon and nginx may cache them
// for a year.
import { defineConfig } from "vite";

export default defineConfig({
  base: "./",
  build: {
    outDir: "dist",
    assetsDir: "assets",
    emptyOutDir: true,
    sourcemap: false,
    // One small page: a warning about chunk size would be noise.
    chunkSizeWarningLimit: 1024,
  },
  server: {
    // `npm run dev` against a daemon on :8080.
    proxy: { "/api": "http://127.0.0.1:8080" },
  },
});
