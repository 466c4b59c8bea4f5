"""The template, created as a stack in moto's CloudFormation: it parses, its
parameters resolve (the public Amazon Linux 2023 AMI parameter included), and
what it creates has the settings the template promises.

What moto's CloudFormation does not implement, and so these tests cannot check
(cfn-lint, checkov, the guard rules and test_template.py check the template
itself instead):
- resource types it skips: AWS::S3::BucketPolicy, AWS::SQS::QueuePolicy,
  AWS::SNS::Subscription, AWS::Logs::MetricFilter, AWS::CloudWatch::Alarm.
  References to them resolve, nothing is created;
- of a bucket, anything but its encryption and tags (versioning, lifecycle,
  logging, public access block);
- S3 checking the queue policy when the notification configuration is put
  (moto's S3 accepts any queue), and so the order that makes the stack create
  in one pass in AWS; cfn-lint finds dependency cycles (E3004);
- running a function: the custom resource ImageBucketEvents would need Docker.
  The test stands in for the Lambda service: it runs the function's own code
  in-process against moto's S3, and that code answers moto's CloudFormation at
  the response URL, as it answers AWS.
"""

import ast
import base64
import json
import time
import urllib.parse

import pytest

import cfn_template

AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
SHA = "ab" * 32


def network(ec2):
    subnet = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"][0]
    return subnet["VpcId"], subnet["SubnetId"], subnet["AvailabilityZone"]


def create(aws, template_body, stack, **overrides):
    cfn, ec2, ssm = aws("cloudformation"), aws("ec2"), aws("ssm")
    # The public parameter, which moto publishes as AWS does.
    image = ssm.get_parameter(Name=AMI_PARAMETER)["Parameter"]["Value"]
    vpc, subnet, zone = network(ec2)
    values = {
        "ReleaseS3Uri": "s3://s3mirrorfs-releases/s3mirrorfs-0.1.0-1.x86_64.rpm",
        "ReleaseSha256": SHA,
        "VpcId": vpc,
        "SubnetId": subnet,
        "AvailabilityZone": zone,
    }
    values.update(overrides)
    stack_id = cfn.create_stack(
        StackName=stack,
        TemplateBody=template_body,
        Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in values.items()],
        Capabilities=["CAPABILITY_IAM"],
    )["StackId"]
    answered = False
    deadline = time.monotonic() + 120
    while True:
        described = cfn.describe_stacks(StackName=stack)["Stacks"][0]
        if not described["StackStatus"].endswith("_IN_PROGRESS"):
            break
        if not answered:
            answered = run_bucket_events_function(aws, template_body, stack_id, values)
        assert time.monotonic() < deadline, "stack creation did not finish"
        time.sleep(0.5)
    events = cfn.describe_stack_events(StackName=stack)["StackEvents"]
    failures = [(e["LogicalResourceId"], e.get("ResourceStatusReason")) for e in events if "FAILED" in e["ResourceStatus"]]
    assert described["StackStatus"] == "CREATE_COMPLETE", failures
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    resources = {
        r["LogicalResourceId"]: r for r in cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]
    }
    return outputs, resources, image


