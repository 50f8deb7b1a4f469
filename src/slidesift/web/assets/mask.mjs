// From tile probabilities to the tumor mask, and the mask as PNG and QuPath GeoJSON.
//
// assemble() reproduces slidesift.assemble.assemble: coverage on the grid of b x b blocks
// (b = gcd(T, stride)) through a 2-D difference array with the same order of float additions
// as TileGrid.coverage_blocks (corner by corner, then cumulative sums down, then across), so
// the same probabilities give the same mask bit for bit.

/** Class index of each tile: argmax over its C probabilities (first on ties, as numpy). */
export function tileLabels(probs, n, nClasses) {
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0, top = probs[i * nClasses];
    for (let c = 1; c < nClasses; c++) {
      const p = probs[i * nClasses + c];
      if (p > top) { top = p; best = c; }
    }
    labels[i] = best;
  }
  return labels;
}

/** TileGrid.coverage_blocks: per block, the sum of the values of the tiles covering it. */
export function coverageBlocks(grid, values) {
  const b = grid.block;
  const hb = Math.ceil(grid.h / b), wb = Math.ceil(grid.w / b);
  const s = grid.stride / b, t = grid.tile / b;
  const W1 = wb + 1;
  const diff = new Float64Array((hb + 1) * W1);
  const corners = [[0, 0, 1], [t, t, 1], [0, t, -1], [t, 0, -1]];
  for (const [dr, dc, sign] of corners) {
    for (let r = 0; r < grid.nRows; r++) {
      const row = (r * s + dr) * W1;
      for (let c = 0; c < grid.nCols; c++) {
        diff[row + c * s + dc] += sign * values[r * grid.nCols + c];
      }
    }
  }
  for (let y = 1; y <= hb; y++) {
    for (let x = 0; x <= wb; x++) diff[y * W1 + x] += diff[(y - 1) * W1 + x];
  }
  for (let y = 0; y <= hb; y++) {
    for (let x = 1; x <= wb; x++) diff[y * W1 + x] += diff[y * W1 + x - 1];
  }
  const out = new Float64Array(hb * wb);
  for (let y = 0; y < hb; y++) out.set(diff.subarray(y * W1, y * W1 + wb), y * wb);
  return { values: out, hb, wb };
}

/** The most frequent tumor class (ties: first name in sorted order), or null. */
export function majorityVote(counts) {
  let best = null;
  for (const [name, n] of Object.entries(counts)) {
    if (n <= 0) continue;
    if (best === null || n > counts[best] || (n === counts[best] && name < best)) best = name;
  }
  return best;
}

/**
 * slidesift.assemble.assemble.
 *
 * @param {object} grid the tile grid
 * @param {Uint8Array} keep per tile, 1 = kept by the sift
 * @param {Float32Array} probs per tile, C probabilities (column 0 non-tumor)
 * @param {string[]} classes C class names
 * @param {string} mode 'mean', 'union' or 'dominant'
 * @param {number} threshold mean-probability threshold (tumor where strictly above)
 * @returns {{mask: Uint8Array, counts: object, dominant: string|null, labels: Uint8Array}}
 */
export function assemble(grid, keep, probs, classes, mode, threshold) {
  const n = grid.n, C = classes.length;
  const raw = tileLabels(probs, n, C);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) labels[i] = keep[i] ? raw[i] : 0;
  const counts = {};
  for (let c = 1; c < C; c++) counts[classes[c]] = 0;
  for (let i = 0; i < n; i++) if (labels[i] > 0) counts[classes[labels[i]]] += 1;
  const dominant = majorityVote(counts);
  let blocks;
  if (mode === 'mean') {
    const ones = new Float64Array(n).fill(1);
    const tumor = new Float64Array(n);
    for (let i = 0; i < n; i++) tumor[i] = keep[i] ? 1.0 - probs[i * C] : 0.0;
    const cover = coverageBlocks(grid, ones), total = coverageBlocks(grid, tumor);
    blocks = { hb: cover.hb, wb: cover.wb, values: new Uint8Array(cover.values.length) };
    for (let j = 0; j < cover.values.length; j++) {
      const nc = cover.values[j];
      blocks.values[j] = nc > 0 && total.values[j] > threshold * nc ? 1 : 0;
    }
  } else {
    const want = mode === 'union' ? -1 : (dominant === null ? -2 : classes.indexOf(dominant));
    const chosen = new Float64Array(n);
    for (let i = 0; i < n; i++) chosen[i] = (want === -1 ? labels[i] > 0 : labels[i] === want) ? 1 : 0;
    const cover = coverageBlocks(grid, chosen);
    blocks = { hb: cover.hb, wb: cover.wb, values: new Uint8Array(cover.values.length) };
    for (let j = 0; j < cover.values.length; j++) blocks.values[j] = cover.values[j] > 0.5 ? 1 : 0;
  }
  const b = grid.block, mask = new Uint8Array(grid.h * grid.w);
  for (let y = 0; y < grid.h; y++) {
    const row = Math.floor(y / b) * blocks.wb;
    for (let x = 0; x < grid.w; x++) mask[y * grid.w + x] = blocks.values[row + Math.floor(x / b)];
  }
  return { mask, counts, dominant, labels };
}

// --- PNG ------------------------------------------------------------------------------------

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

