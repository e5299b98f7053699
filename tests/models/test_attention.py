import pytest
import torch

from models.attention import (
    CROSS_ATTENTION,
    KVCache,
    LocationCrossAttention,
    MonotonicCrossAttention,
    MultiHeadAttention,
    build_cross_attention,
)
from models.transformer import Decoder, Encoder

VARIANTS = sorted(CROSS_ATTENTION)
D, H = 16, 2


def _memory(lengths, d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    S = max(lengths)
    memory = torch.randn(len(lengths), S, d, generator=g)
    mask = torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]
    return memory, mask


def _decoder(variant, dtype=torch.float64, layers=2):
    torch.manual_seed(0)
    options = {"noise_std": 1.0} if variant == "monotonic" else {}
    return Decoder(D, H, 32, layers, dropout=0.0, cross_attention=variant,
                   attention_options=options).to(dtype).eval()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("batch", [1, 3])
def test_incremental_equals_full_pass(variant, batch):
    dec = _decoder(variant)
    memory, mask = _memory([7, 5, 9][:batch])
    memory = memory.double()
    x = torch.randn(batch, 6, D, dtype=torch.float64)
    full, full_w, _ = dec(x, memory, mask)
    state, outs, ws = dec.init_state(memory, mask), [], []
    for t in range(x.size(1)):
        out, w, state = dec(x[:, t:t + 1], memory, mask, state)
        outs.append(out)
        ws.append(w[-1])
    assert (torch.cat(outs, 1) - full).abs().max() < 1e-5
    assert (torch.cat(ws, 2) - full_w[-1]).abs().max() < 1e-5


@pytest.mark.parametrize("variant", VARIANTS)
def test_incremental_equals_full_pass_float32(variant):
    dec = _decoder(variant, torch.float32)
    memory, mask = _memory([8, 4])
    x = torch.randn(2, 5, D)
    full, _, _ = dec(x, memory, mask)
    state, outs = None, []
    for t in range(5):
        out, _, state = dec(x[:, t:t + 1], memory, mask, state)
        outs.append(out)
    assert (torch.cat(outs, 1) - full).abs().max() < 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_invariance(variant):
    dec = _decoder(variant)
    memory, mask = _memory([5, 9])
    memory = memory.double()
    x = torch.randn(2, 7, D, dtype=torch.float64)
    batched, bw, _ = dec(x, memory, mask)
    alone, aw, _ = dec(x[:1, :4], memory[:1, :5], mask[:1, :5])
    assert (batched[0, :4] - alone[0]).abs().max() < 1e-9
    assert (bw[-1][0, :, :4, :5] - aw[-1][0]).abs().max() < 1e-9
    assert bw[-1][0, :, :, 5:].abs().max() == 0  # no weight on padding


def test_encoder_padding_invariance():
    torch.manual_seed(0)
    enc = Encoder(D, H, 32, 2, dropout=0.0, ffn_kernel=3).double().eval()
    x, mask = _memory([4, 8])
    x = x.double()
    batched = enc(x, mask)
    alone = enc(x[:1, :4], mask[:1, :4])
    assert (batched[0, :4] - alone[0]).abs().max() < 1e-9


@pytest.mark.parametrize("variant", VARIANTS)
def test_weights_are_distributions(variant):
    attn = build_cross_attention(variant, D, H).double().eval()
    memory, mask = _memory([6, 3])
    _, w, _ = attn(torch.randn(2, 4, D, dtype=torch.float64), memory.double(), mask)
    assert torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)))
    assert w[1, :, :, 3:].abs().max() == 0


def _naive_stepwise(p, steps, S):
    """alpha_i(j) = alpha_{i-1}(j) p_i(j) + alpha_{i-1}(j-1) (1 - p_i(j-1)), scalar by scalar."""
    alpha = [1.0] + [0.0] * (S - 1)
    rows = []
    for i in range(steps):
        new = [0.0] * S
        for j in range(S):
            new[j] = alpha[j] * p[i][j] + (alpha[j - 1] * (1 - p[i][j - 1]) if j > 0 else 0.0)
        alpha = new
        rows.append(alpha)
    return torch.tensor(rows, dtype=torch.float64)


