"""The start-prefetch function's inline code, run against moto's SSM and EC2:
it targets the Backup=Enabled tag, sends the prefetch command (and the archive
command after it, only when the stack has an archive) with its output to
CloudWatch Logs and a timeout beyond the units', and fails loudly."""

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
    assert set(variables) == set(ENV) | {"ARCHIVE_TIMEOUT_SECONDS"}
    # Left out of the function's environment entirely without an archive.
    assert variables["ARCHIVE_TIMEOUT_SECONDS"] == {
        "Fn::If": ["ArchiveEnabled", {"Ref": "ArchiveTimeoutSeconds"}, {"Ref": "AWS::NoValue"}]
    }
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
    # No archive in this stack: nothing about it is sent.
    assert "archive" not in script
    assert command["Comment"] == "s3mirrorfs daily prefetch"
    # Longer than the unit's own limit, so systemd ends a stuck run, not SSM.
    assert int(command["Parameters"]["executionTimeout"][0]) > int(ENV["PREFETCH_TIMEOUT_SECONDS"])


def sent_commands(aws, index):
    ec2, ssm = aws("ec2"), aws("ssm")
    launch(ec2, {"Backup": "Enabled"})
    result = index.handler({}, None, ssm=ssm)
    return ssm.list_commands(CommandId=result["CommandId"])["Commands"][0]


def test_the_archive_is_a_second_command_only_when_the_stack_has_one(aws, index, monkeypatch):
    without = sent_commands(aws, index)
    monkeypatch.setenv("ARCHIVE_TIMEOUT_SECONDS", "14400")
    with_archive = sent_commands(aws, index)

    assert "s3mirrorfs-archive.service" not in "\n".join(without["Parameters"]["commands"])
    commands = with_archive["Parameters"]["commands"]
    assert [c for c in commands if c.startswith("systemctl start")] == [
        "systemctl start s3mirrorfs-prefetch.service || rc=$?",
        "systemctl start s3mirrorfs-archive.service || rc=$?",
    ]
    # The same document and targets: one SendCommand runs both, in order.
    assert with_archive["DocumentName"] == without["DocumentName"] == "AWS-RunShellScript"
    assert with_archive["Targets"] == without["Targets"]
    assert with_archive["Comment"] == "s3mirrorfs daily prefetch and archive"
    assert commands[-1] == "exit $status"
    # Time for both runs before SSM gives up on the command.
    timeout = int(with_archive["Parameters"]["executionTimeout"][0])
    assert timeout == int(without["Parameters"]["executionTimeout"][0]) + 14400
    assert timeout > int(ENV["PREFETCH_TIMEOUT_SECONDS"]) + 14400


def test_the_execution_timeout_stays_within_what_ssm_accepts(index):
    env = dict(ENV, PREFETCH_TIMEOUT_SECONDS="171000", ARCHIVE_TIMEOUT_SECONDS="86400")
    assert index.build_request(env)["Parameters"]["executionTimeout"] == ["172800"]


def test_a_malformed_archive_timeout_fails_before_sending(index, monkeypatch):
    monkeypatch.setenv("ARCHIVE_TIMEOUT_SECONDS", "four hours")

    class MustNotBeCalled:
        def send_command(self, **request):
            raise AssertionError("sent with a malformed archive timeout")

    with pytest.raises(ValueError):
        index.handler({}, None, ssm=MustNotBeCalled())


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


def run_commands(commands, tmp_path, statuses):
    """The commands as the instance's shell runs them, with systemctl and
    journalctl standing in for the real ones: systemctl exits with the status
    given for its unit, journalctl prints a summary line naming the unit."""
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cases = "".join(f"  *{unit}*) exit {status} ;;\n" for unit, status in statuses.items())
    (bin_dir / "systemctl").write_text(
        f'#!/bin/sh\necho "systemctl $*" >> {tmp_path}/calls\ncase "$*" in\n{cases}esac\nexit 0\n'
    )
    (bin_dir / "journalctl").write_text(
        f'#!/bin/sh\necho "journalctl $*" >> {tmp_path}/calls\necho "{{\\"unit\\":\\"$2\\"}}"\n'
    )
    for program in bin_dir.iterdir():
        program.chmod(0o755)
    run = subprocess.run(
        ["/bin/sh", "-c", "\n".join(commands)],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return run, (tmp_path / "calls").read_text().splitlines()


@pytest.mark.parametrize("prefetch_status", [0, 1, 2])
def test_the_command_fails_exactly_when_the_prefetch_fails(index, tmp_path, prefetch_status):
    commands = index.commands(ENV)
    run, calls = run_commands(commands, tmp_path, {"s3mirrorfs-prefetch.service": prefetch_status})
    assert run.returncode == prefetch_status
    assert run.stdout.splitlines() == [
        '{"unit":"s3mirrorfs-prefetch.service"}',
        f"prefetch exit status {prefetch_status}",
    ]
    assert calls[0] == "systemctl start s3mirrorfs-prefetch.service"
    assert calls[1].startswith("journalctl --unit s3mirrorfs-prefetch.service --since @")
    assert len(calls) == 2


@pytest.mark.parametrize(
    "prefetch_status, archive_status, expected",
    [(0, 0, 0), (1, 0, 1), (0, 1, 1), (1, 3, 3), (4, 1, 4)],
)
def test_both_run_and_the_command_reports_the_worse(index, tmp_path, prefetch_status, archive_status, expected):
    commands = index.commands(dict(ENV, ARCHIVE_TIMEOUT_SECONDS="14400"))
    run, calls = run_commands(
        commands,
        tmp_path,
        {"s3mirrorfs-prefetch.service": prefetch_status, "s3mirrorfs-archive.service": archive_status},
    )
    assert run.returncode == expected, run.stdout + run.stderr
    assert run.stdout.splitlines() == [
        '{"unit":"s3mirrorfs-prefetch.service"}',
        f"prefetch exit status {prefetch_status}",
        '{"unit":"s3mirrorfs-archive.service"}',
        f"archive exit status {archive_status}",
    ]
    # The archive runs after the prefetch, whether the prefetch failed or not.
    assert [c for c in calls if c.startswith("systemctl")] == [
        "systemctl start s3mirrorfs-prefetch.service",
        "systemctl start s3mirrorfs-archive.service",
    ]
    assert calls[3].startswith("journalctl --unit s3mirrorfs-archive.service --since @")
