"""HPC jobs (styleforge.hpc, ``styleforge submit`` / ``fetch``): SLURM's node lists and the torchrun rendezvous, the
sbatch text submitit submits, tasks and their shards, an array run by submitit's local executor equal to one run
byte for byte, requeue arguments, the cache filled by fetch, and bad input refused before anything is submitted."""

from __future__ import annotations

import hashlib
import io
import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT, assert_one_line_error, tiny_generator
from styleforge.errors import StyleforgeError
from styleforge.hpc import CommandTask, JobSpec, expand_nodelist, plan_tasks, torchrun_args
from styleforge.hpc.slurm import check_mem, parse_minutes
from styleforge.utils.cache import KNOWN_FILES, cache_dir


def cli(args):
    from styleforge.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def sbatch_flags(text: str) -> dict:
    """``#SBATCH --key=value`` lines as {key: value} (True for a bare flag)."""
    out = {}
    for m in re.finditer(r"^#SBATCH --([\w-]+)(?:=(.*))?$", text, flags=re.M):
        out[m.group(1)] = True if m.group(2) is None else m.group(2)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# SLURM facts, read without SLURM


@pytest.mark.parametrize("nodelist, hosts", [
    ("gpu07", ["gpu07"]),
    ("gpu[01-03,07]", ["gpu01", "gpu02", "gpu03", "gpu07"]),
    ("gpu[08-10],login1", ["gpu08", "gpu09", "gpu10", "login1"]),
    ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
    ("a-b[9-10].x", ["a-b9.x", "a-b10.x"]),
])
def test_node_lists_expand_as_slurm_writes_them(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("bad", ["gpu[01-", "gpu[3-1]", "gpu[a]", ""])
def test_bad_node_lists_are_errors(bad):
    with pytest.raises(StyleforgeError, match="node list"):
        expand_nodelist(bad)


def test_torchrun_rendezvous_from_the_slurm_job():
    env = {"SLURM_JOB_NODELIST": "gpu[12-13]", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_ID": "734521",
           "SLURM_GPUS_ON_NODE": "4"}
    assert torchrun_args(env=env) == ["--nnodes", "2", "--nproc_per_node", "4", "--rdzv_backend", "c10d",
                                      "--rdzv_endpoint", "gpu12:30021", "--rdzv_id", "styleforge-734521"]
    assert torchrun_args(8, 2, env=env)[:4] == ["--nnodes", "2", "--nproc_per_node", "8"]
    assert torchrun_args(env={"SLURM_GPUS_PER_NODE": "a100:8"}) == ["--standalone", "--nnodes", "1",
                                                                      "--nproc_per_node", "8"]
    assert torchrun_args(env={}) == ["--standalone", "--nnodes", "1", "--nproc_per_node", "1"]
    with pytest.raises(StyleforgeError, match="SLURM_JOB_NODELIST"):
        torchrun_args(2, 2, env={})
    task = CommandTask(["train", "--data", "d.zip"], launcher="torchrun", nproc_per_node=4, nnodes=2, python="py")
    assert task.command_line(env) == ["py", "-m", "torch.distributed.run", *torchrun_args(4, 2, env=env), "-m",
                                      "styleforge.cli", "train", "--data", "d.zip"]


def test_times_and_memory_as_sbatch_takes_them():
    assert [parse_minutes(t) for t in ("90", "1:30", "02:00:00", "1-0", "1-12:30", "0:00:61")] == \
        [90, 2, 120, 1440, 2190, 2]
    assert [check_mem(m) for m in ("64G", "32000m", "500GB", "8")] == ["64G", "32000M", "500G", "8"]
    for bad in ("a", "1:2:3:4", "0"):
        with pytest.raises(StyleforgeError, match="time"):
            parse_minutes(bad)
    for bad in ("0G", "64X", "-1G"):
        with pytest.raises(StyleforgeError, match="mem"):
            check_mem(bad)


# ---------------------------------------------------------------------------------------------------------------------
# Tasks and sbatch text


def test_array_tasks_are_the_shards_slurm_variables_give(monkeypatch):
    from styleforge.utils.runtime import parse_shard

    tasks = plan_tasks(JobSpec(array=4), "generate", ["--seeds", "0-9", "--outdir", "o"], work=10)
    assert [t.argv[-2:] for t in tasks] == [["--shard", f"{i}/4"] for i in range(4)]
    for i, t in enumerate(tasks):  # the sbatch templates rely on the variables: the same cut
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(10 + 2 * i))
        monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "10")
        monkeypatch.setenv("SLURM_ARRAY_TASK_STEP", "2")
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
        assert parse_shard(None) == parse_shard(t.argv[-1]) == (i, 4)
    assert plan_tasks(JobSpec(array=10), "calc_metrics", ["--metrics", "fid50k"], work=10)[0].argv[0] == "calc-metrics"
    assert plan_tasks(JobSpec(), "sefa", ["--outdir", "o"])[0].argv == ["sefa", "--outdir", "o"]


