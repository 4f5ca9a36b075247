import asyncio

from service.jobs.waiters import JobWaiters


def test_a_finished_job_wakes_its_waiters_from_another_thread():
    async def main() -> list[bool]:
        waiters = JobWaiters()
        a = waiters.subscribe("job_1")
        b = waiters.subscribe("job_2")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, waiters.finished, "job_1")
        await asyncio.wait_for(a[1].wait(), 30.0)
        waiters.unsubscribe("job_1", a)
        waiters.unsubscribe("job_2", b)
        return [a[1].is_set(), b[1].is_set(), bool(waiters._waiting)]

    assert asyncio.run(main()) == [True, False, False]
