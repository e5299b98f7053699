"""Our own logic without workers: settings, storage paths, the batch collector, formats,
job-record transitions (against the real Redis, db 15)."""

from __future__ import annotations

import pytest

from pipeline.inference.formats import render, to_srt, to_vtt
from tests.workers.conftest import REDIS_URL, flush
from workers.batch import asr_items
from workers.batching import BatchLimits, collect
from workers.settings import ASR_BEAM_SIZE, ASR_WEIGHTS, Settings, celery_config
from workers.storage import Storage, StorageError


def test_asr_job_defaults_are_the_recognisers():
    """A job that names no beam decodes as `speechq asr` does; the weights it may set exist."""
    from pipeline.inference.recognizer import RecognitionOptions

    assert ASR_BEAM_SIZE == RecognitionOptions().beam_size
    assert set(ASR_WEIGHTS) <= set(RecognitionOptions.__dataclass_fields__)


def test_asr_weights_and_views_are_checked_and_keep_their_kinds():
    from workers.engines import asr_weights

    request = {"lm_weight": 1, "shift_views": 0, "tempo_views": 0, "ctc_weight": None}
    assert asr_weights(request) == (("lm_weight", 1.0), ("tempo_views", 0.0), ("shift_views", 0))
    assert isinstance(dict(asr_weights(request))["shift_views"], int)  # RecognitionOptions' kind
    for bad, message in (({"tempo_views": 0.5}, "tempo_views must be a number from 0 to below 0.5"),
                         ({"tempo": 0.4}, "tempo must be a number from 0.5 to 2"),
                         ({"speaker_adapt_steps": 501}, "speaker_adapt_steps must be an integer"),
                         ({"shift_views": 4}, "shift_views must be an integer from 0 to 3"),
                         ({"shift_views": 1.0}, "shift_views must be an integer"),
                         ({"shift_views": True}, "shift_views must be an integer"),
                         ({"r2l_weight": float("inf")}, "r2l_weight must be a number >= 0")):
        with pytest.raises(ValueError, match=message):
            asr_weights(bad)


def test_a_job_adapted_to_its_speaker_is_decoded_alone():
    from workers.engines import Work, _group_key, asr_weights

    def work(job_id, **request):
        return Work(job_id, request, options=(2, "attention", asr_weights(request)))

    plain = [work("a", lm_weight=0.5), work("b", lm_weight=0.5)]
    adapted = [work("c", speaker_adapt_steps=10), work("d", speaker_adapt_steps=10)]
    assert _group_key("asr", plain[0]) == _group_key("asr", plain[1])
    assert _group_key("asr", adapted[0]) != _group_key("asr", adapted[1])
    assert dict(adapted[0].options[2])["speaker_adapt_steps"] == 10  # an int, as the option is
    unadapted = [work(job_id, speaker_adapt_steps=0) for job_id in "ef"]
    assert _group_key("asr", unadapted[0]) == _group_key("asr", unadapted[1])


def test_settings_from_env_and_celery_config():
    s = Settings.from_env({"SPEECHQ_REDIS_URL": "redis://h:1/2", "SPEECHQ_MAX_BATCH_SIZE": "8",
                           "SPEECHQ_TEST_HOOKS": "yes", "SPEECHQ_PRECISION": "bf16"})
    assert s.redis_url == "redis://h:1/2" and s.max_batch_size == 8 and s.test_hooks
    assert s.precision == "bf16" and Settings().precision == "fp32"
    assert Settings.from_env(s.to_env()) == s
    c = celery_config(s)
    assert c["accept_content"] == ["json"] and c["task_serializer"] == "json"
    assert c["task_acks_late"] and c["task_reject_on_worker_lost"] and c["worker_prefetch_multiplier"] == 1
    assert c["broker_transport_options"]["visibility_timeout"] > c["task_time_limit"] > c["task_soft_time_limit"]
    assert c["task_routes"]["speechq.asr"]["queue"] == "asr" and c["task_track_started"]
    assert c["worker_send_task_events"] and c["result_expires"] == s.result_expires
    assert Settings().redis_url == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize("bad", [{"SPEECHQ_VISIBILITY_TIMEOUT": "100", "SPEECHQ_HARD_TIME_LIMIT": "200"},
                                 {"SPEECHQ_SOFT_TIME_LIMIT": "400"}, {"SPEECHQ_MAX_BATCH_SIZE": "zero"},
                                 {"SPEECHQ_PRECISION": "int8"}])
def test_settings_refuse_nonsense(bad):
    with pytest.raises(ValueError):
        Settings.from_env(bad)


