"""Our own logic without workers: settings, storage paths, the batch collector, formats,
job-record transitions (against the real Redis, db 15)."""

from __future__ import annotations

import pytest

from pipeline.inference.formats import render, to_srt, to_vtt
from tests.workers.conftest import REDIS_URL, flush
from workers.batch import asr_items
from workers.batching import BatchLimits, collect
from workers.settings import Settings, celery_config
from workers.storage import LocalStorage, StorageError


def test_a_jobs_options_are_checked_by_the_worker_with_the_fields_message(tmp_path):
    """The worker fills what a job left out from its recogniser's defaults and refuses, with the
    option's own message, a value out of range, a name that is no job option, or options that
    are not an object."""
    from pipeline.inference.options import RecognitionOptions
    from workers.engines import Engines, Work

    class Recognizer:  # what Engines needs of a recogniser before it loads audio
        default_options = RecognitionOptions(beam_size=4)
        sample_rate = 16_000

    engines = Engines(Settings(storage=str(tmp_path)))
    engines._models[("asr",)] = Recognizer()
    work = Work("j", {"audio": "missing.wav", "options": {"lm_weight": 1}})
    engines.prepare("asr", work)
    assert work.options == RecognitionOptions(beam_size=4, lm_weight=1.0)
    assert isinstance(work.options.lm_weight, float)  # a whole number for a float field
    work = Work("j", {"audio": "missing.wav", "options": {"hotwords": ["Okonkwo", "new york"]}})
    engines.prepare("asr", work)
    assert work.options.hotwords == ("Okonkwo", "new york")  # JSON's list, as the field's tuple
    for options, message in (({"tempo_views": 0.5}, "tempo_views must be a number from 0 to below 0.5"),
                             ({"beam_size": 17}, "beam_size must be an integer from 1 to 16, not 17"),
                             ({"shift_views": 1.0}, "shift_views must be an integer"),
                             ({"shift_views": True}, "shift_views must be an integer"),
                             ({"r2l_weight": float("inf")}, "r2l_weight must be a number from 0"),
                             ({"batch_frames": 10**9}, "unknown option batch_frames"),
                             ({"hotwords": "okonkwo"}, "hotwords must be a list of at most 1000"),
                             ({"hotwords": ["a"] * 1001}, "not 1001 of them"),
                             ({"hotwords": ["okonkwo", ""]}, "hotwords must be a list"),
                             ({"hotword_weight": 30}, "hotword_weight must be a number from 0 to 20"),
                             ({"hotwords": ["okonkwo"], "decoder": "ctc"},
                              "hotwords need decoder 'attention'"),
                             ([1, 2], "options are an object")):
        work = Work("j", {"audio": "missing.wav", "options": options})
        engines.prepare("asr", work)
        assert isinstance(work.error, ValueError) and message in str(work.error), (options, work.error)


def test_jobs_batch_together_when_their_options_are_equal_and_adapted_ones_alone():
    from pipeline.inference.options import RecognitionOptions, TTSOptions
    from workers.engines import Work, _group_key

    def work(job_id, **options):
        return Work(job_id, {}, options=RecognitionOptions(**options))

    assert _group_key("asr", work("a", lm_weight=0.5)) == _group_key("asr", work("b", lm_weight=0.5))
    assert _group_key("asr", work("a", beam_size=16)) == _group_key("asr", work("b"))  # the default
    assert _group_key("asr", work("a", lm_weight=0.5)) != _group_key("asr", work("b"))
    adapted = [work("c", speaker_adapt_steps=10), work("d", speaker_adapt_steps=10)]
    assert _group_key("asr", adapted[0]) != _group_key("asr", adapted[1])
    assert _group_key("asr", work("e", speaker_adapt_steps=0)) == _group_key("asr", work("f"))
    names = [work(j, hotwords=["okonkwo", "ada"]) for j in ("i", "j")]
    assert _group_key("asr", names[0]) == _group_key("asr", names[1])
    assert _group_key("asr", names[0]) != _group_key("asr", work("k", hotwords=["ada"]))
    tts = [Work(j, {}, options=TTSOptions(decoder=d)) for j, d in (("g", "ar"), ("h", "nat"))]
    assert _group_key("tts", tts[0]) != _group_key("tts", tts[1])


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
    st = LocalStorage(tmp_path / "store")
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


def test_batch_asr_requests_carry_only_the_options_given():
    (item,) = asr_items(["a.wav"], beam_size=2, lm_weight=0.1, ctc_weight=None)
    assert item.request == {"audio": "a.wav", "options": {"beam_size": 2, "lm_weight": 0.1}}
    (named,) = asr_items(["a.wav"], hotwords=["okonkwo", "new york"])
    assert named.request["options"] == {"hotwords": ["okonkwo", "new york"]}
    (default,) = asr_items(["a.wav"])
    key = b"k" * 32
    assert default.job_id("asr", key) != item.job_id("asr", key)  # other options, another job
    assert item.job_id("asr", key) == item.job_id("asr", key)  # a rerun finds its jobs
    assert item.job_id("asr", b"another user's key") != item.job_id("asr", key)  # not guessable


def test_the_batch_key_is_made_once_and_private(tmp_path):
    from workers.batch import batch_secret

    env = {"XDG_DATA_HOME": str(tmp_path)}
    key = batch_secret(env)
    assert len(key) == 32 and batch_secret(env) == key
    assert (tmp_path / "speechq" / "batch.key").stat().st_mode & 0o777 == 0o600


def test_tokens_file(tmp_path):
    from workers.auth import Tokens, new_token, token_line

    alice, ops = new_token(), new_token()
    path = tmp_path / "tokens"
    path.write_text(f"# comment\n{token_line('alice', ['submit', 'read'], alice)}\n"
                    f"{token_line('ops', ['admin'], ops)}  # the on-call\n")
    tokens = Tokens(tokens_file=str(path))
    assert tokens.identify(alice).name == "alice" and not tokens.identify(alice).admin
    assert tokens.identify(ops).admin and tokens.identify("sq_guess") is None
    assert alice not in path.read_text()
    path.write_text(token_line("ops", ["admin"], ops) + "\n")  # alice revoked, no restart
    assert tokens.identify(alice) is None
    path.write_text("alice submit,fly sha256:" + "0" * 64 + "\n")
    with pytest.raises(ValueError, match="tokens:1: scopes"):
        tokens.identify(ops)
    assert Tokens(shared_token="s").identify("s").admin


def test_submit_and_batch_asr_take_the_hotwords_flags():
    from click.testing import CliRunner

    from workers.cli import main

    for command in (["asr"], ["submit", "asr"], ["batch", "asr"]):
        out = CliRunner().invoke(main, [*command, "--help"]).output
        assert "--hotwords A,B,..." in out and "--hotwords-file PATH" in out, command
        assert "--hotword-weight" in out, command