def run_bucket_events_function(aws, template_body, stack_id, parameters):
    """What the Lambda service would do for the ImageBucketEvents custom resource
    (moto cannot run the function): the function's code, in-process, with moto's
    S3, and the event CloudFormation sends, whose properties are resolved here
    from what the stack created as the template resolves them (test_template.py
    checks the template's side). Returns whether there was anything to do."""
    cfn = aws("cloudformation")
    resources = {
        r["LogicalResourceId"]: r.get("PhysicalResourceId")
        for r in cfn.list_stack_resources(StackName=stack_id)["StackResourceSummaries"]
    }
    if "ImageBucketEvents" not in resources:
        return False
    queue_arn = aws("sqs").get_queue_attributes(QueueUrl=resources["EventQueue"], AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    prefix = parameters.get("BucketPrefix", "")
    # moto's own response URL; the answer carries no signature, so moto takes its
    # region from a regional host name in the URL (else it assumes us-east-1).
    response_url = (
        f"{cfn.meta.endpoint_url}/cloudformation_eu-west-1/cfnresponse?stack={stack_id}"
        "&host=cloudformation.eu-west-1.amazonaws.com"
    )
    event = {
        "RequestType": "Create",
        "ResponseURL": response_url,
        "StackId": stack_id,
        "RequestId": "00000000-0000-4000-8000-000000000001",
        "LogicalResourceId": "ImageBucketEvents",
        "ResourceType": "Custom::BucketEvents",
        "ResourceProperties": {
            "ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:bucket-events",
            "BucketName": resources["ImageBucket"],
            "QueueArn": queue_arn,
            "Prefix": prefix + "/" if prefix else "",
        },
    }
    function = cfn_template.lambda_module(cfn_template.load(), "BucketEventsFunction")
    assert function.handler(event, None, s3=aws("s3")) == "SUCCESS"
    return True


@pytest.fixture(scope="module")
def body():
    return cfn_template.TEMPLATE.read_text()


def test_the_stack_is_created_with_the_eventbridge_schedule(aws, body):
    outputs, resources, image = create(aws, body, "s3mirrorfs")
    ec2, s3, lam, events = aws("ec2"), aws("s3"), aws("lambda"), aws("events")

    assert set(outputs) >= {"ImageBucketName", "LogBucketName", "InstanceId", "StartSessionCommand"}
    assert outputs["StartSessionCommand"] == f"aws ssm start-session --region eu-west-1 --target {outputs['InstanceId']}"

    instance = ec2.describe_instances(InstanceIds=[outputs["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert instance["ImageId"] == image
    assert instance["InstanceType"] == "t2.micro"
    assert "KeyName" not in instance
    assert {"Key": "Backup", "Value": "Enabled"} in instance["Tags"]
    assert instance["IamInstanceProfile"]["Arn"].endswith(resources["InstanceProfile"]["PhysicalResourceId"])
    group = resources["InstanceSecurityGroup"]["PhysicalResourceId"]
    described = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]
    assert described["IpPermissions"] == []
    # (moto's CloudFormation keeps neither the egress rules nor a volume's
    # encryption; test_template.py checks those in the template itself.)

    userdata = ec2.describe_instance_attribute(InstanceId=outputs["InstanceId"], Attribute="userData")
    script = base64.b64decode(userdata["UserData"]["Value"]).decode()
    assert script.startswith("#!/bin/bash\n")
    assert f"TARGET='{outputs['ImageBucketName']}'" in script
    assert f"VOLUME_ID='{outputs['MirrorVolumeId']}'" in script
    assert f"RELEASE_SHA256='{SHA}'" in script
    assert "SCHEDULE='EventBridge'" in script
    assert "${" not in script.replace("${packages[@]}", "").replace("${release_dirs[0]}", "")

    volume = ec2.describe_volumes(VolumeIds=[outputs["MirrorVolumeId"]])["Volumes"][0]
    assert volume["Size"] == 100
    assert volume["AvailabilityZone"] == instance["Placement"]["AvailabilityZone"]

    image_bucket, log_bucket = outputs["ImageBucketName"], outputs["LogBucketName"]
    # moto's CloudFormation applies a bucket's encryption and tags only.
    assert default_encryption(s3, image_bucket) == {"SSEAlgorithm": "AES256"}
    assert default_encryption(s3, log_bucket) == {"SSEAlgorithm": "AES256"}

    function = lam.get_function(FunctionName=outputs["StartPrefetchFunctionName"])["Configuration"]
    assert function["Runtime"] in ("python3.12", "python3.13")
    rule = events.describe_rule(Name=resources["ScheduleRule"]["PhysicalResourceId"])
    assert rule["ScheduleExpression"] == "cron(0 3 * * ? *)"
    targets = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert [t["Arn"] for t in targets] == [function["FunctionArn"]]


def default_encryption(s3, bucket):
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    return rules[0]["ApplyServerSideEncryptionByDefault"]


def test_a_kms_key_encrypts_the_image_bucket_but_not_the_log_bucket(aws, body):
    key = "arn:aws:kms:eu-west-1:123456789012:key/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
    outputs, _, _ = create(aws, body, "s3mirrorfs-kms", ImageBucketKmsKeyArn=key)
    s3 = aws("s3")
    assert default_encryption(s3, outputs["ImageBucketName"]) == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    # Access logs cannot be delivered into a bucket whose default is SSE-KMS.
    assert default_encryption(s3, outputs["LogBucketName"]) == {"SSEAlgorithm": "AES256"}


@pytest.mark.parametrize("source", ["SystemdTimer", "Cron"])
def test_an_on_instance_schedule_creates_no_eventbridge_trigger(aws, body, source):
    outputs, resources, _ = create(aws, body, f"s3mirrorfs-{source.lower()}", ScheduleSource=source)
    eventbridge_only = {
        "ScheduleRule",
        "StartPrefetchFunction",
        "ScheduleInvokePermission",
        "FunctionRole",
        "FunctionLogGroup",
        "FunctionDeadLetterQueue",
    }
    assert not eventbridge_only & set(resources)
    assert "StartPrefetchFunctionName" not in outputs
    assert aws("events").list_rules()["Rules"] == []
    userdata = aws("ec2").describe_instance_attribute(InstanceId=outputs["InstanceId"], Attribute="userData")
    assert f"SCHEDULE='{source}'" in base64.b64decode(userdata["UserData"]["Value"]).decode()


def test_an_existing_mirror_volume_is_used_instead_of_a_new_one(aws, body):
    ec2 = aws("ec2")
    _, _, zone = network(ec2)
    kept = ec2.create_volume(AvailabilityZone=zone, Size=50, Encrypted=True)["VolumeId"]
    outputs, resources, _ = create(aws, body, "s3mirrorfs-kept", ExistingMirrorVolumeId=kept)
    assert "MirrorVolume" not in resources
    assert outputs["MirrorVolumeId"] == kept
    assert [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"] if v["Size"] == 50] == [kept]


def test_a_prefix_is_mounted_and_mirrored(aws, body):
    outputs, _, _ = create(aws, body, "s3mirrorfs-prefix", BucketPrefix="photos/2024")
    userdata = aws("ec2").describe_instance_attribute(InstanceId=outputs["InstanceId"], Attribute="userData")
    script = base64.b64decode(userdata["UserData"]["Value"]).decode()
    assert f"TARGET='{outputs['ImageBucketName']}/photos/2024'" in script


def instance_policy(aws, resources):
    iam = aws("iam")
    role = resources["InstanceRole"]["PhysicalResourceId"]
    [name] = iam.list_role_policies(RoleName=role)["PolicyNames"]
    document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    # moto keeps the document as the text of a Python dict, and an AWS::NoValue
    # branch as None where CloudFormation leaves the statement out.
    if isinstance(document, str):
        document = ast.literal_eval(urllib.parse.unquote(document))
    return {s.get("Sid"): s for s in document["Statement"] if s is not None}


def function_environment(aws, outputs):
    function = aws("lambda").get_function(FunctionName=outputs["StartPrefetchFunctionName"])["Configuration"]
    return function["Environment"]["Variables"]


def test_only_restore_archived_days_let_the_instance_restore_and_only_images(aws, body):
    outputs, resources, _ = create(aws, body, "s3mirrorfs-restore", RestoreArchivedDays=7)
    restore = instance_policy(aws, resources)["RestoreArchivedImages"]
    assert restore == {
        "Sid": "RestoreArchivedImages",
        "Effect": "Allow",
        "Action": "s3:RestoreObject",
        "Resource": f"arn:aws:s3:::{outputs['ImageBucketName']}/*",
    }
    userdata = aws("ec2").describe_instance_attribute(InstanceId=outputs["InstanceId"], Attribute="userData")
    assert "PREFETCH_OPTIONS='--restore-archived 7'" in base64.b64decode(userdata["UserData"]["Value"]).decode()
    _, resources, _ = create(aws, body, "s3mirrorfs-norestore")
    statements = instance_policy(aws, resources)
    assert "RestoreArchivedImages" not in statements
    actions = {a for s in statements.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert "s3:RestoreObject" not in actions


ARCHIVE_SIDS = {"WriteTheArchives", "ListTheArchives", "DeleteOldArchives", "EncryptTheArchives",
                "NoArchivesInTheStackBuckets"}


def test_without_an_archive_dir_nothing_about_the_archive_exists(aws, body):
    outputs, resources, _ = create(aws, body, "s3mirrorfs-noarchive", ArchiveBucket="s3mirrorfs-archives")
    statements = instance_policy(aws, resources)
    assert not ARCHIVE_SIDS & set(statements)
    actions = {a for s in statements.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert not {"s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"} & actions
    assert "ARCHIVE_TIMEOUT_SECONDS" not in function_environment(aws, outputs)
    assert "ArchiveLocation" not in outputs
    userdata = aws("ec2").describe_instance_attribute(InstanceId=outputs["InstanceId"], Attribute="userData")
    assert "ARCHIVE_DIR=''" in base64.b64decode(userdata["UserData"]["Value"]).decode()


def test_an_archive_may_write_under_its_prefix_only(aws, body):
    outputs, resources, _ = create(
        aws, body, "s3mirrorfs-archive", ArchiveDir="/srv/app/data", ArchiveBucket="s3mirrorfs-archives",
        ArchivePrefix="app/daily", ArchiveKeep="5",
    )
    statements = instance_policy(aws, resources)
    objects = "arn:aws:s3:::s3mirrorfs-archives/app/daily/*"
    assert statements["WriteTheArchives"]["Effect"] == "Allow"
    assert sorted(statements["WriteTheArchives"]["Action"]) == ["s3:AbortMultipartUpload", "s3:PutObject"]
    assert statements["WriteTheArchives"]["Resource"] == objects
    assert statements["ListTheArchives"]["Action"] == "s3:ListBucket"
    assert statements["ListTheArchives"]["Resource"] == "arn:aws:s3:::s3mirrorfs-archives"
    assert statements["ListTheArchives"]["Condition"] == {"StringLike": {"s3:prefix": "app/daily/*"}}
    assert statements["DeleteOldArchives"] == {
        "Sid": "DeleteOldArchives", "Effect": "Allow", "Action": "s3:DeleteObject", "Resource": objects
    }
    assert "EncryptTheArchives" not in statements
    deny = statements["NoArchivesInTheStackBuckets"]
    assert deny["Effect"] == "Deny"
    assert sorted(deny["Resource"]) == sorted(
        [f"arn:aws:s3:::{outputs['ImageBucketName']}/*", f"arn:aws:s3:::{outputs['LogBucketName']}/*"]
    )
    assert str(function_environment(aws, outputs)["ARCHIVE_TIMEOUT_SECONDS"]) == "14400"
    assert outputs["ArchiveLocation"] == "s3://s3mirrorfs-archives/app/daily/"
    userdata = aws("ec2").describe_instance_attribute(InstanceId=outputs["InstanceId"], Attribute="userData")
    script = base64.b64decode(userdata["UserData"]["Value"]).decode()
    for line in ("ARCHIVE_DIR='/srv/app/data'", "ARCHIVE_BUCKET='s3mirrorfs-archives'", "ARCHIVE_PREFIX='app/daily'",
                 "ARCHIVE_KEEP='5'", "ARCHIVE_KMS_KEY=''", f"IMAGE_BUCKET='{outputs['ImageBucketName']}'",
                 f"LOG_BUCKET='{outputs['LogBucketName']}'"):
        assert line in script


def test_an_archive_that_keeps_everything_may_not_list_or_delete(aws, body):
    key = "arn:aws:kms:eu-west-1:123456789012:key/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
    _, resources, _ = create(
        aws, body, "s3mirrorfs-keepall", ArchiveDir="/srv/app/data", ArchiveBucket="s3mirrorfs-archives",
        ArchiveKeep="0", ArchiveKmsKeyArn=key,
    )
    statements = instance_policy(aws, resources)
    assert {"WriteTheArchives", "EncryptTheArchives", "NoArchivesInTheStackBuckets"} <= set(statements)
    assert not {"ListTheArchives", "DeleteOldArchives"} & set(statements)
    assert statements["WriteTheArchives"]["Resource"] == "arn:aws:s3:::s3mirrorfs-archives/app-archives/*"
    kms = statements["EncryptTheArchives"]
    assert sorted(kms["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert kms["Resource"] == key
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}}


@pytest.mark.parametrize("source", ["SystemdTimer", "Cron"])
def test_an_on_instance_schedule_archives_without_the_function(aws, body, source):
    outputs, resources, _ = create(
        aws, body, f"s3mirrorfs-archive-{source.lower()}", ScheduleSource=source, ArchiveDir="/srv/app/data",
        ArchiveBucket="s3mirrorfs-archives",
    )
    assert "StartPrefetchFunction" not in resources
    assert "WriteTheArchives" in instance_policy(aws, resources)


def userdata_of(aws, outputs):
    userdata = aws("ec2").describe_instance_attribute(InstanceId=outputs["InstanceId"], Attribute="userData")
    return base64.b64decode(userdata["UserData"]["Value"]).decode()


REAL_TIME_RESOURCES = {
    "EventQueue", "EventDeadLetterQueue", "BucketEventsFunction", "BucketEventsFunctionRole",
    "BucketEventsLogGroup", "BucketEventsDeadLetterQueue", "ImageBucketEvents",
}


def test_real_time_sends_the_buckets_events_to_a_queue_the_instance_follows(aws, body):
    outputs, resources, _ = create(aws, body, "s3mirrorfs-realtime", RealTime="true", BucketPrefix="photos")
    sqs, s3 = aws("sqs"), aws("s3")
    assert REAL_TIME_RESOURCES <= set(resources)

    queue_url, dead_url = outputs["EventQueueUrl"], outputs["EventDeadLetterQueueUrl"]
    queue = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    dead = sqs.get_queue_attributes(QueueUrl=dead_url, AttributeNames=["All"])["Attributes"]
    for attributes in (queue, dead):
        assert attributes["SqsManagedSseEnabled"] == "true"
        assert attributes["MessageRetentionPeriod"] == "1209600"
    assert json.loads(queue["RedrivePolicy"]) == {"deadLetterTargetArn": dead["QueueArn"], "maxReceiveCount": 5}
    assert queue["VisibilityTimeout"] == "300"

    # The function's code put the configuration, as it would in AWS.
    bucket = outputs["ImageBucketName"]
    notifications = s3.get_bucket_notification_configuration(Bucket=bucket)
    [configuration] = notifications["QueueConfigurations"]
    assert configuration["Id"] == "s3mirrorfs-follow"
    assert configuration["QueueArn"] == queue["QueueArn"]
    assert sorted(configuration["Events"]) == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    rules = configuration["Filter"]["Key"]["FilterRules"]
    assert [(r["Name"].lower(), r["Value"]) for r in rules] == [("prefix", "photos/")]
    # moto's S3 then sends its test event to the queue, which the follower
    # deletes quietly; in AWS S3 sends it too, once the policy lets it.
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"])["Event"] for m in messages] == ["s3:TestEvent"]

    statements = instance_policy(aws, resources)
    follow = statements["FollowTheEventQueue"]
    assert follow["Resource"] == queue["QueueArn"]
    assert sorted(follow["Action"]) == sorted(
        ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"]
    )
    actions = [a for s in statements.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert len([a for a in actions if a.startswith("sqs:")]) == 4

    assert f"QUEUE_URL='{queue_url}'" in userdata_of(aws, outputs)
    assert "AlarmTopicArn" in outputs


def test_without_real_time_nothing_of_the_queue_exists(aws, body):
    outputs, resources, _ = create(aws, body, "s3mirrorfs-daily", RealTime="false")
    assert not REAL_TIME_RESOURCES & set(resources)
    assert "EventQueueUrl" not in outputs and "EventDeadLetterQueueUrl" not in outputs
    # The one queue left is the schedule function's dead-letter queue.
    queues = aws("sqs").list_queues().get("QueueUrls", [])
    assert [q for q in queues if "FunctionDeadLetterQueue" not in q] == []
    notifications = aws("s3").get_bucket_notification_configuration(Bucket=outputs["ImageBucketName"])
    assert "QueueConfigurations" not in notifications
    statements = instance_policy(aws, resources)
    assert "FollowTheEventQueue" not in statements
    assert "sqs:" not in repr(statements)
    assert "QUEUE_URL=''" in userdata_of(aws, outputs)
    # The backup's alarm does not depend on RealTime.
    assert "AlarmTopicArn" in outputs
    topics = aws("sns").list_topics()["Topics"]
    assert [t["TopicArn"] for t in topics] == [outputs["AlarmTopicArn"]]


def test_an_alarm_address_is_accepted(aws, body):
    # moto skips AWS::SNS::Subscription: this checks that the parameter and
    # its condition resolve; test_template.py checks the subscription itself.
    outputs, _, _ = create(aws, body, "s3mirrorfs-mail", AlarmEmail="ops@example.com")
    assert outputs["AlarmTopicArn"].startswith("arn:aws:sns:eu-west-1:")


def test_an_inventory_bucket_feeds_the_daily_prefetch_its_reports(aws, body):
    outputs, resources, _ = create(aws, body, "s3mirrorfs-inventory", InventoryBucket="images-inventory")
    bucket = outputs["ImageBucketName"]
    reports = f"inventory/{bucket}/s3mirrorfs/"
    statements = instance_policy(aws, resources)
    assert statements["ListTheInventoryReports"] == {
        "Sid": "ListTheInventoryReports",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": "arn:aws:s3:::images-inventory",
        "Condition": {"StringLike": {"s3:prefix": f"{reports}*"}},
    }
    assert statements["ReadTheInventoryReports"]["Resource"] == f"arn:aws:s3:::images-inventory/{reports}*"
    assert f"PREFETCH_OPTIONS='--inventory s3://images-inventory/{reports}'" in userdata_of(aws, outputs)
    _, resources, _ = create(aws, body, "s3mirrorfs-noinventory")
    statements = instance_policy(aws, resources)
    assert "ListTheInventoryReports" not in statements and "ReadTheInventoryReports" not in statements
    assert "InventoryBucketPolicy" not in resources
