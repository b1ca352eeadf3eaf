"""fjordd in front of Slurm, measured: how fast a running job's events reach
fjordd (a Slurm job's rank 0 over tcp + CURVE, against a local worker over
ipc, side by side), and how fast fjordd hands jobs to Slurm (job.create to
sbatch's job id, and to every job done).

Runs a real single-node Slurm cluster (tests/slurm/slurm_cluster.py: root,
Debian's slurmctld, slurmd and munge) and real fjordd processes with the
daemon's fake worker as the trainer (it reports steps as fast as the
protocol lets it; no training), so the numbers are fjordd's and Slurm's
costs, not a model's.

    bazel build //daemon/server:fjordd //daemon/worker:fake_worker
    ~/.cache/fjord/venv/bin/python tools/bench/slurm_bench.py [--events 3000] [--jobs 40]
"""

import argparse
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
for p in (REPO / "sdk" / "python", REPO / "tests" / "sdk", REPO / "tests" / "sdk" / "e2e",
          REPO / "tests" / "interop", REPO / "tests" / "slurm"):
    sys.path.insert(0, str(p))

from fjordd import FAKE_WORKER, Fjordd, fake_data  # noqa: E402
from ports import free_port  # noqa: E402
from slurm_cluster import slurm_missing, start_cluster  # noqa: E402


def slurm_executor(env):
    return {"kind": "slurm",
            "slurm": {"report_listen": f"tcp://127.0.0.1:{free_port()}", "slurm_conf": env["SLURM_CONF"],
                      "ranks_per_node": 1, "poll_interval_s": 0.2, "signal_before_limit_s": 0,
                      "max_jobs": 1000}}


def events_per_second(d, steps, tmp):
    """One job of `steps` steps at full speed: step events/s as fjordd records
    them (fjordd's clock, from the first step event to the last)."""
    with d.client() as c:
        train = c.files.upload(pathlib.Path(fake_data(pathlib.Path(tmp) / "events.jsonl", steps=steps,
                                                      step_ms=0, checkpoint_every=0)))
        job = c.jobs.create(model="demo", training_file=train).wait(timeout=600)
        assert job.status == "succeeded", job.error
        events = list(c.jobs.events(job.id))
        steps_at = [e.time_ms for e in events if e.type == "step"]
        assert len(steps_at) == steps, f"{len(steps_at)} of {steps} step events: " \
            f"{[(e.type, e.message) for e in events if e.type != 'step']}"
        # From the first step event to the last, as fjordd stamped them.
        return (steps - 1) / max(1e-3, (steps_at[-1] - steps_at[0]) / 1000.0)


def submission(d, jobs, tmp):
    """`jobs` short jobs created back to back: seconds until every one has a
    Slurm job id (or runs, for the local executor) and until all are done."""
    with d.client() as c:
        train = c.files.upload(pathlib.Path(fake_data(pathlib.Path(tmp) / "short.jsonl", steps=2, step_ms=0,
                                                      checkpoint_every=0)))
        t0 = time.monotonic()
        created = [c.jobs.create(model="demo", training_file=train) for _ in range(jobs)]
        t_created = time.monotonic() - t0
        handed = None
        while True:
            now = [c.jobs.get(j.id) for j in created]
            if handed is None and all(j.slurm_job_id or j.status not in ("validating", "queued") for j in now):
                handed = time.monotonic() - t0
            if all(j.done for j in now):
                break
            assert time.monotonic() - t0 < 1200, "jobs did not finish within 20 min"
            time.sleep(0.2)
        assert all(j.status == "succeeded" for j in now), [j.error for j in now if j.status != "succeeded"]
        return t_created, handed, time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20000, help="steps of the event-rate job")
    ap.add_argument("--jobs", type=int, default=40, help="jobs of the submission run")
    a = ap.parse_args()
    why = slurm_missing()
    if why:
        sys.exit(f"slurm_bench: {why}")
    with start_cluster() as (env, _), tempfile.TemporaryDirectory() as tmp:
        rows = []
        with Fjordd(worker=FAKE_WORKER, scheduler={"max_validators": 8, "max_validators_per_tenant": 8}) as d:
            rows.append(("local (ipc)", events_per_second(d, a.events, tmp), submission(d, a.jobs, tmp)))
        # Every job handed to Slurm at once (no per-tenant cap): Slurm queues them.
        with Fjordd(worker=FAKE_WORKER, executor=slurm_executor(env),
                    scheduler={"max_running_per_tenant": 1000, "max_validators": 8,
                               "max_validators_per_tenant": 8}) as d:
            rows.append(("slurm (tcp + CURVE)", events_per_second(d, a.events, tmp), submission(d, a.jobs, tmp)))
    print(f"events: one job of {a.events} steps; jobs: {a.jobs} jobs of 2 steps created back to back")
    print("| executor | step events/s | create all | all handed to Slurm / started | all done |")
    print("|----------|---------------|------------|-------------------------------|----------|")
    for name, eps, (created, handed, done) in rows:
        print(f"| {name} | {eps:.0f} | {created:.2f} s | {handed:.2f} s | {done:.2f} s |")


if __name__ == "__main__":
    main()
