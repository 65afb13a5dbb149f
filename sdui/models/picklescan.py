"""Which globals a PyTorch pickle would import, read from its opcodes without unpickling it.

Listing a checkpoint should show that it is unsafe before anyone tries to load it. Loading is still
guarded by torch's ``weights_only`` unpickler; this scan mirrors that unpickler's allow-list so that
what the list calls clean is what the loader accepts.

What is read: for torch's zip format, the ``*.pkl`` members (``<archive>/data.pkl``), never the
tensor data; for the legacy format, the pickles at the start of the file (magic number, protocol,
system info, the object, the storage keys) and not the raw storages after them. Results are cached
in memory by (absolute path, size, mtime), so listing the same folder again costs one ``stat`` per file.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import pickletools
import struct
import threading
import zipfile
import zlib
from collections import OrderedDict, namedtuple
from dataclasses import dataclass

from . import formats

MAX_PICKLE_BYTES = 16 * 1024 * 1024  # ~100 bytes a tensor: real ones are under 2 MB; 16 MB scans in ~5 s
CACHE_SIZE = 4096
_LEGACY_PICKLES = 5  # torch.serialization._legacy_load unpickles exactly this many
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER, the first legacy pickle
_LEGACY_MAGIC_PICKLES = tuple(pickle.dumps(_LEGACY_MAGIC, protocol=p) for p in range(2, 6))

_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_EXT_OPS = {"EXT1", "EXT2", "EXT4"}  # globals looked up in copyreg's extension registry
# What reading a corrupt pickle, zip member or compressed stream can raise.
_CORRUPT = (ValueError, IndexError, KeyError, EOFError, struct.error, zlib.error, zipfile.BadZipFile,
            NotImplementedError, RuntimeError)
_COMPUTED = "a name it computes while loading"  # a STACK_GLOBAL whose strings are not plain pushes
_MARK, _OTHER = object(), object()  # stack values the scan does not need to know


@dataclass(frozen=True)
class Scan:
    """What one file's pickles import ("module.name", in order of appearance), and any problem that
    stopped the scan (corruption, or an import whose name cannot be known without running it)."""

    imports: tuple[str, ...] = ()
    problem: str | None = None


CacheInfo = namedtuple("CacheInfo", "hits misses size")
_cache: OrderedDict[tuple, Scan] = OrderedDict()
_lock = threading.Lock()
_stats = {"hits": 0, "misses": 0}


def check(path: str | os.PathLike, fmt: str) -> str | None:
    """None when the pickle ``path`` (format PICKLE or PICKLE_ZIP) imports only what torch's
    weights_only loader allows, else why not, e.g. "refused: would run code (imports posix.system)".

    Raises OSError or ModelLoadError when the file cannot be opened (not a regular file).
    """
    found = scan(path, fmt)
    refused = [name for name in found.imports if not _allowed(name)]
    if refused:
        more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
        return f"refused: would run code (imports {', '.join(refused[:3])}{more})"
    return found.problem


def scan(path: str | os.PathLike, fmt: str) -> Scan:
    """The imports of ``path``'s pickles, from the cache when the file is unchanged."""
    st = os.stat(path)
    key = (os.path.abspath(path), fmt, st.st_size, st.st_mtime_ns)
    with _lock:
        if key in _cache:
            _stats["hits"] += 1
            _cache.move_to_end(key)
            return _cache[key]
        _stats["misses"] += 1
    found = _scan_file(path, fmt)
    with _lock:
        _cache[key] = found
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return found


def cache_info() -> CacheInfo:
    """Hits and misses of the scan cache (a miss reads the file), like functools' ``cache_info``."""
    with _lock:
        return CacheInfo(_stats["hits"], _stats["misses"], len(_cache))


def cache_clear() -> None:
    with _lock:
        _cache.clear()
        _stats.update(hits=0, misses=0)


