"""Fixtures of the deployment tests: the parsed template, and a moto server
(CloudFormation, EC2, SSM, S3, ...) on 127.0.0.1 at a free port, which every
AWS client of these tests talks to. No request leaves the machine."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cfn_template  # noqa: E402

REGION = "eu-west-1"

# Never the instance metadata service, never real credentials.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["AWS_DEFAULT_REGION"] = REGION
os.environ["AWS_REGION"] = REGION
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_SESSION_TOKEN", None)


@pytest.fixture(scope="session")
def template():
    return cfn_template.load()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """http://127.0.0.1:PORT of a moto server that lives for the whole test run."""
    server = Path(sys.executable).with_name("moto_server")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not start:\n" + log.read_text())
            time.sleep(0.2)
    yield endpoint
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def fresh_moto(moto_endpoint):
    """The moto server with every account's state wiped, for a test that counts things."""
    request = urllib.request.Request(moto_endpoint + "/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).read()
    return moto_endpoint


@pytest.fixture
def aws(fresh_moto):
    """aws("ssm") -> a boto3 client of the moto server."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=30)

    def client(service):
        return boto3.client(service, region_name=REGION, endpoint_url=fresh_moto, config=config)

    return client
