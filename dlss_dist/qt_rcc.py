"""Reads Qt's binary resource files (``.rcc``, made by ``rcc -binary``) with the standard library.

GCompris ships its photographs as WebP files inside such archives. The format (Qt's
``src/corelib/io/qresource.cpp``; all integers big-endian):

  header   ``qres``, version (u32), tree offset, data offset, names offset (u32 each) and,
           from version 3, a flags word (u32)
  tree     nodes of 14 bytes (version 1) or 22 bytes (version 2 and 3: plus a u64
           modification time), node 0 is the root directory:
           name offset (u32), flags (u16: 1 = zlib, 2 = directory, 4 = zstd), then either
           child count and first child index (u32, u32) for a directory, or country and
           language (u16, u16) and data offset (u32) for a file
  names    u16 length in UTF-16 code units, u32 hash, UTF-16BE text
  data     u32 length, then the bytes; zlib-compressed entries are ``qCompress`` output,
           i.e. a u32 uncompressed size followed by a zlib stream
"""

from __future__ import annotations

import struct
import zlib

_COMPRESSED_ZLIB = 0x01
_DIRECTORY = 0x02
_COMPRESSED_ZSTD = 0x04


def read_rcc(data: bytes) -> dict[str, bytes]:
    """Returns ``{path inside the resource file: file contents}`` of a binary ``.rcc``.

    Args:
      data: the whole ``.rcc`` file.

    Raises:
      ValueError: not an rcc file, an unknown version, a zstd-compressed entry (Qt 6's
        default only when built with zstd; the standard library cannot read it), or a
        truncated file.
    """
    if len(data) < 20 or data[:4] != b"qres":
        raise ValueError("not a Qt binary resource file (no 'qres' magic)")
    version, tree, data_start, names = struct.unpack_from(">IIII", data, 4)
    if version not in (1, 2, 3):
        raise ValueError(f"unsupported Qt resource format version {version}")
    node_size = 14 if version == 1 else 22
    files: dict[str, bytes] = {}

    def name_at(offset: int) -> str:
        (length,) = struct.unpack_from(">H", data, names + offset)
        start = names + offset + 6
        return data[start : start + 2 * length].decode("utf-16-be")

    def visit(index: int, prefix: str, depth: int) -> None:
        if depth > 64:
            raise ValueError("Qt resource tree nested too deeply (corrupt file?)")
        position = tree + index * node_size
        name_offset, flags = struct.unpack_from(">IH", data, position)
        path = f"{prefix}/{name_at(name_offset)}" if index else ""
        if flags & _DIRECTORY:
            count, first = struct.unpack_from(">II", data, position + 6)
            for child in range(first, first + count):
                visit(child, path, depth + 1)
            return
        (offset,) = struct.unpack_from(">I", data, position + 10)
        (size,) = struct.unpack_from(">I", data, data_start + offset)
        blob = data[data_start + offset + 4 : data_start + offset + 4 + size]
        if len(blob) != size:
            raise ValueError(f"Qt resource file truncated at {path!r}")
        if flags & _COMPRESSED_ZSTD:
            raise ValueError(f"{path!r} is zstd-compressed; only zlib entries can be read")
        if flags & _COMPRESSED_ZLIB:
            blob = zlib.decompress(blob[4:])
        files[path.lstrip("/")] = blob

    try:
        visit(0, "", 0)
    except struct.error as error:
        raise ValueError(f"Qt resource file truncated ({error})") from error
    return files
