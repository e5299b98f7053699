import pytest
import torch
from torch import nn

from models.adaptation import layer_norms_adapted
from models.asr import ASRDims, SpeechTransformer


def _model_and_loss():
    torch.manual_seed(0)
    dims = ASRDims(vocab_size=12, n_mels=16, subsampling=4, conv_channels=4, d_model=16, n_heads=2,
                   d_ff=32, n_encoder_layers=2, n_decoder_layers=1, dropout=0.0)
    model = SpeechTransformer(dims).eval()
    x, lengths = torch.randn(3, 40, 16), torch.tensor([40, 33, 25])
    y, y_lengths = torch.randint(2, 12, (3, 4)), torch.tensor([4, 3, 2])
    return model, lambda: model.loss(x, lengths, y, y_lengths)["loss"]


def _is_encoder_norm(model, name):
    return any(name.startswith(f"encoder.{n}.") for n, m in model.encoder.named_modules()
               if isinstance(m, nn.LayerNorm))


def test_only_the_parts_layer_norms_move_and_the_loss_falls():
    model, loss = _model_and_loss()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        start = loss().item()
    with layer_norms_adapted(model, model.encoder, loss, steps=20, lr=1e-2):
        with torch.no_grad():
            assert loss().item() < start
        moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
        assert moved and all(_is_encoder_norm(model, k) for k in moved)
        assert len(moved) == 2 * (2 * 2 + 1)  # gain and bias of two norms a layer and the last
        assert all(p.grad is None for p in model.parameters())


def test_the_model_is_restored_after_the_block_and_after_an_error():
    model, loss = _model_and_loss()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.decoder.requires_grad_(False)  # requires_grad comes back as it was, too
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    with layer_norms_adapted(model, model.encoder, loss, steps=3, lr=1e-2):
        pass
    with pytest.raises(RuntimeError, match="decoding failed"):
        with layer_norms_adapted(model, model.encoder, loss, steps=3, lr=1e-2):
            raise RuntimeError("decoding failed")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
