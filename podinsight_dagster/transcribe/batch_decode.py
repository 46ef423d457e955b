"""One batch of model windows through Whisper: encode, beam search, word alignment, and each chunk's result placed.

A batch holds windows of any episodes in one language (``packing.take_windows`` makes
them). The results land in each episode (``Episode.outputs`` / ``raw`` / ``done``); word
placement runs per episode in chunk order, each episode carrying its own last-speech time,
exactly as ``BatchedInferencePipeline`` does for one episode. Also here: the pipeline's
language detection on an episode's first 30 s of speech.
"""

from __future__ import annotations

from math import ceil

import numpy as np

from podinsight_dagster.transcribe import whisper_internals as wi
from podinsight_dagster.transcribe.engine import Engine
from podinsight_dagster.transcribe.packing import PackStats, Window, gap_frames, unpack_window, window_features
from podinsight_dagster.transcribe.prepare import Episode


def run_batch(engine: Engine, windows: list[Window], language: str) -> PackStats:
    """Decode one batch of windows (chunks of any episodes, one language); results land in each episode.

    A window is one chunk, or several one-chunk episodes packed with silence between them
    (``pack_gap_sec``): one encoder pass and one beam search for all of them, the words then
    split back per episode by their timings. Beam search runs over the whole batch (that is
    where batching pays). On CPU the encoder and the word alignment run window by window: there
    a batch of eight 30-s windows is slower to encode and to align than eight single windows
    (the attention maps of the batch do not fit the caches), and the decoder takes the encoder
    outputs stacked. On CUDA the batch goes through both whole.

    Returns what this batch did: windows, episodes packed, packed results to decode again alone.
    """
    model = engine.model
    fps = wi.frames_per_second(model)
    tokenizer, opts = engine.decoding(language)
    built = [window_features(w, gap_frames(engine)) for w in windows]
    stats = PackStats(windows=len(windows), packed=sum(len(w) for w in windows if len(w) > 1))
    features = np.stack([f for f, _ in built])
    per_chunk = engine.device == "cpu" and len(windows) > 1
    with engine.lock:
        if per_chunk:
            encoded = [wi.encode(model, features[i:i + 1]) for i in range(len(windows))]
            encoder_output = wi.stack_encoded(encoded)
        else:
            encoder_output = wi.encode(model, features)
            encoded = [encoder_output]
        outputs = wi.generate(model, encoder_output, tokenizer, opts, len(windows))
        # As BatchedInferencePipeline.forward: one chunk decoded without timestamps is one subsegment.
        # A packed window is decoded as one chunk in its own time (offset 0) and split afterwards.
        chunk_segments, sizes = [], []
        for window, (_f, spans), output in zip(windows, built, outputs):
            if len(window) == 1:
                ep, ci = window[0]
                meta = ep.metadata[ci]
            else:
                meta = {"offset": 0.0, "duration": spans[-1][1] / fps}
            size = int(ceil(meta["duration"]) * fps)
            sizes.append(size)
            subsegments = wi.split_segments_by_timestamps(
                model, tokenizer, output["tokens"], time_offset=meta["offset"], segment_size=size,
                segment_duration=meta["duration"])
            chunk_segments.append([
                dict(text=tokenizer.decode(sub["tokens"]), avg_logprob=output["avg_logprob"],
                     no_speech_prob=output["no_speech_prob"], tokens=sub["tokens"], start=sub["start"],
                     end=sub["end"], compression_ratio=wi.compression_ratio(tokenizer.decode(sub["tokens"])),
                     seek=int(meta["offset"] * fps))
                for sub in subsegments])
        alignments = None
        if opts.word_timestamps:
            text_tokens = [[t for sub in segs for t in sub["tokens"] if t < tokenizer.eot] for segs in chunk_segments]
            if per_chunk:
                alignments = [wi.find_alignment(model, tokenizer, [text_tokens[i]], encoded[i], [sizes[i]])
                              for i in range(len(windows))]
                alignments = [a[0] if a else [] for a in alignments]
            else:
                alignments = wi.find_alignment(model, tokenizer, text_tokens, encoder_output, sizes)
    del encoder_output, encoded

    def settle(ep: Episode, ci: int, segs: list[dict], pos: int) -> None:
        ep.outputs[ci] = wi.fw_segments(segs, opts.temperatures[0], opts.word_timestamps)
        ep.raw[ci] = (float(outputs[pos]["avg_logprob"]), float(outputs[pos]["no_speech_prob"]))
        ep.done += 1

    # Word placement per episode, in chunk order, each episode carrying its own last-speech time.
    groups: dict[int, list[int]] = {}
    for pos, window in enumerate(windows):
        if len(window) == 1:
            groups.setdefault(id(window[0][0]), []).append(pos)
    for positions in groups.values():
        ep = windows[positions[0]][0][0]
        if alignments is not None:
            last = wi.place_words(
                fps, [alignments[p] for p in positions], [chunk_segments[p] for p in positions],
                tokenizer, [sizes[p] for p in positions], opts.prepend_punctuations, opts.append_punctuations,
                ep.last_speech)
            ep.last_speech = last if last is not None else ep.last_speech
        for p in positions:
            settle(ep, windows[p][0][1], chunk_segments[p], p)
    for pos, window in enumerate(windows):
        if len(window) == 1:
            continue
        wi.place_words(fps, [alignments[pos]], [chunk_segments[pos]], tokenizer, [sizes[pos]],
                       opts.prepend_punctuations, opts.append_punctuations, 0.0)
        for ep, ci, segs in unpack_window(window, built[pos][1], fps, chunk_segments[pos]):
            if segs is None:  # doubtful: iter_transcribe puts it back at the queue's head, to go alone
                ep.alone = True
                stats.again_alone += 1
                continue
            settle(ep, ci, segs, pos)
            ep.last_speech = segs[-1]["end"] if segs else ep.last_speech
    return stats


def detect_language(engine: Engine, ep: Episode) -> tuple[str, float]:
    """The batched pipeline's detection: the first 30 s of the episode's speech features."""
    limit = wi.window_frames(engine.model)
    taken, frames = [], 0
    for f in ep.features:
        taken.append(f)
        frames += f.shape[-1]
        if frames >= limit:
            break
    else:  # the pipeline appends a dummy frame "to account for empty audio"
        taken.append(np.full((wi.mel_count(engine.model), 1), -1.5, dtype="float32"))
    with engine.lock:
        return wi.detect_language(engine.model, np.concatenate(taken, axis=1))
