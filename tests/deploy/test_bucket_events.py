"""The bucket-events function (the ImageBucketEvents custom resource's
handler), its inline code run against moto's S3 and SQS: it puts the one
queue configuration the stack owns and keeps every other, takes only its own
out on Delete, and always answers CloudFormation at the response URL, with a
reason when it failed."""

import http.server
import json
import threading

import pytest

import cfn_template


class Answers(http.server.BaseHTTPRequestHandler):
    """Stands in for the pre-signed S3 URL CloudFormation gives: keeps each PUT."""

    received = []

    def do_PUT(self):  # noqa: N802 (the name http.server calls)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"content-type": self.headers.get("Content-Type"), "body": json.loads(body)})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def response_url():
    Answers.received = []
    server = http.server.HTTPServer(("127.0.0.1", 0), Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/response?X-Amz-Signature=abc"
    server.shutdown()
    server.server_close()


@pytest.fixture
def function(template):
    return cfn_template.lambda_module(template, "BucketEventsFunction")


@pytest.fixture
def setup(aws):
    s3, sqs = aws("s3"), aws("sqs")
    s3.create_bucket(Bucket="images", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    ours = sqs.create_queue(QueueName="events")["QueueUrl"]
    theirs = sqs.create_queue(QueueName="someone-elses")["QueueUrl"]

    def arn(url):
        return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    return s3, arn(ours), arn(theirs)


def event(response_url, request_type, queue_arn, prefix="", bucket="images", old=None):
    e = {
        "RequestType": request_type,
        "ResponseURL": response_url,
        "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/s3mirrorfs/0000",
        "RequestId": "r-" + request_type,
        "LogicalResourceId": "ImageBucketEvents",
        "ResourceType": "Custom::BucketEvents",
        "ResourceProperties": {"ServiceToken": "arn", "BucketName": bucket, "QueueArn": queue_arn, "Prefix": prefix},
    }
    if old is not None:
        e["OldResourceProperties"] = old
        e["PhysicalResourceId"] = bucket + "/s3mirrorfs-follow"
    return e


def configurations(s3):
    return s3.get_bucket_notification_configuration(Bucket="images").get("QueueConfigurations", [])


def prefix_of(configuration):
    rules = configuration.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    return {r["Name"].lower(): r["Value"] for r in rules}.get("prefix", "")


def test_create_update_and_delete_touch_only_the_stacks_configuration(function, setup, response_url):
    s3, ours, theirs = setup
    s3.put_bucket_notification_configuration(
        Bucket="images",
        NotificationConfiguration={"QueueConfigurations": [{
            "Id": "someone-else", "QueueArn": theirs, "Events": ["s3:ObjectCreated:Put"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "other/"}]}},
        }]},
    )

    assert function.handler(event(response_url, "Create", ours, "photos/"), None, s3=s3) == "SUCCESS"
    by_id = {c["Id"]: c for c in configurations(s3)}
    assert set(by_id) == {"someone-else", "s3mirrorfs-follow"}
    assert by_id["s3mirrorfs-follow"]["QueueArn"] == ours
    assert sorted(by_id["s3mirrorfs-follow"]["Events"]) == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    assert prefix_of(by_id["s3mirrorfs-follow"]) == "photos/"
    assert prefix_of(by_id["someone-else"]) == "other/"

    # A new BucketPrefix: the stack's one entry changes, no second one appears.
    old = {"BucketName": "images", "QueueArn": ours, "Prefix": "photos/"}
    update = event(response_url, "Update", ours, "", old=old)
    assert function.handler(update, None, s3=s3) == "SUCCESS"
    by_id = {c["Id"]: c for c in configurations(s3)}
    assert set(by_id) == {"someone-else", "s3mirrorfs-follow"}
    assert prefix_of(by_id["s3mirrorfs-follow"]) == ""

    assert function.handler(event(response_url, "Delete", ours), None, s3=s3) == "SUCCESS"
    assert [c["Id"] for c in configurations(s3)] == ["someone-else"]

    answers = [a["body"] for a in Answers.received]
    assert [a["Status"] for a in answers] == ["SUCCESS"] * 3
    # The same physical id throughout: CloudFormation never takes an update for a replacement.
    assert {a["PhysicalResourceId"] for a in answers} == {"images/s3mirrorfs-follow"}
    assert [a["RequestId"] for a in answers] == ["r-Create", "r-Update", "r-Delete"]
    for a in answers:
        assert a["StackId"].endswith("stack/s3mirrorfs/0000") and a["LogicalResourceId"] == "ImageBucketEvents"
    # A pre-signed S3 URL refuses a PUT whose Content-Type it was not signed with.
    assert {a["content-type"] for a in Answers.received} == {""}


