"""Speech routing benchmark: do recorded callers, transcribed offline, reach the right department?

For every department of the sample flow, caller phrases that are *not* among the flow's examples (written for this
benchmark, as callers would put it) are spoken by flite, rotating through its voices, and recorded twice:

* telephone band, as Twilio records a call: ``sox ... -r 8000 -e u-law ... sinc 300-3400`` (8 kHz µ-law WAV,
  300-3400 Hz). :func:`voice.adapters.speech.decode_wav` reads µ-law WAVs itself, so the transcriber gets exactly those
  bytes, no conversion back;
* wideband (flite's own 16 kHz PCM), for comparison only: real calls are never this clean.

Each recording is transcribed by :class:`voice.adapters.speech.SphinxTranscriber` with the domain language model of the
flow (built fresh in a temporary directory unless ``--workdir`` is given), then routed like the flow's route node
does: the flow's TF-IDF classifier and the node's threshold, else its fallback. Printed per band: the share routed to
the right department (target >= 85 % on telephone band), the word error rate against the phrase text, and the
transcription time per utterance (p50/p99 of the whole ``transcribe()`` call: WAV decoding, resampling to 16 kHz,
recognition; the decoder is built before timing starts). The "text" line routes
the phrase text itself: the ceiling that perfect recognition would reach with this classifier.

flite is not espeak on purpose: PocketSphinx recognises almost nothing espeak says, which would measure the voice,
not the recogniser. Needs ``flite`` and ``sox`` (``scripts/system-deps.sh``). Exit status: 0 when the telephone
band reaches ``--target``, 1 when it does not, 2 when a tool is missing.

    .venv/bin/python bench/speech_routing.py
    .venv/bin/python bench/speech_routing.py --json --per-department 4 --voices slt,rms
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from ivr_flows import Classifier, Flow, RouteNode, build_flow_classifier, load_flow  # noqa: E402
from voice.adapters.speech import SphinxTranscriber, domain_phrases, normalise_text  # noqa: E402

DEFAULT_FLOW = PROJECT_ROOT / "ivr_flows" / "main.yaml"
VOICES = ("slt", "rms", "awb", "kal16")
TARGET = 0.85

#: Fresh caller phrasings per department of ivr_flows/main.yaml, none of them an example of the flow (checked at
#: start). Written the way callers open a call; some use words the flow never mentions ("street", "student").
CALLER_PHRASES: Mapping[str, tuple[str, ...]] = {
    "billing": (
        "I got charged two times for the same thing",
        "there is a mistake on my bill",
        "please refund my last payment",
        "my last payment did not go through",
        "can I get a copy of my invoice",
        "why did my bill go up",
        "I have a problem with a charge on my card",
        "I need to pay my bill",
    ),
    "technical_support": (
        "my internet keeps dropping",
        "the app crashes every time I open it",
        "I can't get my device to connect",
        "there is an outage on my street",
        "the website shows an error",
        "my wifi is not working",
        "I need help with the software update",
        "everything is really slow today",
    ),
    "sales": (
        "I want to buy a new plan",
        "how much is the premium plan",
        "what are your prices",
        "do you have any discounts for students",
        "I'd like to upgrade my subscription",
        "can someone give me a quote",
        "I'm interested in your product for my business",
        "I want to add another user",
    ),
    "account": (
        "I can't remember my password",
        "I'm locked out of my account",
        "I need to change my address",
        "please close my account",
        "I want to update my email",
        "how do I reset my password",
        "I can't sign in",
        "I need to change my phone number",
    ),
    "general": (
        "can I speak to a real person",
        "I want to talk to someone",
        "I'd like to file a complaint",
        "what time are you open",
        "I need to talk to a manager",
        "let me talk to an operator",
        "I need to speak with a representative",
        "what are your hours on the weekend",
    ),
}


@dataclass(frozen=True)
class Utterance:
    department: str
    text: str
    voice: str
    wideband: Path
    telephone: Path


@dataclass
class Outcome:
    department: str
    voice: str
    said: str
    heard: str
    routed: str
    score: float
    seconds: float
    word_errors: int
    words: int


@dataclass
class BandResult:
    band: str
    routed_right: int
    total: int
    share: float
    wer: float
    p50_ms: float
    p99_ms: float
    per_department: dict[str, str] = field(default_factory=dict)
    misrouted: list[dict[str, Any]] = field(default_factory=list)


# --- audio --------------------------------------------------------------------------------------------------------


def require_tools() -> None:
    missing = [tool for tool in ("flite", "sox") if shutil.which(tool) is None]
    if missing:
        print(f"missing {', '.join(missing)}: run scripts/system-deps.sh (Debian packages flite, sox)", file=sys.stderr)
        raise SystemExit(2)


def speak(text: str, voice: str, wideband: Path, telephone: Path) -> None:
    """flite -> 16 kHz PCM WAV; sox -> 8 kHz µ-law WAV band-limited to 300-3400 Hz, as a phone line delivers it."""
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(wideband)], check=True, capture_output=True)
    subprocess.run(
        ["sox", str(wideband), "-r", "8000", "-e", "u-law", str(telephone), "sinc", "300-3400"],
        check=True,
        capture_output=True,
    )


def record_all(
    phrases: Mapping[str, Sequence[str]], voices: Sequence[str], folder: Path, *, every_voice: bool = False
) -> list[Utterance]:
    """Every phrase once, voices rotating across the whole list so each department hears each voice; or every
    phrase in every voice (``every_voice``: four times the work, steadier figures)."""
    jobs: list[Utterance] = []
    for department, texts in phrases.items():
        for text in texts:
            for voice in voices if every_voice else [voices[len(jobs) % len(voices)]]:
                n = len(jobs)
                wide, tel = folder / f"{n:03d}-wide.wav", folder / f"{n:03d}-tel.wav"
                jobs.append(Utterance(department, text, voice, wide, tel))
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda u: speak(u.text, u.voice, u.wideband, u.telephone), jobs))
    return jobs


# --- scoring ------------------------------------------------------------------------------------------------------


def word_errors(reference: str, hypothesis: str) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    ref, hyp = reference.split(), hypothesis.split()
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def route_node(flow: Flow) -> RouteNode:
    for node in flow.nodes.values():
        if isinstance(node, RouteNode):
            return node
    raise SystemExit(f"{flow.source} has no route node")


def route(flow: Flow, classifier: Classifier, node: RouteNode, text: str) -> tuple[str, float]:
    """What the flow's route node decides for ``text`` (same rule as ivr_flows.engine)."""
    result = classifier.classify(text)
    if result.confidence >= node.threshold and result.department in flow.departments:
        return result.department, result.confidence
    return node.fallback, result.confidence


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: with 40 samples p99 is the slowest one, which is what it should say."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarise(band: str, outcomes: Sequence[Outcome]) -> BandResult:
    right = [o for o in outcomes if o.routed == o.department]
    per_department: dict[str, str] = {}
    for department in dict.fromkeys(o.department for o in outcomes):
        mine = [o for o in outcomes if o.department == department]
        per_department[department] = f"{sum(o.routed == department for o in mine)}/{len(mine)}"
    seconds = [o.seconds for o in outcomes]
    return BandResult(
        band=band,
        routed_right=len(right),
        total=len(outcomes),
        share=round(len(right) / len(outcomes), 4),
        wer=round(sum(o.word_errors for o in outcomes) / max(1, sum(o.words for o in outcomes)), 4),
        p50_ms=round(percentile(seconds, 50) * 1000, 1),
        p99_ms=round(percentile(seconds, 99) * 1000, 1),
        per_department=per_department,
        misrouted=[
            {
                "voice": o.voice,
                "said": o.said,
                "heard": o.heard,
                "expected": o.department,
                "routed": o.routed,
                "score": o.score,
            }
            for o in outcomes
            if o.routed != o.department
        ],
    )


