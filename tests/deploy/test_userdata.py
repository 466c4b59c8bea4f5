"""The instance's UserData, run for real: in a private mount namespace where
/etc, /usr, /var/log and /home are overlays of the machine's own (so nothing
outside the test changes) and the commands that reach AWS or disks (dnf, aws,
curl, blkid, mkfs.xfs, mount, systemctl, useradd, ...) are stubs that log
their arguments. The release is the real RPM that scripts/release built
(RELEASE_RPM, or the newest in target/dist); the stubbed `dnf install`
unpacks its payload (rpm2cpio) as rpm would, keeping an /etc/s3mirrorfs.env
that is already there (%config(noreplace)), and records which file it got."""

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import cfn_template

ROOT = cfn_template.ROOT
VOLUME = "vol-0123456789abcdef0"
BY_ID = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_" + VOLUME.replace("-", "")
UUID = "5b3f0e55-0b6a-4d0e-9a51-2a4ac5a1f00d"
OVERLAID = ["/etc", "/usr", "/var/log", "/home"]
UNIT_NAMES = (
    "s3mirrorfs-mount.service",
    "s3mirrorfs-prefetch.service",
    "s3mirrorfs-prefetch.timer",
    "s3mirrorfs-archive.service",
    "s3mirrorfs-archive.timer",
    "s3mirrorfs-follow.service",
)
QUEUE_URL = cfn_template.SUB_VALUES["QueueUrl"]
OUTCOME_UNITS = ("s3mirrorfs-outcome.service", "s3mirrorfs-outcome.timer")
ARCHIVE = {"ArchiveDir": "/srv/app/data", "ArchiveBucket": "s3mirrorfs-archives", "ArchivePrefix": "app/daily"}
ARCHIVE_ENV = "/etc/s3mirrorfs-archive.env"
ARCHIVE_DROP_IN = "/etc/systemd/system/s3mirrorfs-archive.service.d/deployment.conf"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("rpm2cpio") is None,
    reason="needs root, unshare (mount namespaces) and rpm2cpio (scripts/setup-deploy installs it)",
)


@pytest.fixture(scope="module")
def release_rpm():
    given = os.environ.get("RELEASE_RPM")
    if given:
        return Path(given)
    found = sorted((ROOT / "target" / "dist").glob("s3mirrorfs-*.x86_64.rpm"), key=lambda p: p.stat().st_mtime)
    if not found:
        pytest.skip("no release RPM: scripts/release builds it")
    return found[-1]

STUBS = {
    # A local RPM is installed as rpm would: its payload unpacked into /, a
    # changed /etc/s3mirrorfs.env kept; repository packages are only logged.
    "dnf": """echo "dnf $*" >> "$STATE/calls"
for arg; do
  case "$arg" in
    *.rpm)
      echo "installed $(sha256sum < "$arg" | cut -d' ' -f1)" >> "$STATE/calls"
      keep=()
      if [ -e /etc/s3mirrorfs.env ]; then keep=(-f ./etc/s3mirrorfs.env); fi
      rpm2cpio "$arg" | (cd / && cpio -idmu --quiet "${keep[@]}") ;;
  esac
done""",
    "aws": """echo "aws $*" >> "$STATE/calls"
case "$1 $2" in
  "s3 cp") for last; do :; done; cp "$STATE/release.rpm" "$last" ;;
  "ec2 attach-volume") mknod "$DEVICE" b 7 0 ;;
esac""",
    "curl": """case "$*" in *api/token*) echo token ;; *instance-id*) echo i-0123456789abcdef0 ;; *) exit 22 ;; esac""",
    "blkid": """echo "blkid $*" >> "$STATE/calls"
if [ "$1" = -p ]; then
  if [ -e "$STATE/formatted" ]; then exit 0; fi
  exit "${BLKID_PROBE:-2}"
fi
if [ -e "$STATE/formatted" ]; then echo "$UUID"; fi""",
    "mkfs.xfs": 'echo "mkfs.xfs $*" >> "$STATE/calls"; touch "$STATE/formatted"',
    "mountpoint": '[ -e "$STATE/mounted" ]',
    "mount": 'echo "mount $*" >> "$STATE/calls"; touch "$STATE/mounted"',
    "systemctl": """echo "systemctl $*" >> "$STATE/calls"
if [ "$*" = "restart s3mirrorfs-mount.service" ]; then exit "${MOUNT_STATUS:-0}"; fi
if [ "$*" = "restart s3mirrorfs-follow.service" ]; then exit "${FOLLOW_STATUS:-0}"; fi""",
    "useradd": 'echo "useradd $*" >> "$STATE/calls"; mkdir -p /home/user; touch "$STATE/user"',
    "id": '[ -e "$STATE/user" ]',
    "chown": 'echo "chown $*" >> "$STATE/calls"',
    "logger": "cat > /dev/null",
}


