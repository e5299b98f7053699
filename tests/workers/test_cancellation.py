"""Cancelling running jobs, our own logic without workers: the batch's cancel watch (how often it
asks Redis, which jobs it names) and the engine dropping a cancelled job from a model call
while the others of the call finish. The end-to-end cancels are in test_cancel_and_flower."""

from __future__ import annotations

import pytest
import torch

from pipeline.inference.options import RecognitionOptions
from pipeline.inference.recognizer import Transcript
from tests.workers.conftest import REDIS_URL, flush
from workers.cancellation import Cancelled, CancelWatch
from workers.engines import Engines, Work
from workers.settings import Settings


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Requests:
    """`JobStore.cancel_requested` over a set the test fills, counting the calls."""

    def __init__(self):
        self.cancelled: set[str] = set()
        self.asked: list[list[str]] = []

    def __call__(self, job_ids: list[str]) -> set[str]:
        self.asked.append(list(job_ids))
        return self.cancelled & set(job_ids)


def test_the_watch_asks_redis_at_most_once_per_interval():
    clock, requests = Clock(), Requests()
    watch = CancelWatch(requests, ["a", "b", "c"], every=0.25, clock=clock)
    should_stop = watch.stop_for(["a", "b", "c"])
    for _ in range(1000):  # a decoding loop's steps
        assert should_stop() is False
    assert len(requests.asked) == 1 and requests.asked[0] == ["a", "b", "c"]  # one pipelined read
    clock.t += 0.2
    should_stop()
    assert len(requests.asked) == 1
    clock.t += 0.06
    requests.cancelled = {"b"}
    with pytest.raises(Cancelled) as stopped:
        should_stop()
    assert stopped.value.job_ids == {"b"} and len(requests.asked) == 2
    assert watch.poll(now=True) == {"b"} and len(requests.asked) == 3


def test_the_hook_names_only_the_cancelled_jobs_of_its_own_call():
    clock, requests = Clock(), Requests()
    watch = CancelWatch(requests, ["a", "b", "c", "d"], clock=clock)
    requests.cancelled = {"c", "d"}
    assert watch.stop_for(["a", "b"])() is False  # another group's job: not this call's business
    with pytest.raises(Cancelled) as stopped:
        watch.stop_for(["a", "c", "d"])()
    assert stopped.value.job_ids == {"c", "d"}


def test_the_watch_rides_out_redis_errors():
    clock, calls = Clock(), []

    def broken(ids):
        calls.append(ids)
        raise ConnectionError("Redis restarting")

    watch = CancelWatch(broken, ["a"], clock=clock)
    assert watch.stop_for(["a"])() is False and len(calls) == 1


def test_the_watch_reads_the_job_store():
    from workers.jobs import JobStore, connect

    flush()
    store = JobStore(connect(REDIS_URL))
    for j in ("x1", "x2"):
        store.create(j, "asr", {})
        assert store.claim(j, "w").claimed
    watch = CancelWatch(store.cancel_requested, ["x1", "x2", "missing"])
    assert watch.poll() == set()
    assert store.cancel("x2") == "running"
    assert watch.poll(now=True) == {"x2"}


class StepRecognizer:
    """A recogniser whose call takes `steps` steps, asking `should_stop` before each; the test
    cancels `cancel` once the call has taken `cancel_at` steps."""

    default_options = RecognitionOptions()
    sample_rate = 16_000

    def __init__(self, requests: Requests, clock: Clock, cancel: set[str], cancel_at: int,
                 steps: int = 50):
        self.requests, self.clock, self.cancel = requests, clock, cancel
        self.cancel_at, self.steps = cancel_at, steps
        self.calls: list[list[float]] = []  # the inputs of each call

    def transcribe_batch(self, audios, options=None, should_stop=None):
        self.calls.append([float(a[0]) for a in audios])
        for step in range(self.steps):
            if len(self.calls) == 1 and step == self.cancel_at:
                self.requests.cancelled |= self.cancel
            self.clock.t += 0.1  # each step takes a while
            if should_stop is not None and should_stop():
                raise AssertionError("the workers' hook raises; it never returns True")
        return [Transcript(f"input {a[0]:g}", [], 1.0) for a in audios]


