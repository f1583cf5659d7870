"""Python hooks: the escape hatch for reshaping the declarative actions can't say.

A rule's last action may be `python: {call: "package.module:function", ...}`.
The engine runs the rule's other actions; the carrier then hands the frame
to the function, for that rule's frames only:

    def function(frame, ctx) -> frame | [frames] | None

`frame` is a scapy packet (Ether; IP/IPv6 in nfqueue mode) or, with
`raw: true`, bytes. `ctx` has port ("a"/"b"), rule, timestamp_ns, mode.
The function returns the frame (changed or not), a list of frames (several
leave, in order), or None (dropped). A frame wrapped in Reply(...) leaves
by the port it came in on (e.g. an answer to an ARP request). Lengths may
change: IP/UDP lengths and checksums are recomputed afterwards unless the
action says `fix_checksums: false`.

Each hook runs on a thread of its own, never on the carrier's loop, so a hook
that is slow or hangs holds up only its own rule's frames. A hook that
raises anything (SystemExit and KeyboardInterrupt included), or has not
returned within its `timeout`, is counted (errors, timeouts) and the frame
follows `on_error` at once, at the deadline: pass (unchanged) or drop.
While a call has overrun its timeout, the rule's frames waiting behind it
and those that come follow `on_error` at once (timeouts); what the overdue
call returns at last is discarded (late). A rule's frames come out in the
order they went in.
Modules load only from the directories of `hooks_path` (the file's, or
--hooks-path): never from the working directory or sys.path.
"""
from __future__ import annotations

import dataclasses
import sys
import threading
import time
import traceback
from collections import deque

from reshaper.bridge import hook_frames
from reshaper.bridge.hook_loader import HookLoadError, load_hook
from reshaper.hook import HookContext
from reshaper.rules.model import Config

# calls: frames handed to the hook; each ends answered, as an error or as a timeout (late: answers
# that came after their frame's deadline and were discarded)
HOOK_COUNTERS = ("calls", "errors", "timeouts", "late", "dropped", "frames_out", "replies")
ERRORS_LOGGED = 10  # tracebacks printed per hook; later errors are only counted


@dataclasses.dataclass
class Hook:
    rule: str
    fn: object
    timeout_ns: int
    raw: bool
    on_error: str
    fix_checksums: bool
    counters: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(HOOK_COUNTERS, 0))


class _Call:
    """One frame on its way through a hook."""

    __slots__ = ("hook", "frame", "ctx", "l3", "deadline", "done", "out", "resolved")

    def __init__(self, hook: Hook, frame: bytes, ctx: HookContext, l3: bool, done):
        self.hook, self.frame, self.ctx, self.l3, self.done = hook, frame, ctx, l3, done
        self.deadline: int | None = None  # set when the function is called
        self.out: list[tuple[bool, bytes]] = []
        self.resolved = False


class _Failure:
    """What a hook raised, as the traceback to log."""

    def __init__(self, text: str):
        self.text = text


class _Runner:
    """A hook's thread and the frames waiting for it, oldest first."""

    def __init__(self, hook: Hook, lock: threading.Lock):
        self.hook = hook
        self.todo: deque[_Call] = deque()
        self.running: _Call | None = None  # the call the thread is in (resolved already when it overran)
        self.wake = threading.Condition(lock)
        self.thread: threading.Thread | None = None

    def overdue(self) -> bool:
        """The thread is still in a call whose frame has already followed on_error."""
        return self.running is not None and self.running.resolved

    def next_deadline(self) -> int | None:
        call = self.running
        return call.deadline if call is not None and not call.resolved else None


