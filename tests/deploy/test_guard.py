"""The project's cfn-guard rules (cfn/rules/) pass on the template and bite:
each mutation below breaks one promise of the template, and the rule that
guards that promise must fail on it."""

import copy
import json
import subprocess

import pytest

import cfn_template

GUARD = cfn_template.ROOT / "target" / "deploy-tools" / "bin" / "cfn-guard"
RULES = cfn_template.ROOT / "cfn" / "rules"


def guard(data_file):
    run = subprocess.run(
        [str(GUARD), "validate", "-d", str(data_file), "-r", str(RULES), "--show-summary", "fail"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    failed = {
        line.split()[0].split("/", 1)[1]
        for line in run.stdout.splitlines()
        if line.strip().endswith(" FAIL") and "/" in line.split()[0]
    }
    return run.returncode, failed, run.stdout + run.stderr


def props(t, name):
    return t["Resources"][name]["Properties"]


def statements(t, role):
    return props(t, role)["Policies"][0]["PolicyDocument"]["Statement"]


def drop_sid(t, resource, sid):
    doc = props(t, resource)["PolicyDocument"]
    doc["Statement"] = [s for s in doc["Statement"] if s.get("Sid") != sid]


def conditional(t, sid):
    """The statement of the instance role that exists under a condition, by Sid."""
    for statement in statements(t, "InstanceRole"):
        branch = statement.get("Fn::If", [None, {}])[1]
        if branch.get("Sid") == sid:
            return branch
    raise KeyError(sid)


def queue_statement(t):
    return props(t, "EventQueuePolicy")["PolicyDocument"]["Statement"][0]


def drop_conditional(t, sid):
    doc = props(t, "InstanceRole")["Policies"][0]["PolicyDocument"]
    doc["Statement"] = [s for s in doc["Statement"] if s.get("Fn::If", [None, {}])[1].get("Sid") != sid]


MUTATIONS = {
    "s3_versioning": lambda t: props(t, "LogBucket").pop("VersioningConfiguration"),
    "s3_default_encryption": lambda t: props(t, "ImageBucket").pop("BucketEncryption"),
    "s3_public_access_blocked": lambda t: props(t, "ImageBucket")["PublicAccessBlockConfiguration"].update(
        BlockPublicPolicy=False
    ),
    "s3_owner_enforced": lambda t: props(t, "LogBucket").update(AccessControl="LogDeliveryWrite"),
    "s3_lifecycle": lambda t: props(t, "ImageBucket")["LifecycleConfiguration"]["Rules"].pop(0),
    "s3_tls_only": lambda t: drop_sid(t, "LogBucketPolicy", "DenyInsecureTransport"),
    "s3_log_bucket_sse_s3": lambda t: props(t, "LogBucket")["BucketEncryption"][
        "ServerSideEncryptionConfiguration"
    ][0]["ServerSideEncryptionByDefault"].update(SSEAlgorithm="aws:kms"),
    "s3_log_delivery_by_policy": lambda t: drop_sid(t, "LogBucketPolicy", "AllowAccessLogDeliveryForTheImageBucket"),
    "s3_image_bucket_logs_access": lambda t: props(t, "ImageBucket")["LoggingConfiguration"].update(
        DestinationBucketName="someone-elses-bucket"
    ),
    "ec2_instance_configured_directly": lambda t: props(t, "BackupInstance")["MetadataOptions"].update(
        HttpTokens="optional"
    ),
    "ec2_root_volume_encrypted": lambda t: props(t, "BackupInstance")["BlockDeviceMappings"][0]["Ebs"].update(
        Encrypted=False
    ),
    "ec2_tagged_for_backup": lambda t: props(t, "BackupInstance").update(Tags=[{"Key": "Name", "Value": "x"}]),
    "ec2_mirror_volume_kept": lambda t: t["Resources"]["MirrorVolume"].update(DeletionPolicy="Delete"),
    "ec2_no_inbound_but_https": lambda t: props(t, "InstanceSecurityGroup").update(
        SecurityGroupIngress=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIp": "0.0.0.0/0"}]
    ),
    "iam_no_wildcards": lambda t: statements(t, "InstanceRole").append(
        {"Effect": "Allow", "Action": "s3:*", "Resource": {"Fn::GetAtt": ["ImageBucket", "Arn"]}}
    ),
    "iam_instance_role": lambda t: statements(t, "InstanceRole").append(
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": {"Fn::Sub": "${ImageBucket.Arn}/*"}}
    ),
    "iam_archive_scoped_to_prefix": lambda t: conditional(t, "WriteTheArchives").update(
        Resource={"Fn::Sub": "arn:${AWS::Partition}:s3:::${ArchiveBucket}/*"}
    ),
    "iam_archive_not_into_stack_buckets": lambda t: drop_conditional(t, "NoArchivesInTheStackBuckets"),
    "iam_restore_images_only_when_asked": lambda t: conditional(t, "RestoreArchivedImages").update(
        Resource={"Fn::Sub": "arn:${AWS::Partition}:s3:::*/*"}
    ),
    "iam_inventory_reports_only_when_asked": lambda t: conditional(t, "ReadTheInventoryReports").update(
        Action=["s3:GetObject", "s3:DeleteObject"]
    ),
    "iam_send_command_scoped": lambda t: statements(t, "FunctionRole")[1].pop("Condition"),
    "lambda_runtime_and_code": lambda t: props(t, "StartPrefetchFunction").update(Runtime="python3.8"),
    "lambda_permission_pinned": lambda t: props(t, "ScheduleInvokePermission").pop("SourceArn"),
    "events_targets_by_arn": lambda t: props(t, "ScheduleRule")["Targets"][0].update(Arn="start-prefetch"),
    "logs_retention": lambda t: props(t, "OutputLogGroup").pop("RetentionInDays"),
    "sqs_queue_policy_pinned": lambda t: queue_statement(t)["Condition"].pop("ArnEquals"),
    "iam_queue_scoped": lambda t: conditional(t, "FollowTheEventQueue").update(Resource="*"),
    "sqs_encrypted": lambda t: props(t, "EventQueue").pop("SqsManagedSseEnabled"),
    "cloudwatch_alarms_notify": lambda t: props(t, "EventQueueAgeAlarm").pop("AlarmActions"),
    "iam_no_inline_policy_resources": lambda t: t["Resources"].update(
        Extra={
            "Type": "AWS::IAM::ManagedPolicy",
            "Properties": {"PolicyDocument": {"Statement": [{"Effect": "Allow", "Action": "s3:GetObject"}]}},
        }
    ),
    "ec2_no_separate_ingress_but_https": lambda t: t["Resources"].update(
        Ssh={
            "Type": "AWS::EC2::SecurityGroupIngress",
            "Properties": {
                "GroupId": {"Ref": "InstanceSecurityGroup"},
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "CidrIp": "0.0.0.0/0",
            },
        }
    ),
}


def test_the_template_passes_every_rule():
    code, failed, output = guard(cfn_template.TEMPLATE)
    assert (code, failed) == (0, set()), output


def test_every_rule_is_exercised_by_a_mutation():
    declared = {
        line.split()[1] for path in RULES.glob("*.guard") for line in path.read_text().splitlines()
        if line.startswith("rule ")
    }
    assert declared == set(MUTATIONS)


@pytest.mark.parametrize("rule", sorted(MUTATIONS))
def test_the_rule_fails_a_template_that_breaks_it(template, tmp_path, rule):
    broken = copy.deepcopy(json.loads(json.dumps(template)))
    MUTATIONS[rule](broken)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    code, failed, output = guard(path)
    assert code != 0 and rule in failed, output


# More ways to widen the archive's access, each of which the prefix rule must refuse.
ARCHIVE_MUTATIONS = {
    "write-a-whole-bucket": lambda t: conditional(t, "DeleteOldArchives").update(
        Resource={"Fn::Sub": "arn:${AWS::Partition}:s3:::${ArchiveBucket}/*"}
    ),
    "write-another-bucket": lambda t: conditional(t, "WriteTheArchives").update(
        Resource={"Fn::Sub": "${ImageBucket.Arn}/${ArchivePrefix}/*"}
    ),
    "list-without-the-prefix-condition": lambda t: conditional(t, "ListTheArchives").pop("Condition"),
    "list-every-key": lambda t: conditional(t, "ListTheArchives").update(
        Condition={"StringLike": {"s3:prefix": "*"}}
    ),
    "more-than-writes": lambda t: conditional(t, "WriteTheArchives").update(
        Action=["s3:PutObject", "s3:AbortMultipartUpload", "s3:GetObject"]
    ),
    "a-wildcard-action": lambda t: conditional(t, "DeleteOldArchives").update(Action="s3:Delete*"),
    "writes-outside-a-condition": lambda t: statements(t, "InstanceRole").append(
        {
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ArchiveBucket}/${ArchivePrefix}/*"},
        }
    ),
}


def restore_under(t, condition):
    for statement in statements(t, "InstanceRole"):
        if statement.get("Fn::If", [None, {}])[1].get("Sid") == "RestoreArchivedImages":
            statement["Fn::If"][0] = condition


# More ways to widen the restore permission, each of which its rule must refuse.
RESTORE_MUTATIONS = {
    "restore-without-the-condition": lambda t: statements(t, "InstanceRole").append(
        {"Effect": "Allow", "Action": "s3:RestoreObject", "Resource": {"Fn::Sub": "${ImageBucket.Arn}/*"}}
    ),
    "restore-under-another-condition": lambda t: restore_under(t, "ArchiveEnabled"),
    "restore-the-log-bucket": lambda t: conditional(t, "RestoreArchivedImages").update(
        Resource={"Fn::Sub": "${LogBucket.Arn}/*"}
    ),
    "more-than-restores": lambda t: conditional(t, "RestoreArchivedImages").update(
        Action=["s3:RestoreObject", "s3:PutObject"]
    ),
    "a-wildcard-action": lambda t: conditional(t, "RestoreArchivedImages").update(Action="s3:Restore*"),
}


@pytest.mark.parametrize("name", sorted(RESTORE_MUTATIONS))
def test_the_restore_rule_fails_a_wider_restore_statement(template, tmp_path, name):
    broken = copy.deepcopy(json.loads(json.dumps(template)))
    RESTORE_MUTATIONS[name](broken)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    code, failed, output = guard(path)
    assert code != 0 and "iam_restore_images_only_when_asked" in failed, output


@pytest.mark.parametrize("name", sorted(ARCHIVE_MUTATIONS))
def test_the_archive_rule_fails_a_wider_archive_statement(template, tmp_path, name):
    broken = copy.deepcopy(json.loads(json.dumps(template)))
    ARCHIVE_MUTATIONS[name](broken)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    code, failed, output = guard(path)
    assert code != 0 and "iam_archive_scoped_to_prefix" in failed, output


def test_the_json_form_passes_the_real_time_rules(template, tmp_path):
    # The mutations below are fed to guard as JSON, where !GetAtt is a list:
    # the real-time rules must read both forms, or a mutation would fail them
    # for the wrong reason.
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    run = subprocess.run(
        [str(GUARD), "validate", "-d", str(path), "-r", str(RULES / "realtime.guard"), "--show-summary", "fail"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def set_source_arn(t, value):
    queue_statement(t)["Condition"]["ArnEquals"]["aws:SourceArn"] = value


# More ways to open the event queue, each of which the queue policy rule must refuse.
QUEUE_POLICY_MUTATIONS = {
    "any-bucket": lambda t: set_source_arn(t, {"Fn::Sub": "arn:${AWS::Partition}:s3:::*"}),
    "the-log-bucket": lambda t: set_source_arn(t, {"Fn::GetAtt": ["LogBucket", "Arn"]}),
    "any-account": lambda t: queue_statement(t)["Condition"].pop("StringEquals"),
    "another-account": lambda t: queue_statement(t)["Condition"].update(
        StringEquals={"aws:SourceAccount": "210987654321"}
    ),
    "anyone": lambda t: queue_statement(t).update(Principal="*"),
    "sns-too": lambda t: queue_statement(t).update(Principal={"Service": "sns.amazonaws.com"}),
    "more-than-send": lambda t: queue_statement(t).update(Action=["sqs:SendMessage", "sqs:ReceiveMessage"]),
    "no-condition": lambda t: queue_statement(t).pop("Condition"),
}


@pytest.mark.parametrize("name", sorted(QUEUE_POLICY_MUTATIONS))
def test_the_queue_policy_rule_fails_a_wider_policy(template, tmp_path, name):
    broken = copy.deepcopy(json.loads(json.dumps(template)))
    QUEUE_POLICY_MUTATIONS[name](broken)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    code, failed, output = guard(path)
    assert code != 0 and "sqs_queue_policy_pinned" in failed, output


# More ways to widen the instance's access to SQS, each of which the scope rule must refuse.
QUEUE_SCOPE_MUTATIONS = {
    "send-too": lambda t: conditional(t, "FollowTheEventQueue")["Action"].append("sqs:SendMessage"),
    "purge": lambda t: conditional(t, "FollowTheEventQueue")["Action"].append("sqs:PurgeQueue"),
    "the-dead-letter-queue": lambda t: conditional(t, "FollowTheEventQueue").update(
        Resource={"Fn::GetAtt": ["EventDeadLetterQueue", "Arn"]}
    ),
    "every-queue": lambda t: conditional(t, "FollowTheEventQueue").update(
        Resource={"Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:*"}
    ),
    "without-real-time": lambda t: statements(t, "InstanceRole").append(
        {"Effect": "Allow", "Action": "sqs:ReceiveMessage", "Resource": {"Fn::GetAtt": ["EventQueue", "Arn"]}}
    ),
    "under-another-condition": lambda t: [
        s["Fn::If"].__setitem__(0, "UseEventBridge")
        for s in statements(t, "InstanceRole")
        if s.get("Fn::If", [None, {}])[1].get("Sid") == "FollowTheEventQueue"
    ],
}


@pytest.mark.parametrize("name", sorted(QUEUE_SCOPE_MUTATIONS))
def test_the_queue_scope_rule_fails_a_wider_statement(template, tmp_path, name):
    broken = copy.deepcopy(json.loads(json.dumps(template)))
    QUEUE_SCOPE_MUTATIONS[name](broken)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    code, failed, output = guard(path)
    assert code != 0 and "iam_queue_scoped" in failed, output
