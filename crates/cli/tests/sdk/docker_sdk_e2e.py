"""berth serve driven by the Python docker SDK (PyPI `docker`), a client
nobody on the team wrote. Run by crates/cli/tests/engine_docker.rs with
DOCKER_HOST pointing at a private daemon that has a `busybox` image."""
import os
import sys
import time

import docker

client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"], timeout=60)
assert client.ping()
version = client.version()
assert version["ApiVersion"], version

# run, attached: the SDK waits and returns the output.
out = client.containers.run("busybox", ["sh", "-c", "echo hello; echo oops >&2"], remove=True, stderr=True)
assert b"hello" in out and b"oops" in out, out

# A non-zero exit raises ContainerError with the code.
try:
    client.containers.run("busybox", ["sh", "-c", "exit 5"], remove=True)
    raise AssertionError("expected ContainerError")
except docker.errors.ContainerError as e:
    assert e.exit_status == 5, e

# Detached, with labels; list with a label filter.
ctr = client.containers.run(
    "busybox",
    ["sh", "-c", "trap 'exit 0' TERM; echo up; while true; do sleep 0.1; done"],
    detach=True,
    name="sdk-box",
    labels={"suite": "sdk"},
    environment={"GREETING": "hi"},
)
ctr.reload()
assert ctr.status == "running", ctr.status
assert ctr.name == "sdk-box"
found = client.containers.list(filters={"label": "suite=sdk"})
assert [c.id for c in found] == [ctr.id], found
deadline = time.time() + 10
while b"up" not in ctr.logs():
    assert time.time() < deadline, ctr.logs()
    time.sleep(0.05)

# exec_run.
res = ctr.exec_run(["sh", "-c", "echo $GREETING; exit 3"])
assert res.exit_code == 3 and res.output == b"hi\n", res

# stop, wait, inspect, remove.
ctr.stop(timeout=5)
ctr.reload()
assert ctr.status == "exited", ctr.status
assert ctr.attrs["State"]["ExitCode"] == 0, ctr.attrs["State"]
assert ctr.wait()["StatusCode"] == 0
ctr.remove()
try:
    client.containers.get("sdk-box")
    raise AssertionError("expected NotFound")
except docker.errors.NotFound:
    pass

# Images.
tags = [t for i in client.images.list() for t in i.tags]
assert "busybox:latest" in tags, tags
img = client.images.get("busybox")
assert img.id.startswith("sha256:"), img.id
try:
    client.images.get("no-such-image:1")
    raise AssertionError("expected ImageNotFound")
except docker.errors.ImageNotFound:
    pass

# Restart policy seen through inspect.
flaky = client.containers.run(
    "busybox", ["sh", "-c", "exit 1"], detach=True, restart_policy={"Name": "on-failure", "MaximumRetryCount": 1}
)
deadline = time.time() + 20
while True:
    flaky.reload()
    if flaky.attrs["RestartCount"] == 1 and flaky.status == "exited":
        break
    assert time.time() < deadline, (flaky.attrs["RestartCount"], flaky.status)
    time.sleep(0.1)
assert flaky.attrs["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
flaky.remove(force=True)
print("sdk e2e ok")
sys.exit(0)
