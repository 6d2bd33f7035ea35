"""Where in a code object an exception would cut cleanup short.

A forced interrupt is raised by the task's own thread at a candidate point
(``cancelpool._inject``). Before it raises, it asks, for every frame on its stack, whether
that frame is at an offset where an exception would skip code that undoes something:
``unsafe_offsets(code)`` answers from the bytecode alone, once per code object.

An offset is unsafe when an exception raised there would not run, or would cut short,
cleanup that the source promises:

* **Exception handlers** (``except`` bodies, the exceptional copy of a ``finally`` body,
  a ``with`` block's exceptional exit). At run time these are also seen as
  ``sys.exc_info()`` being set; the bytecode marks them too, for frames whose exception
  state is not the thread's (a suspended generator's).
* **The normal-path copy of a ``finally`` body.** CPython compiles ``finally`` twice: once
  as the handler, once inlined after the ``try`` body for the normal path, where no
  handler covers it any more. The inlined copy has the same source positions as the
  handler's copy (3.11+: line and columns, ``co_positions``; 3.9, 3.10: lines), and no
  other code has: an instruction outside every handler whose position is one of a
  ``finally`` handler's is in the normal copy.
* **A ``with`` block's normal exit**: ``__exit__(None, None, None)`` is called after the
  block's handler is popped (3.9, 3.10: ``POP_BLOCK``; 3.11+: the end of the exception
  table range); an exception raised between the block's end and that call's return
  would skip ``__exit__``.
* **The call of ``__enter__``** (``SETUP_WITH`` 3.9, 3.10; ``BEFORE_WITH`` 3.11-3.13;
  ``LOAD_SPECIAL __enter__`` then ``CALL``, 3.14+): an ``__enter__`` cut short may have
  taken a lock and not recorded it. (An ``__enter__`` named so is also refused by name.)
* 3.9, 3.10 only: the gap in ``lock.acquire(); try:`` between the call's return and the
  ``SETUP_FINALLY`` that sets up the handler. (3.11+ has no instruction there.)

A frame that is calling code is at the offset of the calling instruction (``f_lasti``);
the frame a candidate point is in is judged at the offset it is about to run (a
back-edge's destination). Marking too much only delays an interrupt to the next
candidate point; marking too little could skip cleanup, so every rule errs on the side of
marking.
"""

from __future__ import annotations

import dis
import functools
import sys
from types import CodeType
from typing import Optional

__all__ = ("unsafe_offsets",)

_MODERN = sys.version_info >= (3, 11)


@functools.lru_cache(maxsize=4096)
def unsafe_offsets(code: CodeType) -> frozenset[int]:
    """Offsets in *code* where an exception would skip or cut short cleanup (see above)."""
    instructions = list(dis.get_instructions(code))
    unsafe: set[int] = set()
    if _MODERN:
        _handlers_modern(code, instructions, unsafe)
    else:
        _handlers_legacy(instructions, unsafe)
    _with_statements(instructions, unsafe)
    return frozenset(unsafe)


def _handlers_modern(code: CodeType, instructions: list[dis.Instruction], unsafe: set[int]) -> None:
    """3.11+: handler bodies from the exception table, and the normal copies of finally."""
    by_offset = {ins.offset: n for n, ins in enumerate(instructions)}
    entries = dis.Bytecode(code).exception_entries  # type: ignore[attr-defined]
    in_handler: set[int] = set()
    finally_positions: set[tuple[Optional[int], ...]] = set()
    for entry in entries:
        target = by_offset.get(entry.target)
        if target is None or not _is_cleanup_block(instructions, target):
            continue
        # A range handled by a cleanup block (COPY 3; POP_EXCEPT; RERAISE 1) runs with an
        # exception being handled: a handler body.
        body = [i for i in instructions if entry.start <= i.offset < entry.end]
        in_handler.update(i.offset for i in body)
        if not any(i.opname == "WITH_EXCEPT_START" for i in body):
            finally_positions.update(p for p in map(_position, body) if p is not None)
    unsafe.update(in_handler)
    for ins in instructions:
        if ins.offset not in in_handler and _position(ins) in finally_positions:
            unsafe.add(ins.offset)


def _position(ins: dis.Instruction) -> Optional[tuple[Optional[int], ...]]:
    """Where in the source *ins* comes from (3.11+: lines and columns), if known."""
    where = getattr(ins, "positions", None)
    if where is None or where.lineno is None:
        return None
    return tuple(where)


