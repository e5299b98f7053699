"""The fleet's upkeep against the real Redis: messages of lapsed leases back in their queue, the
owner's claim to a lease that lapsed while Redis was away, orphaned and ended messages, queue
depth that counts only jobs that will run, windowed latencies, expired audio and gone workers."""

from __future__ import annotations

import time

import pytest

from tests.workers.conftest import REDIS_URL, flush

LEASE = 1.0


@pytest.fixture
def fleet():
    from workers.app import create_app
    from workers.batching import Puller
    from workers.jobs import JobStore, connect
    from workers.reaper import Reaper
    from workers.settings import QUEUES, Settings

    flush()
    r = connect(REDIS_URL)
    store = JobStore(r, result_expires=60, max_attempts=3, lease_seconds=LEASE)
    app = create_app(Settings(redis_url=REDIS_URL))
    reaper = Reaper(r, QUEUES, lease_seconds=LEASE, worker_expires=60, orphan_seconds=2 * LEASE)

    class Fleet:
        def queue(self, job_id: str, kind: str = "tts", request=None):
            from workers.settings import task_name

            store.create(job_id, kind, request or {"text": "x"})
            app.send_task(task_name(kind), args=[job_id], task_id=job_id)

        def take(self, kind: str = "tts"):
            """What a worker does with a delivered message: it is unacked until acked."""
            return Puller(r).get(kind)

    f = Fleet()
    f.r, f.store, f.reaper = r, store, reaper
    yield f
    app.close()


def test_a_lapsed_lease_puts_the_job_back_on_its_queue(fleet):
    fleet.queue("j1")
    pulled = fleet.take()
    assert pulled.job_id == "j1" and fleet.store.claim("j1", "w1").claimed
    assert fleet.reaper.reap() == {}  # too young to have lapsed
    assert fleet.r.llen("tts") == 0
    time.sleep(LEASE + 0.1)  # w1 died: nobody renews
    assert fleet.reaper.reap() == {"lapsed": 1}  # first sight: a grace period for the owner
    assert fleet.r.llen("tts") == 0
    time.sleep(LEASE / 2 + 0.05)
    assert fleet.reaper.reap() == {"restored": 1}
    assert fleet.reaper.reap() == {}  # moved once, whatever the number of reapers
    job = fleet.store.get("j1")
    assert job.state == "queued" and fleet.r.llen("tts") == 1 and fleet.r.hlen("unacked") == 0
    assert fleet.r.zscore("speechq:queued:tts", "j1") is not None

    again = fleet.take()
    assert again.job_id == "j1"
    claim = fleet.store.claim("j1", "w2")
    assert claim.claimed and claim.attempts == 2
    assert not fleet.store.finish("j1", "w1", "succeeded", {})  # w1 came back too late
    assert fleet.store.finish("j1", "w2", "succeeded", {})
    assert fleet.store.get("j1").completions == 1


def test_a_live_owner_takes_back_a_lease_that_lapsed_while_redis_was_away(fleet):
    fleet.queue("j1")
    fleet.take()
    fleet.store.claim("j1", "w1")
    time.sleep(LEASE + 0.1)
    assert fleet.reaper.reap() == {"lapsed": 1}
    assert fleet.store.renew(["j1"], "w1") == 1  # the owner's next renewal
    assert fleet.store.renew(["j1"], "w2") == 0  # nobody else's
    time.sleep(LEASE / 2 + 0.05)
    assert fleet.reaper.reap() == {"held": 1}
    assert fleet.store.get("j1").state == "running" and fleet.r.llen("tts") == 0


def test_the_owner_may_still_finish_a_job_put_back_until_another_claims_it(fleet):
    fleet.queue("j1")
    fleet.take()
    fleet.store.claim("j1", "w1")
    time.sleep(LEASE + 0.1)
    fleet.reaper.reap()
    time.sleep(LEASE / 2 + 0.05)
    assert fleet.reaper.reap() == {"restored": 1}
    assert fleet.store.finish("j1", "w1", "succeeded", {"text": "kept"})
    assert fleet.r.zscore("speechq:queued:tts", "j1") is None
    fleet.take()
    assert fleet.store.claim("j1", "w2").status == "done"  # the put-back message does nothing
    assert fleet.store.get("j1").completions == 1


def test_messages_of_ended_jobs_are_acked_and_orphans_go_back(fleet):
    fleet.queue("ended")
    fleet.take()
    fleet.store.claim("ended", "w1")
    fleet.store.finish("ended", "w1", "succeeded", {})  # its worker died before the ack
    fleet.queue("orphan")
    fleet.take()  # delivered to a worker that died before claiming it
    time.sleep(LEASE + 0.1)
    assert fleet.reaper.reap() == {"acked": 1, "held": 1}
    time.sleep(LEASE)
    assert fleet.reaper.reap() == {"orphan": 1}
    assert fleet.r.hlen("unacked") == 0 and fleet.r.llen("tts") == 1
    assert fleet.take().job_id == "orphan"


