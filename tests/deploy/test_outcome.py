"""The prefetch's outcome on its way to the alarm: the sender the UserData
installs (s3mirrorfs-send-outcome, run by s3mirrorfs-outcome.timer) reads the
mirror's .s3mirrorfs/last-prefetch.json and puts each new one into the
prefetch's log group, and the metric filter counts exactly the successful
runs. The sender runs here for real, with a stub `aws` that logs its
arguments; the records have the fields of the binary's LastPrefetch."""

import json
import re
import subprocess
import sys

import pytest

import cfn_template

GROUP = "/s3mirrorfs/test/prefetch"


def sender_source(template):
    """The sender's Python, as the UserData writes it to /usr/local/sbin."""
    script = cfn_template.userdata_script(template)
    match = re.search(r"cat > /usr/local/sbin/s3mirrorfs-send-outcome\.new <<'EOF'\n(.*?)\nEOF\n", script, re.S)
    assert match, "the UserData writes no outcome sender"
    return match.group(1) + "\n"


def last_prefetch_fields():
    """The field names of LastPrefetch in src/prefetch.rs (what last-prefetch.json holds)."""
    source = (cfn_template.ROOT / "src" / "prefetch.rs").read_text()
    body = re.search(r"pub struct LastPrefetch \{(.*?)\n\}", source, re.S).group(1)
    return set(re.findall(r"^\s*pub (\w+):", body, re.M))


def record(outcome="success", time_unix=1796266841, failed=0, failures=(), error=None):
    last = {
        "time": "2026-12-03T03:00:41.000Z",
        "time_unix": time_unix,
        "outcome": outcome,
        "bucket": "images",
        "prefix": "",
        "listed": 51234,
        "downloaded": 210,
        "up_to_date": 51024 - failed,
        "failed": failed,
        "pruned": 0,
        "renamed": 3,
        "bytes": 118000000,
        "seconds": 41.2,
        "failures": [{"key": k, "error": "AccessDenied"} for k in failures],
    }
    if error is not None:
        last["error"] = error
    return last


def test_the_records_here_have_the_binarys_fields():
    fields = last_prefetch_fields()
    # What the sender and the metric filter read is there.
    assert {"time", "time_unix", "outcome", "failed", "failures"} <= fields
    # And the records of these tests hold nothing the binary does not write.
    assert set(record(error="x")) <= fields