def private_dev(path):
    """Commands that put a /dev of the namespace's own in place of the machine's:
    a tmpfs holding the few character devices a shell needs (bound from the real
    ones) and an empty disk/by-id, so the script sees no disk of the machine and
    nothing is ever created in the real /dev, whatever it holds."""
    return [
        f"mount -t tmpfs -o mode=0755 tmpfs {path}",
        "for n in null zero full random urandom tty; do",
        f'  if [ -e "/dev/$n" ]; then touch "{path}/$n"; mount --bind "/dev/$n" "{path}/$n"; fi',
        "done",
        f"ln -s /proc/self/fd {path}/fd",
        f"ln -s /proc/self/fd/0 {path}/stdin",
        f"ln -s /proc/self/fd/1 {path}/stdout",
        f"ln -s /proc/self/fd/2 {path}/stderr",
        f"mkdir -p {path}/disk/by-id",
        f"mount --move {path} /dev",
    ]


class Instance:
    """One instance's disks: overlay upper dirs and stub state that persist across runs."""

    def __init__(self, base, template, rpm):
        self.base = base
        self.template = template
        self.state = base / "state"
        self.stubs = base / "stubs"
        self.state.mkdir()
        self.stubs.mkdir()
        (base / "dev").mkdir()
        for name, body in STUBS.items():
            (self.stubs / name).write_text("#!/bin/bash\n" + body + "\n")
            (self.stubs / name).chmod(0o755)
        shutil.copy(rpm, self.state / "release.rpm")
        self.sha = hashlib.sha256(rpm.read_bytes()).hexdigest()
        for d in OVERLAID:
            (base / "upper" / d.strip("/").replace("/", "_")).mkdir(parents=True)
            (base / "overlay-work" / d.strip("/").replace("/", "_")).mkdir(parents=True)

    def run(self, device=True, sha=None, env=None, **overrides):
        values = {"VolumeId": VOLUME, "ReleaseSha256": sha or self.sha, "ReleaseS3Uri": "s3://releases/s3mirrorfs-0.1.0-1.x86_64.rpm"}
        values.update(overrides)
        script = self.base / "userdata.sh"
        script.write_text(cfn_template.userdata_script(self.template, values))
        mounts = [
            f"mount -t overlay overlay -o lowerdir={d},upperdir={self.upper(d)},workdir={self.base}/overlay-work/{d.strip('/').replace('/', '_')} {d}"
            for d in OVERLAID
        ]
        setup = "\n".join(
            ["set -e", *mounts, *private_dev(self.base / "dev")]
            + ([f"mknod {BY_ID} b 7 0"] if device else [])
            + [f'PATH="{self.stubs}:$PATH" bash {script}']
        )
        (self.state / "calls").write_text("")
        log = self.upper("/var/log") / "s3mirrorfs-setup.log"
        before = log.read_text() if log.exists() else ""
        run = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "bash", "-c", setup],
            env={**os.environ, "STATE": str(self.state), "UUID": UUID, "DEVICE": BY_ID, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )
        # The script's output goes through tee, which may finish a moment later.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = log.read_text()[len(before):] if log.exists() else ""
            if "s3mirrorfs setup: done" in text or "FAILED" in text or "refus" in text or run.returncode:
                break
            time.sleep(0.05)
        time.sleep(0.1)
        self.log = log.read_text()[len(before):] if log.exists() else ""
        self.calls = (self.state / "calls").read_text().splitlines()
        return run.returncode

    def rpm_path(self):
        """Where the set-up downloaded the release, from the `aws s3 cp` it ran."""
        [copy] = [c for c in self.calls if c.startswith("aws s3 cp ")]
        return copy.split()[-1]

    def upper(self, path):
        for d in sorted(OVERLAID, key=len, reverse=True):
            if path == d or path.startswith(d + "/"):
                return self.base / "upper" / d.strip("/").replace("/", "_") / path[len(d):].lstrip("/")
        raise ValueError(path)

    def file(self, path):
        return self.upper(path).read_text()