def test_bad_plans_are_refused():
    with pytest.raises(StyleforgeError, match="sefa cannot be sharded"):
        plan_tasks(JobSpec(array=2), "sefa", [])
    with pytest.raises(StyleforgeError, match="array 5 is larger than the work: generate has 4 item"):
        plan_tasks(JobSpec(array=5), "generate", ["--seeds", "0-3"], work=4)
    with pytest.raises(StyleforgeError, match="train cannot be sharded"):
        plan_tasks(JobSpec(array=2), "train", [])
    with pytest.raises(StyleforgeError, match="only train runs across nodes"):
        plan_tasks(JobSpec(nodes=2), "generate", [])
    with pytest.raises(StyleforgeError, match="already has --shard"):
        plan_tasks(JobSpec(array=2), "generate", ["--shard=0/2"], work=4)
    with pytest.raises(StyleforgeError, match="local executor runs on this machine only"):
        plan_tasks(JobSpec(executor="local", nodes=2), "train", [])
    with pytest.raises(StyleforgeError, match=r"train --gpus 8 does not match the 4 GPU\(s\) asked for \(2 node"):
        plan_tasks(JobSpec(nodes=2, gpus_per_node=2), "train", ["--gpus", "8"])
    (t,) = plan_tasks(JobSpec(nodes=2, gpus_per_node=2), "train", ["--gpus=4"])
    assert (t.launcher, t.nnodes, t.nproc_per_node) == ("torchrun", 2, 2)
    with pytest.raises(StyleforgeError, match="no time before the preemption signal"):
        plan_tasks(JobSpec(time_min=1), "generate", [])


def test_requeued_tasks_resume_training_and_skip_finished_images():
    t = CommandTask(["train", "--outdir", "runs", "--resume", "ffhq.pkl", "--kimg", "10"])
    assert t.requeued().argv == ["train", "--outdir", "runs", "--kimg", "10", "--resume", "auto"]
    assert t.requeued().requeued().argv == t.requeued().argv
    assert CommandTask(["train", "--resume=x.pkl"]).requeued().argv == ["train", "--resume", "auto"]
    g = CommandTask(["generate", "--seeds", "0-9", "--shard", "1/2"]).requeued()
    assert g.argv[-1] == "--skip-existing" and g.requeued().argv == g.argv
    assert CommandTask(["align", "-s", "x"]).requeued().argv == ["align", "-s", "x"]  # align skips by itself