def _scan_file(path, fmt: str) -> Scan:
    with formats.open_regular(path) as f:
        return _scan_zip(f) if fmt == formats.PICKLE_ZIP else _scan_legacy(f)


def _scan_zip(f) -> Scan:
    """Every ``.pkl`` member of torch's zip format (torch unpickles ``<archive>/data.pkl``; scanning
    all of them leaves no doubt about which one a differently written reader would pick)."""
    try:
        with zipfile.ZipFile(f) as zf:
            members = [i for i in zf.infolist() if i.filename.endswith(".pkl")]
            if not any(i.filename.rsplit("/", 1)[-1] == "data.pkl" for i in members):
                return Scan(problem="not a PyTorch checkpoint (its zip archive has no data.pkl)")
            imports: list[str] = []
            for info in members:
                with zf.open(info) as member:  # read whole: pickletools is fastest on bytes
                    data = member.read(MAX_PICKLE_BYTES + 1)
                if len(data) > MAX_PICKLE_BYTES:
                    return Scan(tuple(dict.fromkeys(imports)), _too_large())
                found = _scan_stream(io.BytesIO(data))
                imports += found.imports
                if found.problem:
                    return Scan(tuple(dict.fromkeys(imports)), found.problem)
            return Scan(tuple(dict.fromkeys(imports)))
    except _CORRUPT as e:
        return Scan(problem=f"truncated or corrupt checkpoint (broken zip archive: {str(e)[:200]})")


def _scan_legacy(f) -> Scan:
    """The pickles torch's legacy loader would unpickle: the first, and when that is torch's magic
    number, the four after it (the raw tensor data follows them and is not read)."""
    head = f.read(32)
    f.seek(0)
    count = _LEGACY_PICKLES if head.startswith(_LEGACY_MAGIC_PICKLES) else 1
    stream = _Bounded(f, MAX_PICKLE_BYTES)
    imports: list[str] = []
    for _ in range(count):
        found = _scan_stream(stream)
        imports += found.imports
        if found.problem:
            return Scan(tuple(dict.fromkeys(imports)), found.problem)
    return Scan(tuple(dict.fromkeys(imports)))


class _Bounded:
    """A stream that gives out at most ``limit`` bytes in all, so a length field claiming gigabytes
    makes pickletools read to the limit, not allocate gigabytes."""

    def __init__(self, f, limit: int):
        self._f, self.left = f, limit

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(self.left if n is None or n < 0 else min(n, self.left))
        self.left -= len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self._f.readline(self.left)
        self.left -= len(data)
        return data

    def tell(self) -> int:  # lets pickletools name the byte offset of what it cannot read
        return self._f.tell()


def _too_large() -> str:
    return f"refused: its pickle is larger than {MAX_PICKLE_BYTES // (1024 * 1024)} MB, too large to check"


def _scan_stream(stream) -> Scan:
    """The imports of one pickle, up to its STOP, found by following the pickle machine's stack
    (enough of it to know the two strings a STACK_GLOBAL takes, pushed directly or via the memo)."""
    stack: list = []
    memo: dict = {}
    imports: dict[str, None] = {}
    try:
        for op, arg, _pos in pickletools.genops(stream):
            if op.name in ("GLOBAL", "INST"):
                imports[_global_name(*arg.split(" ", 1))] = None
            elif op.name == "STACK_GLOBAL":
                module, name = stack[-2:] if len(stack) >= 2 else (None, None)
                if not (isinstance(module, str) and isinstance(name, str)):
                    return Scan(tuple(imports), f"refused: would run code (imports {_COMPUTED})")
                imports[f"{module}.{name}"] = None
            elif op.name in _EXT_OPS:
                return Scan(tuple(imports), f"refused: would run code (imports through {op.name}, a registry lookup)")
            _step(op, arg, stack, memo)
    except _CORRUPT as e:
        if getattr(stream, "left", 1) <= 0:
            return Scan(tuple(imports), _too_large())
        return Scan(tuple(imports), f"truncated or corrupt checkpoint (unreadable pickle: {str(e)[:200]})")
    return Scan(tuple(imports))


