#!/usr/bin/env python3
"""docker/'s files, checked without Docker (no Docker engine runs on our machines).

What the image runs is run here instead: collect-runtime.sh on this build, the collected binary
with only the collected libraries, `dserve serve` with the Dockerfile's entrypoint and default
command (a tiny generated model standing in for /models/DeepSeek-V3, --device cpu appended since
the last value of a flag wins) until /health answers, the same with compose.yaml's command, and
docker/README.md's two-node commands up to the point where they need a GPU.

usage: docker_files_test.py REPO BUILD
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO, BUILD = sys.argv[1], sys.argv[2]
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read(path):
    with open(os.path.join(REPO, path)) as f:
        return f.read()


def dockerfile_json(text, keyword):
    line = next(l for l in text.splitlines() if l.startswith(keyword + " "))
    return json.loads(line[len(keyword) + 1:])


def serve_until_healthy(binary, env, args, model_name):
    port = free_port()
    cmd = [binary] + args + ["--device", "cpu", "--threads", "2", "--port", str(port),
                             "--grpc-port", "0", "--kv-cache-gb", "0.05"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    healthy, models = False, ""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                healthy = r.status == 200
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                models = r.read().decode()
            break
        except OSError:
            time.sleep(0.3)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    check(healthy, f"/health answers 200 for: {' '.join(args)}")
    check(f'"id":"{model_name}"' in models.replace(" ", ""), f"/v1/models lists {model_name}")
    check(proc.returncode == 0, f"exits 0 on SIGTERM (got {proc.returncode})" +
          ("" if proc.returncode == 0 else "\n" + out))


def main():
    tmp = tempfile.mkdtemp(prefix="dserve-docker-")
    dockerfile = read("docker/Dockerfile")
    stages = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    check(len(stages) == 2 and "-devel-" in stages[0] and "-runtime-" in stages[1],
          "two stages: CUDA devel builds, CUDA runtime runs")
    check("DSERVE_SETUP_MINIMAL=1 scripts/setup.sh" in dockerfile, "the build stage runs setup.sh")
    check("-DDSERVE_CUDA=ON" in dockerfile, "the image is built with CUDA")
    check(re.search(r"^USER dserve$", dockerfile, re.M) is not None, "runs as a non-root user")
    check(re.search(r"^EXPOSE 8000 50051$", dockerfile, re.M) is not None, "exposes 8000, 50051")
    check(re.search(r"^HEALTHCHECK .*\n?.*curl -fsS http://127.0.0.1:8000/health", dockerfile,
                    re.M) is not None, "health check on /health")
    check('VOLUME ["/models"]' in dockerfile, "the model directory is a volume")
    check("LD_LIBRARY_PATH=/opt/dserve/lib:${LD_LIBRARY_PATH}" in dockerfile,
          "the runtime keeps the base image's library path")
    ignored = read(".dockerignore").split()
    check("build/" in ignored and ".git/" in ignored,
          ".dockerignore keeps host build folders (their CMake caches) out of the image")
    # The header's run example: the command after the image repeats --model.
    example = re.search(r"dserve:latest \\\n#\s+(.*)", dockerfile)
    check(example is not None and example.group(1).startswith("--model "),
          "the Dockerfile's run example repeats --model")

    # What the build stage runs after setup: the script that gathers the runtime stage's files.
    runtime = os.path.join(tmp, "opt")
    r = subprocess.run([os.path.join(REPO, "docker/collect-runtime.sh"), BUILD, runtime],
                       capture_output=True, text=True)
    check(r.returncode == 0, "collect-runtime.sh succeeds: " + r.stdout.strip() + r.stderr)
    binary = os.path.join(runtime, "bin/dserve")
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(runtime, "lib"))
    r = subprocess.run([binary, "--help"], env=env, capture_output=True, text=True)
    check(r.returncode == 0 and "serve" in r.stdout, "the collected binary runs with its libraries")

    model = os.path.join(tmp, "DeepSeek-V3")
    r = subprocess.run([binary, "make-model", "--preset", "tiny-v3", "--seed", "1", "--out", model],
                       env=env, capture_output=True, text=True)
    check(r.returncode == 0, "tiny model generated" + r.stderr)

    entry = dockerfile_json(dockerfile, "ENTRYPOINT")
    default = dockerfile_json(dockerfile, "CMD")
    check(entry[:2] == ["/opt/dserve/bin/dserve", "serve"], "the entrypoint is dserve serve")
    swap = lambda args: [model if a == "/models/DeepSeek-V3" else a for a in args]
    serve_until_healthy(binary, env, entry[1:] + swap(default), "deepseek-v3")

    compose = read("docker/compose.yaml")
    block = re.search(r"^    command:\n((?:      - .*\n)+)", compose, re.M)
    check(block is not None, "compose.yaml has a command list")
    command = [l.strip()[2:].strip().strip('"') for l in block.group(1).splitlines()]
    check("--ep-size" in command, "compose splits the experts over its GPUs")
    serve_until_healthy(binary, env, entry[1:] + swap(command), "deepseek-v3")

    # The README's two-node commands: every flag known and consistent; they stop where a GPU
    # is needed (the nodes' ranks are GPUs).
    readme = read("docker/README.md")
    runs = re.findall(r"dserve:latest \\\n((?:.*\\\n)*.*)\n", readme)
    check(len(runs) == 2, f"two node commands in docker/README.md (found {len(runs)})")
    for i, text in enumerate(runs):
        args = swap(text.replace("\\\n", " ").split())
        check(f"--node-rank {i}" in " ".join(args), f"node {i}'s command has --node-rank {i}")
        r = subprocess.run([binary] + entry[1:] + args + ["--device", "cpu"], env=env,
                           capture_output=True, text=True, timeout=120)
        check(r.returncode == 2 and "--nnodes > 1 needs --device cuda" in r.stderr,
              f"node {i}'s flags parse and need the GPUs (got {r.returncode}: {r.stderr.strip()})")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
