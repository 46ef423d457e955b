"""Which of an item's enclosures to download: audio before video before anything else, and a smaller
``podcast:alternateEnclosure`` rendition when the feed offers one (downloading it: fetch/alternate.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from podinsight_dagster.fetch.feedxml import PODCAST_NS, _base_of, _children, _int, _resolve

@dataclass
class _Enclosure:
    url: str
    type: str | None
    length: int | None
    medium: str | None = None  # media:content's medium="audio"


_AUDIO_EXTENSIONS = (".mp3", ".m4a", ".m4b", ".aac", ".ogg", ".oga", ".opus", ".wav", ".flac", ".mpga")
_VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".webm")
_UNTYPED = ("", "application/octet-stream", "binary/octet-stream")


def _audio_rank(enc: _Enclosure) -> int | None:
    """3 audio, 2 unknown (may be audio), 1 video (its audio track); None: not audio at all."""
    kind = (enc.type or "").split(";")[0].strip().lower()
    medium = (enc.medium or "").strip().lower()
    path = enc.url.split("?")[0].split("#")[0].lower()
    if kind.startswith("audio/") or medium == "audio":
        return 3
    if kind in _UNTYPED and not medium:
        if path.endswith(_AUDIO_EXTENSIONS):
            return 3
        return 1 if path.endswith(_VIDEO_EXTENSIONS) else 2
    if kind.startswith("video/") or medium == "video":
        return 1
    return None


def choose_enclosure(enclosures: list[_Enclosure]) -> tuple[_Enclosure | None, str | None]:
    """The audio among an item's enclosures: by type (audio, then untyped, then video), then by size.

    The largest of equals wins (a short one is often a trailer or a low-bitrate copy); document
    order breaks ties. Returns (enclosure, None) or (None, why none fits).
    """
    if not enclosures:
        return None, "no enclosure"
    ranked = [(r, e) for e in enclosures if (r := _audio_rank(e)) is not None]
    if not ranked:
        kinds = ", ".join(sorted({e.type or e.medium or "no type" for e in enclosures}))
        return None, f"no audio enclosure ({kinds})"
    best = max(ranked, key=lambda re_: (re_[0], re_[1].length or 0))  # max() keeps the first of equals
    return best[1], None


@dataclass
class AlternateEnclosure:
    """A ``<podcast:alternateEnclosure>``: another rendition of the episode's media, from its http(s) sources."""

    url: str                       # the first http(s) <podcast:source> (torrents and IPFS are not fetched)
    type: str | None
    length: int | None
    bitrate: float | None          # bits per second, as the feed says
    default: bool = False          # describes the main enclosure itself
    integrity: str | None = None   # <podcast:integrity type="sri">: "sha256-<base64>" (or sha384/sha512)
    title: str | None = None


def _alternates(item, base: str | None) -> list[AlternateEnclosure]:
    out = []
    for ae in _children(item, PODCAST_NS, "alternateEnclosure"):
        sources = [url for src in _children(ae, PODCAST_NS, "source")
                   if (url := _resolve(_base_of(src, base), src.get("uri"))) and url.startswith(("http://", "https://"))]
        if not sources:
            continue
        sri = next(((i.get("value") or "").strip() for i in _children(ae, PODCAST_NS, "integrity")
                    if (i.get("type") or "").strip().lower() == "sri" and (i.get("value") or "").strip()), None)
        try:
            bitrate = float(ae.get("bitrate")) if ae.get("bitrate") else None
        except ValueError:
            bitrate = None
        out.append(AlternateEnclosure(url=sources[0], type=(ae.get("type") or "").strip() or None,
                                      length=_int(ae.get("length")),
                                      bitrate=bitrate if bitrate and math.isfinite(bitrate) and bitrate > 0 else None,
                                      default=(ae.get("default") or "").strip().lower() == "true", integrity=sri,
                                      title=(ae.get("title") or "").strip() or None))
    return out


def prefer_download(enclosure: _Enclosure, alternates: list[AlternateEnclosure],
                    duration_sec: float | None) -> AlternateEnclosure | None:
    """The audio alternate to download instead of ``enclosure``, when it is smaller; else None.

    Less transfer for the same words: among the audio alternates that are not the enclosure itself, the
    lowest bitrate wins when it is below the enclosure's (the ``default="true"`` alternate's bitrate,
    else length x 8 / duration); without bitrates, the smaller length when both are known. Nothing
    known to compare: the enclosure stays.
    """
    main_bitrate = next((a.bitrate for a in alternates if a.default and a.bitrate), None)
    if main_bitrate is None and enclosure.length and duration_sec:
        main_bitrate = enclosure.length * 8 / duration_sec
    best, best_size = None, None
    for alt in alternates:
        if alt.default or alt.url == enclosure.url or not (alt.type or "").lower().startswith("audio/"):
            continue
        if alt.bitrate and main_bitrate:
            smaller = alt.bitrate < main_bitrate
            size = alt.bitrate
        elif alt.length and enclosure.length:
            smaller = alt.length < enclosure.length
            size = alt.length * 8 / duration_sec if duration_sec else alt.length
        else:
            continue
        if smaller and (best_size is None or size < best_size):
            best, best_size = alt, size
    return best