@pytest.fixture
def instance(tmp_path, template, release_rpm):
    return Instance(tmp_path, template, release_rpm)


def test_first_boot_sets_everything_up(instance):
    assert instance.run() == 0, instance.log
    assert "s3mirrorfs setup: done" in instance.log
    # The RPM dnf installs is the one whose checksum was checked, and it is real.
    assert [c for c in instance.calls if c.startswith("dnf ")] == [f"dnf install -y -q {instance.rpm_path()}"]
    assert f"installed {instance.sha}" in instance.calls
    assert instance.rpm_path().startswith("/tmp/") and instance.rpm_path().endswith("/s3mirrorfs.rpm")
    assert any(c.startswith("useradd ") and c.endswith(" user") for c in instance.calls)
    assert f"mkfs.xfs -q -L s3mirror {BY_ID}" in instance.calls
    assert instance.file("/etc/fstab").count("/home/user/myS3backup") == 1
    assert f"UUID={UUID} /home/user/myS3backup xfs defaults,noatime,nofail 0 2" in instance.file("/etc/fstab")
    assert "chown user:user /home/user/myS3backup" in instance.calls
    assert oct(instance.upper("/home/user/myS3backup").stat().st_mode & 0o777) == "0o750"
    assert os.access(instance.upper("/usr/bin/s3mirrorfs"), os.X_OK)
    assert "s3mirrorfs setup: installed s3mirrorfs 0.1.0 (commit " in instance.log
    # The package's units, in the package's place; none of the set-up's own.
    for unit in UNIT_NAMES:
        assert instance.file("/usr/lib/systemd/system/" + unit) == (ROOT / "systemd" / unit).read_text()
        assert not instance.upper("/etc/systemd/system/" + unit).exists()
    assert not instance.upper("/usr/local/bin/s3mirrorfs").exists()
    assert instance.file("/etc/s3mirrorfs.env").splitlines() == [
        "S3MIRRORFS_BUCKET=s3mirrorfs-imagebucket-0123abcd/photos",
        "S3MIRRORFS_MOUNTPOINT=/mnt/images",
        "S3MIRRORFS_MIRROR_DIR=/home/user/myS3backup",
        "AWS_REGION=eu-west-1",
        'S3MIRRORFS_PREFETCH_OPTIONS=""',
        f"S3MIRRORFS_QUEUE_URL={QUEUE_URL}",
    ]
    assert "TimeoutStartSec=72000" in instance.file("/etc/systemd/system/s3mirrorfs-prefetch.service.d/timeout.conf")
    assert "user_allow_other" in instance.file("/etc/fuse.conf").splitlines()
    # EventBridge schedules: no timer, no cron file; the mount is up and a first run started.
    assert "systemctl enable s3mirrorfs-mount.service" in instance.calls
    assert "systemctl restart s3mirrorfs-mount.service" in instance.calls
    assert "systemctl disable --now s3mirrorfs-prefetch.timer s3mirrorfs-archive.timer" in instance.calls
    assert not instance.upper("/etc/cron.d/s3mirrorfs-prefetch").exists()
    assert instance.calls[-1] == "systemctl start --no-block s3mirrorfs-prefetch.service"
    # RealTime (the default): the follower runs, after the mount.
    assert "systemctl enable s3mirrorfs-follow.service" in instance.calls
    follow = instance.calls.index("systemctl restart s3mirrorfs-follow.service")
    assert follow > instance.calls.index("systemctl restart s3mirrorfs-mount.service")
    # Every prefetch's outcome goes to CloudWatch Logs, whatever the schedule.
    assert "systemctl enable --now s3mirrorfs-outcome.timer" in instance.calls
    assert os.access(instance.upper("/usr/local/sbin/s3mirrorfs-send-outcome"), os.X_OK)
    unit = instance.file("/etc/systemd/system/s3mirrorfs-outcome.service")
    assert "Environment=S3MIRRORFS_OUTCOME_LOG_GROUP=/s3mirrorfs/s3mirrorfs/prefetch" in unit.splitlines()
    # No ArchiveDir: no archive settings, so the archive unit cannot run.
    assert not instance.upper(ARCHIVE_ENV).exists()
    assert not instance.upper(ARCHIVE_DROP_IN).exists()
    assert not [c for c in instance.calls if "enable" in c and "archive" in c and "disable" not in c]