def test_sbatch_text_of_a_multinode_training_job():
    pytest.importorskip("submitit")
    r = cli(["submit", "--partition", "gpu", "--nodes", "2", "--gpus-per-node", "8", "--cpus-per-task", "32",
             "--time", "1-00:00:00", "--mem", "480G", "--account", "proj1", "--qos", "high", "--dry-run", "--",
             "train", "--data", "data.zip", "--cfg", "paper1024", "--outdir", "runs"])
    assert r.exit_code == 0, r.output
    flags = sbatch_flags(r.output)
    assert {k: flags.get(k) for k in ("nodes", "ntasks-per-node", "gpus-per-node", "cpus-per-task", "time", "mem",
                                      "partition", "account", "qos", "signal", "requeue")} == {
        "nodes": "2", "ntasks-per-node": "1", "gpus-per-node": "8", "cpus-per-task": "32", "time": "1440",
        "mem": "480G", "partition": "gpu", "account": "proj1", "qos": "high", "signal": "USR2@90", "requeue": True}
    assert "array" not in flags and "gpus-per-task" not in flags
    assert r.output.startswith("#!/bin/bash\n")
    assert re.search(r"^srun .* -m submitit\.core\._submit .*styleforge-jobs/%j$", r.output, flags=re.M), r.output
    assert "# each of the 2 nodes (one SLURM task per node) runs: torchrun --nnodes 2" in r.output
    assert "--nproc_per_node 8 -m styleforge.cli train --data data.zip --cfg paper1024 --outdir runs" in r.output


def test_sbatch_text_of_an_array():
    pytest.importorskip("submitit")
    r = cli(["submit", "--array", "4", "--gpus-per-task", "1", "--time", "30", "--logdir", "jobs", "--dry-run",
             "--", "generate", "--network", "ffhq.pkl", "--seeds", "0-99", "--outdir", "out"])
    assert r.exit_code == 0, r.output
    flags = sbatch_flags(r.output)
    assert flags["array"] == "0-3%4" and flags["gpus-per-task"] == "1" and flags["ntasks-per-node"] == "1"
    assert flags["output"].endswith("jobs/%A_%a/%A_%a_0_log.out") and flags["signal"] == "USR2@90"
    assert "# task 0: styleforge generate --network ffhq.pkl --seeds 0-99 --outdir out --shard 0/4" in r.output
    assert "# task 3: styleforge generate --network ffhq.pkl --seeds 0-99 --outdir out --shard 3/4" in r.output
    assert not Path("jobs").exists()  # a dry run writes nothing


# ---------------------------------------------------------------------------------------------------------------------
# Running: submitit's local executor


def test_local_executor_array_equals_one_run_byte_for_byte(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from styleforge.networks.checkpoint import save_networks

    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))  # the tasks run python -m styleforge.cli
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    net = save_networks(tmp_path / "g.safetensors", {"G_ema": tiny_generator()})
    args = ["generate", "--network", net, "--seeds", "3-9", "--device", "cpu"]
    r = cli(["submit", "--executor", "local", "--array", "2", "--time", "10", "--logdir", tmp_path / "jobs", "--"]
            + args + ["--outdir", tmp_path / "array"])
    assert r.exit_code == 0, r.output
    assert "done: 2 task(s) over 7 item(s) of generate" in r.output
    r = cli(args + ["--outdir", tmp_path / "one"])
    assert r.exit_code == 0, r.output

    def digest(p):
        return hashlib.sha256(p.read_bytes()).hexdigest()

    one = {p.name: digest(p) for p in (tmp_path / "one").glob("*.png")}
    two = {p.name: digest(p) for p in (tmp_path / "array").glob("*.png")}
    assert len(one) == 7 and one == two
    with np.load(tmp_path / "one" / "ws.npz") as a, np.load(tmp_path / "array" / "ws-shard0of2.npz") as b0, \
            np.load(tmp_path / "array" / "ws-shard1of2.npz") as b1:
        assert np.array_equal(a["w"], np.concatenate([b0["w"], b1["w"]]))
    logs = sorted((tmp_path / "jobs").glob("*/*_log.out"))
    assert len(logs) == 2 and "--shard 1/2" in "".join(p.read_text() for p in logs)  # one log per task


def test_a_failing_task_is_one_line_naming_its_log(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))
    r = cli(["submit", "--executor", "local", "--time", "10", "--logdir", tmp_path / "jobs", "--", "generate",
             "--network", tmp_path / "missing.pkl", "--seeds", "0", "--outdir", tmp_path / "o"])
    line = assert_one_line_error(r, "'styleforge generate --network", "exited with code 1",
                                 "(error: ", "missing.pkl: no such network file)", "its log:")
    assert str(tmp_path / "jobs") in line


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: one line, nothing submitted


