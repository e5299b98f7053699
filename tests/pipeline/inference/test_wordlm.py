"""Word n-gram models read from ARPA files and from pocketsphinx's, and the recogniser using one."""

import math

import pytest
import torch

from pipeline.inference.options import RecognitionOptions
from pipeline.inference.recognizer import Recognizer
from pipeline.inference.wordlm import NGramWordLM, WordLMError, load_word_lm, pocketsphinx_lm_path
from tests.helpers import make_tiny_asr_checkpoint

# log10 probabilities and back-off weights, as ARPA files hold them
ARPA = """
\\data\\
ngram 1=5
ngram 2=3

\\1-grams:
-1.0 </s>
-99 <s> -0.5
-0.6 the -0.2
-0.9 wind -0.1
-1.2 blew -0.3

\\2-grams:
-0.1 <s> the
-0.2 the wind
-0.3 wind blew

\\end\\
"""


@pytest.fixture(scope="module")
def arpa(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "tiny.arpa"
    path.write_text(ARPA)
    return path


def _ln(log10: float) -> float:
    return log10 * math.log(10)


def test_an_arpa_model_gives_natural_log_probabilities_with_back_off(arpa):
    lm = NGramWordLM(arpa, unknown_char_logprob=-3.0)
    assert lm.order == 2
    assert lm.logprob("wind", ("the",)) == pytest.approx(_ln(-0.2), abs=1e-3)
    assert lm.logprob("blew", ("the",)) == pytest.approx(_ln(-0.2 - 1.2), abs=1e-3)  # backed off
    assert lm.logprob("</s>", ("blew",)) == pytest.approx(_ln(-0.3 - 1.0), abs=1e-3)
    assert lm.logprob("kite", ("the",)) == -12.0  # not in the model: by its letters
    assert lm.logprob("kitekite", ("the",)) == -24.0


def test_a_missing_or_bad_file_is_a_clear_error(tmp_path):
    with pytest.raises(WordLMError, match="no such"):
        NGramWordLM(tmp_path / "none.arpa")
    (tmp_path / "bad.arpa").write_text("not a language model\n")
    with pytest.raises(WordLMError, match="n-gram"):
        NGramWordLM(tmp_path / "bad.arpa")


def test_pocketsphinx_english_model_knows_everyday_word_context():
    lm = load_word_lm(pocketsphinx_lm_path())
    assert lm.order == 3 and load_word_lm(pocketsphinx_lm_path()) is lm  # read once per process
    assert lm.logprob("blew", ("the", "wind")) > lm.logprob("blue", ("the", "wind")) + 3
    assert lm.logprob("tales", ("<s>", "fairy")) > lm.logprob("tails", ("<s>", "fairy"))


@pytest.fixture(scope="module")
def asr_path(tmp_path_factory):
    return make_tiny_asr_checkpoint(tmp_path_factory.mktemp("asr") / "asr.pt")


def test_recognizer_loads_a_word_lm_and_weight_zero_is_none(asr_path, arpa):
    wav = torch.randn(16_000) * 0.1
    plain = Recognizer.load(asr_path, word_lm=False)
    assert plain.word_lm is None and plain.checkpoint_info["word_lm"] is None
    fused = Recognizer.load(asr_path, word_lm=arpa)
    assert fused.checkpoint_info["word_lm"] == str(arpa) and fused.word_lm.order == 2
    assert fused.transcribe(wav, word_lm_weight=0.0).text == plain.transcribe(wav).text
    assert isinstance(fused.transcribe(wav, word_lm_weight=1.0, word_bonus=0.5).text, str)
    default = Recognizer.load(asr_path)
    assert default.checkpoint_info["word_lm"] == str(pocketsphinx_lm_path())
    with pytest.raises(ValueError, match="word_lm_weight"):
        RecognitionOptions(word_lm_weight=-0.1)
