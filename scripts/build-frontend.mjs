// Bundles the dashboard with esbuild into static/dist/ and prints the bundle's size.
import { build } from "esbuild";
import { statSync } from "node:fs";

const result = await build({
  entryPoints: { dashboard: "static/src/dashboard/main.js" },
  bundle: true,
  format: "esm",
  minify: true,
  sourcemap: true,
  target: ["chrome120", "firefox120", "safari16"],
  outdir: "static/dist",
  metafile: true,
  logLevel: "warning",
});
for (const file of Object.keys(result.metafile.outputs).filter((f) => !f.endsWith(".map"))) {
  console.log(`${file}: ${(statSync(file).size / 1024).toFixed(1)} KiB`);
}
