"""Library code that runs both inside and outside cancelpool tasks."""

from __future__ import annotations

from cancelpool import CancellableThreadPoolExecutor, checkpoint, current_token_or_none


def process(items: list[int]) -> int:
    total = 0
    for item in items:
        checkpoint()  # raises TaskCancelled in a cancelled task; a no-op elsewhere
        total += item
    token = current_token_or_none()
    print("inside a task:", token is not None)
    return total


print(process([1, 2, 3]))  # outside a task
with CancellableThreadPoolExecutor(max_workers=1) as ex:
    print(ex.submit(process, [4, 5, 6]).result())
