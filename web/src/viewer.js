// The openfootprints map viewer: imagery tiles, detected buildings coloured by confidence (GeoJSON or a
// PMTiles archive of vector tiles), true outlines, a confidence slider, layer toggles and a popup per building.
// Everything it loads is relative to the page, so the viewer works wherever the server mounts it.
//
// For tests and scripts, window.viewer holds the map and helpers; window.viewerReady turns true once the
// first frame with every source loaded is drawn (window.viewerError holds a message if loading failed).
import maplibregl from "maplibre-gl";
import "maplibre-gl/dist/maplibre-gl.css";
import { Protocol } from "pmtiles";
import "./viewer.css";

const pmtiles = new Protocol();
maplibregl.addProtocol("pmtiles", pmtiles.tile);

// Red (unsure) → yellow → green (sure): the colour of a building by its confidence, 0–1.
const CONFIDENCE_COLOUR = [
  "interpolate", ["linear"], ["to-number", ["get", "confidence"], 0],
  0.0, "#d7191c", 0.5, "#fdae61", 0.75, "#ffffbf", 1.0, "#1a9641",
];
// True outlines: magenta, outside the confidence ramp and rare in imagery, dashed over a dark casing so they
// stand out on bright roofs and dark ground alike (the page's legend draws the same, in viewer.css).
const TRUTH_COLOUR = "#ff3df5";
const TRUTH_CASING = "#14161a";
const BUILDING_LAYERS = ["buildings-fill", "buildings-line"];
// Map layers behind each toggle of the panel (the checkbox is #toggle-<name>).
const TOGGLES = {
  imagery: ["imagery"],
  buildings: BUILDING_LAYERS,
  truth: ["truth-casing", "truth-line"],
};

// Popup rows: column, label, how to show the value.
const POPUP_ROWS = [
  ["confidence", "confidence", (v) => Number(v).toFixed(3)],
  ["raw_confidence", "raw confidence", (v) => Number(v).toFixed(3)],
  ["area_in_meters", "area", (v) => `${Number(v).toFixed(1)} m²`],
  ["latitude", "latitude", (v) => Number(v).toFixed(6)],
  ["longitude", "longitude", (v) => Number(v).toFixed(6)],
  ["full_plus_code", "plus code", String],
  ["model_version", "model", String],
  ["source", "source", String],
];

// Absolute URL of a path relative to the page, keeping {z}/{x}/{y} templates as they are (URL() escapes braces).
function absolute(path) {
  return new URL(".", window.location.href).href + path;
}

function vectorSource(layer) {
  if (layer.kind === "pmtiles") return { type: "vector", url: `pmtiles://${absolute(layer.url)}` };
  return { type: "geojson", data: absolute(layer.url) };
}

function sourceLayer(layer) {
  return layer.kind === "pmtiles" ? { "source-layer": layer.layer } : {};
}

function buildStyle(config) {
  const sources = { buildings: vectorSource(config.buildings) };
  const layers = [{ id: "background", type: "background", paint: { "background-color": "#20242a" } }];
  if (config.imagery) {
    const im = config.imagery;
    sources.imagery = {
      type: "raster", tiles: [absolute(im.tiles)], tileSize: im.tile_px,
      minzoom: im.minzoom, maxzoom: im.maxzoom, bounds: im.bounds,
    };
    layers.push({ id: "imagery", type: "raster", source: "imagery" });
  }
  layers.push(
    { id: "buildings-fill", type: "fill", source: "buildings", ...sourceLayer(config.buildings),
      paint: { "fill-color": CONFIDENCE_COLOUR, "fill-opacity": 0.45 } },
    { id: "buildings-line", type: "line", source: "buildings", ...sourceLayer(config.buildings),
      paint: { "line-color": CONFIDENCE_COLOUR, "line-width": 1.5 } },
  );
  if (config.truth) {
    sources.truth = vectorSource(config.truth);
    const truth = { source: "truth", ...sourceLayer(config.truth) };
    layers.push(
      { id: "truth-casing", type: "line", ...truth,
        paint: { "line-color": TRUTH_CASING, "line-width": 4, "line-opacity": 0.7 } },
      { id: "truth-line", type: "line", ...truth,
        paint: { "line-color": TRUTH_COLOUR, "line-width": 2, "line-dasharray": [2.5, 1.5] } },
    );
  }
  return { version: 8, sources, layers };
}

function popupContent(properties) {
  const table = document.createElement("table");
  table.className = "building-popup";
  for (const [key, label, show] of POPUP_ROWS) {
    const value = properties[key];
    if (value === undefined || value === null || value === "") continue;
    const row = table.insertRow();
    row.insertCell().textContent = label;
    const cell = row.insertCell();
    cell.textContent = show(value);
    cell.dataset.key = key;
  }
  return table;
}