@pytest.mark.parametrize("args, needles", [
    (["--array", "2", "--", "sefa", "--outdir", "o"], ["--array", "sefa cannot be sharded"]),
    (["--array", "5", "--", "generate", "--seeds", "0-3", "--outdir", "o"],
     ["--array 5 is larger than the work", "4 item(s)", "use --array 4"]),
    (["--array", "2", "--", "calc-metrics", "--metrics", "fid50k_full"], ["--array 2 is larger", "1 item(s)"]),
    (["--", "nosuch"], ["nosuch: not a styleforge command", "generate"]),
    ([], ["name the command to run after --"]),
    (["--executor", "local", "--nodes", "2", "--", "train", "--data", "d", "--outdir", "o"], ["--nodes 2", "local"]),
    (["--time", "1", "--", "generate", "--seeds", "1", "--outdir", "o"], ["--time 1 min", "preemption"]),
    (["--mem", "lots", "--", "generate", "--seeds", "1", "--outdir", "o"], ["--mem", "64G"]),
    (["--", "generate", "--network", "ffhq", "--seeds", "1", "--outdir", "o"],
     ["ffhq.pkl is not in the cache", "styleforge fetch ffhq", "--allow-download"]),
])
def test_bad_submissions_are_one_line_and_submit_nothing(tmp_path, monkeypatch, args, needles):
    monkeypatch.chdir(tmp_path)
    r = cli(["submit", "--logdir", tmp_path / "jobs"] + args)
    assert_one_line_error(r, *needles)
    assert not (tmp_path / "jobs").exists()


def test_an_array_larger_than_the_photos_of_align_is_refused(tmp_path):
    from PIL import Image

    (tmp_path / "p").mkdir()
    for k in range(2):
        Image.new("RGB", (8, 8)).save(tmp_path / "p" / f"{k}.png")
    r = cli(["submit", "--array", "3", "--logdir", tmp_path / "jobs", "--", "align", "-s", tmp_path / "p", "-d",
             tmp_path / "a"])
    assert_one_line_error(r, "--array 3 is larger than the work: align has 2 item(s)")


def test_an_unwritable_cache_stops_submit_and_fetch_first(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("STYLEFORGE_CACHE", str(tmp_path / "file" / "cache"))
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("no download may start"))
    r = cli(["submit", "--logdir", tmp_path / "jobs", "--", "generate", "--seeds", "0", "--outdir", tmp_path / "o"])
    assert_one_line_error(r, "the styleforge cache cannot be written", "STYLEFORGE_CACHE", "is a file")
    assert not (tmp_path / "jobs").exists()
    r = cli(["fetch", "ffhq"])
    assert_one_line_error(r, "the styleforge cache cannot be written", "STYLEFORGE_CACHE")


# ---------------------------------------------------------------------------------------------------------------------
# fetch and the "file missing" messages


def _fake_download(monkeypatch, payloads: dict):
    seen = []

    class Response(io.BytesIO):
        def __init__(self, data):
            super().__init__(data)
            self.headers = {"Content-Length": str(len(data))}

    def urlopen(url, timeout):
        seen.append(url)
        return Response(payloads[url])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return seen