def run_band(
    flow: Flow,
    classifier: Classifier,
    node: RouteNode,
    transcriber: SphinxTranscriber,
    utterances: Sequence[Utterance],
    band: str,
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for u in utterances:
        audio = (u.telephone if band == "telephone" else u.wideband).read_bytes()
        started = time.perf_counter()
        heard = transcriber.transcribe(audio).text
        seconds = time.perf_counter() - started
        routed, score = route(flow, classifier, node, heard)
        reference = normalise_text(u.text)
        outcomes.append(
            Outcome(
                u.department,
                u.voice,
                u.text,
                heard,
                routed,
                score,
                seconds,
                word_errors(reference, heard),
                len(reference.split()),
            )
        )
    return outcomes


# --- main ---------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--flow", type=Path, default=DEFAULT_FLOW, help="flow file (default: ivr_flows/main.yaml)")
    parser.add_argument("--per-department", type=int, default=8, help="phrases per department (max 8)")
    parser.add_argument("--voices", default=",".join(VOICES), help="flite voices to rotate through")
    parser.add_argument(
        "--every-voice", action="store_true", help="say every phrase in every voice (4x the utterances, ~2 min)"
    )
    parser.add_argument("--workdir", type=Path, help="keep the domain model files here (default: a temp dir)")
    parser.add_argument("--target", type=float, default=TARGET, help="telephone-band share to reach (exit 1 if not)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args(argv)
    require_tools()

    flow = load_flow(args.flow)
    classifier = build_flow_classifier(flow, engine="tfidf")  # the engine this benchmark has always measured
    node = route_node(flow)
    examples = {normalise_text(e) for d in flow.departments.values() for e in d.examples}
    phrases = {d: texts[: args.per_department] for d, texts in CALLER_PHRASES.items() if d in flow.departments}
    reused = [t for texts in phrases.values() for t in texts if normalise_text(t) in examples]
    if reused:
        raise SystemExit(f"benchmark phrases must not be flow examples: {reused}")
    voices = [v.strip() for v in args.voices.split(",") if v.strip()]

    with tempfile.TemporaryDirectory(prefix="warmline-speech-bench-") as tmp:
        started = time.perf_counter()
        utterances = record_all(phrases, voices, Path(tmp), every_voice=args.every_voice)
        audio_seconds = time.perf_counter() - started

        started = time.perf_counter()
        transcriber = SphinxTranscriber(domain_phrases(flow), workdir=args.workdir or Path(tmp) / "lm")
        model_seconds = time.perf_counter() - started
        started = time.perf_counter()
        transcriber.transcribe(utterances[0].wideband.read_bytes())  # build the decoder outside the timings
        decoder_seconds = time.perf_counter() - started

        bands = [
            summarise(band, run_band(flow, classifier, node, transcriber, utterances, band))
            for band in ("telephone", "wideband")
        ]

    text_right = sum(route(flow, classifier, node, u.text)[0] == u.department for u in utterances)
    telephone = bands[0]
    report: dict[str, Any] = {
        "flow": str(args.flow),
        "utterances": len(utterances),
        "voices": voices,
        "domain_model": {
            "phrases": len(domain_phrases(flow)),
            "vocabulary": len(transcriber.model.vocabulary),
            "missing_words": list(transcriber.missing_words),
            "build_seconds": round(model_seconds, 3),
            "first_transcription_seconds": round(decoder_seconds, 3),
        },
        "decoder_builds": transcriber.decoder_builds,
        "audio_generation_seconds": round(audio_seconds, 2),
        "text_ceiling": {
            "routed_right": text_right,
            "total": len(utterances),
            "share": round(text_right / len(utterances), 4),
        },
        "bands": {b.band: asdict(b) for b in bands},
        "target": args.target,
        "passed": telephone.share >= args.target,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report, bands)
    return 0 if report["passed"] else 1


def print_table(report: Mapping[str, Any], bands: Sequence[BandResult]) -> None:
    model = report["domain_model"]
    print(
        f"Speech routing on {report['flow']}: {report['utterances']} caller phrases not in the flow's examples, "
        f"flite voices {', '.join(report['voices'])}"
    )
    print(
        f"domain model: {model['vocabulary']} words from {model['phrases']} phrases, built in "
        f"{model['build_seconds']:.2f} s; missing from the dictionary: {', '.join(model['missing_words']) or 'none'}"
    )
    print(
        f"decoder: built once ({report['decoder_builds']}), first transcription "
        f"{model['first_transcription_seconds']:.2f} s including the build\n"
    )
    print(f"{'band':<11} {'routed right':>14} {'WER':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for b in bands:
        routed = f"{b.routed_right}/{b.total} {b.share:.0%}"
        print(f"{b.band:<11} {routed:>14} {b.wer:>7.1%} {b.p50_ms:>8.0f} {b.p99_ms:>8.0f}")
    ceiling = report["text_ceiling"]
    print(
        f"{'text':<11} {ceiling['routed_right']:>6}/{ceiling['total']} {ceiling['share']:.0%}"
        "   (the phrase text itself: the ceiling)\n"
    )
    for b in bands:
        print(f"{b.band} per department: " + ", ".join(f"{d} {v}" for d, v in b.per_department.items()))
        for miss in b.misrouted:
            print(
                f"  [{miss['voice']}] said {miss['said']!r}, heard {miss['heard']!r} "
                f"-> {miss['routed']} ({miss['score']:.2f}), expected {miss['expected']}"
            )
    verdict = "reached" if report["passed"] else "MISSED"
    print(f"\ntarget: telephone band routed right >= {report['target']:.0%}: {verdict}")


if __name__ == "__main__":
    sys.exit(main())
