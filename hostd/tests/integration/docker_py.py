"""docker-py (PyPI `docker` 7.x) against hostd's Docker API socket.

Run by docker_api.rs as `python3 docker_py.py SOCKET IMAGE`; prints `ok`
and exits 0 when every check holds, else fails with the first assertion.
"""

import sys

import docker

sock, image = sys.argv[1], sys.argv[2]
client = docker.DockerClient(base_url="unix://" + sock, version="auto")

version = client.version()
assert version["ApiVersion"] == "1.43", version
assert client.ping() is True

tags = [tag for found in client.images.list() for tag in found.tags]
assert any(tag.split(":")[0] == image.split(":")[0] for tag in tags), tags

out = client.containers.run(image, ["echo", "hi"], remove=True, network_mode="none")
assert out == b"hi\n", out

container = client.containers.run(
    image,
    ["sh", "-c", "echo out; echo err >&2; exit 4"],
    detach=True,
    network_mode="none",
    name="py",
    labels={"from": "docker-py"},
)
result = container.wait(timeout=30)
assert result["StatusCode"] == 4, result
assert container.logs(stderr=False) == b"out\n", container.logs(stderr=False)
assert container.logs(stdout=False) == b"err\n", container.logs(stdout=False)
container.reload()
assert container.status == "exited", container.status
assert container.labels == {"from": "docker-py"}, container.labels
assert [c.name for c in client.containers.list(all=True, filters={"label": "from=docker-py"})] == ["py"]
container.remove()

try:
    client.containers.run(image, ["sh", "-c", "exit 5"], remove=True, network_mode="none")
    raise AssertionError("a failing command raised nothing")
except docker.errors.ContainerError as error:
    assert error.exit_status == 5, error

try:
    client.containers.get("nope")
    raise AssertionError("containers.get('nope') raised nothing")
except docker.errors.NotFound as error:
    assert "No such container" in str(error), error

assert client.containers.list(all=True) == [], client.containers.list(all=True)
print("ok")
