"""Promises of the template that span resources, which per-resource rules
cannot see: which policy protects which bucket, what runs only with the
EventBridge schedule, how the UserData handles the mirror and the release."""

import re

import cfn_template
from cfn_template import resources

EVENTBRIDGE_ONLY = {
    "ScheduleRule",
    "StartPrefetchFunction",
    "ScheduleInvokePermission",
    "FunctionRole",
    "FunctionLogGroup",
    "FunctionDeadLetterQueue",
}
REAL_TIME_ONLY = {
    "EventQueue",
    "EventDeadLetterQueue",
    "EventQueuePolicy",
    "BucketEventsFunction",
    "BucketEventsFunctionRole",
    "BucketEventsLogGroup",
    "BucketEventsDeadLetterQueue",
    "ImageBucketEvents",
    "EventDeadLetterAlarm",
    "EventQueueAgeAlarm",
}


def test_every_bucket_has_exactly_one_policy_denying_plain_http(template):
    buckets = {name for name, _ in resources(template, "AWS::S3::Bucket")}
    policies = [p["Properties"] for _, p in resources(template, "AWS::S3::BucketPolicy")]
    # The stack's own buckets, and the existing inventory bucket it delivers reports to.
    own = [p for p in policies if p["Bucket"]["Ref"] in buckets]
    assert sorted(p["Bucket"]["Ref"] for p in own) == sorted(buckets)
    assert sorted(p["Bucket"]["Ref"] for p in policies if p not in own) == ["InventoryBucket"]
    for policy in policies:
        bucket = policy["Bucket"]["Ref"]
        [deny] = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        if bucket in buckets:
            assert deny["Resource"] == [{"Fn::GetAtt": [bucket, "Arn"]}, {"Fn::Sub": "${" + bucket + ".Arn}/*"}]
        else:
            arn = "arn:${AWS::Partition}:s3:::${" + bucket + "}"
            assert deny["Resource"] == [{"Fn::Sub": arn}, {"Fn::Sub": arn + "/*"}]