class Sender:
    def __init__(self, tmp_path, template):
        self.tmp = tmp_path
        self.program = tmp_path / "s3mirrorfs-send-outcome"
        self.program.write_text(sender_source(template))
        self.program.chmod(0o755)
        self.mirror = tmp_path / "mirror"
        (self.mirror / ".s3mirrorfs").mkdir(parents=True)
        self.state = tmp_path / "state"
        self.state.mkdir()
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        # put-log-events: exits with $PUT_STATUS, or says the stream is missing
        # while $STATE_DIR/no-stream exists (create-log-stream removes it).
        (bin_dir / "aws").write_text(
            "#!/bin/sh\n"
            f'printf "%s\\n" "$*" >> {tmp_path}/calls\n'
            'case "$2" in\n'
            f'  create-log-stream) rm -f {tmp_path}/no-stream; exit 0 ;;\n'
            "  put-log-events)\n"
            f'    if [ -e {tmp_path}/no-stream ]; then echo "An error occurred (ResourceNotFoundException) when'
            ' calling the PutLogEvents operation: The specified log stream does not exist." >&2; exit 254; fi\n'
            '    if [ "${PUT_STATUS:-0}" != 0 ]; then echo "Could not connect to the endpoint URL" >&2; fi\n'
            '    exit "${PUT_STATUS:-0}" ;;\n'
            "esac\n"
        )
        (bin_dir / "aws").chmod(0o755)
        self.path = f"{bin_dir}:/usr/bin:/bin"

    def write(self, last):
        (self.mirror / ".s3mirrorfs" / "last-prefetch.json").write_text(json.dumps(last, indent=2))

    def run(self, **env):
        calls = self.tmp / "calls"
        if calls.exists():
            calls.unlink()
        run = subprocess.run(
            [sys.executable, str(self.program)],
            env={
                "PATH": self.path,
                "S3MIRRORFS_MIRROR_DIR": str(self.mirror),
                "S3MIRRORFS_OUTCOME_LOG_GROUP": GROUP,
                "STATE_DIRECTORY": str(self.state),
                **env,
            },
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.calls = calls.read_text().splitlines() if calls.exists() else []
        return run

    def puts(self):
        """The events of each put-log-events call."""
        events = []
        for call in self.calls:
            words = call.split(" ")
            if words[:3] == ["logs", "put-log-events", "--log-group-name"]:
                assert words[3] == GROUP
                assert words[4] == "--log-stream-name" and words[5].startswith("prefetch-outcome/")
                assert words[6] == "--log-events"
                events.append(json.loads(" ".join(words[7:])))
        return events


@pytest.fixture
def sender(tmp_path, template):
    return Sender(tmp_path, template)


def test_nothing_is_sent_before_a_prefetch_has_ended(sender):
    run = sender.run()
    assert (run.returncode, sender.calls) == (0, [])


def test_each_outcome_is_sent_once_stamped_with_the_runs_end(sender):
    sender.write(record())
    run = sender.run()
    assert run.returncode == 0, run.stderr
    [[event]] = sender.puts()
    assert event["timestamp"] == 1796266841000
    assert json.loads(event["message"]) == record()
    assert "\n" not in event["message"]
    assert (sender.state / "sent").read_text() == "1796266841\n"
    # Until the next run, nothing more.
    assert sender.run().returncode == 0
    assert sender.calls == []
    sender.write(record(outcome="partial", time_unix=1796353241, failed=1, failures=["a.jpg"]))
    assert sender.run().returncode == 0
    [[event]] = sender.puts()
    assert json.loads(event["message"])["outcome"] == "partial"


def test_a_failed_send_is_tried_again_at_the_next_start(sender):
    sender.write(record())
    run = sender.run(PUT_STATUS="255")
    assert run.returncode != 0
    assert "Could not connect" in run.stderr
    assert not (sender.state / "sent").exists()
    assert sender.run().returncode == 0
    assert len(sender.puts()) == 1


def test_a_missing_stream_is_created(sender):
    (sender.tmp / "no-stream").touch()
    sender.write(record())
    assert sender.run().returncode == 0
    assert [c.split(" ")[1] for c in sender.calls] == ["put-log-events", "create-log-stream", "put-log-events"]
    stream = sender.calls[0].split(" ")[5]
    assert sender.calls[1] == f"logs create-log-stream --log-group-name {GROUP} --log-stream-name {stream}"
    assert len(sender.puts()) == 2 and (sender.state / "sent").exists()


def test_a_long_list_of_failures_is_cut_the_count_is_not(sender):
    keys = [f"k{i}.jpg" for i in range(500)]
    sender.write(record(outcome="partial", failed=500, failures=keys))
    assert sender.run().returncode == 0
    [[event]] = sender.puts()
    message = json.loads(event["message"])
    assert message["failed"] == 500
    assert [f["key"] for f in message["failures"]] == keys[:20]


def metric_filter(template):
    return template["Resources"]["PrefetchSucceededMetricFilter"]["Properties"]


def matches(pattern, event):
    """A CloudWatch Logs JSON filter pattern made of ($.field = value) terms joined by &&."""
    assert pattern.startswith("{") and pattern.endswith("}")
    terms = [t.strip() for t in pattern[1:-1].split("&&")]
    for term in terms:
        m = re.fullmatch(r'\(\s*\$\.(\w+)\s*=\s*("[^"]*"|-?\d+)\s*\)', term)
        assert m, f"a term this test does not read: {term}"
        field, value = m.group(1), json.loads(m.group(2))
        if field not in event or event[field] != value:
            return False
    return True


@pytest.mark.parametrize(
    "last, counted",
    [
        (record(), True),
        (record(outcome="partial", failed=2, failures=["a", "b"]), False),
        (record(outcome="failed", error="listing s3://images/: AccessDenied"), False),
        # The mass change guard refused the run: nothing failed, nothing done.
        (record(outcome="failed", error="would replace 60% of the copies"), False),
    ],
)
def test_the_metric_filter_counts_successful_runs_only(sender, template, last, counted):
    sender.write(last)
    assert sender.run().returncode == 0
    [[event]] = sender.puts()
    assert matches(metric_filter(template)["FilterPattern"], json.loads(event["message"])) is counted


def test_the_metric_filter_ignores_the_run_command_output(template):
    # The Run Command output in the same group holds the prefetch's --json
    # summary, which has no "outcome"; and it arrives in events of many lines
    # (the unit's journal, then "prefetch exit status N"), not JSON documents.
    source = (cfn_template.ROOT / "src" / "prefetch.rs").read_text()
    body = re.search(r"pub struct Summary \{(.*?)\n\}", source, re.S).group(1)
    summary_fields = set(re.findall(r"^\s*pub (\w+):", body, re.M))
    assert {"failed", "listed"} <= summary_fields and "outcome" not in summary_fields
    assert '$.outcome = "success"' in metric_filter(template)["FilterPattern"]
    output = '{"bucket":"images","failed":0,"listed":3}\nprefetch exit status 0'
    with pytest.raises(json.JSONDecodeError):
        json.loads(output)


def test_the_sender_writes_into_the_group_the_filter_reads(template):
    assert metric_filter(template)["LogGroupName"] == {"Ref": "OutputLogGroup"}
    script = cfn_template.userdata_script(template)
    assert "OUTPUT_LOG_GROUP='/s3mirrorfs/s3mirrorfs/prefetch'" in script
    assert '"Environment=S3MIRRORFS_OUTCOME_LOG_GROUP=$OUTPUT_LOG_GROUP"' in script
    sub = template["Resources"]["BackupInstance"]["Properties"]["UserData"]["Fn::Base64"]["Fn::Sub"][0]
    assert "OUTPUT_LOG_GROUP='${OutputLogGroup}'" in sub


def test_the_sender_reads_the_file_the_prefetch_writes(template):
    source = (cfn_template.ROOT / "src" / "prefetch.rs").read_text()
    assert 'pub const LAST_PREFETCH_FILE: &str = "last-prefetch.json";' in source
    layout = (cfn_template.ROOT / "src" / "layout.rs").read_text()
    assert 'pub const STATE_DIR: &str = ".s3mirrorfs";' in layout
    assert '"S3MIRRORFS_MIRROR_DIR"], ".s3mirrorfs", "last-prefetch.json")' in sender_source(template)
