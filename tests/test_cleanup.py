"""``cancelpool._cleanup.unsafe_offsets``: where an exception would cut cleanup short.

Every offset checked here is one a real thread was at, on the interpreter running the
test: each shape below calls a ``Probe`` from the places that matter, and the probe
records where its caller was (``f_lasti``: a frame that is calling is at its calling
instruction; on 3.11 and 3.12, at the last inline cache entry of that ``CALL``, counted
here as the ``CALL``). That is the offset ``_inject.unsafe_reason()`` judges a caller
frame at. Context managers record their caller from ``__enter__`` and ``__exit__``, so
the call of each is seen where it really happens. Nothing is hardcoded per version: the
same shapes run on CPython 3.9 to 3.15, and the tests say which positions must be marked
(cleanup) and which must not (the body of a ``try`` or ``with``, the code after it:
marking those would make the code there impossible to interrupt).

A frame at a loop's candidate point is judged at the back-edge's destination; those are
found with ``dis`` (a jump to an offset before its own).
"""

from __future__ import annotations

import contextlib
import dis
import platform
import sys
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import CodeType, FrameType, TracebackType
from typing import Optional

import pytest

from cancelpool._cleanup import unsafe_offsets

# unsafe_offsets() reads CPython's bytecode. PyPy's differs (SETUP_EXCEPT, other handler
# layouts: its except bodies are not where 3.9's are), and PyPy never asks: it has no
# forced interrupt (cancelpool.FORCE_AVAILABLE is False there).
pytestmark = pytest.mark.skipif(
    platform.python_implementation() == "PyPy", reason="PyPy: other bytecode, no forced interrupt"
)

LEGACY = sys.version_info < (3, 11)  # SETUP_* blocks and line-matched finally copies
#: A frame that called a Python function is inside the CALL's inline cache (f_lasti).
IN_CALL_CACHE = (3, 11) <= sys.version_info < (3, 13)


