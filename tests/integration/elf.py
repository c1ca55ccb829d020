"""Test-only: read the SM architectures out of a CUDA fatbin (the embedded ELF cubins' e_flags)."""

from __future__ import annotations

import struct


def cubin_sms(fatbin: bytes) -> list[int]:
    """SM numbers (121 for sm_121a, 120 for sm_120f) of every ELF cubin embedded in `fatbin`."""
    sms = []
    start = 0
    while (i := fatbin.find(b"\x7fELF", start)) != -1:
        if fatbin[i + 4] == 2 and fatbin[i + 7] == 0x41:  # ELFCLASS64, ELFOSABI_CUDA
            e_flags = struct.unpack_from("<I", fatbin, i + 48)[0]
            sms.append((e_flags >> 8) & 0xFF)
        start = i + 4
    return sms
