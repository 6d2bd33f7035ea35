"""Where in a code object an exception would cut cleanup short.

A forced interrupt is raised by the task's own thread at a candidate point
(``cancelpool._inject``). Before it raises, it asks, for every frame on its stack, whether
that frame is at an offset where an exception would skip code that undoes something:
``unsafe_offsets(code)`` answers from the bytecode alone, once per code object.

An offset is unsafe when an exception raised there would not run, or would cut short,
cleanup that the source promises:

* **Exception handlers** (``except`` bodies, the exceptional copy of a ``finally`` body
  with whatever it nests, a ``with`` block's exceptional exit): the code that is not
  reachable from the start without an exception (``_normal_path``: jumps and
  fall-through, not the exception edges). At run time these are also seen as
  ``sys.exc_info()`` being set; the bytecode marks them too, for frames whose exception
  state is not the thread's (a suspended generator's).
* **The normal-path copy of a ``finally`` body.** CPython compiles ``finally`` twice: once
  as the handler, once inlined after the ``try`` body for the normal path, where no
  handler covers it any more. The inlined copy has the same source positions as the
  handler's copy (3.11+: line and columns, ``co_positions``; 3.9, 3.10: the lines the
  handler code starts), and no other code has: an instruction on the normal path whose
  position is one of the handler code's is in a normal copy. (A ``with`` block's
  exceptional exit is left out of the match: its position is the ``with`` statement's,
  which the block's entry shares.)
* **A ``with`` block's normal exit**: ``__exit__(None, None, None)`` is called after the
  block's handler is popped (3.9, 3.10: ``POP_BLOCK``; 3.11+: the end of the exception
  table range); an exception raised between the block's end and that call's return
  would skip ``__exit__``.
* **The call of ``__enter__``** (``SETUP_WITH`` 3.9, 3.10; ``BEFORE_WITH`` 3.11-3.13;
  ``LOAD_SPECIAL __enter__`` then ``CALL``, 3.14+): an ``__enter__`` cut short may have
  taken a lock and not recorded it. (An ``__enter__`` named so is also refused by name.)
* **The call of ``lock.acquire(); try:``**: a Python ``acquire`` cut short after it took
  the lock would leave it held, the handler that releases it not yet covering the code.
  3.9, 3.10: the call and the gap up to the ``SETUP_FINALLY``; 3.11+: a call whose result
  is dropped or stored just before an exception-table range begins. Not found on 3.11+:
  a ``try`` whose body cannot raise (``try: pass``), which no range covers.

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
    return frozenset(_with_caches(instructions, unsafe, len(code.co_code)))


def _with_caches(instructions: list[dis.Instruction], unsafe: set[int], size: int) -> set[int]:
    """*unsafe* plus the inline cache entries of each instruction in it (3.11+).

    A frame that has called a Python function is at the offset of the call's last cache
    entry on 3.11 and 3.12 (``f_lasti``), not at the ``CALL``: every code unit an
    instruction spans counts as that instruction.
    """
    spans = set(unsafe)
    ends = [i.offset for i in instructions[1:]] + [size]
    for ins, end in zip(instructions, ends):
        if ins.offset in unsafe:
            spans.update(range(ins.offset, end, 2))
    return spans


_JUMPS = frozenset(dis.opname[op] for op in {*dis.hasjrel, *dis.hasjabs})
# Instructions after which the next one does not run (on the normal path).
_NO_FALLTHROUGH = frozenset(
    {
        "JUMP",
        "JUMP_FORWARD",
        "JUMP_BACKWARD",
        "JUMP_BACKWARD_NO_INTERRUPT",
        "JUMP_NO_INTERRUPT",
        "JUMP_ABSOLUTE",
        "RETURN_VALUE",
        "RETURN_CONST",
        "RAISE_VARARGS",
        "RERAISE",
    }
)
# 3.9, 3.10: their target is the handler, reached only by an exception.
_EXCEPTION_EDGES = frozenset({"SETUP_FINALLY", "SETUP_WITH", "SETUP_ASYNC_WITH"})


def _normal_path(instructions: list[dis.Instruction], covers: dict[int, set[int]]) -> set[int]:
    """Offsets reachable from the code's start without an exception being raised.

    *covers* maps each handler's offset to offsets its try (or with) statement covers.
    Code a handler goes on to after it has ended (``POP_EXCEPT``, unless a re-raise
    follows) is on the normal path again if that statement is: the code after
    ``try: return cache[k] except KeyError: pass``, or after a with whose ``__exit__``
    suppressed. A try nested in a handler body stays handler code, and so does what
    follows it.
    """
    index = {ins.offset: n for n, ins in enumerate(instructions)}

    def reach(starts: list[int]) -> set[int]:
        reached: set[int] = set()
        todo = list(starts)
        while todo:
            n = todo.pop()
            while n < len(instructions) and instructions[n].offset not in reached:
                ins = instructions[n]
                reached.add(ins.offset)
                if ins.opname in _JUMPS and ins.opname not in _EXCEPTION_EDGES:
                    target = index.get(ins.argval)
                    if target is not None:
                        todo.append(target)
                if ins.opname in _NO_FALLTHROUGH:
                    break
                n += 1
        return reached

    normal = reach([0])
    ended: set[int] = set()
    grown = True
    while grown:
        grown = False
        for handler, covered in covers.items():
            if handler in ended or handler not in index or not covered & normal:
                continue
            ended.add(handler)
            after = [
                n + 1
                for n in sorted(index[o] for o in reach([index[handler]]))
                if instructions[n].opname == "POP_EXCEPT"
                and n + 1 < len(instructions)
                and instructions[n + 1].opname != "RERAISE"
            ]
            more = reach(after) - normal
            if more:
                normal |= more
                grown = True
    return normal


def _handlers_modern(code: CodeType, instructions: list[dis.Instruction], unsafe: set[int]) -> None:
    """3.11+: the code only an exception reaches, and the normal copies of finally bodies.

    What is not reachable from the start without an exception is handler code: except
    bodies, the exceptional copy of finally bodies (with whatever they nest), with
    blocks' exceptional exits. A finally body's normal copy has the same source positions
    (lines and columns) as its exceptional copy, and no other code has them.
    """
    covers: dict[int, set[int]] = {}
    for entry in dis.Bytecode(code).exception_entries:  # type: ignore[attr-defined]
        covers.setdefault(entry.target, set()).update(range(entry.start, entry.end, 2))
    normal = _normal_path(instructions, covers)
    handlers = [i for i in instructions if i.offset not in normal]
    unsafe.update(i.offset for i in handlers)
    # A with block's exceptional exit has the with statement's position, which its entry
    # shares: matched, it would mark the entry too, and a loop around a with could never
    # be interrupted (the entry and the exit calls are marked by _with_statements).
    with_exits = {_position(i) for i in handlers if i.opname == "WITH_EXCEPT_START"}
    positions = {_position(i) for i in handlers} - with_exits - {None}
    for ins in instructions:
        if ins.offset in normal and _position(ins) in positions:
            unsafe.add(ins.offset)
    _try_gaps(code, instructions, unsafe)


_STORES = frozenset({"POP_TOP", "STORE_FAST", "STORE_NAME", "STORE_GLOBAL", "STORE_DEREF"})


def _try_gaps(code: CodeType, instructions: list[dis.Instruction], unsafe: set[int]) -> None:
    """3.11+: the call of ``x.acquire(); try:``.

    A call whose result is dropped or stored just before a ``try`` starts: what it took
    is released only by the handler that covers the code after it, so it must not be cut
    short (a Python ``acquire`` that takes a lock, then calls something).
    """
    # Where a handler starts covering code: a try (or with) begins there. (A range that
    # resumes an outer handler after a nested block is not a beginning.)
    first: dict[int, int] = {}
    for entry in dis.Bytecode(code).exception_entries:  # type: ignore[attr-defined]
        first[entry.target] = min(first.get(entry.target, entry.start), entry.start)
    starts = set(first.values())
    real = [i for i in instructions if i.opname not in _FILLER or i.opname == "NOP"]
    for n, ins in enumerate(real[:-2]):
        if not ins.opname.startswith("CALL") or real[n + 1].opname not in _STORES:
            continue
        after = real[n + 2 :]
        while after and after[0].opname == "NOP" and after[0].offset not in starts:
            after = after[1:]
        if not after:
            continue
        # A try begins: a handler's first covered instruction (not where a finally's
        # normal copy starts, the outer try of nested ones, nor a jump out of a try body
        # into an outer finally's range). A try whose body cannot raise (``try: pass``)
        # covers nothing, so the call before it is not found: not marked.
        begins = after[0].offset in starts and after[0].opname not in _JUMPS
        if begins and after[0].offset not in unsafe:
            unsafe.add(ins.offset)


def _position(ins: dis.Instruction) -> Optional[tuple[Optional[int], ...]]:
    """Where in the source *ins* comes from (3.11+: lines and columns), if known."""
    where = getattr(ins, "positions", None)
    if where is None or where.lineno is None:
        return None
    return tuple(where)


_LEGACY_REGION_END = frozenset(
    {"JUMP_FORWARD", "JUMP_ABSOLUTE", "RETURN_VALUE", "RERAISE", "RAISE_VARARGS"}
)


def _handlers_legacy(instructions: list[dis.Instruction], unsafe: set[int]) -> None:
    """3.9, 3.10: handler code, finally copies by line, POP_BLOCK regions, the try gap."""
    lines: dict[int, int] = {}
    line = -1
    for ins in instructions:
        if ins.starts_line is not None:
            line = ins.starts_line
        lines[ins.offset] = line
    covers = {i.argval: {i.offset} for i in instructions if i.opname in _EXCEPTION_EDGES}
    normal = _normal_path(instructions, covers)
    handlers = [i for i in instructions if i.offset not in normal]
    unsafe.update(i.offset for i in handlers)
    # Lines that handler code starts itself (3.9 gives handler code without a line of its
    # own the line of whatever precedes it), but not a with block's exceptional exit,
    # whose line (3.10) is the with statement's, shared with its entry.
    handler_lines = {
        i.starts_line
        for i in handlers
        if i.starts_line is not None and i.opname != "WITH_EXCEPT_START"
    }
    real = [i for i in instructions if i.opname != "EXTENDED_ARG"]
    for n, ins in enumerate(real):
        if ins.offset in normal and lines[ins.offset] in handler_lines:
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
            # 3.14.10 and 3.15.2 give LOAD_SPECIAL's argument as a number; its name is
            # in argrepr.
            special = {previous.argrepr, previous.argval}
            if previous.opname == "LOAD_SPECIAL" and special & _ENTER_NAMES:
                unsafe.add(ins.offset)  # 3.14+: LOAD_SPECIAL __enter__; CALL 0
        if ins.opname in ("CALL", "CALL_FUNCTION") and n >= 3:
            before = [
                (_CONSTANT_LOADS.get(i.opname, i.opname), i.argval) for _, i in real[n - 3 : n]
            ]
            if before in _EXIT_CALL_PREFIXES:
                first = real[n - 3][0]
                unsafe.update(i.offset for i in instructions[first : k + 1])