def _step(op, arg, stack: list, memo: dict) -> None:
    """Apply one opcode's effect on the stack, as pickletools describes it; only strings keep their
    value, everything else is a placeholder."""
    name = op.name
    if name in _STRING_OPS:
        stack.append(arg if isinstance(arg, str) else bytes(arg).decode("latin-1"))
    elif name in _PUT_OPS:
        memo[arg] = stack[-1]
    elif name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
    elif name in _GET_OPS:
        stack.append(memo[arg])
    elif name == "DUP":
        stack.append(stack[-1])
    else:
        to_mark, count, pushed = _EFFECTS[name]
        if to_mark:  # everything down to the topmost MARK goes, then ``count`` items under it
            while stack.pop() is not _MARK:
                pass
        if count > len(stack):
            raise ValueError(f"{name} pops {count} items from a stack of {len(stack)}")
        if count:
            del stack[-count:]
        stack.extend(pushed)


def _effect(op) -> tuple[bool, int, tuple]:
    """(pops to a MARK, items popped besides, values pushed) for one opcode, from pickletools' table."""
    before, mark = op.stack_before, pickletools.markobject
    to_mark = mark in before
    pushed = tuple(_MARK if s is mark else _OTHER for s in op.stack_after)
    return to_mark, before.index(mark) if to_mark else len(before), pushed


_EFFECTS = {op.name: _effect(op) for op in pickletools.opcodes}


def _global_name(module: str, name: str) -> str:
    """``module.name`` after the Python 2 renames torch applies to GLOBAL (``__builtin__`` -> ``builtins``)."""
    _, _, name_map, import_map = _torch_rules()
    if (module, name) in name_map:
        module, name = name_map[(module, name)]
    elif module in import_map:
        module = import_map[module]
    return f"{module}.{name}"


def _allowed(full_name: str) -> bool:
    allowed, blocked, _, _ = _torch_rules()
    if full_name.split(".", 1)[0] in blocked:
        return False
    return full_name in allowed or full_name in _user_allowed()


@functools.lru_cache(maxsize=1)
def _torch_rules():
    """(allowed names, blocked modules, name map, module map) as torch's weights_only unpickler has
    them; taken from torch itself (calling these builds dicts, it reads no file)."""
    try:
        from torch import _weights_only_unpickler as wou
        from torch._utils import IMPORT_MAPPING, NAME_MAPPING

        return frozenset(wou._get_allowed_globals()), frozenset(wou._blocklisted_modules), NAME_MAPPING, IMPORT_MAPPING
    except (ImportError, AttributeError):  # a torch without these private helpers: what torch.save writes
        from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING

        return _FALLBACK_ALLOWED, frozenset({"sys", "os", "posix", "nt"}), NAME_MAPPING, IMPORT_MAPPING


_FALLBACK_ALLOWED = frozenset(
    ["collections.OrderedDict", "builtins.set", "torch.Size", "torch.device", "torch._utils._rebuild_tensor",
     "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "torch.nn.parameter.Parameter",
     "torch.storage.UntypedStorage", "torch.storage.TypedStorage"]
    + [f"torch.{kind}Storage" for kind in ("Float", "Half", "BFloat16", "Double", "Long", "Int", "Short", "Char",
                                           "Byte", "Bool")]
    + [f"torch.{dtype}" for dtype in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8",
                                       "uint8", "bool")])


def _user_allowed() -> set[str]:
    """Names the process added with ``torch.serialization.add_safe_globals`` (not cached: they change)."""
    try:
        from torch import _weights_only_unpickler as wou

        return set(wou._get_user_allowed_globals())
    except (ImportError, AttributeError, TypeError, ValueError):  # the same names from the public API
        try:
            from torch.serialization import get_safe_globals

            return {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in get_safe_globals()}
        except (ImportError, AttributeError, TypeError, IndexError):
            return set()