def _is_cleanup_block(instructions: list[dis.Instruction], n: int) -> bool:
    names = [i.opname for i in instructions[n : n + 2]]
    return names == ["COPY", "POP_EXCEPT"]


_LEGACY_SETUPS = frozenset({"SETUP_FINALLY", "SETUP_WITH", "SETUP_ASYNC_WITH"})
_LEGACY_REGION_END = frozenset(
    {"JUMP_FORWARD", "JUMP_ABSOLUTE", "RETURN_VALUE", "RERAISE", "RAISE_VARARGS"}
)


def _handlers_legacy(instructions: list[dis.Instruction], unsafe: set[int]) -> None:
    """3.9, 3.10: handlers from the SETUP_* targets; finally copies by line; POP_BLOCK."""
    lines: dict[int, int] = {}
    line = -1
    for ins in instructions:
        if ins.starts_line is not None:
            line = ins.starts_line
        lines[ins.offset] = line
    by_offset = {ins.offset: n for n, ins in enumerate(instructions)}
    in_handler: set[int] = set()
    handler_lines: set[int] = set()
    for ins in instructions:
        if ins.opname not in _LEGACY_SETUPS or ins.argval not in by_offset:
            continue
        # The handler runs from its target to the RERAISE that ends it.
        body = []
        for after in instructions[by_offset[ins.argval] :]:
            body.append(after)
            if after.opname == "RERAISE":
                break
        in_handler.update(i.offset for i in body)
        if ins.opname == "SETUP_FINALLY":
            handler_lines.update(lines[i.offset] for i in body)
    unsafe.update(in_handler)
    real = [i for i in instructions if i.opname != "EXTENDED_ARG"]
    for n, ins in enumerate(real):
        if ins.offset not in in_handler and lines[ins.offset] in handler_lines:
            unsafe.add(ins.offset)
        if ins.opname == "POP_BLOCK":
            # The block is gone; what follows up to the next unconditional jump is the
            # normal exit of a with, or the inlined copy of a finally body.
            for after in real[n:]:
                unsafe.add(after.offset)
                if after.opname in _LEGACY_REGION_END:
                    break
        elif ins.opname == "SETUP_FINALLY" and n >= 2:
            # ``lock.acquire(); try:``: between the call's return and the try, the
            # finally that would release is not set up yet.
            call, pop = real[n - 2], real[n - 1]
            if pop.opname == "POP_TOP" and call.opname.startswith("CALL"):
                unsafe.update((call.offset, pop.offset))


# Instructions that push a constant, by the name compared below: 3.15 loads None (and
# other common constants) with LOAD_COMMON_CONSTANT, and no longer with LOAD_CONST.
_CONSTANT_LOADS = {"LOAD_COMMON_CONSTANT": "LOAD_CONST"}
_EXIT_CALL_PREFIXES = (
    [("LOAD_CONST", None), ("LOAD_CONST", None), ("LOAD_CONST", None)],  # 3.11+
    [("LOAD_CONST", None), ("DUP_TOP", None), ("DUP_TOP", None)],  # 3.9, 3.10
)
_FILLER = frozenset({"CACHE", "PRECALL", "EXTENDED_ARG", "NOP"})
_ENTER_CALLS = frozenset({"SETUP_WITH", "SETUP_ASYNC_WITH", "BEFORE_WITH", "BEFORE_ASYNC_WITH"})
_ENTER_NAMES = frozenset({"__enter__", "__aenter__"})


def _with_statements(instructions: list[dis.Instruction], unsafe: set[int]) -> None:
    """The call of ``__enter__`` and the normal-exit call of ``__exit__``, every version."""
    real = [(k, i) for k, i in enumerate(instructions) if i.opname not in _FILLER]
    for n, (k, ins) in enumerate(real):
        if ins.opname in _ENTER_CALLS or ins.opname == "WITH_EXCEPT_START":
            unsafe.add(ins.offset)
        elif ins.opname == "CALL" and n >= 1:
            previous = real[n - 1][1]
            if previous.opname == "LOAD_SPECIAL" and previous.argval in _ENTER_NAMES:
                unsafe.add(ins.offset)  # 3.14+: LOAD_SPECIAL __enter__; CALL 0
        if ins.opname in ("CALL", "CALL_FUNCTION") and n >= 3:
            before = [
                (_CONSTANT_LOADS.get(i.opname, i.opname), i.argval) for _, i in real[n - 3 : n]
            ]
            if before in _EXIT_CALL_PREFIXES:
                first = real[n - 3][0]
                unsafe.update(i.offset for i in instructions[first : k + 1])