def test_inventory_reports_are_delivered_for_the_image_bucket_and_account_only(template):
    policy = template["Resources"]["InventoryBucketPolicy"]
    assert policy["Condition"] == "InventoryEnabled"
    [allow] = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"}
    assert allow["Action"] == "s3:PutObject"
    assert allow["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${InventoryBucket}/inventory/*"}
    assert allow["Condition"]["ArnLike"] == {"aws:SourceArn": {"Fn::GetAtt": ["ImageBucket", "Arn"]}}
    assert allow["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    [configuration] = template["Resources"]["ImageBucket"]["Properties"]["InventoryConfigurations"]["Fn::If"][1]
    assert configuration["Destination"]["Format"] == "CSV"
    assert configuration["Destination"]["Prefix"] == "inventory"
    assert configuration["IncludedObjectVersions"] == "Current"
    assert configuration["ScheduleFrequency"] == "Daily"
    assert set(configuration["OptionalFields"]) >= {"Size", "LastModifiedDate", "ETag", "StorageClass"}


def test_log_delivery_is_granted_for_the_image_bucket_and_account_only(template):
    image = template["Resources"]["ImageBucket"]["Properties"]["LoggingConfiguration"]
    assert image["DestinationBucketName"] == {"Ref": "LogBucket"}
    statements = template["Resources"]["LogBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    [grant] = [s for s in statements if s["Effect"] == "Allow"]
    assert grant["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert grant["Action"] == "s3:PutObject"
    assert grant["Resource"] == {"Fn::Sub": "${LogBucket.Arn}/" + image["LogFilePrefix"] + "*"}
    assert grant["Condition"] == {
        "ArnLike": {"aws:SourceArn": {"Fn::GetAtt": ["ImageBucket", "Arn"]}},
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
    }


def test_the_eventbridge_trigger_exists_only_when_chosen(template):
    assert template["Parameters"]["ScheduleSource"]["Default"] == "EventBridge"
    assert template["Conditions"]["UseEventBridge"] == {"Fn::Equals": [{"Ref": "ScheduleSource"}, "EventBridge"]}
    for name, resource in template["Resources"].items():
        if resource["Type"] in ("AWS::Events::Rule", "AWS::Lambda::Permission"):
            assert name in EVENTBRIDGE_ONLY, name
        if name in EVENTBRIDGE_ONLY:
            assert resource.get("Condition") == "UseEventBridge", name
    # and the instance runs its own schedule only when EventBridge does not.
    script = cfn_template.userdata_script(template)
    branches = dict(re.findall(r"\n  (\w+)\)\n(.*?);;", script, re.S))
    assert set(branches) == set(template["Parameters"]["ScheduleSource"]["AllowedValues"])
    assert "disable --now s3mirrorfs-prefetch.timer" in branches["EventBridge"]
    assert "rm -f /etc/cron.d/s3mirrorfs-prefetch" in branches["EventBridge"]
    assert "enable --now s3mirrorfs-prefetch.timer" in branches["SystemdTimer"]
    assert "rm -f /etc/cron.d/s3mirrorfs-prefetch" in branches["SystemdTimer"]
    assert "disable --now s3mirrorfs-prefetch.timer" in branches["Cron"]
    assert "/etc/cron.d/s3mirrorfs-prefetch" in branches["Cron"]


def test_the_function_logs_into_its_own_group_with_retention(template):
    function = template["Resources"]["StartPrefetchFunction"]["Properties"]
    group = template["Resources"][function["LoggingConfig"]["LogGroup"]["Ref"]]["Properties"]
    assert group["LogGroupName"] == {"Fn::Sub": "/aws/lambda/" + function["FunctionName"]["Fn::Sub"]}
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_every_checkov_skip_says_why(template):
    skips = [
        (name, skip)
        for name, resource in template["Resources"].items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skips
    for name, skip in skips:
        assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]), name
        comment = skip.get("comment", "")
        assert len(comment) > 20 and "\n" not in comment, (name, skip)


def test_the_defaults_are_the_documented_ones(template):
    p = template["Parameters"]
    assert p["InstanceType"]["Default"] == "t2.micro"
    assert p["LatestAmiId"]["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert p["LatestAmiId"]["Default"] == "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
    assert p["MountPoint"]["Default"] == "/mnt/images"
    assert set(template["Outputs"]) >= {"ImageBucketName", "LogBucketName", "InstanceId", "StartSessionCommand"}


def test_the_userdata_is_strict_and_checks_the_release_before_installing_it(template):
    script = cfn_template.userdata_script(template)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "set -euo pipefail" in lines[:10]
    check = script.index("sha256sum --check --strict")
    # The RPM that was checked is the one dnf installs, and nothing is installed before.
    assert check < script.index('packages=("$work/s3mirrorfs.rpm")')
    assert script.count("dnf install -y") == 1
    assert check < script.index("dnf install -y")
    assert template["Parameters"]["ReleaseS3Uri"]["AllowedPattern"].endswith("\\.rpm$")


def test_the_userdata_formats_only_a_blank_volume(template):
    script = cfn_template.userdata_script(template)
    # blkid -p exits 2 when the device holds no filesystem and no partition table.
    blank = re.search(r'if \[ "\$rc" -eq 2 \]; then\n(.*?)\nelif', script, re.S)
    assert blank and "mkfs" in blank.group(1)
    assert script.count("mkfs.xfs ") == 1
    assert 'chmod 0750 "$MIRROR_DIR"' in script
    assert "MIRROR_DIR=/home/user/myS3backup" in script


def test_the_mirror_volume_survives_replacement_and_deletion(template):
    volume = template["Resources"]["MirrorVolume"]
    assert volume["DeletionPolicy"] in ("Retain", "Snapshot")
    assert volume["UpdateReplacePolicy"] in ("Retain", "Snapshot")
    # Nothing about the volume depends on the instance, so replacing the
    # instance does not replace the volume.
    assert "BackupInstance" not in repr(volume)
    assert not resources(template, "AWS::EC2::VolumeAttachment")


def test_log_permissions_name_log_groups_by_arn_not_by_their_arn_attribute(template):
    # A log group's Arn attribute ends in ":*", so "${Group.Arn}:log-stream:*"
    # names nothing; the policies write the ARNs out from the group's name.
    groups = {name for name, _ in resources(template, "AWS::Logs::LogGroup")}
    text = repr(template["Resources"])
    for group in groups:
        assert "${" + group + ".Arn}" not in text, group
        assert "'Fn::GetAtt': ['" + group + "', 'Arn']" not in text, group


def test_the_userdata_fits_the_ec2_limit(template):
    # EC2 refuses user data above 16 KiB (before base64); the longest values
    # the parameters allow must fit too.
    longest = {
        "ArchiveDir": "/" + "d" * 200,
        "ArchiveBucket": "b" * 63,
        "ArchivePrefix": "p" * 200,
        "ArchiveKmsKeyArn": "arn:aws:kms:eu-west-1:123456789012:key/" + "0" * 36,
        "MountPoint": "/" + "m" * 200,
        # A stack name of 128 characters, in the queue's generated name and the group's.
        "QueueUrl": "https://sqs.ap-southeast-4.amazonaws.com/123456789012/" + "q" * 80,
        "OutputLogGroup": "/s3mirrorfs/" + "s" * 128 + "/prefetch",
    }
    script = cfn_template.userdata_script(template, longest)
    assert len(script.encode()) < 16384


def evaluate(expression, parameters):
    """A Rules expression of the template (Ref, Fn::Equals, Fn::Not, Fn::And, Fn::Or) for given parameters."""
    if not isinstance(expression, dict):
        return expression
    [(name, argument)] = expression.items()
    if name == "Ref":
        return parameters[argument]
    values = [evaluate(a, parameters) for a in argument]
    return {
        "Fn::Equals": lambda: values[0] == values[1],
        "Fn::Not": lambda: not values[0],
        "Fn::And": lambda: all(values),
        "Fn::Or": lambda: any(values),
    }[name]()


def test_an_archive_dir_without_a_bucket_is_refused_before_the_stack_is_made(template):
    # moto does not evaluate Rules, so their logic is checked here.
    defaults = {name: str(p.get("Default", "")) for name, p in template["Parameters"].items()}

    def accepted(**values):
        parameters = dict(defaults, **values)
        for rule in template["Rules"].values():
            if evaluate(rule.get("RuleCondition", True), parameters):
                if not all(evaluate(a["Assert"], parameters) for a in rule["Assertions"]):
                    return False
        return True

    assert accepted()
    assert accepted(ArchiveBucket="my-backups")
    assert accepted(ArchiveDir="/srv/app/data", ArchiveBucket="my-backups")
    assert not accepted(ArchiveDir="/srv/app/data")
    assert defaults["ArchiveDir"] == "" and defaults["ArchiveBucket"] == ""


def test_everything_about_the_archive_depends_on_archive_dir(template):
    # Outside Fn::If branches taken only with ArchiveDir, the archive
    # parameters appear in the UserData (which handles an empty ArchiveDir) and
    # nowhere else.
    conditions = template["Conditions"]
    archive_conditions = {
        name for name, c in conditions.items() if "ArchiveDir" in repr(c) and "Fn::Not" in repr(c)
    }
    assert archive_conditions == {"ArchiveEnabled", "ArchiveRetention", "ArchiveKms"}

    def unconditional(node, path):
        if isinstance(node, dict):
            if "Fn::If" in node and node["Fn::If"][0] in archive_conditions:
                yield from unconditional(node["Fn::If"][2], path + ["else"])
                return
            for key, value in node.items():
                yield from unconditional(value, path + [key])
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from unconditional(value, path + [i])
        elif isinstance(node, str) and (
            re.fullmatch(r"Archive[A-Z]\w*", node) or re.search(r"\$\{Archive[A-Z]\w*\}", node)
        ):
            # A Ref or Fn::Sub of an archive parameter, or an archive condition.
            yield path

    found = [
        p for p in unconditional(template["Resources"], [])
        if p[:4] != ["BackupInstance", "Properties", "UserData", "Fn::Base64"]
    ]
    assert found == []


def test_everything_about_the_queue_depends_on_real_time(template):
    assert template["Parameters"]["RealTime"]["Default"] == "true"
    assert template["Parameters"]["RealTime"]["AllowedValues"] == ["true", "false"]
    assert template["Conditions"]["RealTimeEnabled"] == {"Fn::Equals": [{"Ref": "RealTime"}, "true"]}
    resources = template["Resources"]
    for name in REAL_TIME_ONLY:
        assert resources[name].get("Condition") == "RealTimeEnabled", name
    for name, resource in resources.items():
        if resource["Type"] in ("AWS::SQS::Queue", "AWS::SQS::QueuePolicy") or resource["Type"].startswith("Custom::"):
            assert name in REAL_TIME_ONLY | EVENTBRIDGE_ONLY, name

    # Outside resources of their own, the queue appears only in Fn::If
    # branches taken with RealTime: the instance's permissions, its settings.
    named_in_sub = re.compile(r"\$\{(" + "|".join(REAL_TIME_ONLY) + r")\b")

    def unconditional(node, path):
        if isinstance(node, dict):
            if "Fn::If" in node and node["Fn::If"][0] == "RealTimeEnabled":
                yield from unconditional(node["Fn::If"][2], path + ["else"])
                return
            for key, value in node.items():
                yield from unconditional(value, path + [key])
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from unconditional(value, path + [i])
        elif isinstance(node, str) and (node in REAL_TIME_ONLY or named_in_sub.search(node)):
            yield path

    found = [p for name, r in resources.items() if name not in REAL_TIME_ONLY for p in unconditional(r, [name])]
    assert found == []
    outputs = template["Outputs"]
    assert outputs["EventQueueUrl"]["Condition"] == outputs["EventDeadLetterQueueUrl"]["Condition"] == "RealTimeEnabled"


def test_the_queue_keeps_events_14_days_encrypted_and_sets_failures_aside(template):
    resources = template["Resources"]
    for name in ("EventQueue", "EventDeadLetterQueue"):
        queue = resources[name]["Properties"]
        # SSE-SQS: S3 cannot send to a queue under the AWS managed KMS key.
        assert queue["SqsManagedSseEnabled"] is True, name
        assert "KmsMasterKeyId" not in queue, name
        assert queue["MessageRetentionPeriod"] == 1209600, name
    assert resources["EventQueue"]["Properties"]["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["EventDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }


def test_only_the_image_bucket_of_this_account_may_send_to_the_queue(template):
    policy = template["Resources"]["EventQueuePolicy"]["Properties"]
    assert policy["Queues"] == [{"Ref": "EventQueue"}]
    [statement] = policy["PolicyDocument"]["Statement"]
    assert statement == {
        "Sid": "ImageBucketEventsOnly",
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": {"Fn::GetAtt": ["EventQueue", "Arn"]},
        "Condition": {
            "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["ImageBucket", "Arn"]}},
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
        },
    }


def references(node):
    """Every resource a node names (Ref, Fn::GetAtt, ${...} in Fn::Sub)."""
    if isinstance(node, dict):
        if "Ref" in node:
            yield node["Ref"]
        if "Fn::GetAtt" in node:
            yield node["Fn::GetAtt"][0]
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)
    elif isinstance(node, str):
        yield from (m.split(".")[0] for m in re.findall(r"\$\{([A-Za-z0-9.]+)\}", node))


def test_the_notification_is_put_after_the_queue_policy_and_the_bucket_waits_for_nothing(template):
    # S3 checks the queue policy when the configuration is put, and the policy
    # names the bucket: the bucket refers to none of it (no cycle), and the
    # custom resource comes after the policy.
    resources = template["Resources"]
    bucket = resources["ImageBucket"]
    assert "DependsOn" not in bucket and "NotificationConfiguration" not in bucket["Properties"]
    assert not set(references(bucket)) & REAL_TIME_ONLY
    assert "BucketName" not in bucket["Properties"], "naming the bucket would replace it in existing stacks"
    events = resources["ImageBucketEvents"]
    assert events["DependsOn"] == "EventQueuePolicy"
    assert events["Properties"] == {
        "ServiceToken": {"Fn::GetAtt": ["BucketEventsFunction", "Arn"]},
        "BucketName": {"Ref": "ImageBucket"},
        "QueueArn": {"Fn::GetAtt": ["EventQueue", "Arn"]},
        "Prefix": {"Fn::If": ["HasPrefix", {"Fn::Sub": "${BucketPrefix}/"}, ""]},
    }
    assert set(references(resources["EventQueuePolicy"])) == {"EventQueue", "ImageBucket", "AWS::AccountId"}


def test_the_function_puts_created_and_removed_events_under_the_prefix(template):
    function = cfn_template.lambda_module(template, "BucketEventsFunction")
    assert function.queue_configuration("arn:aws:sqs:eu-west-1:123456789012:q", "photos/") == {
        "Id": "s3mirrorfs-follow",
        "QueueArn": "arn:aws:sqs:eu-west-1:123456789012:q",
        "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "photos/"}]}},
    }
    assert "Filter" not in function.queue_configuration("arn:aws:sqs:eu-west-1:123456789012:q", "")
    role = template["Resources"]["BucketEventsFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    [s3] = [s for s in role["Statement"] if s["Sid"] == "TheImageBucketNotificationsOnly"]
    assert sorted(s3["Action"]) == ["s3:GetBucketNotification", "s3:PutBucketNotification"]
    assert s3["Resource"] == {"Fn::GetAtt": ["ImageBucket", "Arn"]}


def test_the_instance_may_follow_its_queue_and_nothing_else_of_sqs(template):
    statements = template["Resources"]["InstanceRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    sqs = [s for s in statements if "sqs:" in repr(s)]
    assert sqs == [{
        "Fn::If": [
            "RealTimeEnabled",
            {
                "Sid": "FollowTheEventQueue",
                "Effect": "Allow",
                "Action": [
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                ],
                "Resource": {"Fn::GetAtt": ["EventQueue", "Arn"]},
            },
            {"Ref": "AWS::NoValue"},
        ]
    }]
    assert "kms:" not in repr(sqs)


def test_the_userdata_follows_only_with_a_queue(template):
    sub = template["Resources"]["BackupInstance"]["Properties"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    assert sub[1]["QueueUrl"] == {"Fn::If": ["RealTimeEnabled", {"Ref": "EventQueue"}, ""]}
    script = cfn_template.userdata_script(template)
    branch = re.search(r'\n(if \[ -n "\$QUEUE_URL" \]; then\n.*?\nfi)\n', script, re.S).group(1)
    assert "systemctl enable s3mirrorfs-follow.service" in branch.split("else")[0]
    assert "systemctl disable --now s3mirrorfs-follow.service" in branch.split("else")[1]


def test_the_prefetch_alarm_fires_after_26_hours_without_a_success(template):
    resources = template["Resources"]
    metric = resources["PrefetchSucceededMetricFilter"]["Properties"]["MetricTransformations"][0]
    alarm = resources["PrefetchNotSucceedingAlarm"]
    assert "Condition" not in alarm and "Condition" not in resources["PrefetchSucceededMetricFilter"]
    a = alarm["Properties"]
    assert (a["Namespace"], a["MetricName"]) == (metric["MetricNamespace"], metric["MetricName"])
    assert metric["MetricValue"] == "1"
    assert a["Statistic"] == "Sum"
    assert a["Period"] * a["EvaluationPeriods"] == 26 * 3600
    assert a["DatapointsToAlarm"] == a["EvaluationPeriods"]
    assert (a["ComparisonOperator"], a["Threshold"]) == ("LessThanThreshold", 1)
    # An instance that sends nothing at all is a backup that stopped.
    assert a["TreatMissingData"] == "breaching"


def test_the_queue_alarms_watch_the_dead_letters_and_the_oldest_event(template):
    resources = template["Resources"]
    dead = resources["EventDeadLetterAlarm"]["Properties"]
    assert dead["Namespace"] == "AWS/SQS"
    assert dead["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert dead["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["EventDeadLetterQueue", "QueueName"]}}]
    assert (dead["ComparisonOperator"], dead["Threshold"]) == ("GreaterThanThreshold", 0)
    age = resources["EventQueueAgeAlarm"]["Properties"]
    assert age["MetricName"] == "ApproximateAgeOfOldestMessage"
    assert age["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["EventQueue", "QueueName"]}}]
    assert (age["ComparisonOperator"], age["Threshold"]) == ("GreaterThanThreshold", 15 * 60)
    for alarm in (dead, age):
        # SQS sends no metrics for an idle queue: no data is nothing waiting.
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["Statistic"] == "Maximum"


def test_every_alarm_notifies_the_topic_and_an_address_is_optional(template):
    resources = template["Resources"]
    alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert len(alarms) == 3
    for alarm in alarms:
        assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": "AlarmTopic"}]
        assert alarm["AlarmDescription"] and alarm["AlarmName"]["Fn::Sub"].startswith("${AWS::StackName}-")
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""
    assert template["Conditions"]["HasAlarmEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}
    subscription = resources["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"] == {"TopicArn": {"Ref": "AlarmTopic"}, "Protocol": "email",
                                          "Endpoint": {"Ref": "AlarmEmail"}}
    pattern = re.compile(template["Parameters"]["AlarmEmail"]["AllowedPattern"])
    assert pattern.fullmatch("") and pattern.fullmatch("ops@example.com")
    assert not pattern.fullmatch("ops") and not pattern.fullmatch("ops@example")
