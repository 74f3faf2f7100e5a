"""GGUF checkpoints (llama.cpp's single-file format): which file to load, whether it is whole,
and what its quantization is called.

The header is read here without the ``gguf`` package, so that an empty, truncated or mislabelled
file is a positioned contract error before transformers is asked for anything. Loading itself goes
through transformers' ``gguf_file=`` support, which needs the ``gguf`` package (and ``accelerate``):
``pip install 'scopecheck[gguf]'``. The weights are dequantized to the dtype the run asks for.

Layout (GGUF v2/v3, little-endian): ``b"GGUF"``, version u32, tensor count u64, metadata count
u64, the metadata (key, type, value), the tensor table (name, dims, ggml type, offset), then the
tensor data from the next ``general.alignment`` boundary (32 by default).
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scopecheck.errors import ContractError, ContractValidationError, Span

MAGIC = b"GGUF"
SUFFIX = ".gguf"
INSTALL = "pip install 'scopecheck[gguf]'"
#: transformers releases before this one convert a GGUF SentencePiece vocabulary into a tokenizer
#: that splits words differently from the original (measured on stories260k written as F32 GGUF:
#: 5.0-5.22 tokenize " there little" as " ", "there", " little"; 5.23 and 5.24 as the safetensors
#: original does), so every map would be over other tokens: such a version is refused, not used
GGUF_MIN_TRANSFORMERS = "5.23"

#: ggml tensor types: name, (elements per block, bytes per block) -- ggml's GGML_QUANT_SIZES
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}

#: ``general.file_type`` (llama.cpp's LlamaFileType): the name a file's quantization goes by
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0",
}

# metadata value types: struct format of the fixed-size ones; 8 is a string, 9 an array
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class GgufFormatError(ValueError):
    """The file is not a complete GGUF file; the message says what is wrong and where."""


@dataclass(frozen=True)
class GgufTensor:
    name: str
    shape: tuple[int, ...]        # ggml order (fastest-moving dimension first)
    ggml_type: int
    offset: int                   # from the start of the data section
    nbytes: int


@dataclass(frozen=True)
class GgufHeader:
    path: Path
    version: int
    metadata: dict[str, Any]      # scalars and strings; arrays as ("array", element type, count)
    tensors: tuple[GgufTensor, ...]
    data_start: int

    @property
    def architecture(self) -> str | None:
        a = self.metadata.get("general.architecture")
        return a if isinstance(a, str) else None

    @property
    def quantization(self) -> str:
        """The quantization the file goes by: ``general.file_type`` when stated (``Q4_1``, ``Q8_0``,
        ``F32``, ``Q4_K_M``), otherwise the tensor type holding most of the weights."""
        ft = self.metadata.get("general.file_type")
        if isinstance(ft, int) and ft in FILE_TYPES:
            return FILE_TYPES[ft]
        elements: dict[int, int] = {}
        for t in self.tensors:
            elements[t.ggml_type] = elements.get(t.ggml_type, 0) + math.prod(t.shape)
        if not elements:
            return "none"
        top = max(elements, key=lambda k: elements[k])
        return GGML_TYPES.get(top, (f"ggml type {top}",))[0]


class _Cursor:
    def __init__(self, buf: Any, size: int) -> None:
        self.buf, self.size, self.pos = buf, size, 0

    def take(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            raise GgufFormatError(f"truncated: the file ends at byte {self.size} inside {what} (at byte {self.pos})")
        v = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v[0] if len(v) == 1 else v

    def string(self, what: str) -> str:
        n = self.take("<Q", what)
        if self.pos + n > self.size:
            raise GgufFormatError(f"truncated: the file ends at byte {self.size} inside {what} "
                                  f"(a {n}-byte string at byte {self.pos})")
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GgufFormatError(f"corrupt: {what} at byte {self.pos - n} is not UTF-8") from None

    def value(self, vtype: int, what: str) -> Any:
        if vtype in _SCALAR:
            return self.take(_SCALAR[vtype], what)
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            etype, count = self.take("<IQ", what)
            if etype in _SCALAR:
                n = struct.calcsize(_SCALAR[etype]) * count
                if self.pos + n > self.size:
                    raise GgufFormatError(f"truncated: the file ends at byte {self.size} inside {what} "
                                          f"({count} values at byte {self.pos})")
                self.pos += n
            elif etype == _STRING:
                for _ in range(count):
                    self.string(what)
            elif etype == _ARRAY:
                for _ in range(count):
                    self.value(_ARRAY, what)
            else:
                raise GgufFormatError(f"corrupt: {what} is an array of unknown value type {etype}")
            return ("array", etype, count)
        raise GgufFormatError(f"corrupt: {what} has unknown value type {vtype} (at byte {self.pos - 4})")


def read_header(path: str | Path) -> GgufHeader:
    """Parse a GGUF file's metadata and tensor table and check that every tensor's data is in the
    file. Raises :class:`GgufFormatError` (empty, not GGUF, unsupported version, truncated)."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise GgufFormatError("empty (0 bytes)")
    with open(path, "rb") as fh:
        if size < 4 or fh.read(4) != MAGIC:
            fh.seek(0)
            raise GgufFormatError(f"not a GGUF file: it starts with {fh.read(4)!r}, not {MAGIC!r}")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(path, buf, size)


