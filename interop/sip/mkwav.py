#!/usr/bin/env python3
"""Write a distinctive test signal for call-audio checks (stdlib only).

The signal stays inside the telephone band (300-3400 Hz) so it survives
G.711 as well as Opus, and is built to have one sharp cross-correlation
peak so wavcmp.py can find the call's delay without ambiguity:

  0.0-1.0 s  linear chirp 300 -> 3000 Hz
  1.0-2.0 s  440 Hz + 1000 Hz, amplitude-modulated at 3 Hz
  2.0-3.0 s  pseudo-random tone sequence (40 ms steps, fixed seed)
  3.0-4.0 s  linear chirp 2800 -> 400 Hz
  4.0-5.0 s  500 + 1200 + 2200 Hz chord with a 5 Hz tremolo
  (longer durations repeat the pattern with different random tones)

--variant N (N >= 1) draws every segment's frequencies and rates from a
generator seeded with N, so the two directions of a call carry different signals and a recording
of one cannot pass for the other (wavcmp.py then fails).

Usage: mkwav.py OUT.wav [--rate 8000|16000|48000] [--seconds 5] [--level 0.5]
        [--lead-silence S] [--tail-silence S] [--variant N]
"""

import argparse
import math
import random
import struct
import wave


def params(variant: int) -> dict:
    """Segment parameters: the documented ones for variant 0, random ones
    (seeded by the variant) otherwise."""
    if variant == 0:
        return {"up": (300.0, 3000.0), "am": (440.0, 1000.0, 3.0), "down": (2800.0, 400.0),
                "chord": (500.0, 1200.0, 2200.0, 5.0)}
    r = random.Random(0x5EED + variant)
    return {
        "up": (r.uniform(300, 700), r.uniform(2300, 3200)),
        "am": (r.uniform(350, 1400), r.uniform(1500, 3000), r.uniform(2, 7)),
        "down": (r.uniform(2300, 3200), r.uniform(300, 700)),
        "chord": (r.uniform(350, 900), r.uniform(1000, 1900), r.uniform(2000, 3200), r.uniform(3, 8)),
    }


def signal(rate: int, seconds: float, level: float, variant: int = 0) -> list:
    n = int(rate * seconds)
    out = [0.0] * n
    seg = rate  # one second per segment
    rng = random.Random(0xC0DE + variant)
    p = params(variant)
    steps = {}
    edge = int(0.005 * rate)
    for i in range(n):
        t = i / rate
        k = (i // seg) % 5
        cycle = i // (5 * seg)
        tl = (i % seg) / rate  # time inside the segment
        if k == 0 or k == 3:
            f0, f1 = p["up"] if k == 0 else p["down"]
            v = math.sin(2 * math.pi * (f0 * tl + (f1 - f0) * tl * tl / 2))
        elif k == 1:
            fa, fb, rate_am = p["am"]
            am = 0.6 + 0.4 * math.sin(2 * math.pi * rate_am * tl)
            v = am * 0.5 * (math.sin(2 * math.pi * fa * t) + math.sin(2 * math.pi * fb * t))
        elif k == 2:
            step = (cycle, int(tl / 0.040))
            if step not in steps:
                steps[step] = rng.uniform(350.0, 3200.0)
            v = math.sin(2 * math.pi * steps[step] * t)
        else:
            fa, fb, fc, rate_t = p["chord"]
            trem = 0.7 + 0.3 * math.sin(2 * math.pi * rate_t * tl)
            v = trem * (math.sin(2 * math.pi * fa * t) + math.sin(2 * math.pi * fb * t)
                        + math.sin(2 * math.pi * fc * t)) / 3
        # 5 ms raised-cosine edges on each segment avoid clicks (broadband splatter).
        pos = i % seg
        if pos < edge:
            v *= 0.5 - 0.5 * math.cos(math.pi * pos / edge)
        elif seg - pos <= edge:
            v *= 0.5 - 0.5 * math.cos(math.pi * (seg - pos) / edge)
        out[i] = level * v
    return out


def write_wav(path: str, rate: int, samples: list) -> None:
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", max(-32767, min(32767, int(round(s * 32767))))) for s in samples))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--rate", type=int, default=8000)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--level", type=float, default=0.5, help="peak amplitude, 0..1 of full scale")
    p.add_argument("--lead-silence", type=float, default=0.0, help="seconds of silence before the signal")
    p.add_argument("--tail-silence", type=float, default=0.0, help="seconds of silence after the signal")
    p.add_argument("--variant", type=int, default=0, help="a different but equally distinctive signal")
    a = p.parse_args()
    lead = [0.0] * int(a.rate * a.lead_silence)
    tail = [0.0] * int(a.rate * a.tail_silence)
    write_wav(a.out, a.rate, lead + signal(a.rate, a.seconds, a.level, a.variant) + tail)


if __name__ == "__main__":
    main()
