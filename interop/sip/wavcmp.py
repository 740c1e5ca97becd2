#!/usr/bin/env python3
"""Compare the audio a phone sent with what the far end recorded (stdlib only).

Both files are mixed to mono and resampled to a common rate (8 kHz by
default: the test signal from mkwav.py stays below 3.4 kHz). The call's
delay is found by FFT cross-correlation of the whole files; the aligned
overlap is then cut into blocks (200 ms) and each block's alignment is
refined within +-30 ms, because adaptive jitter buffers shift the delay
during a call. Leading and trailing blocks where the receiver heard
silence (media not yet flowing / already stopped) are trimmed; silent
blocks inside the segment count against the result.

Reported, for the aligned segment:
  corr        normalised correlation with per-block alignment (the pass figure)
  global_corr normalised correlation at the single best global delay
  snr_db      signal-to-noise ratio after least-squares gain, per-block aligned
  delay_ms    the global delay of the received audio
  aligned_s   length of the aligned segment in seconds

Exit status 0 when corr >= --threshold (default 0.8) and aligned_s >=
--min-seconds (default 3), 1 otherwise, 2 on unreadable input.

Usage: wavcmp.py SENT.wav RECEIVED.wav [--threshold 0.8] [--min-seconds 3]
       [--rate 8000] [--json]
"""

import argparse
import cmath
import json
import math
import struct
import sys
from fractions import Fraction


class WavError(Exception):
    pass


