"""The five steps: create, init, start, send_audio, close. Audio file in, animation frames to a file.

    python samples/quickstart.py --local        # built-in stand-in service (AVATARSDK_LOCAL=1 works too)
    python samples/quickstart.py speech.wav     # real service: set AVATARSDK_API_KEY, AVATARSDK_APP_ID,
        AVATARSDK_AVATAR_ID, AVATARSDK_CONSOLE_URL and AVATARSDK_INGRESS_URL
    python samples/quickstart.py --region us-west speech.wav    # the region's URLs instead of the two URL
        variables (also AVATARSDK_REGION; a URL variable set still wins)

Input: a 16-bit mono WAV (its rate becomes the session's), or raw PCM s16le mono 16 kHz; without one, a tone.
Output (--out, default frames.bin): each frame as a 4-byte big-endian length followed by the frame's bytes.
"""

from __future__ import annotations

import argparse
import math
import os
import struct
import threading
import wave
from datetime import datetime, timedelta, timezone
from pathlib import Path

from avatarsdk import new_avatar_session

parser = argparse.ArgumentParser()
parser.add_argument("audio", nargs="?")
parser.add_argument("--out", default="frames.bin")
parser.add_argument("--local", action="store_true")
parser.add_argument("--region", default=os.environ.get("AVATARSDK_REGION"), help="us-west, ap-northeast, ...")
args = parser.parse_args()

rate, pcm = 16000, struct.pack("<32000h", *(int(6000 * math.sin(i * 0.0864)) for i in range(32000)))
if args.audio and args.audio.endswith(".wav"):
    with wave.open(args.audio) as w:
        assert (w.getsampwidth(), w.getnchannels()) == (2, 1), "expected a 16-bit mono WAV"
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
elif args.audio:
    pcm = Path(args.audio).read_bytes()

if args.local or os.environ.get("AVATARSDK_LOCAL") == "1":
    from avatarsdk.testing import FakeAvatarService  # the "testing" extra

    settings = FakeAvatarService().start().credentials()
else:
    names = ["api_key", "app_id", "avatar_id", "console_endpoint_url", "ingress_endpoint_url"]
    variables = ["API_KEY", "APP_ID", "AVATAR_ID", "CONSOLE_URL", "INGRESS_URL"]
    settings = {"region": args.region} if args.region else {}  # a region gives the URLs not set
    for name, var in zip(names, variables):
        if not (args.region and var.endswith("_URL") and "AVATARSDK_" + var not in os.environ):
            settings[name] = os.environ["AVATARSDK_" + var]

done, frames = threading.Event(), []


def on_frame(frame: bytes, last: bool) -> None:  # runs on the session's dispatcher thread, in arrival order
    frames.append(frame)
    if last:
        done.set()


with new_avatar_session(  # 1. create; entering the block runs 2. init() (token) and 3. start() (WebSocket)
    **settings,
    expire_at=datetime.now(timezone.utc) + timedelta(minutes=10),
    sample_rate=rate,
    transport_frames=on_frame,
    on_error=lambda err: (print("error:", err), done.set()),
) as session:
    print("connection id:", session.connection_id)
    step = rate // 10 * 2  # 100 ms of audio per send
    for i in range(0, len(pcm), step):  # 4. send_audio(), end=True on the last chunk
        req_id = session.send_audio(pcm[i : i + step], end=i + step >= len(pcm))
    print("request id:", req_id)
    done.wait(60)
# 5. close() ran when the block ended, after every received frame was delivered
Path(args.out).write_bytes(b"".join(struct.pack(">I", len(f)) + f for f in frames))
print(f"{len(frames)} frames written to {args.out}")
