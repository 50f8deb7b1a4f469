// The sift of slidesift in the browser: tile grid, background fraction, Shannon entropy, rails.
//
// It reproduces slidesift.tiles.TileGrid.from_stride, slidesift.sift.measure_tiles and
// slidesift.sift.sift bit for bit:
// - grey is OpenCV's RGB2GRAY on 8-bit pixels, (R*9798 + G*19235 + B*3735 + 2^14) >> 15
//   (the exporter checks these constants against cv2 and writes them to model.json);
// - tile histograms are integers, so any summation order gives the same counts;
// - entropy is log2(N) - sum(c log2 c) / N with c log2 c read from the exporter's table
//   (xlog2x.bin: Python's own float64 values, so no browser's Math.log2 is involved) and the
//   sum taken in NumPy's pairwise order (numpy's add.reduce over a contiguous row);
// - background is count / (T * T); kept when <= max_background; rails keep lo <= H <= hi.
//
// Arrays are row-major over the grid: tile i = t_row * nCols + t_col.

/** OpenCV's fixed-point grey of interleaved RGB (or RGBA, stride 4) pixels. */
export function toGray(pixels, n, gray, channels = 3) {
  const { r, g, b, shift } = gray;
  const half = 1 << (shift - 1);
  const out = new Uint8Array(n);
  for (let i = 0, p = 0; i < n; i++, p += channels) {
    out[i] = (pixels[p] * r + pixels[p + 1] * g + pixels[p + 2] * b + half) >> shift;
  }
  return out;
}

/** TileGrid.from_stride: tiles of side `tile` every `stride` px, fully inside (h, w). */
export function gridFromStride(h, w, tile, stride) {
  if (!(Number.isInteger(tile) && tile >= 1)) throw new Error(`tile ${tile}: a positive integer`);
  if (!(Number.isInteger(stride) && stride >= 1)) throw new Error(`stride ${stride}: a positive integer`);
  if (tile > h || tile > w) {
    throw new Error(`the tile side (${tile} px) is larger than the image's shorter side (${Math.min(h, w)} px of ${w} x ${h})`);
  }
  const nRows = Math.floor((h - tile) / stride) + 1;
  const nCols = Math.floor((w - tile) / stride) + 1;
  return { h, w, tile, stride, nRows, nCols, n: nRows * nCols, block: gcd(tile, stride) };
}

export function gcd(a, b) {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** NumPy's pairwise summation (umath loops_utils: 8 accumulators, blocks of 128). */
export function pairwiseSum(a, off, n) {
  if (n < 8) {
    let res = 0;
    for (let i = 0; i < n; i++) res += a[off + i];
    return res;
  }
  if (n <= 128) {
    let r0 = a[off], r1 = a[off + 1], r2 = a[off + 2], r3 = a[off + 3];
    let r4 = a[off + 4], r5 = a[off + 5], r6 = a[off + 6], r7 = a[off + 7];
    let i = 8;
    const end = n - (n % 8);
    for (; i < end; i += 8) {
      const o = off + i;
      r0 += a[o]; r1 += a[o + 1]; r2 += a[o + 2]; r3 += a[o + 3];
      r4 += a[o + 4]; r5 += a[o + 5]; r6 += a[o + 6]; r7 += a[o + 7];
    }
    let res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7));
    for (; i < n; i++) res += a[off + i];
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return pairwiseSum(a, off, n2) + pairwiseSum(a, off + n2, n - n2);
}

/**
 * Background fraction and entropy of every tile.
 *
 * @param {Uint8Array|Uint8ClampedArray} pixels interleaved pixels, `channels` per pixel
 * @param {object} grid from gridFromStride
 * @param {object} spec the checkpoint's SiftSpec (background, gray_low, gray_high, peak_k, entropy)
 * @param {object} table {xlog2x: Float64Array of c*log2(c), c = 0..N, log2N, total: N}
 * @param {object} gray grey constants {r, g, b, shift}
 * @returns {{background: Float64Array, entropy: Float64Array}} per tile, row-major
 */
