"""Sample files for media tests: real images made with Pillow, and minimal headers of other formats."""

from __future__ import annotations

import io
import zipfile


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """An image of ``size`` encoded as ``fmt`` (PNG, JPEG, GIF, WEBP)."""
    from PIL import Image

    image = Image.new("RGB", size, color)
    # A gradient so resampling has something to do and the files are not trivially small.
    for x in range(0, size[0], max(1, size[0] // 16)):
        for y in range(size[1]):
            image.putpixel((x, y), (x % 256, y % 256, 90))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def animated_gif(size: tuple[int, int] = (120, 90), frames: int = 3) -> bytes:
    """An animated GIF."""
    from PIL import Image

    images = [Image.new("RGB", size, (40 * i, 100, 200 - 40 * i)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=80, loop=0)
    return out.getvalue()


def zip_bytes(members: dict[str, bytes], *, mimetype: str | None = None) -> bytes:
    """A zip archive; with ``mimetype`` an ODF/EPUB-style stored ``mimetype`` member comes first."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        if mimetype is not None:
            archive.writestr(zipfile.ZipInfo("mimetype"), mimetype.encode("ascii"), compress_type=zipfile.ZIP_STORED)
        for name, data in members.items():
            archive.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64
MOV = b"\x00\x00\x00\x14ftypqt  \x20\x05\x03\x00qt  " + b"\x00" * 64
M4A = b"\x00\x00\x00\x18ftypM4A \x00\x00\x02\x00M4A isom" + b"\x00" * 64
WEBM = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x84webm" + b"\x00" * 32
MKV = b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x88matroska" + b"\x00" * 32
OGG = b"OggS\x00\x02" + b"\x00" * 20 + b"\x01\x13OpusHead" + b"\x00" * 32
MP3_ID3 = b"ID3\x04\x00\x00\x00\x00\x00\x21" + b"\x00" * 64
MP3_FRAME = b"\xff\xfb\x90\x64" + b"\x00" * 64
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x40\x1f\x00\x00" + b"\x00" * 32
TEXT = "Hello, media! Grüße 👋\nSecond line\n".encode()
HTML = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
XML_SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>'
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64
PE = b"MZ" + b"\x00" * 0x3A + b"\x80\x00\x00\x00" + b"\x00" * 0x40 + b"PE\x00\x00" + b"\x00" * 32
MACHO = b"\xcf\xfa\xed\xfe" + b"\x00" * 64
CIPHERTEXT = bytes((i * 7919 + 13) % 251 for i in range(4096))  # stands in for an encrypted attachment
