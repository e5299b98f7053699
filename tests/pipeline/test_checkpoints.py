"""Checkpoint averaging: the weighted mean of compatible models, its record, and the CLI."""

import pytest
import torch
from click.testing import CliRunner

from pipeline.checkpoints import (
    REPO_ROOT,
    CheckpointError,
    average_checkpoints,
    lineage,
    load_checkpoint,
)
from pipeline.cli.train import average_cmd
from pipeline.inference.recognizer import Recognizer
from tests.helpers import make_tiny_asr_checkpoint


@pytest.fixture()
def two_models(tmp_path):
    """A tiny recogniser, and a copy with every weight 1 higher (a "fine-tuned" descendant)."""
    a_path = make_tiny_asr_checkpoint(tmp_path / "a.pt")
    a = load_checkpoint(a_path)
    b = {**a, "state_dict": {k: v + 1 for k, v in a["state_dict"].items()}, "progress": {"step": 7}}
    torch.save(b, tmp_path / "b.pt")
    return a, b, a_path, tmp_path / "b.pt"


def test_average_is_the_weighted_mean_and_records_its_inputs(two_models):
    a, b, *_ = two_models
    averaged = average_checkpoints([a, b], [3, 1])
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(averaged["state_dict"][name], value.float() + 0.25)
    assert [r["weight"] for r in averaged["averaged_from"]] == [0.75, 0.25]
    assert averaged["averaged_from"][1]["progress"] == {"step": 7}
    assert averaged["tokenizer"] == a["tokenizer"] and "optimizer" not in averaged
    uniform = average_checkpoints([a, b])
    name = next(iter(a["state_dict"]))
    torch.testing.assert_close(uniform["state_dict"][name], a["state_dict"][name].float() + 0.5)


def test_an_average_lists_each_training_set_once(two_models):
    a, b, *_ = two_models
    first, second = {"manifest": "data/corpus/manifest.jsonl"}, {"manifest": "data/corpus-ft/manifest.jsonl"}
    shipped = average_checkpoints([{**a, "data": first}, {**b, "data": second}, {**b, "data": second}])
    assert shipped["data"] == [first, second]  # snapshots of one run share their data
    again = average_checkpoints([shipped, {**b, "data": {"manifest": "data/corpus-pr/manifest.jsonl"}}])
    assert again["data"] == [first, second, {"manifest": "data/corpus-pr/manifest.jsonl"}]  # flat


def test_only_one_architecture_averages(two_models):
    a, b, *_ = two_models
    with pytest.raises(CheckpointError, match="'dims'"):
        average_checkpoints([a, {**b, "dims": {**b["dims"], "d_model": 64}}])
    with pytest.raises(CheckpointError, match="'tokenizer'"):
        average_checkpoints([a, {**b, "tokenizer": {**b["tokenizer"], "model": "other"}}])
    with pytest.raises(CheckpointError, match="weights"):
        average_checkpoints([a, b], [1.0])


def test_a_model_without_the_right_to_left_decoder_averages_with_one_that_has_it(tmp_path):
    """The shared weights are the weighted mean of all; the right-to-left decoder is the mean
    of the inputs that have one."""
    plain = load_checkpoint(make_tiny_asr_checkpoint(tmp_path / "plain.pt"))
    r2l = load_checkpoint(make_tiny_asr_checkpoint(tmp_path / "r2l.pt", r2l_layers=1))
    tuned = {**r2l, "state_dict": {k: v + 1 for k, v in r2l["state_dict"].items()}}
    averaged = average_checkpoints([plain, r2l, tuned], [2, 1, 1])
    assert averaged["dims"] == r2l["dims"]
    for name, value in averaged["state_dict"].items():
        if name.startswith("r2l."):
            torch.testing.assert_close(value, r2l["state_dict"][name].float() + 0.5)
        else:
            torch.testing.assert_close(value, plain["state_dict"][name].float() + 0.25)
    deeper = {**tuned, "dims": {**tuned["dims"], "n_r2l_decoder_layers": 2}}
    with pytest.raises(CheckpointError, match="'dims'"):
        average_checkpoints([r2l, deeper])


def test_a_checkpoint_from_before_the_optional_part_averages_with_a_new_one(tmp_path):
    """Checkpoints written before `n_r2l_decoder_layers` existed lack the field; a model
    fine-tuned from one has it at 0. The two are one architecture."""
    new = load_checkpoint(make_tiny_asr_checkpoint(tmp_path / "new.pt"))
    assert new["dims"]["n_r2l_decoder_layers"] == 0
    old_dims = {k: v for k, v in new["dims"].items() if k != "n_r2l_decoder_layers"}
    old = {**new, "dims": old_dims, "state_dict": {k: v + 1 for k, v in new["state_dict"].items()}}
    averaged = average_checkpoints([old, new])
    for name, value in averaged["state_dict"].items():
        torch.testing.assert_close(value, new["state_dict"][name].float() + 0.5)
    wider = {**old, "dims": {**old_dims, "d_model": old_dims["d_model"] * 2}}
    with pytest.raises(CheckpointError, match="'dims'"):
        average_checkpoints([wider, new])