class Hooks:
    """The hooks of a configuration, by rule index.

    A hook's timeout runs from the moment its function is called (parsing the
    frame for it is not counted); building the bytes of what it returned
    (lengths, checksums: scapy, possibly the hook's own classes) gets the same
    time again. All state is guarded by one lock. Threads start at the first
    frame (so a carrier that drops privileges after loading starts them
    without) and end when close() was called and they have nothing left to do.
    """

    def __init__(self, config: Config, mode: str):
        self.mode = mode
        self.by_rule: dict[int, Hook] = {}
        for index, rule in enumerate(config.rules):
            action = rule.action("python")
            if action is None:
                continue
            p = action.params
            try:
                fn = load_hook(p["call"], config.hooks_path)
            except HookLoadError as exc:
                mark = action.node.start_mark
                raise HookLoadError(f"{config.path}:{mark.line + 1}:{mark.column + 1}: error: "
                                    f"rule {rule.name!r}: {exc}") from None
            self.by_rule[index] = Hook(rule.name, fn, p["timeout"], p["raw"], p["on_error"], p["fix_checksums"])
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)   # a call started, finished a step or was settled
        self._watch = threading.Condition(self._lock)     # the watchdog sleeps here until the next deadline
        self._watch_until: int | None = None
        self._watchdog: threading.Thread | None = None
        self._closed = False
        self._runners = {index: _Runner(hook, self._lock) for index, hook in self.by_rule.items()}

    def __bool__(self) -> bool:
        return bool(self.by_rule)

    def counters(self) -> dict[str, dict]:
        with self._lock:
            return {hook.rule: dict(hook.counters) for hook in self.by_rule.values()}

    # ---- for the carriers ----
    def submit(self, rule: int, frame: bytes, port: str, timestamp_ns: int, done, l3: bool = False) -> None:
        """Hands frame to rule's hook and returns at once. done(frames) is called once with what leaves
        (as run() returns it), from whichever thread settles the frame (this one, a hook's or the
        watchdog), with this object's lock held: it must be quick and must not call back into Hooks.
        The frames of one rule are settled in the order they were submitted."""
        self._submit(rule, frame, port, timestamp_ns, l3, done, watch=True)

    def run(self, rule: int, frame: bytes, port: str, timestamp_ns: int, l3: bool = False) -> list[tuple[bool, bytes]]:
        """The frames a hook makes of frame: (back by the ingress port?, bytes), in order; returns by the
        hook's deadline at the latest. Only a signal to this thread (Ctrl-C) interrupts the wait."""
        call = self._submit(rule, frame, port, timestamp_ns, l3, None, watch=False)
        runner = self._runners[rule]
        with self._lock:
            while not call.resolved:
                now = time.monotonic_ns()
                if call.deadline is None:
                    self._changed.wait()  # its thread is parsing the frame
                elif call.deadline <= now:
                    self._expire(runner, now)
                else:
                    self._changed.wait((call.deadline - now) / 1e9)
        return call.out

    def close(self) -> None:
        """No more frames: threads end once their work is done; a call that hangs keeps its thread
        (Python cannot stop one), and its frames are settled at their deadlines all the same."""
        with self._lock:
            self._closed = True
            for runner in self._runners.values():
                runner.wake.notify()
            self._watch.notify()

    # ---- inside: _expire, _timeout, _settle and _start expect self._lock held ----
    def _submit(self, rule: int, frame: bytes, port: str, timestamp_ns: int, l3: bool, done,
                watch: bool) -> _Call:
        runner = self._runners[rule]
        hook = runner.hook
        call = _Call(hook, frame, HookContext(port, hook.rule, timestamp_ns, self.mode), l3, done)
        with self._lock:
            hook.counters["calls"] += 1
            self._expire(runner, time.monotonic_ns())
            if runner.overdue():
                # the hook is still in a call that overran its timeout: nothing behind it can be answered in time
                self._timeout(call)
                return call
            runner.todo.append(call)
            if runner.thread is None:
                runner.thread = threading.Thread(target=self._serve, args=(runner,), daemon=True,
                                                 name=f"hook {hook.rule}")
                runner.thread.start()
            runner.wake.notify()
            if watch and self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch_deadlines, daemon=True, name="hook deadlines")
                self._watchdog.start()
        return call

    def _expire(self, runner: _Runner, now: int) -> None:
        """Settles the frames of runner that cannot be answered in time any more."""
        call = runner.running
        if call is not None and not call.resolved and call.deadline is not None and call.deadline <= now:
            self._timeout(call)
        if runner.overdue():
            while runner.todo:
                self._timeout(runner.todo.popleft())

    def _timeout(self, call: _Call) -> None:
        call.hook.counters["timeouts"] += 1
        self._settle(call, hook_frames.on_error(call.frame, call.hook.on_error))

    def _settle(self, call: _Call, out: list[tuple[bool, bytes]]) -> None:
        c = call.hook.counters
        if not out:
            c["dropped"] += 1
        c["frames_out"] += sum(1 for back, _ in out if not back)
        c["replies"] += sum(1 for back, _ in out if back)
        call.out, call.resolved = out, True
        self._changed.notify_all()
        if call.done is not None:
            try:
                call.done(out)
            except Exception:  # the carrier's: logged, so that no thread of ours ends on it
                print(f"reshaper: passing on a frame of hook {call.ctx.rule!r} failed:\n{traceback.format_exc()}",
                      file=sys.stderr, flush=True)

    def _start(self, call: _Call) -> None:
        """The next step of call (the function, then building its frames) has the hook's timeout."""
        call.deadline = time.monotonic_ns() + call.hook.timeout_ns
        self._changed.notify_all()
        if self._watchdog is not None and (self._watch_until is None or call.deadline < self._watch_until):
            self._watch.notify()

    def _watch_deadlines(self) -> None:
        """Settles frames at their deadlines while their hooks are busy (the watchdog thread)."""
        with self._lock:
            while True:
                now = time.monotonic_ns()
                soonest, busy = None, False
                for runner in self._runners.values():
                    self._expire(runner, now)
                    busy = busy or runner.running is not None or bool(runner.todo)
                    deadline = runner.next_deadline()
                    if deadline is not None and (soonest is None or deadline < soonest):
                        soonest = deadline
                if self._closed and not busy:
                    self._watchdog = self._watch_until = None
                    return
                self._watch_until = soonest
                self._watch.wait(None if soonest is None else max(0, soonest - now) / 1e9)

    def _serve(self, runner: _Runner) -> None:
        """A hook's thread: its frames one at a time, in order."""
        hook = runner.hook
        while True:
            with self._lock:
                while not runner.todo:
                    if self._closed:
                        runner.thread = None
                        self._watch.notify()  # the watchdog may be waiting for this thread's last call
                        return
                    runner.wake.wait()
                call = runner.todo.popleft()
                runner.running = call
            outcome = self._step(hook_frames.packet, call.frame, hook.raw, call.l3)
            if not isinstance(outcome, _Failure):
                with self._lock:
                    self._start(call)
                outcome = self._step(hook.fn, outcome, call.ctx)
                with self._lock:
                    building = not call.resolved and not isinstance(outcome, _Failure)
                    if building:
                        self._start(call)
                if building:
                    outcome = self._step(hook_frames.frames, outcome, hook.fix_checksums, call.l3)
            log = None
            with self._lock:
                runner.running = None
                if call.resolved:
                    hook.counters["late"] += 1  # its frame followed on_error at the deadline
                    continue
                if isinstance(outcome, _Failure):
                    hook.counters["errors"] += 1
                    if hook.counters["errors"] <= ERRORS_LOGGED:
                        log = outcome.text
                    outcome = hook_frames.on_error(call.frame, hook.on_error)
                self._settle(call, outcome)
            if log is not None:
                print(f"reshaper: hook of rule {hook.rule!r} raised:\n{log}", file=sys.stderr, flush=True)

    @staticmethod
    def _step(fn, *args):
        """fn(*args), or a _Failure for anything it raises. Never raises."""
        try:
            return fn(*args)
        except BaseException:  # sys.exit() or a KeyboardInterrupt inside a hook is the hook's error
            try:
                return _Failure(traceback.format_exc())
            except BaseException:  # e.g. an exception whose __str__ raises
                return _Failure("(its traceback could not be formatted)")