function setup(config) {
  document.getElementById("title").textContent = config.title;
  const map = new maplibregl.Map({
    container: "map",
    style: buildStyle(config),
    bounds: config.bounds,
    fitBoundsOptions: { padding: 40 },
    maxZoom: 22,
    attributionControl: false,
  });
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-right");
  map.addControl(new maplibregl.ScaleControl({ unit: "metric" }), "bottom-right");

  const slider = document.getElementById("min-confidence");
  const sliderValue = document.getElementById("min-confidence-value");
  const counts = document.getElementById("counts");
  const zoomHint = document.getElementById("zoom-hint");
  const tilesFrom = config.buildings.kind === "pmtiles" ? config.buildings.minzoom : 0;
  let styleLoaded = false; // layers can be changed from the map's "load" event on

  // Shows or hides the map layers of one toggle ("imagery", "buildings", "truth") and ticks its checkbox to match.
  function setLayerVisible(name, visible) {
    for (const id of TOGGLES[name]) {
      if (map.getLayer(id)) map.setLayoutProperty(id, "visibility", visible ? "visible" : "none");
    }
    document.getElementById(`toggle-${name}`).checked = visible;
  }

  function layerVisible(name) {
    return TOGGLES[name].some((id) => map.getLayer(id) && map.getLayoutProperty(id, "visibility") !== "none");
  }

  // The checkboxes as they stand (ticked by default; a browser may restore them), once the style is loaded.
  function applyToggles() {
    for (const name of Object.keys(TOGGLES)) setLayerVisible(name, document.getElementById(`toggle-${name}`).checked);
  }

  // One checkbox per layer the page has; a missing layer's row stays hidden.
  const present = { imagery: Boolean(config.imagery), buildings: true, truth: Boolean(config.truth) };
  for (const name of Object.keys(TOGGLES)) {
    const box = document.getElementById(`toggle-${name}`);
    box.closest(".layer").hidden = !present[name];
    box.addEventListener("change", () => { if (styleLoaded) setLayerVisible(name, box.checked); });
  }

  function setMinConfidence(value) {
    const filter = [">=", ["to-number", ["get", "confidence"], 0], Number(value)];
    for (const id of BUILDING_LAYERS) map.setFilter(id, filter);
    sliderValue.textContent = Number(value).toFixed(2);
  }

  // Buildings drawn in the current view, each once (a building split across tiles appears in several).
  function renderedBuildings() {
    const ids = new Set(map.queryRenderedFeatures({ layers: ["buildings-fill"] }).map((f) => f.id));
    return ids.size;
  }

  // Resolves after the next frame in which every source is loaded.
  function idle() {
    return new Promise((resolve) => {
      map.once("idle", resolve);
      map.triggerRepaint();
    });
  }

  function showCounts() {
    const inFile = `${config.buildings.count.toLocaleString()} in the file`;
    counts.textContent = layerVisible("buildings")
      ? `${renderedBuildings().toLocaleString()} shown here · ${inFile}` : `buildings hidden · ${inFile}`;
    zoomHint.hidden = map.getZoom() >= tilesFrom;
  }

  slider.addEventListener("input", () => setMinConfidence(slider.value));
  map.on("idle", showCounts);
  map.on("click", "buildings-fill", (event) => {
    const feature = event.features[0];
    new maplibregl.Popup({ maxWidth: "320px" })
      .setLngLat(event.lngLat)
      .setDOMContent(popupContent(feature.properties))
      .addTo(map);
  });
  map.on("mouseenter", "buildings-fill", () => { map.getCanvas().style.cursor = "pointer"; });
  map.on("mouseleave", "buildings-fill", () => { map.getCanvas().style.cursor = ""; });
  map.on("error", (event) => {
    console.error("viewer:", event.error?.message || event.error);
  });

  window.viewer = { map, config, setMinConfidence, setLayerVisible, layerVisible, renderedBuildings, idle };
  map.once("load", () => {
    styleLoaded = true;
    setMinConfidence(slider.value);
    applyToggles();
    idle().then(() => { window.viewerReady = true; });
  });
}

window.viewerReady = false;
fetch("config.json")
  .then((response) => {
    if (!response.ok) throw new Error(`config.json: HTTP ${response.status}`);
    return response.json();
  })
  .then(setup)
  .catch((error) => {
    window.viewerError = String(error);
    document.getElementById("counts").textContent = `cannot load the viewer: ${error}`;
  });
