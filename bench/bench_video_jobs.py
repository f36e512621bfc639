"""Video jobs through the real service, on DAVIS val-dev uploaded the way users send videos.

    python bench/bench_video_jobs.py                       # 12 videos, 854x480 and 427x240
    python bench/bench_video_jobs.py --max-sequences 3 --upscale 2
    python bench/bench_video_jobs.py --sequences scooter-black blackswan --upscale 1

Each val-dev sequence is encoded as an H.264 MP4 with PyAV (crf 23) at 427x240 (`--upscale 1`) and
2x upscaled to 854x480 (`--upscale 2`), uploaded to `POST /adapt-and-segment` of a uvicorn server
(embedded queue, the README's serve path, shipped model) with `format=json`, polled until done,
and its RLE masks scored against the 480p annotations (DAVIS J: first and last frames excluded).
Jobs per video: 0 steps and the default steps, each with `temporal=false` and with `temporal=true`
(the service's default): the gain of adaptation is read like for like, both ways.

Printed per video: J at 0 / N steps, the safeguard's decision, J at 0 / N steps with temporal fusion, flicker
(1 - mean IoU of consecutive masks after warping with the decoded video's own +1 DIS flow, on the
network grid, x100) and seconds per stage; then means, the worst change, and the wall-time ratio
of N-step to 0-step jobs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_adapt import add_video_arguments, decode_video, encode_h264, flicker, sequence_j, val_dev_videos
from bench_service import start_server, stop_server

from service import rle
from service.settings import Settings
from training.data import FlowPairDataset
from training.evaluate import read_annotation
from training.flow import build_flow_estimator


def run_job(client: httpx.Client, video: bytes, query: str, time_cap: float) -> dict:
    """Upload, poll every 0.2 s, fetch the JSON result; the job's status and result plus wall seconds."""
    started = time.perf_counter()
    response = client.post(f"/adapt-and-segment?format=json&{query}", files={"file": ("upload.mp4", video, "video/mp4")})
    response.raise_for_status()
    url = response.json()["url"]
    while time.perf_counter() - started < time_cap:
        status = client.get(url).json()
        if status["state"] in {"succeeded", "failed", "cancelled"}:
            break
        time.sleep(0.2)
    else:
        client.delete(url)
        raise SystemExit(f"job exceeded {time_cap} s")
    if status["state"] != "succeeded":
        raise SystemExit(f"job {status['state']}: {status.get('error')}")
    result = client.get(f"{url}/result?format=json").json()
    return {"status": status, "result": result, "wall_s": time.perf_counter() - started}


