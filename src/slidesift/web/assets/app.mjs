// slidesift in the browser: read a thumbnail, sift its tiles, classify them, draw the mask.
//
// Every file the page uses lies in its own folder (model.json, model.onnx, xlog2x.bin, ort/);
// the Content-Security-Policy in index.html forbids any other request. The result is kept on
// `window.slidesift` for tests and the curious (grid, keep, probs, labels, mask, timings).

import { gridFromStride, measureTiles, siftTiles } from './sift.mjs';
import { assemble, maskGeojson, maskPng } from './mask.mjs';
import { readImageMeta } from './imagemeta.mjs';
import { classifyDense } from './dense.mjs';

const $ = (id) => document.getElementById(id);
const state = { model: null, session: null, result: null, ort: null };
let netCalls = 0;
window.slidesift = { state: 'loading' };

function setMessage(text) {
  $('message').classList.remove('warning');
  $('message').textContent = text;
}
function setWarning(text) {
  $('warning').hidden = !text;
  setRich($('warning'), text || '');
}
function fmt(x, digits = 2) { return Number(x).toFixed(digits); }

async function fetchOwn(name) {
  const res = await fetch(new URL(name, import.meta.url));
  if (!res.ok) throw new Error(`${name}: HTTP ${res.status}`);
  return res;
}

async function loadModel() {
  const model = await (await fetchOwn('model.json')).json();
  const buf = await (await fetchOwn(model.entropy_table.file)).arrayBuffer();
  model.table = {
    xlog2x: new Float64Array(buf),
    log2N: model.entropy_table.log2_total,
    total: model.entropy_table.total,
  };
  state.model = model;
  const m = model.model;
  $('model-line').textContent =
    `Model ${m.name} · epoch ${m.epoch} · classes ${m.classes.join(', ')} · tiles ${model.tile} px every ${model.stride} px`;
  setRich($('expect'), expectation(model));
  const details = [
    ['Model file', m.name], ['Checkpoint digest', m.digest], ['Epoch', m.epoch],
    ['Classes', m.classes.join(', ')], ['Trained at', scaleText(model)],
    ['Tile side T', `${model.tile} px`], ['Stride', `${model.stride} px`],
    ['Background test', model.sift.background === 'gray-limits'
      ? `grey outside [${model.sift.gray_low}, ${model.sift.gray_high}] on more than ${fmt(model.sift.max_background)} of the tile`
      : `the ${model.sift.peak_k} most frequent grey values on more than ${fmt(model.sift.max_background)} of the tile`],
    ['Entropy rails', model.rails ? `${fmt(model.rails.lo, 3)} to ${fmt(model.rails.hi, 3)} bits (${model.sift.entropy})` : 'none'],
    ['Assembly', model.assembly.mode === 'mean' ? `mean tumor probability > threshold (default ${model.assembly.threshold})` : `${model.assembly.mode} of tile labels`],
    ['Runtime', `onnxruntime-web ${model.runtime.version} (WebAssembly)`],
    ['slidesift', model.slidesift_version],
  ];
  const dl = $('model-details');
  for (const [k, v] of details) {
    const dt = document.createElement('dt'), dd = document.createElement('dd');
    dt.textContent = k; dd.textContent = String(v);
    dl.append(dt, dd);
  }
  if (model.assembly.mode !== 'mean') {
    $('threshold').disabled = true;
    $('threshold-note').textContent = `This ${m.classes.length}-class model marks the tiles of the subtype with most tiles (${model.assembly.mode}); the threshold does not apply.`;
  }
  $('threshold').value = String(model.assembly.threshold);
  $('threshold-value').textContent = fmt(model.assembly.threshold);
}

function scaleText(model) {
  const d = model.downsample;
  if (d.mpp) return `${fmt(d.mpp)} µm/px`;
  return `thumbnails ${d.longest} px on their longer side`;
}