class Boom(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a probe to send a shape down its exceptional path."""


class Probe:
    """Records, per label, the code and offset of each frame that called it.

    Labels starting with ``safe`` are positions that must NOT be marked unsafe; every
    other label is a cleanup position that must be. Shapes call ``hit``, a plain Python
    method, as a task's code calls its own functions.
    """

    def __init__(self, fail_at: tuple[str, ...] = ()) -> None:
        self.fail_at = fail_at
        self.seen: dict[str, set[tuple[CodeType, int]]] = {}

    def hit(self, label: str) -> None:
        self.record(label, sys._getframe(1))
        if label in self.fail_at:
            raise Boom(label)

    def record(self, label: str, frame: FrameType) -> None:
        self.seen.setdefault(label, set()).add((frame.f_code, frame.f_lasti))


class Manager:
    """A context manager that records where its ``__enter__`` and ``__exit__`` are called."""

    def __init__(self, probe: Probe, name: str = "cm", suppress: bool = False) -> None:
        self.probe, self.name, self.suppress = probe, name, suppress

    def __enter__(self) -> Manager:
        self.probe.record(f"{self.name}.enter", sys._getframe(1))
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool:
        path = "normal" if exc_type is None else "error"
        self.probe.record(f"{self.name}.exit-{path}", sys._getframe(1))
        return self.suppress


class Ready:
    """An awaitable that is done at once."""

    def __await__(self) -> Generator[None, None, None]:
        yield from ()


class AsyncManager:
    """An async context manager whose entry and exit are plain calls returning awaitables.

    Plain ``def``, not ``async def``: the probe then sees the caller at the call of
    ``__aenter__``/``__aexit__`` itself, not at the ``await`` that runs a coroutine.
    """

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def __aenter__(self) -> Ready:
        self.probe.record("cm.enter", sys._getframe(1))
        return Ready()

    def __aexit__(self, *exc_info: object) -> Ready:
        path = "normal" if exc_info[0] is None else "error"
        self.probe.record(f"cm.exit-{path}", sys._getframe(1))
        return Ready()


class PyLock:
    """A lock-like object whose ``acquire``/``release`` record their callers."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def acquire(self) -> None:
        self.probe.record("gap-acquire", sys._getframe(1))

    def release(self) -> None:
        self.probe.record("cleanup-release", sys._getframe(1))


# ------------------------------------------------------------------------ the shapes
# Each takes a Probe; runs (below) say which labels raise Boom, to take each path.


def try_finally(p: Probe) -> None:
    try:
        p.hit("safe-body")
    finally:
        p.hit("cleanup")
    p.hit("safe-after")


def return_in_try_finally(p: Probe) -> int:
    try:
        p.hit("safe-body")
        return 1  # the finally body is copied before the return
    finally:
        p.hit("cleanup")


def nested_finally(p: Probe) -> None:
    try:
        try:
            p.hit("safe-body")
        finally:
            p.hit("cleanup-inner")
        p.hit("safe-between")
    finally:
        p.hit("cleanup-outer")


def try_except(p: Probe) -> None:
    try:
        p.hit("safe-body")
    except Boom:
        p.hit("cleanup-handler")
    else:
        p.hit("safe-else")
    p.hit("safe-after")


def try_except_as(p: Probe) -> None:
    try:
        p.hit("safe-body")
    except Boom as exc:  # an implicit finally deletes exc
        p.hit("cleanup-handler")
        del exc
    p.hit("safe-after")


def try_except_finally(p: Probe) -> None:
    try:
        p.hit("safe-body")
    except Boom:
        p.hit("cleanup-handler")
    finally:
        p.hit("cleanup-finally")
    p.hit("safe-after")


def try_in_finally(p: Probe) -> None:
    try:
        p.hit("safe-body")
    finally:
        try:
            p.hit("cleanup-inner-try")
        except Boom:
            p.hit("cleanup-inner-handler")
        p.hit("cleanup-after-inner")


def finally_loop_then_call(p: Probe) -> None:
    # 3.9/3.10: the normal copy's POP_BLOCK region ends at the loop's back-edge; the
    # call after the loop is matched by its line.
    try:
        p.hit("safe-body")
    finally:
        for _ in range(2):
            p.hit("cleanup-loop")
        p.hit("cleanup-after-loop")


def with_block(p: Probe) -> None:
    p.hit("safe-before")
    with Manager(p):
        p.hit("safe-body")
    p.hit("safe-after")


def with_suppressing(p: Probe) -> None:
    with Manager(p, suppress=True):
        p.hit("safe-body")
    p.hit("safe-after")


def return_in_with(p: Probe) -> None:
    with Manager(p):
        p.hit("safe-body")
        return  # __exit__(None, None, None) is copied before the return


def nested_with(p: Probe) -> None:
    with Manager(p, "outer"):
        p.hit("safe-outer-body")
        with Manager(p, "inner"):
            p.hit("safe-body")
        p.hit("safe-between")
    p.hit("safe-after")


def with_two_items(p: Probe) -> None:
    with Manager(p, "first"), Manager(p, "second"):
        p.hit("safe-body")
    p.hit("safe-after")


def with_in_finally(p: Probe) -> None:
    try:
        p.hit("safe-body")
    finally:
        with Manager(p):
            p.hit("cleanup-with-body")
        p.hit("cleanup-after-with")


def with_in_except(p: Probe) -> None:
    try:
        p.hit("safe-body")
    except Boom:
        with Manager(p):
            p.hit("cleanup-with-body")
        p.hit("cleanup-after-with")


def finally_in_with(p: Probe) -> None:
    with Manager(p):
        try:
            p.hit("safe-body")
        finally:
            p.hit("cleanup")
        p.hit("safe-after-try")


async def async_with(p: Probe) -> None:
    async with AsyncManager(p):
        p.hit("safe-body")
    p.hit("safe-after")


def drive_async_with(p: Probe) -> None:
    """Run ``async_with`` to its end: nothing in it suspends."""
    coroutine = async_with(p)
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    pytest.fail("async_with suspended")


def after_a_handler_only(p: Probe) -> None:
    # The try body always returns: the code after the try is reached only through the
    # handler, but runs after it, as plain code (the slow path after a cache miss).
    try:
        p.hit("safe-body")
        return
    except Boom:
        p.hit("cleanup-handler")
    p.hit("safe-after")
    for _ in range(2):
        p.hit("safe-loop")


def after_a_suppressed_with_only(p: Probe) -> None:
    with Manager(p, suppress=True):
        p.hit("safe-body")
        return
    p.hit("safe-after")  # reached only when __exit__ suppressed an exception


# The loop shapes: their back-edges are checked too (below).


def loop_around_try_finally(p: Probe) -> None:
    n = 0
    while True:
        try:
            p.hit("safe-body")
            n += 1
            if n == 3:
                return
        finally:
            p.hit("cleanup")


def loop_around_try_except(p: Probe) -> None:
    for _ in range(3):
        try:
            p.hit("safe-body")
        except Boom:
            p.hit("cleanup")
            continue  # a back-edge out of a handler, to the loop's head


def loop_around_with(p: Probe) -> None:
    n = 0
    while True:
        with Manager(p):
            p.hit("safe-body")
            n += 1
            if n == 3:
                return


def loop_in_with(p: Probe) -> None:
    with Manager(p):
        for _ in range(2):
            p.hit("safe-body")


def loop_in_finally(p: Probe) -> None:
    try:
        p.hit("safe-body")
    finally:
        n = 0
        while n < 2:
            p.hit("cleanup")
            n += 1


def loop_in_except(p: Probe) -> None:
    try:
        p.hit("safe-body")
    except Boom:
        for _ in range(2):
            p.hit("cleanup")


@dataclass(frozen=True)
class Shape:
    """A function, the runs that take each of its paths, and the labels they must reach."""

    run: Callable[[Probe], object]
    code: CodeType  # the code whose offsets the probe records
    runs: tuple[tuple[str, ...], ...]  # per run, the labels that raise Boom
    labels: frozenset[str]

    def __str__(self) -> str:
        return self.code.co_name


def shape(
    run: Callable[[Probe], object],
    runs: tuple[tuple[str, ...], ...],
    *labels: str,
    code: Optional[CodeType] = None,
) -> Shape:
    return Shape(run, code or run.__code__, runs, frozenset(labels))


def manager(*names: str) -> tuple[str, ...]:
    """The labels of context managers *names*: entered, exited normally and by an error."""
    return tuple(
        f"{name}.{what}" for name in names for what in ("enter", "exit-normal", "exit-error")
    )


#: The shapes whose plain code is reached only through a handler: normal path again once
#: the handler has ended (issue 10 found these marked as handler code, fixed).
AFTER_A_HANDLER = frozenset({"after_a_handler_only", "after_a_suppressed_with_only"})

NORMAL: tuple[str, ...] = ()
BODY_FAILS = ("safe-body",)

SHAPES = [
    shape(try_finally, (NORMAL, BODY_FAILS), "safe-body", "cleanup", "safe-after"),
    shape(return_in_try_finally, (NORMAL, BODY_FAILS), "safe-body", "cleanup"),
    shape(
        nested_finally,
        (NORMAL, BODY_FAILS),
        *("safe-body", "cleanup-inner", "safe-between", "cleanup-outer"),
    ),
    shape(
        try_except,
        (NORMAL, BODY_FAILS),
        *("safe-body", "cleanup-handler", "safe-else", "safe-after"),
    ),
    shape(try_except_as, (NORMAL, BODY_FAILS), "safe-body", "cleanup-handler", "safe-after"),
    shape(
        try_except_finally,
        (NORMAL, BODY_FAILS, ("safe-body", "cleanup-handler")),
        *("safe-body", "cleanup-handler", "cleanup-finally", "safe-after"),
    ),
    shape(
        try_in_finally,
        (NORMAL, BODY_FAILS, ("cleanup-inner-try",), ("safe-body", "cleanup-inner-try")),
        *("safe-body", "cleanup-inner-try", "cleanup-inner-handler", "cleanup-after-inner"),
    ),
    shape(
        finally_loop_then_call,
        (NORMAL, BODY_FAILS),
        *("safe-body", "cleanup-loop", "cleanup-after-loop"),
    ),
    shape(
        with_block, (NORMAL, BODY_FAILS), "safe-before", "safe-body", "safe-after", *manager("cm")
    ),
    shape(with_suppressing, (NORMAL, BODY_FAILS), "safe-body", "safe-after", *manager("cm")),
    shape(return_in_with, (NORMAL, BODY_FAILS), "safe-body", *manager("cm")),
    shape(
        nested_with,
        (NORMAL, BODY_FAILS),
        *("safe-outer-body", "safe-body", "safe-between", "safe-after"),
        *manager("outer", "inner"),
    ),
    shape(
        with_two_items, (NORMAL, BODY_FAILS), "safe-body", "safe-after", *manager("first", "second")
    ),
    shape(
        with_in_finally,
        (NORMAL, BODY_FAILS, ("cleanup-with-body",)),
        *("safe-body", "cleanup-with-body", "cleanup-after-with"),
        *manager("cm"),
    ),
    shape(
        with_in_except,
        (BODY_FAILS,),
        *("safe-body", "cleanup-with-body", "cleanup-after-with", "cm.enter", "cm.exit-normal"),
    ),
    shape(
        finally_in_with,
        (NORMAL, BODY_FAILS),
        *("safe-body", "cleanup", "safe-after-try"),
        *manager("cm"),
    ),
    shape(
        drive_async_with,
        (NORMAL, BODY_FAILS),
        "safe-body",
        "safe-after",
        *manager("cm"),
        code=async_with.__code__,
    ),
    shape(
        after_a_handler_only,
        (BODY_FAILS,),
        *("safe-body", "cleanup-handler", "safe-after", "safe-loop"),
    ),
    shape(
        after_a_suppressed_with_only,
        (NORMAL, BODY_FAILS),
        *("safe-body", "safe-after", *manager("cm")),
    ),
    shape(loop_around_try_finally, (NORMAL, BODY_FAILS), "safe-body", "cleanup"),
    shape(loop_around_try_except, (BODY_FAILS,), "safe-body", "cleanup"),
    shape(loop_around_with, (NORMAL, BODY_FAILS), "safe-body", *manager("cm")),
    shape(loop_in_with, (NORMAL, BODY_FAILS), "safe-body", *manager("cm")),
    shape(loop_in_finally, (NORMAL, BODY_FAILS), "safe-body", "cleanup"),
    shape(loop_in_except, (BODY_FAILS,), "safe-body", "cleanup"),
]


def observe(shape: Shape) -> dict[str, set[int]]:
    """Run every path of *shape*; the offsets its code was at, per label."""
    seen: dict[str, set[int]] = {}
    for fail_at in shape.runs:
        probe = Probe(fail_at)
        with contextlib.suppress(Boom):
            shape.run(probe)
        for label, where in probe.seen.items():
            assert {code for code, _ in where} == {shape.code}, label
            seen.setdefault(label, set()).update(offset for _, offset in where)
    return seen


def listing(code: CodeType) -> str:
    """What a failure shows: the disassembly and the offsets marked unsafe."""
    return f"{dis.Bytecode(code).dis()}\nunsafe: {sorted(unsafe_offsets(code))}"


def instruction_of(code: CodeType, offset: int) -> dis.Instruction:
    """The instruction a frame at *offset* (its ``f_lasti``) is running.

    A frame that called a Python function is at that call's instruction, except on 3.11
    and 3.12, where it is at the last inline cache entry of the ``CALL`` (the offset
    ``unsafe_reason()`` is given for it there: ``test_inject`` checks that it is judged
    as the ``CALL``). Here each position is checked as the instruction it belongs to.
    """
    instructions = list(dis.get_instructions(code))
    owner = max((i for i in instructions if i.offset <= offset), key=lambda i: i.offset)
    if owner.offset != offset:
        assert IN_CALL_CACHE, f"{offset} is inside {owner.opname} at {owner.offset}"
        assert owner.opname == "CALL", f"{offset} is inside {owner.opname} at {owner.offset}"
    return owner


def check(shape: Shape, labels: Callable[[str], bool]) -> None:
    """Run *shape*; assert each of its *labels* is marked unsafe unless named ``safe``."""
    seen = observe(shape)
    assert set(seen) == shape.labels, "a path of the shape was not taken"
    unsafe = unsafe_offsets(shape.code)
    checked = 0
    for label, offsets in sorted(seen.items()):
        if not labels(label):
            continue
        for offset in sorted(offsets):
            instruction = instruction_of(shape.code, offset)
            where = f"{label} at {instruction.offset} ({instruction.opname})"
            if label.startswith("safe"):
                assert instruction.offset not in unsafe, (
                    f"marked, but no cleanup runs there: {where}\n{listing(shape.code)}"
                )
            else:
                assert instruction.offset in unsafe, (
                    f"NOT marked, but cleanup runs there: {where}\n{listing(shape.code)}"
                )
            checked += 1
    assert checked


def is_enter(label: str) -> bool:
    return label.endswith(".enter")


@pytest.mark.parametrize(
    "shape",
    [pytest.param(s) for s in SHAPES],
    ids=str,
)
def test_cleanup_positions_are_marked_and_body_positions_are_not(shape: Shape) -> None:
    check(shape, lambda label: not is_enter(label))


# 3.14+ calls __enter__ with LOAD_SPECIAL; CALL (whose argument dis gives as a number).
@pytest.mark.parametrize(
    "shape",
    [
        # with_in_except: its with is in an except body, handler code, marked as such.
        pytest.param(s)
        for s in SHAPES
        if any(map(is_enter, s.labels))
    ],
    ids=str,
)
def test_the_call_of_enter_is_marked(shape: Shape) -> None:
    # Where the frame is while __enter__ runs: an __enter__ under another name
    # (``__enter__ = acquire``) is not refused by name, only by this mark.
    check(shape, is_enter)


def test_both_copies_of_a_finally_body_are_seen() -> None:
    # The normal path runs an inlined copy of the finally body, the exceptional path the
    # handler's: two offsets, both checked above.
    seen = observe(SHAPES[0])
    assert len(seen["cleanup"]) == 2, listing(try_finally.__code__)


def test_each_exit_of_a_with_block_is_a_different_call() -> None:
    seen = observe(shape(with_block, (NORMAL, BODY_FAILS), code=with_block.__code__))
    assert seen["cm.exit-normal"].isdisjoint(seen["cm.exit-error"])
    assert seen["cm.enter"].isdisjoint(seen["cm.exit-normal"] | seen["cm.exit-error"])


def back_edge_destinations(code: CodeType) -> set[int]:
    """Where the loops of *code* jump back to: a jump whose target is before it."""
    jumps = set(dis.hasjrel) | set(dis.hasjabs) | set(getattr(dis, "hasjump", ()))
    return {
        i.argval
        for i in dis.get_instructions(code)
        if i.opcode in jumps and isinstance(i.argval, int) and i.argval <= i.offset
    }


@pytest.mark.parametrize(
    ("function", "marked"),
    [
        (loop_around_try_finally, False),
        (loop_around_try_except, False),
        (loop_around_with, False),
        (loop_in_with, False),
        (loop_in_finally, True),
        (loop_in_except, True),
        (finally_loop_then_call, True),
        pytest.param(after_a_handler_only, False),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)),
)
def test_back_edge_destinations(function: Callable[[Probe], object], marked: bool) -> None:
    # A loop around cleanup must stay interruptible at its head; a loop inside cleanup
    # must not be interrupted at all.
    code = function.__code__
    destinations = back_edge_destinations(code)
    assert destinations, listing(code)
    unsafe = unsafe_offsets(code)
    for destination in sorted(destinations):
        assert (destination in unsafe) is marked, f"back-edge to {destination}\n{listing(code)}"