def test_a_bucket_with_nothing_else_gets_exactly_the_stacks_configuration(function, setup, response_url):
    s3, ours, _ = setup
    assert function.handler(event(response_url, "Create", ours), None, s3=s3) == "SUCCESS"
    [configuration] = configurations(s3)
    assert configuration["Id"] == "s3mirrorfs-follow" and "Filter" not in configuration
    assert function.handler(event(response_url, "Delete", ours), None, s3=s3) == "SUCCESS"
    assert configurations(s3) == []


def test_a_failed_create_answers_failed_with_the_reason(function, setup, response_url, capsys):
    s3, ours, _ = setup
    assert function.handler(event(response_url, "Create", ours, bucket="no-such-bucket"), None, s3=s3) == "FAILED"
    [answer] = [a["body"] for a in Answers.received]
    assert answer["Status"] == "FAILED"
    assert "no-such-bucket" in answer["Reason"] and "NoSuchBucket" in answer["Reason"]
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["request"] == "Create"


def test_a_delete_that_cannot_take_it_out_does_not_hold_the_stack(function, setup, response_url, capsys):
    # The bucket is gone (or denied): the queue goes with the stack anyway, and
    # a stack deletion or rollback must not wait an hour for an answer.
    s3, ours, _ = setup
    assert function.handler(event(response_url, "Delete", ours, bucket="no-such-bucket"), None, s3=s3) == "SUCCESS"
    assert [a["body"]["Status"] for a in Answers.received] == ["SUCCESS"]
    assert "NoSuchBucket" in json.loads(capsys.readouterr().out.splitlines()[-1])["error"]


def test_a_malformed_request_is_answered_too(function, setup, response_url):
    s3, _, _ = setup
    broken = event(response_url, "Create", "")
    del broken["ResourceProperties"]["QueueArn"]
    assert function.handler(broken, None, s3=s3) == "FAILED"
    assert "QueueArn" in Answers.received[0]["body"]["Reason"]


class DeniedAtFirst:
    """An S3 client whose first calls are denied, as while a new role's policy propagates."""

    def __init__(self, s3, denials):
        self.s3, self.denials, self.calls = s3, denials, 0

    def __getattr__(self, name):
        def call(**kwargs):
            self.calls += 1
            if self.calls <= self.denials:
                from botocore.exceptions import ClientError

                raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, name)
            return getattr(self.s3, name)(**kwargs)

        return call


def test_access_denied_is_tried_again_while_a_new_role_propagates(function, setup, response_url, monkeypatch):
    s3, ours, _ = setup
    monkeypatch.setattr(function, "RETRY_DELAY_SECONDS", 0)
    assert function.handler(event(response_url, "Create", ours), None, s3=DeniedAtFirst(s3, 2)) == "SUCCESS"
    assert [c["Id"] for c in configurations(s3)] == ["s3mirrorfs-follow"]


def test_access_still_denied_fails_with_the_reason(function, setup, response_url, monkeypatch):
    s3, ours, _ = setup
    monkeypatch.setattr(function, "RETRY_DELAY_SECONDS", 0)
    denied = DeniedAtFirst(s3, 100)
    assert function.handler(event(response_url, "Create", ours), None, s3=denied) == "FAILED"
    assert denied.calls == function.ATTEMPTS
    assert "AccessDenied" in Answers.received[0]["body"]["Reason"]