def test_restore_archived_days_reach_the_daily_prefetch(instance):
    assert instance.run(RestoreArchivedDays=7) == 0, instance.log
    env = instance.file("/etc/s3mirrorfs.env")
    assert 'S3MIRRORFS_PREFETCH_OPTIONS="--restore-archived 7"' in env.splitlines()
    # The cron job reads the file with the shell: the quoted value is one assignment.
    read = subprocess.run(
        ["/bin/sh", "-c", '. "$1" && printf "%s" "$S3MIRRORFS_PREFETCH_OPTIONS"', "sh", str(instance.upper("/etc/s3mirrorfs.env"))],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (read.returncode, read.stdout) == (0, "--restore-archived 7"), read.stderr
    # Set back to 0: the option goes with the next run of the set-up.
    assert instance.run(RestoreArchivedDays=0) == 0, instance.log
    assert 'S3MIRRORFS_PREFETCH_OPTIONS=""' in instance.file("/etc/s3mirrorfs.env").splitlines()


def test_a_second_run_changes_nothing_it_should_keep(instance):
    assert instance.run() == 0, instance.log
    fstab = instance.file("/etc/fstab")
    assert instance.run() == 0, instance.log
    assert not [c for c in instance.calls if c.startswith(("mkfs", "useradd", "mount "))]
    assert instance.file("/etc/fstab") == fstab
    assert "s3mirrorfs setup: done" in instance.log


def test_a_release_with_another_checksum_is_refused(instance):
    assert instance.run(sha="f" * 64) != 0
    assert "does not have SHA-256 " + "f" * 64 in instance.log
    assert not [c for c in instance.calls if c.startswith("dnf ")]
    assert not instance.upper("/usr/bin/s3mirrorfs").exists()
    assert not instance.upper("/usr/lib/systemd/system/s3mirrorfs-mount.service").exists()
    # Nothing is enabled, restarted or started (the fstab line for the mirror came before).
    assert [c for c in instance.calls if c.startswith("systemctl")] == ["systemctl daemon-reload"]


def test_a_second_run_installs_the_same_package_again_and_keeps_the_settings_file(instance):
    assert instance.run() == 0, instance.log
    settings = instance.file("/etc/s3mirrorfs.env")
    assert instance.run() == 0, instance.log
    assert f"installed {instance.sha}" in instance.calls
    assert instance.file("/etc/s3mirrorfs.env") == settings


def test_an_instance_set_up_from_the_tarball_moves_to_the_package(instance):
    # What the set-up of the tarball left: its binary, its units in /etc, and
    # the links that enabled the mount and the timer.
    old = instance.upper("/usr/local/bin/s3mirrorfs")
    old.parent.mkdir(parents=True)
    old.write_text("#!/bin/sh\necho 's3mirrorfs 0.0.9'\n")
    units = instance.upper("/etc/systemd/system")
    (units / "multi-user.target.wants").mkdir(parents=True)
    (units / "timers.target.wants").mkdir()
    for unit in UNIT_NAMES:
        shutil.copy(ROOT / "systemd" / unit, units / unit)
    (units / "multi-user.target.wants/s3mirrorfs-mount.service").symlink_to("/etc/systemd/system/s3mirrorfs-mount.service")
    (units / "timers.target.wants/s3mirrorfs-prefetch.timer").symlink_to("/etc/systemd/system/s3mirrorfs-prefetch.timer")
    assert instance.run(ScheduleSource="SystemdTimer") == 0, instance.log
    assert not instance.upper("/usr/local/bin/s3mirrorfs").exists()
    for unit in UNIT_NAMES:
        assert not (units / unit).exists(), unit
    assert not os.path.lexists(units / "multi-user.target.wants/s3mirrorfs-mount.service")
    assert not os.path.lexists(units / "timers.target.wants/s3mirrorfs-prefetch.timer")
    # Enabled again, now from the package's units.
    removed_then_enabled = instance.calls.index("systemctl enable s3mirrorfs-mount.service")
    assert removed_then_enabled > instance.calls.index(f"installed {instance.sha}")
    assert "systemctl enable --now s3mirrorfs-prefetch.timer" in instance.calls
    assert instance.upper("/usr/lib/systemd/system/s3mirrorfs-mount.service").exists()


def test_a_volume_with_data_is_never_formatted(instance):
    (instance.state / "formatted").touch()
    assert instance.run() == 0, instance.log
    assert not [c for c in instance.calls if c.startswith("mkfs")]
    assert f"UUID={UUID} /home/user/myS3backup" in instance.file("/etc/fstab")


def test_an_unreadable_volume_stops_the_set_up_before_anything_is_formatted(instance):
    assert instance.run(env={"BLKID_PROBE": "4"}) != 0
    assert "blkid cannot read" in instance.log
    assert not [c for c in instance.calls if c.startswith(("mkfs", "mount "))]


def test_the_volume_is_attached_when_it_is_not_there_yet(instance):
    assert instance.run(device=False) == 0, instance.log
    attach = [c for c in instance.calls if c.startswith("aws ec2 attach-volume")]
    assert attach == [
        f"aws ec2 attach-volume --region eu-west-1 --volume-id {VOLUME} --instance-id i-0123456789abcdef0 --device /dev/sdf"
    ]
    assert f"mkfs.xfs -q -L s3mirror {BY_ID}" in instance.calls


def test_cron_schedules_instead_of_the_timer(instance):
    assert instance.run(ScheduleSource="Cron") == 0, instance.log
    assert f"dnf install -y -q {instance.rpm_path()} cronie" in instance.calls
    assert instance.file("/etc/cron.d/s3mirrorfs-prefetch") == (ROOT / "systemd/s3mirrorfs-prefetch.cron").read_text()
    assert "systemctl enable --now crond.service" in instance.calls
    assert "systemctl disable --now s3mirrorfs-prefetch.timer s3mirrorfs-archive.timer" in instance.calls
    assert not instance.upper("/etc/cron.d/s3mirrorfs-archive").exists()


def test_the_timer_schedules_and_a_cron_file_left_from_before_goes(instance):
    assert instance.run(ScheduleSource="Cron") == 0, instance.log
    assert instance.run(ScheduleSource="SystemdTimer") == 0, instance.log
    assert "systemctl enable --now s3mirrorfs-prefetch.timer" in instance.calls
    assert not instance.upper("/etc/cron.d/s3mirrorfs-prefetch").exists()


def test_a_failed_mount_still_sets_up_the_schedule_and_fails_the_set_up(instance):
    assert instance.run(ScheduleSource="SystemdTimer", env={"MOUNT_STATUS": "1"}) != 0
    assert "the mount did not start" in instance.log
    assert "systemctl enable --now s3mirrorfs-prefetch.timer" in instance.calls
    assert "systemctl start --no-block s3mirrorfs-prefetch.service" in instance.calls


def test_an_archive_with_eventbridge_gets_its_settings_and_no_schedule_of_its_own(instance):
    assert instance.run(**ARCHIVE, ArchiveKeep="5", ArchiveTimeoutSeconds=7200) == 0, instance.log
    assert instance.file(ARCHIVE_ENV).splitlines() == [
        "S3MIRRORFS_ARCHIVE_DIR=/srv/app/data",
        "S3MIRRORFS_ARCHIVE_TARGET=s3mirrorfs-archives/app/daily",
        "S3MIRRORFS_ARCHIVE_OPTIONS=--keep 5 --sse AES256",
    ]
    assert instance.file(ARCHIVE_DROP_IN).splitlines() == [
        "[Unit]",
        "RequiresMountsFor=/srv/app/data",
        "[Service]",
        "TimeoutStartSec=7200",
    ]
    # The Run Command starts it after the prefetch: no timer, no cron file.
    assert "systemctl disable --now s3mirrorfs-prefetch.timer s3mirrorfs-archive.timer" in instance.calls
    assert not instance.upper("/etc/cron.d/s3mirrorfs-archive").exists()
    assert not [c for c in instance.calls if c.startswith("systemctl start") and "archive" in c]


def test_an_archive_with_a_kms_key_asks_for_sse_kms(instance):
    key = "arn:aws:kms:eu-west-1:123456789012:key/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
    assert instance.run(**ARCHIVE, ArchiveKeep="0", ArchiveKmsKeyArn=key) == 0, instance.log
    assert instance.file(ARCHIVE_ENV).splitlines()[2] == (
        f"S3MIRRORFS_ARCHIVE_OPTIONS=--keep 0 --sse aws:kms --sse-kms-key-id {key}"
    )


def test_an_archive_with_the_timer_gets_its_own_timer(instance):
    assert instance.run(**ARCHIVE, ScheduleSource="SystemdTimer") == 0, instance.log
    assert "systemctl enable --now s3mirrorfs-prefetch.timer" in instance.calls
    assert "systemctl enable --now s3mirrorfs-archive.timer" in instance.calls
    assert not instance.upper("/etc/cron.d/s3mirrorfs-archive").exists()


def test_an_archive_with_cron_gets_a_cron_line_and_no_timer(instance):
    assert instance.run(**ARCHIVE, ScheduleSource="Cron") == 0, instance.log
    assert instance.file("/etc/cron.d/s3mirrorfs-archive") == (ROOT / "systemd/s3mirrorfs-archive.cron").read_text()
    assert "systemctl disable --now s3mirrorfs-prefetch.timer s3mirrorfs-archive.timer" in instance.calls
    assert not [c for c in instance.calls if c == "systemctl enable --now s3mirrorfs-archive.timer"]


def test_clearing_the_archive_dir_removes_the_archive_and_its_schedule(instance):
    assert instance.run(**ARCHIVE, ScheduleSource="Cron") == 0, instance.log
    assert instance.upper("/etc/cron.d/s3mirrorfs-archive").exists()
    assert instance.run(ScheduleSource="Cron") == 0, instance.log
    assert not instance.upper("/etc/cron.d/s3mirrorfs-archive").exists()
    assert not instance.upper(ARCHIVE_ENV).exists()
    assert not instance.upper(ARCHIVE_DROP_IN).exists()
    assert instance.upper("/etc/cron.d/s3mirrorfs-prefetch").exists()
    assert instance.run(**ARCHIVE, ScheduleSource="SystemdTimer") == 0, instance.log
    assert instance.run(ScheduleSource="SystemdTimer") == 0, instance.log
    assert "systemctl disable --now s3mirrorfs-archive.timer" in instance.calls
    assert not instance.upper(ARCHIVE_ENV).exists()


@pytest.mark.parametrize(
    "overrides, why",
    [
        ({"ArchiveBucket": "s3mirrorfs-imagebucket-0123abcd"}, "is a bucket of this stack"),
        ({"ArchiveBucket": "s3mirrorfs-logbucket-4567efab"}, "is a bucket of this stack"),
        ({"ArchiveBucket": ""}, "ArchiveDir is set but ArchiveBucket is empty"),
        ({"ArchiveDir": "/tmp/app"}, "is private or virtual in the archive unit's sandbox"),
        ({"ArchiveDir": "/var/tmp"}, "is private or virtual in the archive unit's sandbox"),
    ],
)
def test_an_archive_that_cannot_work_fails_the_set_up_but_not_the_backup(instance, overrides, why):
    assert instance.run(**dict(ARCHIVE, ScheduleSource="SystemdTimer", **overrides)) != 0
    assert why in instance.log
    assert "s3mirrorfs setup: FAILED: no archive: " in instance.log
    assert not instance.upper(ARCHIVE_ENV).exists()
    assert "systemctl enable --now s3mirrorfs-archive.timer" not in instance.calls
    # The backup is set up all the same.
    assert "systemctl restart s3mirrorfs-mount.service" in instance.calls
    assert "systemctl enable --now s3mirrorfs-prefetch.timer" in instance.calls
    assert "systemctl start --no-block s3mirrorfs-prefetch.service" in instance.calls


def test_without_real_time_the_follower_has_no_queue_and_stays_disabled(instance):
    assert instance.run(QueueUrl="") == 0, instance.log
    env = instance.file("/etc/s3mirrorfs.env")
    assert "S3MIRRORFS_QUEUE_URL" not in env
    assert "systemctl disable --now s3mirrorfs-follow.service" in instance.calls
    assert not [c for c in instance.calls if c.startswith(("systemctl enable", "systemctl restart")) and "follow" in c]
    # The unit is installed all the same: it is part of the release.
    assert instance.upper("/usr/lib/systemd/system/s3mirrorfs-follow.service").exists()
    # The alarm's outcome does not depend on RealTime.
    assert "systemctl enable --now s3mirrorfs-outcome.timer" in instance.calls


def test_turning_real_time_off_takes_the_queue_away(instance):
    assert instance.run() == 0, instance.log
    assert f"S3MIRRORFS_QUEUE_URL={QUEUE_URL}" in instance.file("/etc/s3mirrorfs.env").splitlines()
    assert instance.run(QueueUrl="") == 0, instance.log
    assert "S3MIRRORFS_QUEUE_URL" not in instance.file("/etc/s3mirrorfs.env")
    assert "systemctl disable --now s3mirrorfs-follow.service" in instance.calls


def test_a_follower_that_does_not_start_fails_the_set_up_but_not_the_backup(instance):
    assert instance.run(ScheduleSource="SystemdTimer", env={"FOLLOW_STATUS": "1"}) != 0
    assert "the follower did not start" in instance.log
    assert "systemctl restart s3mirrorfs-mount.service" in instance.calls
    assert "systemctl enable --now s3mirrorfs-prefetch.timer" in instance.calls
    assert "systemctl enable --now s3mirrorfs-outcome.timer" in instance.calls
    assert "systemctl start --no-block s3mirrorfs-prefetch.service" in instance.calls


@pytest.mark.parametrize("source", ["EventBridge", "SystemdTimer", "Cron"])
def test_the_outcome_is_sent_whatever_starts_the_prefetch(instance, source):
    assert instance.run(ScheduleSource=source) == 0, instance.log
    assert "systemctl enable --now s3mirrorfs-outcome.timer" in instance.calls


def test_the_outcome_units_pass_systemd_analyze_verify(instance, tmp_path):
    assert instance.run() == 0, instance.log
    root = tmp_path / "root"
    system = Path("/usr/lib/systemd/system")
    if not system.is_dir():
        system = Path("/lib/systemd/system")
    shutil.copytree(system, root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for name in OUTCOME_UNITS:
        (units / name).write_text(instance.file("/etc/systemd/system/" + name))
    program = root / "usr/local/sbin/s3mirrorfs-send-outcome"
    program.parent.mkdir(parents=True)
    program.write_text(instance.file("/usr/local/sbin/s3mirrorfs-send-outcome"))
    program.chmod(0o755)
    (root / "etc/s3mirrorfs.env").write_text(instance.file("/etc/s3mirrorfs.env"))
    run = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *[str(units / n) for n in OUTCOME_UNITS]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (run.returncode, run.stdout + run.stderr) == (0, "")
