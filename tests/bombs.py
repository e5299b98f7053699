"""Hostile audio files built byte by byte: valid headers over absurd amounts of audio.

`flac_bomb` writes a real, decodable FLAC stream of CONSTANT subframes: each 4096-frame block
of 8 channels takes about 36 bytes, so 30 minutes of 8-channel 384 kHz audio (5.5 billion
samples, 22 GB as float32) fits in 6 MB. `wav_channels_bomb` is a wav header declaring more
channels than libsndfile reads.
"""

from __future__ import annotations

import struct
from pathlib import Path


def _crc8_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
        table.append(c)
    return table


def _crc16_table() -> list[int]:
    table = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x8005) & 0xFFFF if c & 0x8000 else (c << 1) & 0xFFFF
        table.append(c)
    return table


_CRC8, _CRC16 = _crc8_table(), _crc16_table()


def _crc8(data: bytes) -> int:
    c = 0
    for b in data:
        c = _CRC8[c ^ b]
    return c


def _crc16(data: bytes) -> int:
    c = 0
    for b in data:
        c = ((c << 8) & 0xFFFF) ^ _CRC16[(c >> 8) ^ b]
    return c


def _utf8_number(n: int) -> bytes:
    """FLAC's frame number coding (UTF-8's scheme, extended to 36 bits)."""
    if n < 0x80:
        return bytes([n])
    for length in range(2, 8):
        if n < 1 << (5 * length + 1):
            out = []
            for _ in range(length - 1):
                out.append(0x80 | (n & 0x3F))
                n >>= 6
            lead = (0xFF << (8 - length)) & 0xFF
            return bytes([lead | n] + out[::-1])
    raise ValueError(n)


def flac_bomb(path: Path, channels: int = 8, rate: int = 384_000, seconds: float = 1800.0,
              level: int = 1000, block: int = 4096, declared_seconds: float | None = None) -> Path:
    """A FLAC file of `seconds` of a constant `level` (16-bit), `block` frames a FLAC frame.
    `declared_seconds` makes STREAMINFO claim another length than the frames hold."""
    total = int(seconds * rate)
    declared = total if declared_seconds is None else int(declared_seconds * rate)
    streaminfo = struct.pack(">HH", block, block) + b"\0" * 6
    bits = (rate << 44) | ((channels - 1) << 41) | (15 << 36) | declared  # 20+3+5+36 bits
    streaminfo += bits.to_bytes(8, "big") + b"\0" * 16  # no MD5
    out = bytearray(b"fLaC" + bytes([0x80, 0, 0, 34]) + streaminfo)
    subframes = b"".join(b"\x00" + struct.pack(">h", level) for _ in range(channels))
    frames, written = 0, 0
    while written < total:
        n = min(block, total - written)
        header = bytes([0xFF, 0xF8, 0x70, ((channels - 1) << 4) | 0x08])
        header += _utf8_number(frames) + struct.pack(">H", n - 1)
        header += bytes([_crc8(header)])
        frame = header + subframes
        out += frame + struct.pack(">H", _crc16(frame))
        frames, written = frames + 1, written + n
    path.write_bytes(bytes(out))
    return path


def wav_channels_bomb(path: Path, channels: int = 10_000, rate: int = 16_000,
                      seconds: float = 0.01) -> Path:
    """A 16-bit PCM wav header declaring `channels` channels over `seconds` of zeros."""
    align = 2 * channels
    data = b"\0" * (align * int(rate * seconds))
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * align, align, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path
