"""A band-limited sample-rate converter in pure Python (no numpy): polyphase windowed sinc.

The filter is a Kaiser-windowed sinc with the parameters of resampy's ``kaiser_fast`` (16 zero crossings
each side at the lower of the two rates, roll-off 0.85, beta 8.555): flat to about 0.7 of the new Nyquist
frequency and more than 80 dB down past it, which is what a speech path needs. For a rational ratio
``L/M`` (the rates divided by their gcd) it keeps one row of taps per phase; past :data:`MAX_PHASES` phases
(an odd rate pair such as 44101 → 16000), positions are rounded to ``1/MAX_PHASES`` of an input sample.

Each output sample is one dot product over a slice of the input (``math.sumprod`` where Python has it, else
``sum(map(mul, ...))``), so the work stays in C: about 0.3 to 0.6 s per 10 s of 48 kHz audio to 16 kHz.
"""

from __future__ import annotations

import math
from array import array
from functools import lru_cache
from operator import mul
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

__all__ = ["MAX_PHASES", "ROLLOFF", "ZERO_CROSSINGS", "StreamResampler", "resample"]

ZERO_CROSSINGS = 16
ROLLOFF = 0.85
KAISER_BETA = 8.555
MAX_PHASES = 1024


def _sum_of_products(a: Iterable[float], b: Iterable[float]) -> float:
    total: float = sum(map(mul, a, b))
    return total


_dot: Callable[[Iterable[float], Iterable[float]], float] = getattr(math, "sumprod", _sum_of_products)


def _bessel_i0(x: float) -> float:
    """The modified Bessel function of the first kind, order 0 (power series; converges for all x)."""
    total = term = 1.0
    k = 0
    half_sq = x * x / 4.0
    while term > 1e-17 * total:
        k += 1
        term *= half_sq / (k * k)
        total += term
    return total


@lru_cache(maxsize=16)
def _filter_bank(up: int, down: int) -> Tuple[int, int, Tuple[Tuple[float, ...], ...]]:
    """``(half, phases, rows)`` for the ratio ``up/down``: ``rows[p][j]`` weighs input ``base - half + 1 + j``
    for an output at position ``base + p / phases`` (in input samples)."""
    scale = min(1.0, up / down)  # < 1 when lowering the rate: the filter widens by 1/scale
    cutoff = scale * ROLLOFF
    half_width = ZERO_CROSSINGS / scale
    half = math.ceil(half_width)
    phases = min(up, MAX_PHASES)
    i0_beta = _bessel_i0(KAISER_BETA)
    rows: List[Tuple[float, ...]] = []
    for phase in range(phases):
        frac = phase / phases
        row = []
        for j in range(2 * half):
            t = frac + half - 1 - j  # distance from the output position to the tap, in input samples
            x = t / half_width
            if abs(x) >= 1.0:
                row.append(0.0)
                continue
            window = _bessel_i0(KAISER_BETA * math.sqrt(1.0 - x * x)) / i0_beta
            arg = math.pi * cutoff * t
            sinc = 1.0 if arg == 0.0 else math.sin(arg) / arg
            row.append(cutoff * sinc * window)
        gain = math.fsum(row)
        rows.append(tuple(w / gain for w in row))  # unit DC gain in every phase
    return half, phases, tuple(rows)


def output_length(count: int, rate_in: int, rate_out: int) -> int:
    """How many samples ``count`` input samples become: ``ceil(count * rate_out / rate_in)``."""
    return -(-count * rate_out // rate_in)


def resample(samples: Sequence[float], rate_in: int, rate_out: int) -> array:  # type: ignore[type-arg]
    """Convert mono float samples from ``rate_in`` to ``rate_out`` Hz.

    Args:
        samples: The signal (any scale), e.g. an ``array('d')``.
        rate_in: Its sample rate in Hz (positive).
        rate_out: The wanted sample rate in Hz (positive).

    Returns:
        An ``array('d')`` of ``ceil(len(samples) * rate_out / rate_in)`` samples, aligned with the input
        (no delay: the filter is centred on each output position).
    """
    if rate_in == rate_out and rate_in > 0:
        return array("d", samples)
    converter = StreamResampler(rate_in, rate_out)
    out = converter.feed(samples)
    out.extend(converter.flush())
    return out


class StreamResampler:
    """:func:`resample` block by block: :meth:`feed` each block of the signal, then :meth:`flush` once. The
    outputs joined are exactly ``resample()`` of the whole signal; memory holds one block and the filter's
    width. Not thread-safe (one signal, one thread)."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        if rate_in <= 0 or rate_out <= 0:
            raise ValueError(f"sample rates must be positive, got {rate_in} and {rate_out}")
        gcd = math.gcd(rate_in, rate_out)
        self._up, self._down = rate_out // gcd, rate_in // gcd
        self._half, self._phases, self._rows = _filter_bank(self._up, self._down)
        self._buf = array("d", bytes(8 * self._half))  # the signal padded with ``half`` zeros, from ``_offset``
        self._offset = 0  # the index in the padded signal of ``_buf[0]``
        self._received = 0  # input samples fed
        self._next = 0  # the next output sample

    def feed(self, samples: Sequence[float]) -> array:  # type: ignore[type-arg]
        """The output samples that ``samples`` (the next block) completes."""
        self._buf.extend(samples)
        self._received += len(samples)
        return self._run(None)

    def flush(self) -> array:  # type: ignore[type-arg]
        """The last output samples (the signal ends with the last block fed)."""
        self._buf.extend(array("d", bytes(8 * (self._half + 1))))
        return self._run(output_length(self._received, self._down, self._up))

    def _run(self, count: Optional[int]) -> array:  # type: ignore[type-arg]
        up, down, half, phases, rows = self._up, self._down, self._half, self._phases, self._rows
        taps = 2 * half
        exact = phases == up
        buf, offset = self._buf, self._offset
        out = array("d")
        n = self._next
        while True:
            base, rem = divmod(n * down, up)
            if exact:
                phase = rem
            else:
                phase = (rem * phases + up // 2) // up
                if phase == phases:
                    phase, base = 0, base + 1
            if count is None and base + half >= self._received:
                break  # needs input not fed yet
            if count is not None and n >= count:
                break
            start = base + 1 - offset  # == base - half + 1 in the unpadded signal
            out.append(_dot(rows[phase], buf[start : start + taps]))
            n += 1
        self._next = n
        keep = (n * down) // up - offset  # the next output's window starts past this
        if keep > 0:
            del buf[:keep]
            self._offset = offset + keep
        return out