def test_storage_refuses_paths_outside(tmp_path):
    st = Storage(tmp_path / "store")
    (tmp_path / "store").mkdir()
    (tmp_path / "secret.wav").write_bytes(b"x")
    (tmp_path / "store" / "link.wav").symlink_to(tmp_path / "secret.wav")
    for ref in ("../secret.wav", str(tmp_path / "secret.wav"), "link.wav", "inputs/../../secret.wav", ""):
        with pytest.raises(StorageError):
            st.resolve(ref)
    ref = st.put_file(tmp_path / "secret.wav", "job1")
    assert ref == "inputs/job1.wav" and st.resolve(ref).read_bytes() == b"x"
    assert st.put_file(st.resolve(ref), "job2") == ref  # already inside: used in place
    assert not list((tmp_path / "store" / "inputs").glob(".*.tmp"))


def test_collect_stops_at_size_budget_and_wait():
    items = iter(range(100))
    batch, alone = collect(lambda: next(items), lambda i: 1.0, 1.0, BatchLimits(4, 100, 1.0))
    assert batch == [0, 1, 2] and alone == []
    items = iter(range(100))
    batch, _ = collect(lambda: next(items), lambda i: 10.0, 5.0, BatchLimits(16, 30, 1.0))
    assert batch == [0, 1, 2]  # 5 + 10 + 10 < 30, the third overflows and ends it
    batch, _ = collect(lambda: None, lambda i: 1.0, 1.0, BatchLimits(16, 100, 0.01))
    assert batch == []
    items = iter([1, 2, 3])
    batch, alone = collect(lambda: next(items, None), lambda i: None if i == 2 else 1.0, 0, BatchLimits(16, 99, 0.01))
    assert batch == [1, 3] and alone == [2]


def test_subtitle_formats():
    t = {"text": "hello there general kenobi", "duration": 3.0,
         "words": [{"word": w, "start": i * 0.7, "end": i * 0.7 + 0.5, "confidence": 1.0}
                   for i, w in enumerate("hello there general kenobi".split())]}
    srt = to_srt(t)
    assert srt.startswith("1\n00:00:00,000 --> 00:00:02,600\nhello there general kenobi")
    assert to_vtt(t).startswith("WEBVTT\n\n00:00:00.000 --> ")
    assert render(t, "txt") == "hello there general kenobi\n"
    long = {**t, "words": t["words"] * 5}
    assert to_srt(long).count("-->") > 1  # split into readable cues
    assert to_srt({"text": "", "words": [], "duration": 1}) == ""


def test_job_transitions_in_redis():
    from workers.jobs import JobStore, connect

    flush()
    store = JobStore(connect(REDIS_URL), result_expires=60, max_attempts=2, lease_seconds=5)
    assert store.create("j1", "tts", {"text": "hi"}) and not store.create("j1", "tts", {"text": "other"})
    assert store.get("j1").request == {"text": "hi"} and store.get("j1").state == "queued"
    c = store.claim("j1", "w1")
    assert c.claimed and c.attempts == 1 and c.request == {"text": "hi"}
    assert store.claim("j1", "w2").status == "busy"
    assert not store.finish("j1", "w2", "succeeded", {"x": 1})  # not its job
    assert store.finish("j1", "w1", "succeeded", {"x": 1}, batch_size=3)
    assert store.claim("j1", "w2").status == "done"
    j = store.get("j1")
    assert j.state == "succeeded" and j.result == {"x": 1} and j.completions == 1 and j.batch_size == 3
    assert store.r.ttl("speechq:job:j1") > 0

    store.create("j2", "tts", {})
    store.claim("j2", "w1")
    store.r.delete("speechq:lease:j2")  # its worker died: the lease lapsed
    assert store.claim("j2", "w2").attempts == 2
    store.r.delete("speechq:lease:j2")
    assert store.claim("j2", "w3").status == "dead"
    assert store.get("j2").error_type == "DeadLetter" and store.dead_letters() == ["j2"]

    store.create("j3", "asr", {})
    assert store.cancel("j3") == "cancelled" and store.claim("j3", "w1").status == "done"
    store.create("j4", "asr", {})
    store.claim("j4", "w1")
    assert store.cancel("j4") == "running" and store.cancel_requested(["j4", "j3"]) == {"j4"}
    assert store.cancel("missing") == "missing"
    assert store.refuse("j4", "no") is False  # running: not refusable

    store.create("j5", "tts", {"text": "hi"})
    assert store.claim("j5", "w1").batchable
    assert store.release("j5", "w1") and not store.release("j5", "w1")  # batch over the soft limit
    c = store.claim("j5", "w2")
    assert c.claimed and c.attempts == 1 and c.run_alone and not c.batchable


def test_batch_asr_requests_carry_only_the_weights_given():
    (item,) = asr_items(["a.wav"], beam_size=2, lm_weight=0.1, ctc_weight=None)
    assert item.request == {"audio": "a.wav", "beam_size": 2, "decoder": "attention", "lm_weight": 0.1}
    (default,) = asr_items(["a.wav"])
    assert default.job_id("asr") != item.job_id("asr")  # other options, another job