export function measureTiles(pixels, grid, spec, table, gray, channels = 3) {
  const { w, tile: T, stride: S, nRows, nCols } = grid;
  const cw = (nCols - 1) * S + T;
  const rgbEntropy = spec.entropy === 'rgb';
  const limits = spec.background === 'gray-limits';
  const total = rgbEntropy ? 3 * T * T : T * T;
  if (table.total !== total || table.xlog2x.length !== total + 1) {
    throw new Error(`the entropy table is for ${table.total} values a tile, not ${total}`);
  }
  const { r: cr, g: cg, b: cb, shift } = gray;
  const half = 1 << (shift - 1);
  const lo = spec.gray_low, hi = spec.gray_high;
  // Per column of the covered width: histograms over the current window of T rows.
  const colEnt = new Int32Array(cw * 256);
  const colGray = limits ? null : new Int32Array(cw * 256);
  const colCount = limits ? new Int32Array(cw) : null;

  function addRow(y, sign) {
    let p = y * w * channels;
    for (let x = 0; x < cw; x++, p += channels) {
      const R = pixels[p], G = pixels[p + 1], B = pixels[p + 2];
      const v = (R * cr + G * cg + B * cb + half) >> shift;
      const base = x << 8;
      if (rgbEntropy) {
        colEnt[base + R] += sign; colEnt[base + G] += sign; colEnt[base + B] += sign;
      } else {
        colEnt[base + v] += sign;
      }
      if (limits) {
        if (v < lo || v > hi) colCount[x] += sign;
      } else {
        colGray[base + v] += sign;
      }
    }
  }

  const background = new Float64Array(nRows * nCols);
  const entropy = new Float64Array(nRows * nCols);
  const ent = new Int32Array(256), gh = new Int32Array(256), terms = new Float64Array(256);
  const sorted = new Int32Array(256);
  const area = T * T;
  const xlog = table.xlog2x, log2N = table.log2N;
  let prevTop = -1, count = 0;
  for (let tr = 0; tr < nRows; tr++) {
    const top = tr * S;
    if (prevTop < 0 || S >= T) {
      if (prevTop >= 0) { colEnt.fill(0); if (colGray) colGray.fill(0); if (colCount) colCount.fill(0); }
      for (let y = top; y < top + T; y++) addRow(y, 1);
    } else {
      for (let y = prevTop + T; y < top + T; y++) addRow(y, 1);
      for (let y = prevTop; y < top; y++) addRow(y, -1);
    }
    prevTop = top;
    // Slide along the row: the tile's histogram is the sum of its T columns.
    let prevX = -1;
    for (let tc = 0; tc < nCols; tc++) {
      const x0 = tc * S;
      if (prevX < 0 || S >= T) {
        ent.fill(0); gh.fill(0); count = 0;
        for (let x = x0; x < x0 + T; x++) addColumn(x, 1);
      } else {
        for (let x = prevX + T; x < x0 + T; x++) addColumn(x, 1);
        for (let x = prevX; x < x0; x++) addColumn(x, -1);
      }
      prevX = x0;
      const i = tr * nCols + tc;
      for (let v = 0; v < 256; v++) terms[v] = xlog[ent[v]];
      const e = log2N - pairwiseSum(terms, 0, 256) / total;
      entropy[i] = e > 0 ? e : 0;
      if (limits) {
        background[i] = count / area;
      } else {
        sorted.set(gh);
        sorted.sort();
        let c = 0;
        for (let k = 256 - spec.peak_k; k < 256; k++) c += sorted[k];
        background[i] = c / area;
      }
    }
  }
  return { background, entropy };

  function addColumn(x, sign) {
    const base = x << 8;
    if (sign > 0) {
      for (let v = 0; v < 256; v++) ent[v] += colEnt[base + v];
      if (limits) count += colCount[x];
      else for (let v = 0; v < 256; v++) gh[v] += colGray[base + v];
    } else {
      for (let v = 0; v < 256; v++) ent[v] -= colEnt[base + v];
      if (limits) count -= colCount[x];
      else for (let v = 0; v < 256; v++) gh[v] -= colGray[base + v];
    }
  }
}

/** slidesift.sift.sift: keep = background <= max_background and lo <= entropy <= hi. */
export function siftTiles(stats, spec, rails) {
  const n = stats.background.length;
  const keepBackground = new Uint8Array(n), keepRails = new Uint8Array(n), keep = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    keepBackground[i] = stats.background[i] <= spec.max_background ? 1 : 0;
    const e = stats.entropy[i];
    keepRails[i] = rails === null || (e >= rails.lo && e <= rails.hi) ? 1 : 0;
    keep[i] = keepBackground[i] & keepRails[i];
  }
  return { keepBackground, keepRails, keep };
}
