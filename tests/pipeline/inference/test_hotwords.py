"""A call's hotwords in the recogniser's beam search, on a tiny random checkpoint."""

import pytest
import torch

from pipeline.inference.decoding import DecodingTask, hotword_scorer
from pipeline.inference.options import RecognitionOptions
from pipeline.inference.recognizer import Recognizer
from tests.helpers import make_tiny_asr_checkpoint

SR = 16_000
PLAIN = {"beam_size": 4, "tempo_views": 0.0, "shift_views": 0}


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory):
    path = make_tiny_asr_checkpoint(tmp_path_factory.mktemp("asr") / "asr.pt")
    return Recognizer.load(path, lexicon=False, word_lm=False)


@pytest.fixture(scope="module")
def clips():
    g = torch.Generator().manual_seed(5)
    return [0.3 * torch.randn(int(s * SR), generator=g) for s in (1.0, 1.6)]


def test_a_hotword_is_spelled_as_it_is_mid_sentence(recognizer):
    tokenizer = recognizer.tokenizer
    for hotword in ("birch canoe", "planks", "smooth"):
        alone = tokenizer.encode(hotword)
        within = tokenizer.encode(f"the {hotword} slid")
        assert any(within[i: i + len(alone)] == alone for i in range(len(within))), hotword
        assert tokenizer.starts_word(alone[0])


def test_the_scorer_holds_each_normalised_hotword_once(recognizer):
    scorer = hotword_scorer(recognizer.tokenizer, ("Birch Canoe!", "birch canoe", "  ", "Planks"),
                            recognizer.model.dims.eos)
    assert len(scorer.trie) == 2
    same = hotword_scorer(recognizer.tokenizer, ("Birch Canoe!", "birch canoe", "  ", "Planks"),
                          recognizer.model.dims.eos)
    assert same is scorer  # cached: the batches of one hotword list share it


def test_hotwords_join_the_search_with_their_weight(recognizer):
    def scorers(**options):
        return DecodingTask(recognizer.model, RecognitionOptions(**options), tokenizer=recognizer.tokenizer)

    encoded = recognizer._encode(torch.randn(1, 40, 80), torch.tensor([40]))
    _, weights = scorers(hotwords=("he planks",), hotword_weight=2.5).scorers([encoded])
    assert weights["hotwords"] == 2.5
    assert "hotwords" not in scorers().scorers([encoded])[1]
    assert "hotwords" not in scorers(hotwords=("he planks",), hotword_weight=0).scorers([encoded])[1]
    with pytest.raises(ValueError, match="tokenizer"):
        DecodingTask(recognizer.model, RecognitionOptions(hotwords=("he planks",))).scorers([encoded])


def test_a_jobs_hotwords_are_words_of_its_word_list(recognizer):
    from models.lexicon import Lexicon, LexiconScorer

    plain = LexiconScorer(Lexicon(["the", "birch"]), recognizer.tokenizer.pieces(),
                          recognizer.model.dims.eos)
    encoded = recognizer._encode(torch.randn(1, 40, 80), torch.tensor([40]))

    def lexicon(**options):
        task = DecodingTask(recognizer.model, RecognitionOptions(**options), lexicon=plain,
                            tokenizer=recognizer.tokenizer)
        return task.scorers([encoded])[0]["lexicon"].lexicon

    given = lexicon(hotwords=("Okonkwo", "New York"))
    assert all(word in given for word in ("okonkwo", "new", "york", "the"))
    assert "okonkwo" not in lexicon() and "okonkwo" not in plain.lexicon
    assert "okonkwo" not in lexicon(hotwords=("Okonkwo",), hotword_weight=0)


def test_a_big_weight_makes_a_random_model_say_the_hotword_and_weight_0_is_none(recognizer, clips):
    plain = [t.text for t in recognizer.transcribe_batch(clips, **PLAIN)]
    assert all("he planks" not in text for text in plain)
    biased = [t.text for t in recognizer.transcribe_batch(clips, hotwords=("he planks",),
                                                          hotword_weight=20.0, **PLAIN)]
    assert all("he planks" in text for text in biased), biased
    off = [t.text for t in recognizer.transcribe_batch(clips, hotwords=("he planks",),
                                                       hotword_weight=0.0, **PLAIN)]
    assert off == plain


def test_greedy_ctc_refuses_hotwords(recognizer, clips):
    with pytest.raises(ValueError, match="hotwords need decoder 'attention'"):
        recognizer.transcribe(clips[0], decoder="ctc", hotwords=("he planks",))