def test_queue_depth_counts_only_jobs_that_will_run(fleet):
    from workers.monitoring import oldest_waiting, queue_depths, recent_latencies

    for i in range(3):
        fleet.queue(f"q{i}", "asr", {"audio": "x.wav"})
    assert queue_depths(fleet.r)["asr"] == 3
    fleet.store.cancel("q0")
    assert queue_depths(fleet.r)["asr"] == 2 and fleet.r.llen("asr") == 3  # its message waits on
    fleet.store.claim("q1", "w1")
    assert queue_depths(fleet.r)["asr"] == 1
    assert fleet.store.release("q1", "w1")
    assert queue_depths(fleet.r)["asr"] == 2
    time.sleep(0.2)
    assert 0.2 <= oldest_waiting(fleet.r)["asr"] < 30 and oldest_waiting(fleet.r)["tts"] == 0

    now = time.time()
    fleet.r.rpush("speechq:latency:asr", f"{now - 10:.3f} 1.5", f"{now - 400:.3f} 99.0")
    assert recent_latencies(fleet.r, "asr") == [1.5]  # the cold start of long ago is left out


def test_expired_jobs_lose_their_stored_audio(fleet, tmp_path):
    from workers.jobs import JobStore
    from workers.reaper import Reaper
    from workers.settings import QUEUES
    from workers.storage import LocalStorage

    storage = LocalStorage(tmp_path)
    for ref in ("inputs/a1.wav", "outputs/t1.wav", "outputs/keep.wav"):
        (tmp_path / ref).parent.mkdir(exist_ok=True)
        (tmp_path / ref).write_bytes(b"RIFF")
    store = JobStore(fleet.r, result_expires=1, lease_seconds=LEASE)
    store.create("a1", "asr", {"audio": "inputs/a1.wav"})
    store.create("a2", "asr", {"audio": "outputs/keep.wav"})  # another job's output: not a2's
    store.create("t1", "tts", {"text": "x"})
    store.claim("t1", "w1")
    store.finish("t1", "w1", "succeeded", {"audio_ref": "outputs/t1.wav"})
    store.cancel("a1")
    store.cancel("a2")
    reaper = Reaper(fleet.r, QUEUES, LEASE, 60, storage)
    assert reaper.delete_expired_files() == 0
    time.sleep(1.1)
    assert reaper.delete_expired_files() == 2
    assert sorted(p.name for p in tmp_path.rglob("*.wav")) == ["keep.wav"]
    assert store.get("a1") is None  # the record went at the same time


def test_workers_gone_for_long_are_forgotten(fleet):
    from workers.monitoring import WORKERS, heartbeat, worker_keys
    from workers.reaper import Reaper
    from workers.settings import QUEUES

    heartbeat(fleet.r, "gone@host", {"device": "cpu"}, expires=1)
    heartbeat(fleet.r, "alive@host", {"device": "cpu"}, expires=60)
    assert all(0 < fleet.r.ttl(k) <= 1 for k in worker_keys("gone@host") if fleet.r.exists(k))
    time.sleep(1.1)
    # both have been silent for a second
    assert Reaper(fleet.r, QUEUES, LEASE, worker_expires=1).forget_gone_workers() == 2
    heartbeat(fleet.r, "alive@host", {"device": "cpu"}, expires=60)
    assert Reaper(fleet.r, QUEUES, LEASE, worker_expires=30).forget_gone_workers() == 0
    assert fleet.r.zrange(WORKERS, 0, -1) == ["alive@host"]
    assert not any(fleet.r.exists(k) for k in worker_keys("gone@host"))


def test_one_worker_of_the_fleet_reaps_per_interval(fleet):
    from workers.reaper import Reaper
    from workers.settings import QUEUES

    first, second = (Reaper(fleet.r, QUEUES, LEASE, 60) for _ in range(2))
    assert first.run_once(0.5, "a") is not None
    assert second.run_once(0.5, "b") is None  # a's turn
    time.sleep(0.5)
    assert second.run_once(0.5, "b") is not None


def test_a_message_lost_between_pop_and_unacked_is_sent_again(fleet):
    from workers.reaper import Reaper
    from workers.settings import QUEUES

    fleet.queue("lost")
    fleet.queue("waiting")
    fleet.queue("taken")
    fleet.r.rpop("tts")  # "lost": a consumer popped it and died before recording it as unacked
    fleet.take()  # "waiting" is delivered and unacked
    sent = []
    reaper = Reaper(fleet.r, QUEUES, LEASE, 60, orphan_seconds=1.0,
                    resend=lambda kind, job_id: sent.append((kind, job_id)))
    assert reaper.resend_lost() == 0  # not waiting long enough yet
    fleet.r.delete("speechq:reaper:lost")
    time.sleep(1.1)
    assert reaper.resend_lost() == 1 and sent == [("tts", "lost")]
    assert reaper.resend_lost() == 0  # once per half orphan period, fleet-wide
