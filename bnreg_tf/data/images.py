"""What an image file's structure says, read without decoding it (standard library only;
the formats and what TensorFlow's decoders accept: docs/references.md §8.13).

`read_header(path)` returns the image's `(height, width, channels)` or raises `BadImage` with
one line saying what is wrong. It reads the file's structure, never its pixels:
- PNG (ISO/IEC 15948, the PNG specification): the 8-byte signature, the IHDR chunk (its length,
  fields and CRC), then every chunk's length and type up to IEND, seeking over the data. A file
  that ends before IEND is truncated; a wrong signature or IHDR is a garbage header.
- JPEG (ITU-T T.81, Annex B): the SOI marker, the marker segments up to the frame header (SOF:
  height, width, components), and the EOI marker that ends the data. TensorFlow's decoder
  refuses a JPEG without EOI ("Invalid JPEG data"), so a missing EOI is a truncated
  file; data after EOI is allowed (the decoder ignores it), found by scanning from the start
  of the scan only when the file does not end with EOI.
Channels: PNG grey and grey+alpha are 1, the other colour types 3; a JPEG of 1 component is 1,
of 3 or 4 (CMYK) components 3. A 4-component (CMYK) JPEG decodes to 3 channels only (`cmyk` in the result).
Anything else (GIF, BMP, WebP, text under a .jpg/.png name) is a `BadImage`.
"""
import dataclasses
import os
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}   # TEM, RST0-7: markers without a length


class BadImage(ValueError):
    """A file that is not a readable PNG or JPEG image; the message says why, in a few words."""


@dataclasses.dataclass(frozen=True)
class Header:
    height: int
    width: int
    channels: int         # 1 (grey) or 3 (colour)
    cmyk: bool = False    # a 4-component JPEG: TensorFlow decodes it to 3 channels only


def read_header(path):
    """The `Header` of the PNG or JPEG file `path`; `BadImage` (or OSError) when it has none."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if head == PNG_SIGNATURE:
            return _png(f, size)
        if head[:2] == b"\xff\xd8":
            return _jpeg(f, size)
    if size == 0:
        raise BadImage("empty file")
    raise BadImage(f"neither PNG nor JPEG data (starts with {head[:4]!r})")


def _png(f, size):
    chunk = f.read(25)   # IHDR: length, type, 13 bytes of fields, CRC
    if len(chunk) < 25 or chunk[:8] != b"\x00\x00\x00\rIHDR":
        raise BadImage("PNG without an IHDR header chunk")
    if zlib.crc32(chunk[4:21]) != int.from_bytes(chunk[21:25], "big"):
        raise BadImage("PNG header chunk fails its CRC (garbage header)")
    width, height = int.from_bytes(chunk[8:12], "big"), int.from_bytes(chunk[12:16], "big")
    depth, colour = chunk[16], chunk[17]
    if not (width and height) or depth not in _PNG_DEPTHS.get(colour, ()) or chunk[18:20] != \
            b"\x00\x00" or chunk[20] > 1:
        raise BadImage(f"PNG header holds impossible values ({width}x{height}, depth {depth}, "
                       f"colour type {colour})")
    position, data = 33, False
    while True:
        if position + 12 > size:
            raise BadImage(f"truncated PNG ({size} bytes, no IEND chunk)")
        f.seek(position)
        head = f.read(8)
        length, kind = int.from_bytes(head[:4], "big"), head[4:8]
        if not kind.isalpha():
            raise BadImage(f"corrupt PNG chunk at byte {position}")
        data = data or kind == b"IDAT"
        if kind == b"IEND":
            if not data:
                raise BadImage("PNG without image data (no IDAT chunk)")
            return Header(height, width, 1 if colour in (0, 4) else 3)
        position += 12 + length
        if position > size:
            raise BadImage(f"truncated PNG ({size} bytes, its {kind.decode()} chunk ends at "
                           f"byte {position})")


def _jpeg(f, size):
    f.seek(2)
    frame = None
    while True:
        marker = f.read(2)
        while len(marker) == 2 and marker[0] == 0xFF and marker[1] == 0xFF:   # fill bytes
            marker = marker[1:] + f.read(1)
        if len(marker) < 2 or marker[0] != 0xFF:
            raise BadImage("truncated or corrupt JPEG (a marker segment is cut or garbled)")
        if marker[1] in _JPEG_STANDALONE:
            continue
        length = int.from_bytes(f.read(2), "big")
        if marker[1] in _JPEG_FRAMES:
            fields = f.read(6)
            if len(fields) < 6:
                raise BadImage("truncated JPEG frame header")
            height, width = int.from_bytes(fields[1:3], "big"), int.from_bytes(fields[3:5], "big")
            components = fields[5]
            if not (height and width) or components not in (1, 3, 4):
                raise BadImage(f"JPEG frame header holds impossible values ({width}x{height}, "
                               f"{components} components)")
            frame = Header(height, width, 1 if components == 1 else 3, components == 4)
            f.seek(length - 8, 1)
            continue
        if marker[1] == 0xDA:   # start of scan: the entropy-coded data follows
            if frame is None:
                raise BadImage("JPEG without a frame header before its data")
            _check_jpeg_end(f, f.tell(), size)
            return frame
        if length < 2:
            raise BadImage("corrupt JPEG marker segment")
        f.seek(length - 2, 1)


def _check_jpeg_end(f, scan, size):
    """The data ends with EOI; else EOI must come later than the scan (data after EOI)."""
    f.seek(max(scan, size - 2))
    if f.read(2) == b"\xff\xd9":
        return
    f.seek(scan)
    if b"\xff\xd9" not in f.read():
        raise BadImage(f"truncated JPEG ({size} bytes, no end-of-image marker)")