function expectation(model) {
  const d = model.downsample;
  if (d.mpp) {
    return `This model expects a thumbnail at ${fmt(d.mpp)} µm/px, as \`slidesift thumb SLIDE --mpp ${d.mpp} --out case.png\` writes it.`;
  }
  return `This model expects a thumbnail whose longer side is ${d.longest} px, as \`slidesift thumb SLIDE -N ${d.longest} --out case.png\` writes it.`;
}

/** Text with `code` spans as <code> elements (no HTML parsing). */
function setRich(el, text) {
  el.replaceChildren(...text.split('`').map((part, i) => {
    if (i % 2 === 0) return document.createTextNode(part);
    const code = document.createElement('code');
    code.textContent = part;
    return code;
  }));
}

async function getSession() {
  if (state.session) return state.session;
  const ort = await import('./ort/ort.wasm.bundle.min.mjs');
  state.ort = ort;
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ort.env.wasm.proxy = false;
  const options = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' };
  const load = async (name) => ort.InferenceSession.create(
    await (await fetchOwn(name)).arrayBuffer(), options);
  const m = state.model;
  state.session = m.dense
    ? { maps: await load(m.dense.maps), head: await load(m.dense.head) }
    : { whole: await load(m.onnx.file) };
  return state.session;
}

/** Probabilities of the kept tiles, per tile (the whole network on each). */
async function classifyTiles(img, grid, kept, session, model, onProgress) {
  const C = model.model.classes.length, T = model.tile, batch = model.onnx.batch;
  const probs = new Float32Array(kept.length * C);
  const buf = new Uint8Array(batch * T * T * 3);
  for (let j = 0; j < kept.length; j += batch) {
    const part = kept.slice(j, j + batch);
    part.forEach((i, k) => cutTile(img, grid, i, buf, k * T * T * 3));
    const x = new state.ort.Tensor('uint8', buf.subarray(0, part.length * T * T * 3), [part.length, T, T, 3]);
    const out = await session.whole.run({ [model.onnx.input]: x });
    const y = out[model.onnx.output].data;
    for (let k = 0; k < part.length; k++) {
      for (let c = 0; c < C; c++) probs[(j + k) * C + c] = y[k * C + c];
    }
    onProgress((j + part.length) / kept.length, 'tiles');
  }
  return probs;
}

/** Probabilities of the kept tiles through shared feature maps (stride a multiple of 16). */
async function classifyShared(img, grid, kept, session, model, onProgress) {
  const ort = state.ort;
  const run = {
    maps: async (region, h, w) => {
      const out = await session.maps.run({ x: new ort.Tensor('uint8', region, [1, h, w, 3]) });
      const t = out.y;
      return { data: t.data, c: t.dims[1], h: t.dims[2], w: t.dims[3] };
    },
    head: async (feats, b, c, side) => {
      const out = await session.head.run({ x: new ort.Tensor('float32', feats, [b, c, side, side]) });
      return out.y.data;
    },
  };
  return classifyDense(img, grid, kept, run, {
    tile: model.tile, blockPx: model.dense.block_px, batch: 64,
    nClasses: model.model.classes.length, onProgress,
  });
}

