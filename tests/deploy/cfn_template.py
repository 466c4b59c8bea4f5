"""The CloudFormation template as data: loading it, and the pieces of it that
are programs of their own (the instance's UserData script, the function's
inline code), so they can be checked like any other script or module.

Run as a script it prints one of them:
    python3 tests/deploy/cfn_template.py userdata
    python3 tests/deploy/cfn_template.py lambda
    python3 tests/deploy/cfn_template.py bucket-events
"""

import re
import sys
import types
from pathlib import Path

from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "cfn" / "s3mirrorfs.yaml"

# Stand-ins for the values CloudFormation substitutes into the UserData, shaped
# like real ones so that the script reads as it will on an instance.
SUB_VALUES = {
    "AWS::Region": "eu-west-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::StackName": "s3mirrorfs",
    "Target": "s3mirrorfs-imagebucket-0123abcd/photos",
    "ImageBucket": "s3mirrorfs-imagebucket-0123abcd",
    "LogBucket": "s3mirrorfs-logbucket-4567efab",
    "VolumeId": "vol-0123456789abcdef0",
    "QueueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/s3mirrorfs-EventQueue-0123abcd",
    "OutputLogGroup": "/s3mirrorfs/s3mirrorfs/prefetch",
}


def load(path=TEMPLATE):
    """The template with short-form tags turned into their long form (Fn::Sub, ...)."""
    return cfn_yaml.load(str(path))


def resources(template, type_name):
    """(logical id, resource) for every resource of one type."""
    return [(name, r) for name, r in template["Resources"].items() if r["Type"] == type_name]


def substitute(text, values):
    """Fn::Sub on a string: ${Name} from values, ${!Literal} becomes ${Literal}."""

    def replace(match):
        name = match.group(1)
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name not in values:
            raise KeyError(f"no value for ${{{name}}} in the template's Fn::Sub")
        return str(values[name])

    return re.sub(r"\$\{([^}]*)\}", replace, text)


def userdata_values(template, overrides=None):
    """Parameter defaults (or a shaped stand-in) plus the pseudo-parameters."""
    values = dict(SUB_VALUES)
    for name, parameter in template["Parameters"].items():
        if "Default" in parameter:
            values[name] = parameter["Default"]
    values.setdefault("ReleaseS3Uri", "s3://s3mirrorfs-releases/s3mirrorfs-0.1.0-1.x86_64.rpm")
    values.setdefault("ReleaseSha256", "0" * 64)
    values.update(overrides or {})
    # What the template's RestoreArchived condition gives the UserData's Fn::Sub map.
    days = int(values.get("RestoreArchivedDays", 0))
    values.setdefault("PrefetchOptions", f"--restore-archived {days}" if days else "")
    return values


def userdata_script(template, overrides=None):
    """The instance's UserData as the shell script the instance runs."""
    sub = template["Resources"]["BackupInstance"]["Properties"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    text = sub[0] if isinstance(sub, list) else sub
    return substitute(str(text), userdata_values(template, overrides))


def lambda_source(template, function="StartPrefetchFunction"):
    """A function's inline code (Code.ZipFile)."""
    return str(template["Resources"][function]["Properties"]["Code"]["ZipFile"])


def lambda_module(template, function="StartPrefetchFunction"):
    """A function's inline code, imported as a module named index."""
    module = types.ModuleType("index")
    exec(compile(lambda_source(template, function), "index.py", "exec"), module.__dict__)
    return module


def main(argv):
    what = argv[1] if len(argv) > 1 else ""
    template = load()
    if what == "userdata":
        sys.stdout.write(userdata_script(template))
    elif what == "lambda":
        sys.stdout.write(lambda_source(template))
    elif what == "bucket-events":
        sys.stdout.write(lambda_source(template, "BucketEventsFunction"))
    else:
        sys.stderr.write("usage: cfn_template.py userdata|lambda|bucket-events\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
