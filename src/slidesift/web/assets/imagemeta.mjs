// The scale a thumbnail file states: um/px and level-0 px per thumbnail px, when it says.
//
// Read from the file's bytes (nothing is decoded): PNG pHYs (pixels per metre) and text chunks
// (tEXt, iTXt uncompressed), JPEG JFIF density and comment (COM) segments. A text value that
// is a JSON object is read for "mpp" (um/px: a number or [x, y]), "scale" or "downsample"
// (level-0 px per thumbnail px: a number or [sx, sy]) and "l0_size" or "level0" ([W, H] of level
// 0), also inside a "slidesift" object; a text key "mpp", "scale" or "downsample" with a number
// works too. `slidesift thumb`'s record (um_per_px, downsample, level0; in a PNG iTXt chunk or a
// JPEG comment "slidesift:{...}") is read so.

function pair(v) {
  if (typeof v === 'number' && Number.isFinite(v) && v > 0) return [v, v];
  if (Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number' && Number.isFinite(x) && x > 0)) return [v[0], v[1]];
  return null;
}

function fromObject(obj, found) {
  if (!obj || typeof obj !== 'object') return;
  if (obj.slidesift && typeof obj.slidesift === 'object') fromObject(obj.slidesift, found);
  const mpp = pair(obj.mpp ?? obj.um_per_px);
  if (mpp && !found.mpp) { found.mpp = mpp; found.mppFrom = 'metadata'; }
  const scale = pair(obj.scale ?? obj.downsample);
  if (scale && !found.scale) found.scale = scale;
  const l0 = pair(obj.l0_size ?? obj.level0_size ?? obj.level0);
  if (l0 && !found.l0Size) found.l0Size = l0;
}

function fromText(key, value, found) {
  let text = value.trim();
  // `slidesift thumb` writes its JPEG record as a comment "slidesift:{...}"
  if (text.startsWith('slidesift:')) text = text.slice('slidesift:'.length).trim();
  if (text.startsWith('{')) {
    try { fromObject(JSON.parse(text), found); } catch { /* not JSON: ignore */ }
    return;
  }
  const k = key.toLowerCase();
  if (['mpp', 'scale', 'downsample', 'um_per_px'].includes(k)) {
    const num = text.split(/[\s,]+/).map(Number);
    fromObject({ [k]: num.length === 2 ? num : num[0] }, found);
  }
}

const latin1 = new TextDecoder('latin1'), utf8 = new TextDecoder('utf-8');

function png(bytes, found) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let p = 8;
  while (p + 12 <= bytes.length) {
    const len = view.getUint32(p), type = latin1.decode(bytes.subarray(p + 4, p + 8));
    const data = bytes.subarray(p + 8, Math.min(p + 8 + len, bytes.length));
    if (type === 'pHYs' && data.length >= 9 && data[8] === 1) {
      const dv = new DataView(data.buffer, data.byteOffset, 9);
      const ppmX = dv.getUint32(0), ppmY = dv.getUint32(4);
      if (ppmX > 0 && ppmY > 0) found.physMpp = [1e6 / ppmX, 1e6 / ppmY];
    } else if (type === 'tEXt') {
      const z = data.indexOf(0);
      if (z > 0) fromText(latin1.decode(data.subarray(0, z)), latin1.decode(data.subarray(z + 1)), found);
    } else if (type === 'iTXt') {
      const z = data.indexOf(0);
      if (z > 0 && data[z + 1] === 0) { // uncompressed
        const langEnd = data.indexOf(0, z + 3), keyEnd = data.indexOf(0, langEnd + 1);
        if (langEnd > 0 && keyEnd > 0) fromText(latin1.decode(data.subarray(0, z)), utf8.decode(data.subarray(keyEnd + 1)), found);
      }
    } else if (type === 'IDAT' || type === 'IEND') {
      if (type === 'IEND') break;
    }
    p += 12 + len;
  }
}

function jpeg(bytes, found) {
  let p = 2;
  while (p + 4 <= bytes.length && bytes[p] === 0xff) {
    const marker = bytes[p + 1];
    if (marker === 0xda || marker === 0xd9) break; // start of scan: no metadata after
    const len = (bytes[p + 2] << 8) | bytes[p + 3];
    const data = bytes.subarray(p + 4, p + 2 + len);
    if (marker === 0xfe) fromText('comment', utf8.decode(data), found);
    if (marker === 0xe0 && latin1.decode(data.subarray(0, 5)) === 'JFIF\0' && data.length >= 12) {
      const units = data[7], dx = (data[8] << 8) | data[9], dy = (data[10] << 8) | data[11];
      const perCm = units === 1 ? 2.54 : units === 2 ? 1 : 0;
      if (perCm && dx > 0 && dy > 0) found.physMpp = [1e4 / (dx / perCm), 1e4 / (dy / perCm)];
    }
    p += 2 + len;
  }
}

/** {mpp, mppFrom, scale, l0Size} found in the file (each may be missing). */
export function readImageMeta(bytes) {
  const found = {};
  if (bytes[0] === 0x89 && bytes[1] === 0x50) png(bytes, found);
  else if (bytes[0] === 0xff && bytes[1] === 0xd8) jpeg(bytes, found);
  // A resolution tag is trusted only in a microscope's range (screen defaults: 72-300 dpi).
  if (!found.mpp && found.physMpp && found.physMpp.every((m) => m >= 0.01 && m <= 50)) {
    found.mpp = found.physMpp; found.mppFrom = 'resolution tag';
  }
  delete found.physMpp;
  return found;
}