def j(row: dict, job: str, metric: str = "J") -> float:
    """A metric (J, flicker) of one of the row's jobs; NaN where the job was not run (``--no-temporal``)."""
    return row.get(job, {}).get(metric, np.nan)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_video_arguments(parser)
    parser.add_argument("--upscale", type=int, nargs="+", default=[2, 1], help="2: 854x480, 1: 427x240")
    parser.add_argument("--steps", type=int, default=Settings().default_adaptation_steps)
    parser.add_argument("--time-cap", type=float, default=600, help="seconds per job at most")
    parser.add_argument("--env", nargs="*", default=[], metavar="GWM_X=VALUE", help="extra server settings")
    parser.add_argument("--no-temporal", action="store_true", help="skip the jobs with temporal=true")
    args = parser.parse_args()
    env = {"GWM_QUEUE_MODE": "embedded", **dict(item.split("=", 1) for item in args.env)}
    videos = val_dev_videos(args.data, args.sequences, args.max_sequences)
    jobs = {"0": "steps=0&temporal=false", "N": f"steps={args.steps}&temporal=false"}
    if not args.no_temporal:
        jobs["0+temporal"] = "steps=0&temporal=true"
        jobs["N+temporal"] = f"steps={args.steps}&temporal=true"
    estimator = build_flow_estimator("dis-fine")
    server, url = start_server(env)
    tables = {}
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            for upscale in args.upscale:
                rows = []
                for video in videos:
                    upload = encode_h264([video.read(i) for i in range(len(video))], scale=upscale)
                    truths = [read_annotation(args.data, video, i) for i in range(len(video))]
                    decoded = decode_video(upload)
                    judge = FlowPairDataset.from_frames(decoded, estimator, (-1, 1), (128, 224))
                    row = {"sequence": video.name, "frames": len(decoded)}
                    for name, query in jobs.items():
                        job = run_job(client, upload, query, args.time_cap)
                        masks = [rle.decode(item) for item in job["result"]["masks"]]
                        row[name] = {"J": sequence_j(masks, truths), "flicker": flicker(masks, judge),
                                     "wall_s": job["wall_s"], "timings": job["result"]["timings"],
                                     "adaptation": job["result"].get("adaptation")}
                    rows.append(row)
                    print(f"{upscale}x {video.name}: " + "  ".join(
                        f"{n} J {100 * row[n]['J']:.1f} ({row[n]['wall_s']:.1f} s)" for n in jobs), flush=True)
                tables[upscale] = rows
    finally:
        stop_server(server)
    torch.set_num_threads(1)
    for upscale, rows in tables.items():
        size = f"{854 if upscale == 2 else 427}x{480 if upscale == 2 else 240}"
        print(f"\n{size} H.264 crf 23 uploads, {len(rows)} videos, {args.steps} steps, through the service")
        print(f"{'sequence':<16}{'n':>4}{'J0':>6}{'J':>6}{'Δ':>6}{'safeguard':>10}{'J0 tmp':>7}{'J tmp':>7}{'Δ tmp':>7}"
              f"{'flk0':>6}{'flk':>6}"
              f"{'flk tmp':>8}{'t0 s':>6}{'t s':>6}{'flow':>6}{'adapt':>6}{'seg':>6}{'enc':>6}")
        for r in rows:
            adaptation = r["N"]["adaptation"] or {}
            timings = r["N"]["timings"]
            print(f"{r['sequence']:<16}{r['frames']:4d}{100 * r['0']['J']:6.1f}{100 * r['N']['J']:6.1f}"
                  f"{100 * (r['N']['J'] - r['0']['J']):+6.1f}{adaptation.get('decision', '-'):>10}"
                  f"{100 * j(r, '0+temporal'):7.1f}{100 * j(r, 'N+temporal'):7.1f}"
                  f"{100 * (j(r, 'N+temporal') - j(r, '0+temporal')):+7.1f}{100 * r['0']['flicker']:6.1f}"
                  f"{100 * r['N']['flicker']:6.1f}{100 * j(r, 'N+temporal', 'flicker'):8.1f}"
                  f"{r['0']['wall_s']:6.1f}{r['N']['wall_s']:6.1f}"
                  f"{timings.get('flow', 0):6.1f}{timings.get('adapting', 0):6.1f}{timings.get('segmenting', 0):6.1f}"
                  f"{timings.get('encoding', 0):6.1f}")
        mean = {k: 100 * np.mean([r[k]["J"] for r in rows]) for k in jobs}
        flk = {k: 100 * np.mean([r[k]["flicker"] for r in rows]) for k in jobs}
        worst = 100 * min(r["N"]["J"] - r["0"]["J"] for r in rows)
        ratio = np.mean([r["N"]["wall_s"] / r["0"]["wall_s"] for r in rows])
        kept = sum((r["N"]["adaptation"] or {}).get("decision") == "kept" for r in rows)
        temporal_gain = mean.get("N+temporal", np.nan) - mean.get("0+temporal", np.nan)
        print(f"{'MEAN':<16}{'':4}{mean['0']:6.1f}{mean['N']:6.1f}{mean['N'] - mean['0']:+6.1f}{f'{kept} kept':>10}"
              f"{mean.get('0+temporal', np.nan):7.1f}{mean.get('N+temporal', np.nan):7.1f}{temporal_gain:+7.1f}"
              f"{flk['0']:6.1f}{flk['N']:6.1f}{flk.get('N+temporal', np.nan):8.1f}")
        print(f"mean change {mean['N'] - mean['0']:+.2f} J, worst video change {worst:+.1f} J; "
              f"{args.steps}-step job / 0-step job wall time: {ratio:.2f}x (mean)")
        if not args.no_temporal:
            worst_temporal = 100 * min(j(r, "N+temporal") - j(r, "0+temporal") for r in rows)
            ratio_temporal = np.mean([r["N+temporal"]["wall_s"] / r["0+temporal"]["wall_s"] for r in rows])
            print(f"with temporal fusion (the default job): mean change {temporal_gain:+.2f} J, "
                  f"worst video change {worst_temporal:+.1f} J; "
                  f"wall time {ratio_temporal:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
