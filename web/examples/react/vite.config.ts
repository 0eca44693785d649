import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

// The example React app, built from web/'s own node_modules (no install of its own):
// `npm run example` (dev server) and `npm run example:build` (→ examples/react/dist) in web/.
// "@ringlog/web" resolves to the package's source, so the example always runs what src/ says.
const here = (path: string): string => fileURLToPath(new URL(path, import.meta.url));

export default defineConfig({
  root: here("."),
  base: "./", // the build runs from any directory or static server
  resolve: {
    alias: [
      { find: /^@ringlog\/web\/react$/, replacement: here("../../src/react.ts") },
      { find: /^@ringlog\/web$/, replacement: here("../../src/index.ts") },
    ],
  },
  esbuild: { jsx: "automatic" }, // React 18's runtime, without a plugin
  build: { outDir: here("dist"), emptyOutDir: true, target: "es2022" },
  server: { port: 5173 },
});