def _parse(path: Path, buf: Any, size: int) -> GgufHeader:
    c = _Cursor(buf, size)
    c.pos = 4
    version = c.take("<I", "the header")
    if version not in (2, 3):
        raise GgufFormatError(f"GGUF version {version}; version 2 or 3 is read (re-convert the model with a "
                              f"current llama.cpp)")
    n_tensors, n_kv = c.take("<QQ", "the header")
    # every metadata entry and tensor record takes at least 12 bytes: counts beyond that are garbage
    if n_kv * 12 > size or n_tensors * 12 > size:
        raise GgufFormatError(f"truncated or corrupt: the header claims {n_kv} metadata entries and {n_tensors} "
                              f"tensors, more than {size} bytes can hold")
    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = c.string(f"metadata entry {i}")
        vtype = c.take("<I", f"metadata entry {key!r}")
        metadata[key] = c.value(vtype, f"metadata entry {key!r}")
    tensors = []
    for i in range(n_tensors):
        name = c.string(f"tensor record {i}")
        nd = c.take("<I", f"tensor record {name!r}")
        if nd > 8:
            raise GgufFormatError(f"corrupt: tensor {name!r} claims {nd} dimensions")
        dims = tuple(c.take("<Q", f"tensor record {name!r}") for _ in range(nd))
        gtype, offset = c.take("<IQ", f"tensor record {name!r}")
        if gtype not in GGML_TYPES:
            raise GgufFormatError(f"tensor {name!r} has ggml type {gtype}, which is not known")
        _, per_block, block_bytes = GGML_TYPES[gtype]
        n = math.prod(dims)
        if dims and dims[0] % per_block:
            raise GgufFormatError(f"corrupt: tensor {name!r} of type {GGML_TYPES[gtype][0]} has a row of {dims[0]} "
                                  f"values, not a multiple of its block size {per_block}")
        tensors.append(GgufTensor(name, dims, gtype, offset, n // per_block * block_bytes))
    align = metadata.get("general.alignment", 32)
    if not isinstance(align, int) or align <= 0:
        raise GgufFormatError(f"corrupt: general.alignment is {align!r}")
    data_start = (c.pos + align - 1) // align * align
    for t in tensors:
        end = data_start + t.offset + t.nbytes
        if end > size:
            raise GgufFormatError(f"truncated: tensor {t.name!r} ends at byte {end} but the file has {size} bytes")
    return GgufHeader(path, version, metadata, tuple(tensors), data_start)


# --------------------------------------------------------------------------- loading


def gguf_target(where: str | Path) -> tuple[Path, str] | None:
    """``(directory, file name)`` when ``where`` is a ``.gguf`` file, or a directory holding
    exactly one ``.gguf`` file and no safetensors weights; otherwise None (an ordinary directory).
    A directory with several ``.gguf`` files and no safetensors is an error: name one."""
    p = Path(where)
    if p.is_file():
        return (p.parent, p.name) if p.suffix.lower() == SUFFIX else None
    if not p.is_dir() or any(p.glob("*.safetensors")):
        return None
    found = sorted(f for f in p.iterdir() if f.suffix.lower() == SUFFIX and (f.is_file() or f.is_symlink()))
    if len(found) > 1:
        raise ContractValidationError(
            f"{p}: {len(found)} .gguf files ({', '.join(f.name for f in found)}) and no safetensors weights",
            Span(), expected="one model file", hint=f'name the file: model "{found[0]}"', rule="model")
    return (p, found[0].name) if found else None


def check_gguf_file(path: Path, identity: str) -> GgufHeader:
    """The file's header, or a contract error saying why the file cannot be a GGUF checkpoint."""
    try:
        return read_header(path)
    except GgufFormatError as exc:
        raise ContractValidationError(f"{identity}: {path.name} is {exc}", Span(),
                                      expected="a complete GGUF file (GGUF v2/v3)", rule="model") from None
    except OSError as exc:
        raise ContractValidationError(f"{identity}: cannot read {path.name} ({exc.strerror or exc})", Span(),
                                      expected="a readable GGUF file", rule="model") from None


def require_packages(identity: str) -> None:
    """transformers reads GGUF through the ``gguf`` package, and its loader insists on ``accelerate``."""
    import importlib

    missing = []
    for name in ("gguf", "accelerate"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ContractError(f"cannot load {identity}: reading GGUF checkpoints needs the "
                            f"{' and '.join(repr(n) for n in missing)} package{'s' if len(missing) > 1 else ''}",
                            Span(), expected="the scopecheck[gguf] extra installed", hint=INSTALL, rule="model")
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) < Version(GGUF_MIN_TRANSFORMERS):
        raise ContractError(f"cannot load {identity}: transformers {transformers.__version__} converts GGUF "
                            f"tokenizers into ones that split words unlike the original model",
                            Span(), expected=f"transformers >= {GGUF_MIN_TRANSFORMERS} for GGUF checkpoints",
                            hint=f"pip install 'transformers>={GGUF_MIN_TRANSFORMERS}', or load the model's "
                                 f"safetensors folder", rule="model")


def load_kwargs() -> dict[str, Any]:
    """``from_pretrained`` options for a GGUF file beyond ``gguf_file=``: dequantize every weight
    (attribution needs ordinary float tensors with gradients, in the dtype asked for), even where
    transformers could keep blocks packed behind its own matmul kernels."""
    try:
        from transformers import GgufConfig
    except ImportError:       # older transformers always dequantize GGUF weights
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


class quiet_conversion:
    """transformers' GGUF dequantization loop draws its own tqdm bar (``disable_progress_bar`` does
    not reach it); runs report their own progress, so the bar is switched off while loading."""

    def __enter__(self) -> "quiet_conversion":
        import functools

        try:
            import transformers.modeling_gguf_pytorch_utils as mod
        except ImportError:
            self.mod = None
            return self
        self.mod, self.bar = mod, getattr(mod, "tqdm", None)
        if self.bar is not None:
            mod.tqdm = functools.partial(self.bar, disable=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.mod is not None and self.bar is not None:
            self.mod.tqdm = self.bar
