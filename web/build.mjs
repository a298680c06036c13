// Bundles src/viewer.js (MapLibre GL JS, the PMTiles protocol, the page's code and CSS) into
// ../src/openfootprints/view/static/viewer.js and viewer.css, so the Python package serves them offline.
import * as esbuild from "esbuild";

await esbuild.build({
  entryPoints: ["src/viewer.js"],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  outdir: "../src/openfootprints/view/static",
  entryNames: "viewer",
  legalComments: "eof", // keeps the BSD licence notices of MapLibre and PMTiles in the bundle
  logLevel: "warning",
});