def _works(ids: list[str]) -> list[Work]:
    return [Work(j, {}, inputs=torch.full((10,), float(i)), options=RecognitionOptions())
            for i, j in enumerate(ids)]


def test_a_cancelled_job_leaves_the_call_and_the_others_finish(tmp_path):
    clock, requests = Clock(), Requests()
    engines = Engines(Settings(storage=str(tmp_path)))
    model = StepRecognizer(requests, clock, cancel={"b"}, cancel_at=20)
    engines._models[("asr",)] = model
    works = _works(["a", "b", "c"])
    watch = CancelWatch(requests, ["a", "b", "c"], every=0.25, clock=clock)
    engines.run("asr", works, watch)
    a, b, c = works
    assert b.extra.get("cancelled") and "transcript" not in b.extra and b.ok
    assert a.extra["transcript"].text == "input 0" and c.extra["transcript"].text == "input 2"
    assert not a.extra.get("cancelled") and not c.extra.get("cancelled")
    assert model.calls == [[0.0, 1.0, 2.0], [0.0, 2.0]]  # stopped, then run again without b
    assert len(requests.asked) <= 2 + 50 * 0.1 / 0.25 + 2  # throttled: not once per step


def test_a_call_whose_jobs_are_all_cancelled_is_not_run_again(tmp_path):
    clock, requests = Clock(), Requests()
    engines = Engines(Settings(storage=str(tmp_path)))
    model = StepRecognizer(requests, clock, cancel={"a", "b"}, cancel_at=5)
    engines._models[("asr",)] = model
    works = _works(["a", "b"])
    engines.run("asr", works, CancelWatch(requests, ["a", "b"], clock=clock))
    assert all(w.extra.get("cancelled") for w in works) and len(model.calls) == 1


def test_a_cancelled_tts_job_leaves_its_batch(tmp_path, monkeypatch):
    """The tiny TTS model: a cancel found between the sentences stops the call, and the other
    job's audio is what it would have been alone."""
    from tests.helpers import make_tiny_tts_checkpoint

    make_tiny_tts_checkpoint(tmp_path / "checkpoints" / "tts-nat.pt")
    monkeypatch.setenv("SPEECHQ_CHECKPOINTS", str(tmp_path / "checkpoints"))
    engines = Engines(Settings(storage=str(tmp_path / "storage")))
    works = [Work("keep", {"text": "One. Two. Three."}), Work("drop", {"text": "Four. Five."})]
    for w in works:
        engines.prepare("tts", w)
    asked = []

    def requested(ids):  # the cancel arrives once the call is under way (the 3rd look)
        asked.append(ids)
        return {"drop"} if len(asked) >= 3 else set()

    engines.run("tts", works, CancelWatch(requested, ["keep", "drop"], every=0.0))
    keep, drop = works
    assert drop.extra.get("cancelled") and "synthesis" not in drop.extra
    assert asked[3:] and all(ids == ["keep", "drop"] for ids in asked)
    alone = engines.model("tts").synthesize("One. Two. Three.")
    assert torch.equal(keep.extra["synthesis"].wav, alone.wav)


def test_task_events_are_best_effort():
    """A broker that refuses events costs the batch its events, never a job."""
    from contextlib import contextmanager

    from workers.events import TaskEvents

    opened = []

    class Events:
        @contextmanager
        def default_dispatcher(self, hostname=None):
            opened.append(hostname)
            raise ConnectionError("broker away")
            yield

    class App:
        events = Events()

    events = TaskEvents(App(), "w@host", "asr")
    events.started(["a", "b"])
    events.ended("a", "succeeded", result={"text": "x"})
    events.ended("b", "cancelled")
    assert opened == ["w@host"]  # tried once, then left alone for the rest of the batch


def test_the_soft_time_limit_is_never_taken_for_a_redis_error():
    from celery.exceptions import SoftTimeLimitExceeded

    def interrupted(ids):
        raise SoftTimeLimitExceeded()

    with pytest.raises(SoftTimeLimitExceeded):
        CancelWatch(interrupted, ["a"]).stop_for(["a"])()
