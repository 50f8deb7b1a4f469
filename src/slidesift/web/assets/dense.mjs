// Dense classification of kept tiles through shared feature maps, as slidesift.inference.DenseOnnx.
//
// With a stride that is a multiple of 16 (T = 400: stride 80), the first four conv+pool blocks
// and the fifth convolution of every tile are crops of the same layers run once over the image
// (the `maps` graph); the fifth pooling is taken from the one of four pooled maps whose grid
// matches the tile's offset, and only BatchNorm and the dense head run per tile (the `head`
// graph). The maps are computed in blocks overlapping by the 62-px receptive margin, and only
// where a kept tile needs them.

export const STEP = 16;
export const MARGIN = 62;

/** Side of a square after `blocks` valid 3x3 convolutions each followed by 2x2 pooling. */
export function sideAfter(side, blocks) {
  for (let i = 0; i < blocks; i++) side = Math.floor((side - 2) / 2);
  return side;
}

/**
 * Conv-5 maps where needed.
 *
 * @param {Uint8Array} rgb (H, W, 3) image
 * @param {Uint8Array} needed (h5, w5) 1 where a tile needs the cell
 * @param {function} runMaps async (Uint8Array region, h, w) -> {data: Float32Array, c, h, w}
 * @returns {Promise<{data: Float32Array, c: number, h5: number, w5: number}>} (c, h5, w5) maps
 */
export async function conv5Maps(rgb, H, W, needed, h5, w5, cells, runMaps, onBlock = () => {}) {
  let out = null, c5 = 0;
  for (let j0 = 0; j0 < h5; j0 += cells) {
    for (let i0 = 0; i0 < w5; i0 += cells) {
      let ja = -1, j1 = -1, ia = w5, i1 = -1;
      for (let j = j0; j < Math.min(j0 + cells, h5); j++) {
        for (let i = i0; i < Math.min(i0 + cells, w5); i++) {
          if (!needed[j * w5 + i]) continue;
          if (ja < 0) ja = j;
          j1 = j + 1; ia = Math.min(ia, i); i1 = Math.max(i1, i + 1);
        }
      }
      if (ja < 0) continue;
      const y0 = ja * STEP, x0 = ia * STEP;
      const y1 = Math.min(H, j1 * STEP + MARGIN), x1 = Math.min(W, i1 * STEP + MARGIN);
      const rh = y1 - y0, rw = x1 - x0, region = new Uint8Array(rh * rw * 3);
      for (let y = 0; y < rh; y++) {
        const src = ((y0 + y) * W + x0) * 3;
        region.set(rgb.subarray(src, src + rw * 3), y * rw * 3);
      }
      const maps = await runMaps(region, rh, rw);
      if (out === null) { c5 = maps.c; out = new Float32Array(c5 * h5 * w5); }
      for (let c = 0; c < c5; c++) {
        for (let j = ja; j < j1; j++) {
          const src = (c * maps.h + (j - ja)) * maps.w;
          out.set(maps.data.subarray(src, src + (i1 - ia)), (c * h5 + j) * w5 + ia);
        }
      }
      onBlock();
    }
  }
  return { data: out ?? new Float32Array(0), c: c5, h5, w5 };
}

/** 2x2 max-pooling (floor) of maps[:, ky:, kx:]: (c, h2, w2). */
export function pool2(maps, ky, kx) {
  const { data, c: C, h5, w5 } = maps;
  const h2 = Math.floor((h5 - ky) / 2), w2 = Math.floor((w5 - kx) / 2);
  const out = new Float32Array(C * h2 * w2);
  for (let c = 0; c < C; c++) {
    for (let i = 0; i < h2; i++) {
      const r0 = (c * h5 + ky + 2 * i) * w5 + kx, r1 = r0 + w5;
      const o = (c * h2 + i) * w2;
      for (let j = 0; j < w2; j++) {
        const a = Math.max(data[r0 + 2 * j], data[r0 + 2 * j + 1]);
        const b = Math.max(data[r1 + 2 * j], data[r1 + 2 * j + 1]);
        out[o + j] = Math.max(a, b);
      }
    }
  }
  return { data: out, h2, w2 };
}

/**
 * Probabilities of the kept tiles (all on a grid whose stride is a multiple of 16).
 *
 * @param {object} img {rgb, w, h}
 * @param {object} grid the tile grid
 * @param {number[]} kept tile indices
 * @param {object} run {maps, head}: async runners of the two graphs
 * @param {object} opt {tile, blockPx, batch, nClasses, onProgress(done, total)}
 * @returns {Promise<Float32Array>} (kept.length, C) probabilities, in the order of `kept`
 */
export async function classifyDense(img, grid, kept, run, opt) {
  const { tile: T, blockPx, batch, nClasses: C } = opt;
  const span = 2 * sideAfter(T, 5), side = span / 2;
  const h5 = sideAfter(img.h, 4) - 2, w5 = sideAfter(img.w, 4) - 2;
  const needed = new Uint8Array(h5 * w5);
  const fy = kept.map((i) => (Math.floor(i / grid.nCols) * grid.stride) / STEP);
  const fx = kept.map((i) => ((i % grid.nCols) * grid.stride) / STEP);
  for (let k = 0; k < kept.length; k++) {
    for (let j = fy[k]; j < Math.min(fy[k] + span, h5); j++) {
      needed.fill(1, j * w5 + fx[k], j * w5 + Math.min(fx[k] + span, w5));
    }
  }
  const cells = Math.max(1, Math.floor((blockPx - MARGIN) / STEP));
  const nBlocks = Math.ceil(h5 / cells) * Math.ceil(w5 / cells);
  let blocksDone = 0;
  const maps = await conv5Maps(img.rgb, img.h, img.w, needed, h5, w5, cells, run.maps, () => {
    blocksDone++;
    opt.onProgress?.(blocksDone / nBlocks / 2, 'maps');
  });
  const probs = new Float32Array(kept.length * C);
  const c5 = maps.c;
  const order = kept.map((_, k) => k).sort((a, b) =>
    (fy[a] % 2) - (fy[b] % 2) || (fx[a] % 2) - (fx[b] % 2) || a - b);
  const pooled = new Map();
  for (let s = 0; s < order.length; s += batch) {
    const part = order.slice(s, s + batch);
    const feats = new Float32Array(part.length * c5 * side * side);
    part.forEach((k, b) => {
      const key = `${fy[k] % 2},${fx[k] % 2}`;
      if (!pooled.has(key)) pooled.set(key, pool2(maps, fy[k] % 2, fx[k] % 2));
      const p = pooled.get(key), a0 = Math.floor(fy[k] / 2), c0 = Math.floor(fx[k] / 2);
      for (let c = 0; c < c5; c++) {
        for (let y = 0; y < side; y++) {
          const src = (c * p.h2 + a0 + y) * p.w2 + c0;
          feats.set(p.data.subarray(src, src + side), ((b * c5 + c) * side + y) * side);
        }
      }
    });
    const y = await run.head(feats, part.length, c5, side);
    part.forEach((k, b) => { for (let c = 0; c < C; c++) probs[k * C + c] = y[b * C + c]; });
    opt.onProgress?.(0.5 + (s + part.length) / order.length / 2, 'tiles');
  }
  return probs;
}