def acquire_then_try(p: Probe, lock: PyLock) -> None:
    lock.acquire()
    try:
        p.hit("safe-body")
    finally:
        lock.release()


def test_acquire_then_try_gap_is_marked() -> None:
    # While acquire() runs, its caller is at the call; from the call's return to the try,
    # the finally that would release is not set up yet.
    probe = Probe()
    acquire_then_try(probe, PyLock(probe))
    code = acquire_then_try.__code__
    unsafe = unsafe_offsets(code)
    ((_, release),) = probe.seen["cleanup-release"]
    assert instruction_of(code, release).offset in unsafe, listing(code)
    ((_, body),) = probe.seen["safe-body"]
    assert instruction_of(code, body).offset not in unsafe, listing(code)
    ((_, acquire),) = probe.seen["gap-acquire"]
    call = instruction_of(code, acquire)
    assert call.offset in unsafe, listing(code)
    if LEGACY:
        after = [i for i in dis.get_instructions(code) if i.offset > call.offset]
        assert [i.opname for i in after[:2]] == ["POP_TOP", "SETUP_FINALLY"], listing(code)
        assert after[0].offset in unsafe, listing(code)


def plain(x: int) -> int:
    total = 0
    for n in range(x):
        total += n
    return total


def test_plain_code_has_no_unsafe_offsets() -> None:
    assert unsafe_offsets(plain.__code__) == frozenset()