def test_fetch_fills_the_cache_once(monkeypatch):
    seen = _fake_download(monkeypatch, {KNOWN_FILES["vgg16"].url: b"v" * 100,
                                        KNOWN_FILES["inception"].url: b"i" * 50,
                                        "https://example.org/x/net.pkl": b"n" * 10})
    (cache_dir()).mkdir(parents=True, exist_ok=True)
    (cache_dir() / "ffhq.pkl").write_bytes(b"already")
    r = cli(["fetch", "ffhq", "vgg16", "inception", "https://example.org/x/net.pkl", "vgg16"])
    assert r.exit_code == 0, r.output
    assert seen == [KNOWN_FILES["vgg16"].url, KNOWN_FILES["inception"].url, "https://example.org/x/net.pkl"]
    assert (cache_dir() / "vgg16.pt").read_bytes() == b"v" * 100 and (cache_dir() / "net.pkl").read_bytes() == b"n" * 10
    assert f"ffhq: already there, {cache_dir() / 'ffhq.pkl'}" in r.output
    assert f"vgg16: downloaded to {cache_dir() / 'vgg16.pt'}" in r.output
    r = cli(["fetch", "vgg16", "inception"])  # nothing to download the second time
    assert r.exit_code == 0 and len(seen) == 3 and "vgg16: already there" in r.output
    from styleforge.zoo import resolve

    assert resolve("ffhq") == cache_dir() / "ffhq.pkl"  # the tools find what fetch put there


def test_fetch_networks_and_landmarks(monkeypatch, tmp_path):
    from styleforge.align.landmarks import fan_checkpoint_dir, fan_urls
    from styleforge.hpc.fetch import expand

    nets = expand(["networks"])
    assert nets == sorted(k for k, v in KNOWN_FILES.items() if v.filename.endswith(".pkl")) and "ffhq" in nets
    assert expand(["ffhq", "networks", "FFHQ"]) == ["ffhq"] + [n for n in nets if n != "ffhq"]  # repeats dropped
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    urls = fan_urls()
    seen = _fake_download(monkeypatch, {urls["s3fd"]: b"s", urls["2DFAN-4"]: b"f"})
    r = cli(["fetch", "landmarks"])
    assert r.exit_code == 0, r.output
    assert fan_checkpoint_dir() == tmp_path / "torch" / "hub" / "checkpoints"
    assert sorted(p.name for p in fan_checkpoint_dir().iterdir()) == sorted(u.rsplit("/", 1)[-1] for u in seen)


def test_fetch_refuses_unknown_names_with_the_list():
    r = cli(["fetch", "ffhqq"])
    assert_one_line_error(r, "ffhqq: not a known file", "ffhq", "vgg16", "inception", "clip", "landmarks", "networks")
    assert_one_line_error(cli(["fetch"]), "name at least one file to fetch")
    r = cli(["fetch", "--list"])
    assert r.exit_code == 0 and re.search(r"^clip +CLIP ViT-B/32", r.output, flags=re.M)


def test_missing_file_messages_name_the_fetch_command(tmp_path):
    from styleforge import zoo
    from styleforge.align.landmarks import fan_missing_error
    from styleforge.perceptual.detectors import load_detector

    for spec, cmd in (("ffhq", "styleforge fetch ffhq"), ("vgg16", "styleforge fetch vgg16"),
                      ("https://example.org/a/b.pkl", "styleforge fetch https://example.org/a/b.pkl")):
        with pytest.raises(StyleforgeError, match=re.escape(f"run '{cmd}' on a machine with internet")):
            zoo.resolve(spec)
    with pytest.raises(StyleforgeError, match="'styleforge fetch inception' does that"):
        load_detector("inception", tmp_path / "nofile.pt")
    assert "'styleforge fetch landmarks' does that" in str(fan_missing_error([("s3fd.pth", "https://x/s3fd.pth")]))


def test_the_templates_launcher_runs_the_command_under_torchrun(tmp_path, monkeypatch, capfd):
    from styleforge.hpc.launch import main
    from styleforge.networks.checkpoint import save_networks

    assert main([]) == 1 and main(["--nproc-per-node", "x", "train"]) == 1
    assert "usage: python -m styleforge.hpc.launch" in capfd.readouterr().err
    for k in ("SLURM_JOB_NUM_NODES", "SLURM_NNODES", "SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))
    net = save_networks(tmp_path / "g.safetensors", {"G_ema": tiny_generator()})
    assert main(["--", "info", str(net)]) == 0  # one node, one process: torchrun --standalone
    out = capfd.readouterr().out
    assert "styleforge task:" in out and "--standalone --nnodes 1 --nproc_per_node 1 -m styleforge.cli info" in out
    assert '"img_resolution": 16' in out