def read_wav(path: str):
    """Returns (rate, mono samples as floats in [-1, 1]).

    A hand-rolled RIFF reader: recorders killed mid-call leave a data
    chunk length of 0 or 0xFFFFFFFF, which the wave module rejects; here
    the data chunk then runs to the end of the file.
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 12 or data[0:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError(f"{path}: not a RIFF/WAVE file")
    pos = 12
    fmt = None
    pcm = None
    while pos + 8 <= len(data):
        cid = data[pos:pos + 4]
        size = struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt ":
            if size < 16:
                raise WavError(f"{path}: short fmt chunk")
            tag, ch, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == 0xFFFE and size >= 40:
                tag = struct.unpack_from("<H", data, body + 24)[0]
            fmt = (tag, ch, rate, bits)
        elif cid == b"data":
            end = body + size if 0 < size and body + size <= len(data) else len(data)
            pcm = data[body:end]
            break
        pos = body + size + (size & 1)
    if fmt is None or pcm is None:
        raise WavError(f"{path}: no fmt or data chunk")
    tag, ch, rate, bits = fmt
    if ch < 1 or rate < 1:
        raise WavError(f"{path}: bad channel count or rate")
    width = bits // 8
    frame = width * ch
    n = len(pcm) // frame
    if tag == 1 and bits == 16:
        vals = struct.unpack_from(f"<{n * ch}h", pcm)
        scale = 1 / 32768.0
    elif tag == 1 and bits == 8:
        vals = [b - 128 for b in pcm[:n * ch]]
        scale = 1 / 128.0
    elif tag == 1 and bits == 32:
        vals = struct.unpack_from(f"<{n * ch}i", pcm)
        scale = 1 / 2147483648.0
    elif tag == 1 and bits == 24:
        vals = [int.from_bytes(pcm[i:i + 3], "little", signed=True) for i in range(0, n * ch * 3, 3)]
        scale = 1 / 8388608.0
    elif tag == 3 and bits == 32:
        vals = struct.unpack_from(f"<{n * ch}f", pcm)
        scale = 1.0
    else:
        raise WavError(f"{path}: unsupported sample format tag={tag} bits={bits}")
    if ch == 1:
        return rate, [v * scale for v in vals]
    return rate, [sum(vals[i * ch:(i + 1) * ch]) * scale / ch for i in range(n)]


def resample(x, fin: int, fout: int, half_taps: int = 24):
    """Rational resampling with a Hann-windowed sinc (polyphase table)."""
    if fin == fout:
        return list(x)
    ratio = Fraction(fout, fin)
    up, down = ratio.numerator, ratio.denominator
    cutoff = min(1.0, fout / fin)  # relative to the input Nyquist
    phases = []
    for p in range(up):
        frac = p / up  # fractional input position of this phase
        taps = []
        for k in range(-half_taps + 1, half_taps + 1):
            d = k - frac
            arg = d * cutoff
            s = 1.0 if arg == 0 else math.sin(math.pi * arg) / (math.pi * arg)
            w = 0.5 + 0.5 * math.cos(math.pi * d / (half_taps + 1))
            taps.append(s * w * cutoff)
        phases.append(taps)
    n_out = int(len(x) * fout / fin)
    out = [0.0] * n_out
    nx = len(x)
    for n in range(n_out):
        pos = n * down  # in units of 1/up input samples
        base, p = divmod(pos, up)
        taps = phases[p]
        start = base - half_taps + 1
        acc = 0.0
        if start >= 0 and start + len(taps) <= nx:
            for t, v in zip(taps, x[start:start + len(taps)]):
                acc += t * v
        else:
            for j, t in enumerate(taps):
                i = start + j
                if 0 <= i < nx:
                    acc += t * x[i]
        out[n] = acc
    return out


def fft(a, invert=False):
    """Iterative radix-2 FFT of a list of complex numbers (len a power of 2)."""
    n = len(a)
    a = list(a)
    j = 0
    for i in range(1, n):
        bit = n >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j |= bit
        if i < j:
            a[i], a[j] = a[j], a[i]
    length = 2
    sign = 1 if invert else -1
    while length <= n:
        half = length >> 1
        w_len = cmath.exp(sign * 2j * math.pi / length)
        tw = [1 + 0j] * half
        for k in range(1, half):
            tw[k] = tw[k - 1] * w_len
        for start in range(0, n, length):
            for k in range(half):
                u = a[start + k]
                v = a[start + k + half] * tw[k]
                a[start + k] = u + v
                a[start + k + half] = u - v
        length <<= 1
    if invert:
        a = [v / n for v in a]
    return a


def xcorr(s, r):
    """c[lag] = sum_n s[n] * r[n + lag] for lag in [-(len(s)-1), len(r)-1].

    Returned as (list, offset) with c[lag] at index lag + offset.
    """
    need = len(s) + len(r) - 1
    n = 1
    while n < need:
        n <<= 1
    fs = fft([complex(v) for v in s] + [0j] * (n - len(s)))
    fr = fft([complex(v) for v in r] + [0j] * (n - len(r)))
    c = fft([b * a.conjugate() for a, b in zip(fs, fr)], invert=True)
    # Positive lags sit at 0..len(r)-1, negative lags wrap to the end.
    neg = [c[n - k].real for k in range(len(s) - 1, 0, -1)]
    pos = [c[k].real for k in range(len(r))]
    return neg + pos, len(s) - 1


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def best_lag(s, r, lo: int, hi: int, centre: int):
    """The lag in [lo, hi] maximising the normalised correlation of s with
    r[lag:lag+len(s)]; near-ties (periodic tones) go to the lag nearest centre."""
    ns = len(s)
    lo, hi = max(lo, 0), min(hi, len(r) - ns)
    if hi < lo:
        return centre
    best, best_v = centre, -math.inf
    span = max(1, hi - lo)
    for lag in range(lo, hi + 1):
        w = r[lag:lag + ns]
        e = dot(w, w)
        v = dot(s, w) / math.sqrt(e) if e > 0 else 0.0
        v -= 1e-3 * abs(lag - centre) / span * math.sqrt(max(e, 1e-12))
        if v > best_v:
            best, best_v = lag, v
    return best


def rms_db(x):
    if not x:
        return -200.0
    e = sum(v * v for v in x) / len(x)
    return 10 * math.log10(e) if e > 0 else -200.0


def compare(sent, recv, rate, block_s=0.2, search_s=0.03, silence_db=-50.0):
    c, off = xcorr(sent, recv)
    idx = max(range(len(c)), key=c.__getitem__)
    lag = idx - off  # recv[n + lag] ~ sent[n]
    s0 = max(0, -lag)
    s1 = min(len(sent), len(recv) - lag)
    if s1 - s0 <= 0:
        return None
    gs = sent[s0:s1]
    gr = recv[s0 + lag:s1 + lag]
    ss, rr, sr = dot(gs, gs), dot(gr, gr), dot(gs, gr)
    global_corr = sr / math.sqrt(ss * rr) if ss > 0 and rr > 0 else 0.0

    # Per-block refinement, so jitter-buffer delay changes do not count as noise.
    blk = max(1, int(block_s * rate))
    search = int(search_s * rate)
    blocks = []
    for b0 in range(s0, s1 - blk + 1, blk):
        bs = sent[b0:b0 + blk]
        if rms_db(bs) < silence_db:
            continue  # nothing was sent here: nothing to compare
        l = best_lag(bs, recv, b0 + lag - search, b0 + lag + search, b0 + lag) if search else b0 + lag
        br = recv[l:l + blk]
        if len(br) < blk:
            continue
        blocks.append((b0, l - b0, bs, br))
    # Trim blocks at either end where the receiver heard silence.
    while blocks and rms_db(blocks[0][3]) < silence_db:
        blocks.pop(0)
    while blocks and rms_db(blocks[-1][3]) < silence_db:
        blocks.pop()
    if not blocks:
        return {"delay_ms": 1000.0 * lag / rate, "global_corr": global_corr, "corr": 0.0, "snr_db": -200.0,
                "aligned_s": 0.0, "blocks": 0, "delay_spread_ms": 0.0, "gain": 0.0}
    ss = sum(dot(b[2], b[2]) for b in blocks)
    rr = sum(dot(b[3], b[3]) for b in blocks)
    sr = sum(dot(b[2], b[3]) for b in blocks)
    corr = sr / math.sqrt(ss * rr) if ss > 0 and rr > 0 else 0.0
    gain = sr / ss if ss > 0 else 0.0
    noise = sum(sum((y - gain * x) ** 2 for x, y in zip(b[2], b[3])) for b in blocks)
    sig = gain * gain * ss
    snr = 10 * math.log10(sig / noise) if noise > 0 and sig > 0 else (200.0 if sig > 0 else -200.0)
    lags = [b[1] for b in blocks]
    return {
        "delay_ms": round(1000.0 * lag / rate, 2),
        "delay_spread_ms": round(1000.0 * (max(lags) - min(lags)) / rate, 2),
        "global_corr": round(global_corr, 4),
        "corr": round(corr, 4),
        "snr_db": round(snr, 2),
        "gain": round(gain, 4),
        "aligned_s": round(len(blocks) * blk / rate, 3),
        "blocks": len(blocks),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sent")
    p.add_argument("received")
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--rate", type=int, default=8000, help="common comparison rate")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    try:
        fs, s = read_wav(a.sent)
        fr, r = read_wav(a.received)
    except (OSError, WavError, struct.error) as e:
        print(f"wavcmp: {e}", file=sys.stderr)
        return 2
    s = resample(s, fs, a.rate)
    r = resample(r, fr, a.rate)
    if len(s) < a.rate * 0.1 or len(r) < a.rate * 0.1:
        print(f"wavcmp: FAIL file too short (sent {len(s) / a.rate:.2f} s, received {len(r) / a.rate:.2f} s)")
        return 1
    res = compare(s, r, a.rate)
    if res is None:
        print("wavcmp: FAIL no overlap")
        return 1
    ok = res["corr"] >= a.threshold and res["aligned_s"] >= a.min_seconds
    res.update({"pass": ok, "rate": a.rate, "sent_s": round(len(s) / a.rate, 3),
                "received_s": round(len(r) / a.rate, 3), "received_level_db": round(rms_db(r), 1)})
    if a.json:
        print(json.dumps(res))
    else:
        keys = ["corr", "global_corr", "snr_db", "delay_ms", "delay_spread_ms", "aligned_s", "gain", "sent_s",
                "received_s", "received_level_db"]
        print(f"wavcmp: {'PASS' if ok else 'FAIL'} " + " ".join(f"{k}={res[k]}" for k in keys)
              + f" (threshold corr>={a.threshold}, aligned_s>={a.min_seconds})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
