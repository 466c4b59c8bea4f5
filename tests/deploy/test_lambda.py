"""The start-prefetch function's inline code, run against moto's SSM and EC2:
it targets the Backup=Enabled tag, sends the prefetch command with its output
to CloudWatch Logs and a timeout beyond the unit's, and fails loudly."""

import json

import boto3
import pytest
from botocore.config import Config

import cfn_template

ENV = {
    "TARGET_TAG_KEY": "Backup",
    "TARGET_TAG_VALUE": "Enabled",
    "OUTPUT_LOG_GROUP": "/s3mirrorfs/test/prefetch",
    "PREFETCH_TIMEOUT_SECONDS": "72000",
}


@pytest.fixture
def index(template, monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    return cfn_template.lambda_module(template)


def launch(ec2, tags):
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else []
    kwargs = {"TagSpecifications": spec} if spec else {}
    return ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t2.micro", **kwargs)[
        "Instances"
    ][0]["InstanceId"]


def test_the_template_environment_is_what_the_code_reads(template):
    variables = template["Resources"]["StartPrefetchFunction"]["Properties"]["Environment"]["Variables"]
    assert set(variables) == set(ENV)
    assert variables["TARGET_TAG_KEY"] == "Backup"
    assert variables["TARGET_TAG_VALUE"] == "Enabled"
    assert variables["OUTPUT_LOG_GROUP"] == {"Ref": "OutputLogGroup"}
    assert variables["PREFETCH_TIMEOUT_SECONDS"] == {"Ref": "PrefetchTimeoutSeconds"}


def test_sends_the_prefetch_to_tagged_instances_only(aws, index):
    ec2, ssm = aws("ec2"), aws("ssm")
    tagged = launch(ec2, {"Backup": "Enabled", "Name": "backup"})
    launch(ec2, {"Backup": "Disabled"})
    launch(ec2, {})

    # What went over the wire: moto keeps no CloudWatchOutputConfig to list.
    sent = []
    ssm.meta.events.register("provide-client-params.ssm.SendCommand", lambda params, **_: sent.append(params))

    result = index.handler({"source": "aws.events"}, None, ssm=ssm)

    assert [s["CloudWatchOutputConfig"] for s in sent] == [
        {"CloudWatchLogGroupName": ENV["OUTPUT_LOG_GROUP"], "CloudWatchOutputEnabled": True}
    ]
    command = ssm.list_commands(CommandId=result["CommandId"])["Commands"][0]
    assert command["DocumentName"] == "AWS-RunShellScript"
    assert command["Targets"] == [{"Key": "tag:Backup", "Values": ["Enabled"]}]
    # The tag, resolved by SSM: the tagged instance and no other.
    assert command["InstanceIds"] == [tagged]
    assert command["TargetCount"] == 1

    commands = command["Parameters"]["commands"]
    script = "\n".join(commands)
    assert "systemctl start s3mirrorfs-prefetch.service" in script
    # The command's status is the prefetch's status.
    assert commands[-1] == "exit $status"
    assert "journalctl --unit s3mirrorfs-prefetch.service" in script
    # Longer than the unit's own limit, so systemd ends a stuck run, not SSM.
    assert int(command["Parameters"]["executionTimeout"][0]) > int(ENV["PREFETCH_TIMEOUT_SECONDS"])


def test_logs_one_json_line_with_the_command_id(aws, index, capsys):
    ec2, ssm = aws("ec2"), aws("ssm")
    launch(ec2, {"Backup": "Enabled"})
    result = index.handler({}, None, ssm=ssm)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [{"sent": True, "command_id": result["CommandId"], "status": lines[0]["status"]}]


def test_an_unreachable_ssm_fails_the_invocation(index, capsys):
    # Nothing listens on port 9 of the loopback: every attempt is refused.
    ssm = boto3.client(
        "ssm",
        region_name="eu-west-1",
        endpoint_url="http://127.0.0.1:9",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2),
    )
    with pytest.raises(index.StartPrefetchError, match="SendCommand AWS-RunShellScript failed"):
        index.handler({}, None, ssm=ssm)
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["sent"] is False


def test_an_access_denied_answer_fails_the_invocation(index):
    # What SSM answers when the role may not target the instances or the document.
    from botocore.stub import Stubber

    ssm = boto3.client("ssm", region_name="eu-west-1", endpoint_url="http://127.0.0.1:9")
    with Stubber(ssm) as stub:
        stub.add_client_error(
            "send_command",
            service_error_code="AccessDeniedException",
            service_message="not authorized to perform: ssm:SendCommand",
            http_status_code=400,
        )
        with pytest.raises(index.StartPrefetchError, match="AccessDeniedException"):
            index.handler({}, None, ssm=ssm)


def test_a_command_reported_failed_fails_the_invocation(index):
    class FailedAtOnce:
        def send_command(self, **request):
            return {"Command": {"CommandId": "c-1", "Status": "Failed"}}

    with pytest.raises(index.StartPrefetchError, match="c-1 is Failed"):
        index.handler({}, None, ssm=FailedAtOnce())


def test_missing_configuration_fails_before_sending(index, monkeypatch):
    monkeypatch.delenv("OUTPUT_LOG_GROUP")

    class MustNotBeCalled:
        def send_command(self, **request):
            raise AssertionError("sent without a log group")

    with pytest.raises(KeyError, match="OUTPUT_LOG_GROUP"):
        index.handler({}, None, ssm=MustNotBeCalled())


@pytest.mark.parametrize("prefetch_status", [0, 1, 2])
def test_the_command_fails_exactly_when_the_prefetch_fails(index, tmp_path, prefetch_status):
    # The commands as the instance's shell runs them, with systemctl and
    # journalctl standing in for the real ones.
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "systemctl $*" >> {tmp_path}/calls\nexit {prefetch_status}\n')
    (bin_dir / "journalctl").write_text(
        f'#!/bin/sh\necho "journalctl $*" >> {tmp_path}/calls\necho \'{{"listed":3,"failed":0}}\'\n'
    )
    for program in bin_dir.iterdir():
        program.chmod(0o755)
    run = subprocess.run(
        ["/bin/sh", "-c", "\n".join(index.COMMANDS)],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == prefetch_status
    assert run.stdout.splitlines() == ['{"listed":3,"failed":0}', f"prefetch exit status {prefetch_status}"]
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "systemctl start s3mirrorfs-prefetch.service"
    assert calls[1].startswith("journalctl --unit s3mirrorfs-prefetch.service --since @")