def test_monotonic_expected_alignment_matches_naive_loop():
    torch.manual_seed(0)
    attn = MonotonicCrossAttention(D, H, bias_init=0.0).double().eval()
    memory, mask = _memory([6, 4])
    memory = memory.double()
    query = torch.randn(2, 5, D, dtype=torch.float64)
    _, weights, _ = attn(query, memory, mask)
    state = attn.init_state(memory, mask)
    q = attn.q(query).view(2, 5, H, D // H).transpose(1, 2)
    p = attn.stay_probability(q, state.keys, state.last)  # (B, H, T, S)
    for b, length in enumerate([6, 4]):
        for h in range(H):
            ref = _naive_stepwise(p[b, h, :, :length].tolist(), 5, length)
            assert (weights[b, h, :, :length] - ref).abs().max() < 1e-12


def test_monotonic_hard_inference_never_moves_backwards():
    torch.manual_seed(0)
    attn = MonotonicCrossAttention(D, H, bias_init=-0.5).eval()
    memory, mask = _memory([12, 5, 9])
    state = attn.init_state(memory, mask, window=(0, 1))
    positions = []
    for _ in range(20):
        _, w, state = attn(torch.randn(3, 1, D), memory, mask, state)
        assert torch.allclose(w.sum(-1), torch.ones(3, H, 1))
        positions.append(w[:, :, 0].argmax(-1))
    pos = torch.stack(positions, dim=-1)  # (B, H, steps)
    steps = pos.diff(dim=-1)
    assert ((steps == 0) | (steps == 1)).all()
    assert (pos.max(-1).values <= torch.tensor([11, 4, 8])[:, None]).all()
    assert (pos[:, :, -1] > 0).any()  # it does move


@pytest.mark.parametrize("variant", ["dot", "location"])
def test_window_constraint_is_monotonic_and_bounded(variant):
    torch.manual_seed(0)
    attn = build_cross_attention(variant, D, H).eval()
    memory, mask = _memory([15, 10])
    state = attn.init_state(memory, mask, window=(1, 2))
    focus = [state.focus.clone()]
    for _ in range(12):
        _, w, state = attn(torch.randn(2, 1, D), memory, mask, state)
        focus.append(state.focus.clone())
    moves = torch.stack(focus, 1).diff(dim=1)
    assert ((moves >= 0) & (moves <= 2)).all()


@pytest.mark.parametrize("variant", ["dot", "location"])
@pytest.mark.parametrize("max_dwell", [None, 3])
def test_a_stalled_focus_moves_on_after_max_dwell_steps(variant, max_dwell):
    """Flat energies: every allowed position ties and argmax keeps the first, so the focus
    would stay at 0 for ever; with max_dwell it stays max_dwell steps after arriving, moves
    on at the next, and waits at the last position."""
    attn = build_cross_attention(variant, D, H).eval()
    with torch.no_grad():
        for p in (attn.q.parameters() if variant == "dot" else [attn.energy]):
            p.zero_()
    memory, mask = _memory([4, 3])
    state = attn.init_state(memory, mask, window=(1, 2), max_dwell=max_dwell)
    focus = []
    for _ in range(16):
        _, _, state = attn(torch.randn(2, 1, D), memory, mask, state)
        focus.append(state.focus.tolist())
    if max_dwell is None:
        assert focus == [[0, 0]] * 16
    else:
        expected = [[min((step + 1) // 4, 3), min((step + 1) // 4, 2)] for step in range(16)]
        assert focus == expected


def test_location_energies_depend_on_previous_alignment():
    torch.manual_seed(0)
    attn = LocationCrossAttention(D, H).double().eval()
    memory, mask = _memory([8])
    memory = memory.double()
    query = torch.randn(1, 1, D, dtype=torch.float64)
    state = attn.init_state(memory, mask)
    _, w_start, _ = attn(query, memory, mask, state)
    shifted = torch.zeros_like(state.prev)
    shifted[..., 5] = 1.0
    state.prev, state.cum = shifted, shifted.clone()
    _, w_moved, _ = attn(query, memory, mask, state)
    assert (w_start - w_moved).abs().max() > 1e-3


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("autocast", [False, True])
def test_gradients_finite(variant, autocast):
    dec = _decoder(variant, torch.float32).train()
    memory, mask = _memory([6, 3])
    memory.requires_grad_(True)
    x = torch.randn(2, 5, D, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out, _, _ = dec(x, memory, mask)
        loss = out.float().pow(2).mean()
    loss.backward()
    grads = [p.grad for p in dec.parameters() if p.grad is not None] + [x.grad, memory.grad]
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_kv_cache_reorder_selects_hypotheses():
    attn = MultiHeadAttention(D, H).eval()
    cache = KVCache()
    x = torch.randn(3, 2, D)
    attn(x, None, cache)
    k_before, _, _ = cache._store[attn]
    cache.reorder(torch.tensor([2, 2, 0]))
    k_after, _, _ = cache._store[attn]
    assert torch.equal(k_after[0], k_before[2]) and torch.equal(k_after[2], k_before[0])


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown attention"):
        build_cross_attention("bahdanau", D, H)


def test_location_window_step_equals_the_full_length_computation():
    """Under the window, a step computes energies, the location layer and the context over the
    window's positions only; the same step over every position, masked to the window, gives
    the same weights, context and next state."""
    from dataclasses import replace

    from models.attention import NEG_INF, _merge_heads, _split_heads

    torch.manual_seed(0)
    attn = LocationCrossAttention(D, H, location_kernel=5).double().eval()
    memory, mask = _memory([40, 25])
    memory = memory.double()
    state = attn.init_state(memory, mask, window=(1, 2), max_dwell=4)
    for _ in range(30):
        query = torch.randn(2, 1, D, dtype=torch.float64)
        allowed = attn._window_mask(state, mask)
        q = _split_heads(attn.query(query), H)[:, :, 0]
        full = attn.energies(q, state).masked_fill(~allowed[:, None, :], NEG_INF).softmax(-1)
        context = attn.out(_merge_heads(full[:, :, None, :] @ state.values))
        expected = attn._moved(replace(state, prev=full, cum=state.cum + full), full)
        out, weights, state = attn(query, memory, mask, state)
        assert torch.allclose(weights[:, :, 0], full, atol=1e-12)
        assert torch.allclose(out, context, atol=1e-12)
        assert torch.equal(state.focus, expected.focus) and torch.allclose(state.cum, expected.cum)
    assert (state.focus > 5).all()  # it moved along the input