def test_cli_writes_a_working_fp16_model(two_models, tmp_path):
    _, _, a_path, b_path = two_models
    out = tmp_path / "avg.pt"
    result = CliRunner().invoke(average_cmd, [str(out), str(a_path), str(b_path), "--weights", "3,1"])
    assert result.exit_code == 0, result.output
    saved = load_checkpoint(out, kinds=("asr",))
    assert all(v.dtype == torch.float16 for v in saved["state_dict"].values() if v.is_floating_point())
    assert [r["file"] for r in saved["averaged_from"]] == [str(a_path), str(b_path)]
    assert saved["provenance"]["commands"]
    assert isinstance(Recognizer.load(out, lexicon=False).transcribe(torch.randn(16_000) * 0.1).text, str)
    result = CliRunner().invoke(average_cmd, [str(out), str(a_path), "--weights", "1,2"])
    assert result.exit_code == 1 and "need as many weights" in result.output


def test_a_model_fine_tuned_from_an_average_keeps_the_averages_inputs(two_models):
    a, b, *_ = two_models
    averaged = average_checkpoints([{**a, "data": {"manifest": "one"}}, {**b, "data": {"manifest": "two"}}])
    record = lineage(averaged)  # what `--init-from` the average writes as initialised_from
    assert record["averaged_from"] == averaged["averaged_from"] and len(record["averaged_from"]) == 2
    assert record["data"] == [{"manifest": "one"}, {"manifest": "two"}]
    assert "averaged_from" not in lineage(a)


def _follow(ckpt: dict, path: str):
    """The record a `{"same_as": path}` names, such as `averaged_from[0].initialised_from`."""
    node = ckpt
    for part in path.replace("[", ".[").split("."):
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    return node


def test_a_soup_writes_each_ancestor_chain_once(two_models):
    """A model and snapshots of its fine-tunes: each snapshot's `initialised_from` is the model's
    own record, so it is written once and referred to; the next soup compresses the same way."""
    a, b, *_ = two_models
    base = average_checkpoints([{**a, "data": {"manifest": "1"}}, {**b, "data": {"manifest": "2"}}])
    tuned = [{**b, "progress": {"step": n}, "initialised_from": lineage(base)} for n in (1, 2, 3)]
    soup = average_checkpoints([base, *tuned], [3, 1, 1, 1])
    records = soup["averaged_from"]
    assert [r["initialised_from"] for r in records[1:]] == [{"same_as": "averaged_from[0]"}] * 3
    named = _follow(soup, "averaged_from[0]")
    assert {k: v for k, v in named.items() if k != "weight"} == lineage(base)
    assert [r["progress"] for r in records[1:]] == [{"step": 1}, {"step": 2}, {"step": 3}]

    again = average_checkpoints([soup, {**b, "initialised_from": lineage(soup)}])
    inner = again["averaged_from"][0]["averaged_from"]  # the first soup's record, still compressed
    assert inner == soup["averaged_from"]  # its paths start from its own record
    assert again["averaged_from"][1]["initialised_from"] == {"same_as": "averaged_from[0]"}


def test_distinct_chains_are_kept_whole(two_models):
    a, b, *_ = two_models
    one, two = {**b, "initialised_from": lineage(a)}, {**b, "initialised_from": lineage(b)}
    records = average_checkpoints([one, two])["averaged_from"]
    assert records[0]["initialised_from"] == lineage(a)
    assert records[1]["initialised_from"] == lineage(b)


def test_a_record_written_whole_by_an_older_soup_is_compressed_in_the_next(two_models):
    a, b, *_ = two_models
    base = {**a, "progress": {"step": 99}}
    old = [{"weight": 0.5, **lineage(base), "file": "asr.pt"},
           {"weight": 0.5, **lineage(b), "initialised_from": lineage(base), "file": "step-10.pt"}]
    again = average_checkpoints([{**a, "averaged_from": old}, b])
    inner = again["averaged_from"][0]["averaged_from"]
    assert inner[1]["initialised_from"] == {"same_as": "averaged_from[0]"} and inner[0] == old[0]


SHIPPED = sorted((REPO_ROOT / "checkpoints").glob("*.pt"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_each_shipped_checkpoint_says_how_it_was_made_and_what_it_scored(path):
    checkpoint = load_checkpoint(path)
    assert checkpoint["provenance"]["commands"], "no training command recorded"
    assert checkpoint.get("scores") or checkpoint.get("metrics"), "no score recorded"
    assert all(v.dtype != torch.float32 for v in checkpoint["state_dict"].values()
               if v.is_floating_point()), "not fp16"


def test_the_real_speech_recogniser_loads_with_the_shipped_language_models():
    """`asr-real.pt` keeps `asr.pt`'s units, so the subword LM and the word list fit it."""
    path = REPO_ROOT / "checkpoints" / "asr-real.pt"
    if not path.exists():
        pytest.skip("no checkpoints/asr-real.pt")
    recognizer = Recognizer.load(path)
    assert recognizer.checkpoint_info["lm"] and recognizer.checkpoint_info["lexicon"]
    assert load_checkpoint(path)["scores"]["fsdd_all"]["utterances"] == 1500