/** Decode without colour management or premultiplication: the file's own 8-bit values. */
async function decode(file) {
  const bitmap = await createImageBitmap(file, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const data = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  // RGBA -> RGB; transparency composited on white as slidesift's reader does.
  const n = bitmap.width * bitmap.height, rgb = new Uint8Array(n * 3);
  let transparent = false;
  for (let i = 0, p = 0, q = 0; i < n; i++, p += 4, q += 3) {
    const a = data[p + 3];
    if (a === 255) {
      rgb[q] = data[p]; rgb[q + 1] = data[p + 1]; rgb[q + 2] = data[p + 2];
    } else {
      transparent = true;
      for (let c = 0; c < 3; c++) rgb[q + c] = Math.floor((data[p + c] * a + 255 * (255 - a) + 127) / 255);
    }
  }
  return { bitmap, rgb, w: bitmap.width, h: bitmap.height, transparent };
}

function scaleWarnings(model, img, meta) {
  const out = [];
  const d = model.downsample;
  if (d.mpp) {
    if (meta.mpp) {
      const r = Math.max(meta.mpp[0], meta.mpp[1]) / d.mpp;
      if (Math.abs(r - 1) > 0.1) out.push(`This image is at ${fmt(meta.mpp[0])} µm/px (its ${meta.mppFrom}), the model at ${fmt(d.mpp)} µm/px: tissue looks ${fmt(r, 1)}x smaller to the model than in training, and results may be wrong.`);
    } else {
      out.push(`This image does not say its µm/px; the model expects ${fmt(d.mpp)} µm/px. Make the thumbnail with \`slidesift thumb SLIDE --mpp ${d.mpp}\`.`);
    }
  } else if (Math.max(img.w, img.h) !== d.longest) {
    out.push(`This image is ${Math.max(img.w, img.h)} px on its longer side; the model was trained on thumbnails of ${d.longest} px. Make it with \`slidesift thumb SLIDE -N ${d.longest}\`, or results may be wrong.`);
  }
  if (img.transparent) out.push('The image has transparent pixels; they were composited on white.');
  return out;
}

async function run(file) {
  const t0 = performance.now();
  window.slidesift = { state: 'running', file: file.name };
  $('result').hidden = true;
  setWarning('');
  try {
    if (!state.model) throw new Error('the model is not loaded');
    const model = state.model;
    setMessage(`Reading ${file.name}…`);
    const bytes = new Uint8Array(await file.arrayBuffer());
    const meta = readImageMeta(bytes);
    const img = await decode(new Blob([bytes], { type: file.type }));
    const warnings = scaleWarnings(model, img, meta);
    setWarning(warnings.join(' '));
    const tRead = performance.now();

    setMessage('Sifting tiles (background and entropy)…');
    await tick();
    const grid = gridFromStride(img.h, img.w, model.tile, model.stride);
    const stats = measureTiles(img.rgb, grid, model.sift, model.table, model.gray);
    const sifted = siftTiles(stats, model.sift, model.rails);
    const tSift = performance.now();

    const C = model.model.classes.length;
    const probs = new Float32Array(grid.n * C);
    for (let i = 0; i < grid.n; i++) probs[i * C] = 1; // sifted-out tiles: non-tumor
    const kept = [];
    for (let i = 0; i < grid.n; i++) if (sifted.keep[i]) kept.push(i);
    setMessage(`Loading the network (${kept.length} tiles to classify)…`);
    const session = await getSession();
    const tLoad = performance.now();
    const progress = $('progress');
    progress.hidden = false; progress.max = 1; progress.value = 0;
    const onProgress = (fraction, what) => {
      progress.value = fraction;
      setMessage(what === 'maps'
        ? `Computing feature maps for ${kept.length} tiles: ${Math.round(100 * fraction)}%…`
        : `Classifying ${kept.length} tiles: ${Math.round(100 * fraction)}%…`);
      netCalls++;
    };
    const classify = model.dense ? classifyShared : classifyTiles;
    const keptProbs = kept.length ? await classify(img, grid, kept, session, model, onProgress) : new Float32Array(0);
    kept.forEach((i, k) => { for (let c = 0; c < C; c++) probs[i * C + c] = keptProbs[k * C + c]; });
    progress.hidden = true;
    const tNet = performance.now();
    state.result = { model, img, grid, stats, sifted, probs, meta, name: file.name };
    render();
    const tEnd = performance.now();
    const timings = {
      read_ms: tRead - t0, sift_ms: tSift - tRead, load_ms: tLoad - tSift,
      classify_ms: tNet - tLoad, assemble_ms: tEnd - tNet, total_ms: tEnd - t0,
    };
    Object.assign(window.slidesift, {
      state: 'done', timings, warnings, inference: model.dense ? 'dense' : 'tiles', netCalls,
    });
    setMessage(`Done in ${fmt(timings.total_ms / 1000, 1)} s: ${kept.length} of ${grid.n} tiles classified.`);
  } catch (err) {
    console.error(err);
    window.slidesift = { state: 'error', error: String(err && err.message || err) };
    $('progress').hidden = true;
    setMessage(`Could not segment this image: ${err && err.message || err}`);
  }
}

function tick() { return new Promise((r) => setTimeout(r, 0)); }

function cutTile(img, grid, i, buf, offset) {
  const T = grid.tile, tr = Math.floor(i / grid.nCols), tc = i % grid.nCols;
  const y0 = tr * grid.stride, x0 = tc * grid.stride;
  for (let y = 0; y < T; y++) {
    const src = ((y0 + y) * img.w + x0) * 3;
    buf.set(img.rgb.subarray(src, src + T * 3), offset + y * T * 3);
  }
}

function render() {
  const r = state.result;
  if (!r) return;
  const { model, img, grid, sifted, probs } = r;
  const threshold = Number($('threshold').value);
  $('threshold-value').textContent = fmt(threshold);
  const classes = model.model.classes;
  const a = assemble(grid, sifted.keep, probs, classes, model.assembly.mode, threshold);
  r.assembly = a;
  r.threshold = threshold;
  drawImage(img);
  drawMask(img, a.mask);
  drawTiles(grid, sifted.keep, a.labels);
  let tumorPx = 0;
  for (let i = 0; i < a.mask.length; i++) tumorPx += a.mask[i];
  const kept = sifted.keep.reduce((s, v) => s + v, 0);
  const bg = sifted.keepBackground.reduce((s, v) => s + v, 0);
  const tumorTiles = a.labels.reduce((s, v) => s + (v > 0 ? 1 : 0), 0);
  const rows = [
    ['Image', `${img.w} × ${img.h} px`],
    ['Tiles in the grid', grid.n],
    ['Tissue (not background)', bg],
    ['Kept (within the rails)', kept],
    ...classes.slice(1).map((c) => [`Called ${c}`, a.counts[c]]),
    ...(classes.length > 2 ? [['Subtype with most tiles', a.dominant ?? 'none']] : []),
    ['Tumor area', `${fmt(100 * tumorPx / a.mask.length, 1)}% of the image`],
  ];
  const dl = $('counts');
  dl.replaceChildren();
  for (const [k, v] of rows) {
    const dt = document.createElement('dt'), dd = document.createElement('dd');
    dt.textContent = k; dd.textContent = String(v);
    dl.append(dt, dd);
  }
  const scale = r.meta.scale;
  $('frame-note').textContent = scale
    ? `GeoJSON coordinates are level-0 px of the slide (the thumbnail says 1 px = ${fmt(scale[0], 3)} × ${fmt(scale[1], 3)} level-0 px).`
    : 'GeoJSON coordinates are thumbnail px (the image does not say its downsample): scale them to the slide before importing into QuPath.';
  $('result').hidden = false;
  Object.assign(window.slidesift, {
    grid: { h: grid.h, w: grid.w, tile: grid.tile, stride: grid.stride, nRows: grid.nRows, nCols: grid.nCols },
    keep: Array.from(sifted.keep),
    keepBackground: Array.from(sifted.keepBackground),
    entropy: Array.from(r.stats.entropy),
    background: Array.from(r.stats.background),
    probs: Array.from(probs),
    labels: Array.from(a.labels),
    counts: a.counts,
    dominant: a.dominant,
    threshold,
    tumorPixels: tumorPx,
    maskBase64: () => toBase64(a.mask),
  });
}

function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function sizeCanvas(c, img) {
  if (c.width !== img.w || c.height !== img.h) { c.width = img.w; c.height = img.h; }
  return c.getContext('2d');
}

function drawImage(img) {
  const ctx = sizeCanvas($('image'), img);
  ctx.drawImage(img.bitmap, 0, 0);
}

function drawMask(img, mask) {
  // Translucent yellow inside, a solid blue edge on the region's own border pixels (so the
  // painted pixels are exactly the mask), both far from the pinks and purples of H&E.
  const ctx = sizeCanvas($('overlay'), img);
  const data = ctx.createImageData(img.w, img.h);
  const px = data.data, w = img.w, h = img.h;
  const edge = Math.max(1, Math.round(Math.max(w, h) / 600));
  for (let i = 0, p = 0; i < mask.length; i++, p += 4) {
    if (!mask[i]) continue;
    const x = i % w, y = (i - x) / w;
    let border = false;
    for (let d = 1; d <= edge && !border; d++) {
      border = x < d || y < d || x >= w - d || y >= h - d
        || !mask[i - d] || !mask[i + d] || !mask[i - d * w] || !mask[i + d * w];
    }
    if (border) { px[p] = 20; px[p + 1] = 60; px[p + 2] = 200; px[p + 3] = 255; }
    else { px[p] = 255; px[p + 1] = 214; px[p + 2] = 0; px[p + 3] = 90; }
  }
  ctx.putImageData(data, 0, 0);
  $('overlay').hidden = !$('show-mask').checked;
}

function drawTiles(grid, keep, labels) {
  const ctx = sizeCanvas($('tiles'), grid);
  ctx.clearRect(0, 0, grid.w, grid.h);
  const r = Math.max(1.5, Math.min(grid.stride, grid.tile) / 4);
  for (let i = 0; i < grid.n; i++) {
    if (!keep[i]) continue;
    const tr = Math.floor(i / grid.nCols), tc = i % grid.nCols;
    const cx = tc * grid.stride + grid.tile / 2, cy = tr * grid.stride + grid.tile / 2;
    ctx.beginPath();
    ctx.arc(cx, cy, r, 0, 2 * Math.PI);
    ctx.fillStyle = labels[i] > 0 ? '#d0202a' : '#2f8f4e';
    ctx.fill();
  }
  $('tiles').hidden = !$('show-tiles').checked;
}

function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url; a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function stem() {
  return (state.result?.name || 'thumbnail').replace(/\.[^.]*$/, '');
}

async function downloadPng() {
  const r = state.result;
  const m = r.model.model;
  const blob = await maskPng(r.assembly.mask, r.img.w, r.img.h, {
    Software: `slidesift web ${r.model.slidesift_version}`,
    Comment: `tumor mask of ${r.name} by ${m.name} (epoch ${m.epoch}), threshold ${r.threshold}`,
  });
  download(blob, `${stem()}_mask.png`);
}

function downloadGeojson() {
  const r = state.result;
  const scale = r.meta.scale || [1, 1];
  const fc = maskGeojson(r.assembly.mask, r.img.w, r.img.h, scale, 'Tumor');
  fc.properties = {
    slidesift: {
      frame: r.meta.scale ? 'level-0 px' : 'thumbnail px',
      scale, thumbnail: r.name, model: r.model.model.name, epoch: r.model.model.epoch,
      threshold: r.threshold, mode: r.model.assembly.mode,
    },
  };
  download(new Blob([JSON.stringify(fc)], { type: 'application/geo+json' }), `${stem()}_tumor.geojson`);
}

function wire() {
  const drop = $('drop');
  $('file').addEventListener('change', (e) => { const f = e.target.files[0]; if (f) run(f); });
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault(); drop.classList.remove('over');
    const f = e.dataTransfer.files[0];
    if (f) run(f);
  });
  $('threshold').addEventListener('input', () => render());
  $('show-mask').addEventListener('change', () => { $('overlay').hidden = !$('show-mask').checked; });
  $('show-tiles').addEventListener('change', () => { $('tiles').hidden = !$('show-tiles').checked; });
  $('download-png').addEventListener('click', () => downloadPng());
  $('download-geojson').addEventListener('click', () => downloadGeojson());
}

wire();
setMessage('Loading the model…');
// Everything is fetched before the page says it is ready: from then on it works offline.
loadModel().then(() => getSession()).then(() => {
  window.slidesift = { state: 'ready' };
  setMessage('Ready. Choose a thumbnail.');
}).catch((err) => {
  console.error(err);
  window.slidesift = { state: 'error', error: String(err.message || err) };
  setMessage(`The page could not load its model: ${err.message || err}. Serve this folder over http (e.g. python3 -m http.server) and open index.html from there.`);
});
