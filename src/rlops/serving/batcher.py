"""Micro-batching: concurrent ``/v1/act`` requests share one numpy forward.

Handlers :meth:`MicroBatcher.submit` their validated rows and await a future.
One asyncio task gathers pending requests, up to ``max_batch_size`` rows or
``max_batch_wait_ms`` after the first arrival, stacks them into ``[B, ...]``
arrays and runs :meth:`Behaviour.decide` on a single worker thread, so the
event loop never runs numpy and never blocks; while a batch runs the next one
fills up, which is what batches under load (Clipper, NSDI 2017; Triton's
dynamic batcher).

A request is answered exactly once: by its batch, or with
:class:`PolicyTimeout` when its deadline passes first (still queued, or in a
batch that runs late: each forward is bounded by the earliest deadline it
carries, one timer per batch rather than one per request), or with the
exception the policy raised; the handler turns the last two into its
fallback. A handler that gives up cancels its future, and the batcher skips
cancelled requests (both sides run on the event loop thread, so no lock is
needed).

>>> batcher = MicroBatcher(behaviour, max_batch_size=64, max_wait_s=0.0,  # doctest: +SKIP
...                        timeout_s=0.25)
>>> batcher.start()  # doctest: +SKIP
>>> outcome = await batcher.submit(rows)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import time
from dataclasses import dataclass

import numpy as np

from rlops.serving.behaviour import BatchDecision, Behaviour
from rlops.serving.schemas import ActRow


@dataclass
class Pending:
    """One submitted request: its rows and the future its handler awaits.

    Attributes:
        rows: the validated rows.
        future: resolved with ``(decision, offset)`` (this request's rows are
            ``offset : offset + len(rows)`` of the batch decision) or with the
            exception the policy raised; cancelled by a handler that gave up.
    """

    rows: list[ActRow]
    future: asyncio.Future[tuple[BatchDecision, int]]
    deadline: float
    """Event-loop time by which the request must be answered."""


INLINE_MAX_S = 0.0005
"""With ``inline=True``, a batch runs on the event loop (saving two thread
hand-offs, ~0.1 ms per request on a quiet machine) while the policy's average
forward stays below this and no forward is running on the worker thread;
otherwise on the worker thread, where the request deadline can pre-empt it."""


class PolicyTimeout(TimeoutError):
    """The policy did not answer a batch within the request deadline."""


class MicroBatcher:
    """Gathers pending requests into batches for one worker thread.

    Args:
        behaviour: the decision rule (called on the worker thread only).
        max_batch_size: most rows per forward (a larger single request runs alone).
        max_wait_s: how long to wait for more rows after the first arrives.
        timeout_s: most time one batch may spend in the policy.
        on_batch: called on the loop thread with the row count of each forward.
        inline: allow forwards on the event loop itself (see :data:`INLINE_MAX_S`);
            only for policies that cannot block (no I/O, no locks, bounded
            compute), such as the artifact's own numpy inference.
    """

    def __init__(
        self,
        behaviour: Behaviour,
        *,
        max_batch_size: int,
        max_wait_s: float,
        timeout_s: float,
        on_batch: collections.abc.Callable[[int], None] | None = None,
        inline: bool = False,
    ) -> None:
        self.behaviour = behaviour
        self.inline = inline
        self.forward_s = 0.0
        """Moving average of the policy's forward time (seconds)."""
        self._in_thread = 0
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.timeout_s = timeout_s
        self.on_batch = on_batch
        self._pending: collections.deque[Pending] = collections.deque()
        self._rows = 0
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="rlops-policy"
        )

    def start(self) -> None:
        """Start the batching task on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="rlops-batcher")

    @property
    def running(self) -> bool:
        """The batching task is alive and accepting requests."""
        return self._task is not None and not self._task.done() and not self._stopping

    @property
    def backlog(self) -> int:
        """Rows waiting for a forward."""
        return self._rows

    def submit(self, rows: list[ActRow], deadline: float | None = None) -> Pending:
        """Queue ``rows`` (from the loop thread); await ``pending.future`` for the answer.

        Args:
            rows: validated rows.
            deadline: event-loop time by which to answer (default: now + ``timeout_s``).
        """
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self.timeout_s
        pending = Pending(rows, loop.create_future(), deadline)
        self._pending.append(pending)
        self._rows += len(rows)
        self._wakeup.set()
        if self._rows >= self.max_batch_size:
            self._full.set()
        return pending

    async def stop(self) -> None:
        """Answer everything queued, then stop the task and the worker thread."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _take(self) -> list[Pending]:
        batch: list[Pending] = []
        rows = 0
        now = asyncio.get_running_loop().time()
        while self._pending:
            head = self._pending[0]
            if head.future.done():  # its handler gave up (fallback): skip the forward
                self._pending.popleft()
                self._rows -= len(head.rows)
                continue
            if head.deadline <= now:  # waited past its deadline: answer it now
                self._pending.popleft()
                self._rows -= len(head.rows)
                head.future.set_exception(PolicyTimeout("deadline passed while queued"))
                continue
            if batch and rows + len(head.rows) > self.max_batch_size:
                break
            self._pending.popleft()
            self._rows -= len(head.rows)
            batch.append(head)
            rows += len(head.rows)
        if self._rows < self.max_batch_size:
            self._full.clear()
        return batch

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.max_wait_s > 0 and self._rows < self.max_batch_size and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.max_wait_s)
            batch = self._take()
            if batch:
                await self._forward(batch)

    async def _forward(self, batch: list[Pending]) -> None:
        rows = [row for pending in batch for row in pending.rows]
        obs = np.stack([row.obs for row in rows])
        masks = None
        if any(row.mask is not None for row in rows):
            n = next(row.mask for row in rows if row.mask is not None).shape[0]
            masks = np.ones((len(rows), n), dtype=bool)
            for i, row in enumerate(rows):
                if row.mask is not None:
                    masks[i] = row.mask
        if self.on_batch is not None:
            self.on_batch(len(rows))
        loop = asyncio.get_running_loop()
        try:
            if self.inline and self._in_thread == 0 and self.forward_s < INLINE_MAX_S:
                decision = self._timed(obs, masks)
            else:
                budget = max(0.0, min(p.deadline for p in batch) - loop.time())
                self._in_thread += 1
                call = loop.run_in_executor(self._executor, self._timed, obs, masks)
                call.add_done_callback(self._thread_done)
                try:
                    decision = await asyncio.wait_for(asyncio.shield(call), budget)
                except TimeoutError:
                    call.cancel()  # still queued behind a slow forward: drop it
                    message = f"policy took longer than {budget:.3g} s"
                    self._fail(batch, PolicyTimeout(message))
                    return
        except Exception as exc:  # the policy's failure is answered by the fallback
            self._fail(batch, exc)
            return
        offset = 0
        for pending in batch:
            if not pending.future.done():
                pending.future.set_result((decision, offset))
            offset += len(pending.rows)

    def _timed(self, obs: np.ndarray, masks: np.ndarray | None) -> BatchDecision:
        start = time.perf_counter()
        try:
            return self.behaviour.decide(obs, masks)
        finally:
            elapsed = time.perf_counter() - start
            previous = self.forward_s
            self.forward_s = elapsed if previous == 0.0 else 0.8 * previous + 0.2 * elapsed

    def _thread_done(self, _: object) -> None:
        self._in_thread -= 1

    @staticmethod
    def _fail(batch: list[Pending], exc: BaseException) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(exc)