async function zlib(bytes) {
  // CompressionStream('deflate') writes the zlib format (RFC 1950) that PNG's IDAT holds.
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream('deflate'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** The mask as a 1-bit greyscale PNG, white on black, as `slidesift segment` writes it. */
export async function maskPng(mask, w, h, text = {}) {
  const rowBytes = Math.ceil(w / 8);
  const raw = new Uint8Array(h * (rowBytes + 1));
  for (let y = 0; y < h; y++) {
    const o = y * (rowBytes + 1) + 1; // filter byte 0 (none)
    for (let x = 0; x < w; x++) if (mask[y * w + x]) raw[o + (x >> 3)] |= 0x80 >> (x & 7);
  }
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, w); v.setUint32(4, h);
  ihdr.set([1, 0, 0, 0, 0], 8); // bit depth 1, greyscale, deflate, no filter, no interlace
  const parts = [new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr)];
  const enc = new TextEncoder();
  for (const [key, value] of Object.entries(text)) {
    parts.push(chunk('tEXt', enc.encode(`${key}\0${value}`.replace(/[^\x00-\xff]/g, '?'))));
  }
  parts.push(chunk('IDAT', await zlib(raw)), chunk('IEND', new Uint8Array(0)));
  return new Blob(parts, { type: 'image/png' });
}

// --- GeoJSON --------------------------------------------------------------------------------

/**
 * Trace a mask into polygons along pixel edges: one polygon (outer ring, then holes) per
 * 4-connected region. Pixel (x, y) covers [x, x+1] x [y, y+1]; every ring runs on pixel
 * edges, so each pixel centre is strictly inside or outside and rasterising the rings back
 * (even-odd, at pixel centres) gives the mask exactly.
 *
 * @returns {number[][][][]} polygons of rings of [x, y] vertices (closed), thumbnail px
 */
export function traceMask(mask, w, h) {
  // 4-connected components
  const comp = new Int32Array(w * h).fill(-1);
  const stack = new Int32Array(w * h);
  let nComp = 0;
  for (let start = 0; start < w * h; start++) {
    if (!mask[start] || comp[start] >= 0) continue;
    let top = 0;
    stack[top++] = start;
    comp[start] = nComp;
    while (top > 0) {
      const p = stack[--top], x = p % w, y = (p - x) / w;
      const nb = [x > 0 ? p - 1 : -1, x < w - 1 ? p + 1 : -1, y > 0 ? p - w : -1, y < h - 1 ? p + w : -1];
      for (const q of nb) {
        if (q >= 0 && mask[q] && comp[q] < 0) { comp[q] = nComp; stack[top++] = q; }
      }
    }
    nComp++;
  }
  // Directed boundary edges, the region on their right (y down): 0 E, 1 S, 2 W, 3 N.
  const W1 = w + 1;
  const eStart = [], eDir = [], eComp = [];
  const out1 = new Int32Array(W1 * (h + 1)).fill(-1), out2 = new Int32Array(W1 * (h + 1)).fill(-1);
  function add(vx, vy, dir, c) {
    const id = eStart.length, v = vy * W1 + vx;
    eStart.push(v); eDir.push(dir); eComp.push(c);
    if (out1[v] < 0) out1[v] = id; else out2[v] = id;
  }
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const p = y * w + x;
      if (!mask[p]) continue;
      const c = comp[p];
      if (y === 0 || !mask[p - w]) add(x, y, 0, c);
      if (x === w - 1 || !mask[p + 1]) add(x + 1, y, 1, c);
      if (y === h - 1 || !mask[p + w]) add(x + 1, y + 1, 2, c);
      if (x === 0 || !mask[p - 1]) add(x, y + 1, 3, c);
    }
  }
  const DX = [1, 0, -1, 0], DY = [0, 1, 0, -1];
  const seen = new Uint8Array(eStart.length);
  const polygons = Array.from({ length: nComp }, () => []);
  for (let e0 = 0; e0 < eStart.length; e0++) {
    if (seen[e0]) continue;
    const ring = [];
    let e = e0, prevDir = -1;
    while (!seen[e]) {
      seen[e] = 1;
      const v = eStart[e], d = eDir[e];
      if (d !== prevDir) ring.push([v % W1, Math.floor(v / W1)]);
      prevDir = d;
      const end = v + DY[d] * W1 + DX[d];
      const a = out1[end], b = out2[end];
      // At a saddle (two ways on), turn right: the region stays 4-connected.
      e = b < 0 ? a : (eDir[a] === (d + 1) % 4 ? a : b);
    }
    if (eDir[e0] === prevDir && ring.length > 1) ring.shift(); // the start was mid-side
    ring.push([...ring[0]]);
    polygons[eComp[e0]].push(ring);
  }
  return polygons; // each component's first ring is its outer one (met first in scan order)
}

/**
 * The mask as QuPath GeoJSON, shaped as slidesift.io.geojson.mask_to_geojson writes it: one
 * MultiPolygon annotation feature classified "Tumor", coordinates multiplied by `scale`
 * (level-0 px per thumbnail px; [1, 1] keeps thumbnail px).
 */
export function maskGeojson(mask, w, h, scale = [1, 1], name = 'Tumor', extra = {}) {
  const [sx, sy] = scale;
  const r4 = (v) => Math.round(v * 1e4) / 1e4;
  const polygons = traceMask(mask, w, h).map((rings) =>
    rings.map((ring) => ring.map(([x, y]) => [r4(x * sx), r4(y * sy)])));
  const features = polygons.length === 0 ? [] : [{
    type: 'Feature',
    geometry: { type: 'MultiPolygon', coordinates: polygons },
    properties: {
      objectType: 'annotation',
      classification: { name, color: [200, 0, 0] },
      label: 1,
      ...extra,
    },
  }];
  return { type: 'FeatureCollection', features };
}
