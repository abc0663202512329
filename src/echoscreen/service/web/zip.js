// Names of a zip's members, read from its central directory in the browser (no library):
// the page names clips of a zipped study by them. Mirrors the service's expand_zip
// (echoscreen.service.uploads): central-directory order, folders, dot files and __MACOSX
// left out.

// Member names of `file` (a File or Blob) in central-directory order, without folders and
// litter; null when the archive cannot be read here (not a zip, ZIP64).
export async function zipNames(file) {
  const tailSize = Math.min(file.size, 65557);
  const tail = new DataView(await file.slice(file.size - tailSize).arrayBuffer());
  let end = -1;
  for (let i = tailSize - 22; i >= 0 && end < 0; i--) {
    if (tail.getUint32(i, true) === 0x06054b50) end = i;
  }
  if (end < 0) return null;
  const count = tail.getUint16(end + 10, true);
  const size = tail.getUint32(end + 12, true);
  const offset = tail.getUint32(end + 16, true);
  if (count === 0xffff || offset === 0xffffffff) return null;
  const dir = new Uint8Array(await file.slice(offset, offset + size).arrayBuffer());
  const view = new DataView(dir.buffer);
  const names = [];
  for (let k = 0, p = 0; k < count; k++) {
    if (p + 46 > dir.length || view.getUint32(p, true) !== 0x02014b50) return null;
    const utf8 = view.getUint16(p + 8, true) & 0x800;
    const n = view.getUint16(p + 28, true);
    const name = new TextDecoder(utf8 ? "utf-8" : "latin1").decode(dir.subarray(p + 46, p + 46 + n));
    names.push(name);
    p += 46 + n + view.getUint16(p + 30, true) + view.getUint16(p + 32, true);
  }
  const litter = (name) =>
    name.split("/")[0] === "__MACOSX" || name.split("/").some((part) => part.startsWith("."));
  return names.filter((name) => !name.endsWith("/") && !litter(name));
}
