"""The systemd units and the cron file: systemd-analyze verifies the units in
a throw-away root (the units' programs are stubs there), rates the prefetch
unit's sandbox, and the settings the deployment relies on are in place."""

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

import cfn_template

UNITS = cfn_template.ROOT / "systemd"
UNIT_NAMES = [
    "s3mirrorfs-mount.service",
    "s3mirrorfs-prefetch.service",
    "s3mirrorfs-prefetch.timer",
    "s3mirrorfs-follow.service",
    "s3mirrorfs-archive.service",
    "s3mirrorfs-archive.timer",
]
CRON = UNITS / "s3mirrorfs-prefetch.cron"
ARCHIVE_CRON = UNITS / "s3mirrorfs-archive.cron"
MIRROR = "/home/user/myS3backup"
SANDBOX_PATHS = {
    "PrivateTmp", "PrivateDevices", "PrivateMounts", "PrivateNetwork", "ProtectSystem", "ProtectHome",
    "ReadOnlyPaths", "ReadWritePaths", "InaccessiblePaths", "TemporaryFileSystem", "BindPaths",
    "RootDirectory", "RootImage", "MountFlags", "ProtectKernelTunables", "ProtectControlGroups",
    "ProtectKernelModules", "ProtectKernelLogs", "ProtectProc", "ProcSubset", "PrivateUsers",
    "DynamicUser", "ProtectClock", "ProtectHostname", "PrivateIPC",
}


def parse_unit(path):
    """{section: {key: [values]}}, with continuation lines joined."""
    sections, section, pending = {}, None, ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(name):
    return parse_unit(UNITS / name)["Service"]


def one(settings, key):
    values = settings.get(key, [])
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def executables(unit):
    """The absolute program paths of every Exec*= line."""
    paths = set()
    for key, values in parse_unit(unit).get("Service", {}).items():
        if key.startswith("Exec"):
            for value in values:
                paths.add(value.lstrip("-+@!:").split()[0])
    return paths


@pytest.fixture
def root(tmp_path):
    """A throw-away root: systemd's own units, ours, stub programs, the env file."""
    system = Path("/usr/lib/systemd/system")
    if not system.is_dir():
        system = Path("/lib/systemd/system")
    shutil.copytree(system, tmp_path / "usr/lib/systemd/system", symlinks=True)
    units = tmp_path / "etc/systemd/system"
    units.mkdir(parents=True)
    for name in UNIT_NAMES:
        shutil.copy(UNITS / name, units / name)
        for program in executables(UNITS / name):
            stub = tmp_path / program.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
    (tmp_path / "etc/s3mirrorfs.env").write_text(
        f"S3MIRRORFS_BUCKET=images\nS3MIRRORFS_MOUNTPOINT=/mnt/images\nS3MIRRORFS_MIRROR_DIR={MIRROR}\n"
        "S3MIRRORFS_QUEUE_URL=https://sqs.eu-west-1.amazonaws.com/123456789012/images-events\n"
    )
    (tmp_path / "etc/s3mirrorfs-archive.env").write_text(
        "S3MIRRORFS_ARCHIVE_DIR=/srv/app/data\nS3MIRRORFS_ARCHIVE_TARGET=backups/app-archives\n"
        "S3MIRRORFS_ARCHIVE_OPTIONS=--keep 7 --sse AES256\n"
    )
    return tmp_path


def verify(root, names=UNIT_NAMES):
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *[str(root / "etc/systemd/system" / n) for n in names]],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_unit_passes_systemd_analyze_verify(root):
    run = verify(root)
    # A warning is a finding too: verify exits 0 on some of them.
    assert (run.returncode, run.stdout + run.stderr) == (0, "")


def test_verify_catches_a_missing_program(root):
    (root / "usr/bin/s3mirrorfs").unlink()
    run = verify(root)
    assert run.returncode != 0
    assert "/usr/bin/s3mirrorfs is not executable" in run.stderr


def exposure(root, unit):
    run = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--root={root}", "--no-pager", unit],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r"Overall exposure level for " + re.escape(unit) + r": (\d+\.\d+) (\w+)", run.stdout)
    assert match, run.stdout + run.stderr
    return float(match.group(1)), match.group(2), run.stdout


def test_the_prefetch_sandbox_rates_low_exposure(root):
    level, rating, output = exposure(root, "s3mirrorfs-prefetch.service")
    assert level < 2.0, output
    assert rating == "OK"


def test_the_follow_sandbox_rates_low_exposure(root):
    level, rating, output = exposure(root, "s3mirrorfs-follow.service")
    assert level <= 4.0, output
    assert rating == "OK"


def test_the_follower_is_a_notify_service_that_restarts_and_writes_only_the_mirror():
    unit = parse_unit(UNITS / "s3mirrorfs-follow.service")
    s = unit["Service"]
    assert one(s, "Type") == "notify"
    command = one(s, "ExecStart").split()
    assert command[:3] == ["/usr/bin/s3mirrorfs", "follow", "${S3MIRRORFS_BUCKET}"]
    assert command[command.index("--queue-url") + 1] == "${S3MIRRORFS_QUEUE_URL}"
    assert one(s, "Restart") == "on-failure"
    assert one(s, "ReadWritePaths") == MIRROR
    assert one(unit["Unit"], "RequiresMountsFor") == MIRROR
    assert one(s, "ProtectSystem") == "strict"
    assert one(s, "CapabilityBoundingSet") == ""
    assert one(s, "RestrictAddressFamilies").split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    # It stops within 10 s of SIGTERM; systemd waits a little longer before SIGKILL.
    assert one(s, "TimeoutStopSec") == "15s"
    assert one(unit["Install"], "WantedBy") == "multi-user.target"


def test_the_archive_sandbox_rates_low_exposure(root):
    # A little above the prefetch's, by what reading any file takes: the
    # capability, and the host's user IDs instead of a private user namespace.
    level, rating, output = exposure(root, "s3mirrorfs-archive.service")
    assert level < 2.0, output
    assert rating == "OK"


def test_the_archive_reads_what_it_archives_and_writes_nothing():
    unit = parse_unit(UNITS / "s3mirrorfs-archive.service")
    s = unit["Service"]
    assert one(s, "Type") == "oneshot"
    command = one(s, "ExecStart").split()
    assert command[:4] == [
        "/usr/bin/s3mirrorfs", "archive", "${S3MIRRORFS_ARCHIVE_DIR}", "${S3MIRRORFS_ARCHIVE_TARGET}"
    ]
    # Unbraced, so systemd splits the options into words.
    assert "$S3MIRRORFS_ARCHIVE_OPTIONS" in command and "--json" in command
    assert s["EnvironmentFile"] == ["/etc/s3mirrorfs.env", "/etc/s3mirrorfs-archive.env"]
    assert one(s, "ProtectSystem") == "strict"
    assert one(s, "ProtectHome") == "read-only"
    for key in ("ReadWritePaths", "StateDirectory", "CacheDirectory", "LogsDirectory", "RuntimeDirectory"):
        assert key not in s, key
    assert one(s, "CapabilityBoundingSet") == "CAP_DAC_READ_SEARCH"
    assert one(s, "AmbientCapabilities") == "CAP_DAC_READ_SEARCH"
    for key in ("PrivateTmp", "PrivateDevices", "NoNewPrivileges", "ProtectKernelTunables",
                "ProtectControlGroups", "RestrictNamespaces", "LockPersonality", "MemoryDenyWriteExecute"):
        assert one(s, key) == "yes", key
    assert one(s, "RestrictAddressFamilies").split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert s["SystemCallFilter"][0] == "@system-service"
    assert one(s, "User") == "user"
    # Started by a timer, cron or Run Command, never at boot.
    assert "Install" not in unit


def test_the_archive_unit_needs_its_settings_file():
    # A host without an archive has no settings file: starting the unit is then
    # an error (a missing EnvironmentFile without "-"), never a silent success
    # (a Condition* that skips the run).
    unit = parse_unit(UNITS / "s3mirrorfs-archive.service")
    assert all(not v.startswith("-") for v in unit["Service"]["EnvironmentFile"])
    assert not [k for k in unit["Unit"] if k.startswith("Condition")]


def test_the_prefetch_is_a_oneshot_with_a_json_summary_and_one_writable_place():
    unit = parse_unit(UNITS / "s3mirrorfs-prefetch.service")
    s = unit["Service"]
    assert one(s, "Type") == "oneshot"
    command = one(s, "ExecStart").split()
    assert command[:3] == ["/usr/bin/s3mirrorfs", "prefetch", "${S3MIRRORFS_BUCKET}"]
    assert "--json" in command
    # Unbraced, so systemd splits the options (--restore-archived N) into words, none when empty.
    assert "$S3MIRRORFS_PREFETCH_OPTIONS" in command
    assert one(s, "ProtectSystem") == "strict"
    assert one(s, "ReadWritePaths") == MIRROR
    assert one(unit["Unit"], "RequiresMountsFor") == MIRROR
    for key in ("PrivateTmp", "PrivateDevices", "NoNewPrivileges", "ProtectKernelTunables",
                "ProtectControlGroups", "RestrictNamespaces", "LockPersonality", "MemoryDenyWriteExecute"):
        assert one(s, key) == "yes", key
    assert one(s, "CapabilityBoundingSet") == ""
    assert one(s, "RestrictAddressFamilies").split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert s["SystemCallFilter"][0] == "@system-service"
    assert one(s, "User") == "user"


def test_the_mount_is_ready_when_mounted_and_visible_to_everyone():
    unit = parse_unit(UNITS / "s3mirrorfs-mount.service")
    s = unit["Service"]
    assert one(s, "Type") == "notify"
    assert one(s, "Restart") == "on-failure"
    assert "--foreground" in one(s, "ExecStart").split()
    assert "--allow-other" in one(s, "ExecStart").split()
    assert any("fusermount3 -u" in v for v in s["ExecStopPost"])
    # A private mount namespace would hide the mount from everyone else.
    assert not SANDBOX_PATHS & set(s), SANDBOX_PATHS & set(s)
    assert one(unit["Install"], "WantedBy") == "multi-user.target"
    # Both write the one mirror: the same owner, or one could not replace the other's files.
    assert one(s, "User") == one(service("s3mirrorfs-prefetch.service"), "User")
    assert one(s, "Group") == one(service("s3mirrorfs-prefetch.service"), "Group")


@pytest.mark.parametrize("name", ["s3mirrorfs-prefetch.timer", "s3mirrorfs-archive.timer"])
def test_the_timer_is_daily_persistent_and_spread(name):
    timer = parse_unit(UNITS / name)
    t = timer["Timer"]
    assert one(t, "OnCalendar") == "daily"
    assert one(t, "Persistent") == "true"
    assert one(t, "RandomizedDelaySec")
    assert "Unit" not in t  # the service of the same name
    assert one(timer["Install"], "WantedBy") == "timers.target"
    run = subprocess.run(["systemd-analyze", "calendar", one(t, "OnCalendar")], capture_output=True, timeout=30)
    assert run.returncode == 0


def cron_jobs(path=CRON):
    jobs = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        jobs.append(line)
    return jobs


def test_the_cron_file_has_one_valid_system_job():
    text = CRON.read_text()
    assert text.endswith("\n"), "cron ignores a last line without a newline"
    # The installed name (the release ships it without the suffix) must be one cron reads.
    assert re.fullmatch(r"[A-Za-z0-9_-]+", CRON.stem)
    [job] = cron_jobs()
    fields = job.split(None, 6)
    minute, hour, dom, month, dow, user, command = fields
    assert 0 <= int(minute) < 60 and 0 <= int(hour) < 24
    assert (dom, month, dow) == ("*", "*", "*")
    assert user == "user"
    assert "%" not in command, "cron turns an unescaped % into a newline"
    assert "s3mirrorfs prefetch" in command and "--json" in command
    assert "logger -t s3mirrorfs-prefetch" in command


def test_the_cron_command_logs_the_summary_and_the_exit_status(tmp_path):
    [job] = cron_jobs()
    command = job.split(None, 6)[6]
    env = tmp_path / "s3mirrorfs.env"
    env.write_text(f"S3MIRRORFS_BUCKET=images/photos\nS3MIRRORFS_MOUNTPOINT=/mnt/images\nS3MIRRORFS_MIRROR_DIR={tmp_path}/m\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "s3mirrorfs").write_text('#!/bin/sh\necho "args: $*"\necho "some failure" >&2\nexit 1\n')
    (bin_dir / "logger").write_text(f'#!/bin/sh\necho "logger $*" >> {tmp_path}/syslog\ncat >> {tmp_path}/syslog\n')
    for program in bin_dir.iterdir():
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
    run = subprocess.run(
        ["/bin/sh", "-c", command.replace("/etc/s3mirrorfs.env", str(env))],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
    syslog = (tmp_path / "syslog").read_text().splitlines()
    assert syslog[0] == "logger -t s3mirrorfs-prefetch -p cron.info"
    assert f"args: prefetch images/photos --mirror-dir {tmp_path}/m --json" in syslog
    assert "some failure" in syslog
    assert syslog[-1] == "s3mirrorfs prefetch exit status 1"


def test_the_cron_command_adds_the_prefetch_options(tmp_path):
    [job] = cron_jobs()
    command = job.split(None, 6)[6]
    env = tmp_path / "s3mirrorfs.env"
    env.write_text(
        f"S3MIRRORFS_BUCKET=images\nS3MIRRORFS_MIRROR_DIR={tmp_path}/m\n"
        'S3MIRRORFS_PREFETCH_OPTIONS="--restore-archived 7"\n'
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "s3mirrorfs").write_text('#!/bin/sh\nfor a; do echo "arg: $a"; done\n')
    (bin_dir / "logger").write_text(f'#!/bin/sh\ncat >> {tmp_path}/syslog\n')
    for program in bin_dir.iterdir():
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
    run = subprocess.run(
        ["/bin/sh", "-c", command.replace("/etc/s3mirrorfs.env", str(env))],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    args = [line[len("arg: "):] for line in (tmp_path / "syslog").read_text().splitlines() if line.startswith("arg: ")]
    assert args == ["prefetch", "images", "--mirror-dir", f"{tmp_path}/m", "--restore-archived", "7", "--json"]


def test_the_userdata_installs_what_the_release_ships(template):
    script = cfn_template.userdata_script(template)
    for name in UNIT_NAMES:
        assert name in script
    # The package ships the cron files where nothing reads them; the set-up copies one in.
    assert "/usr/share/s3mirrorfs/cron/s3mirrorfs-prefetch /etc/cron.d/s3mirrorfs-prefetch" in script
    assert "/usr/share/s3mirrorfs/cron/s3mirrorfs-archive /etc/cron.d/s3mirrorfs-archive" in script
    assert os.path.basename(str(CRON)).startswith("s3mirrorfs-prefetch")


def test_the_archive_cron_file_starts_the_sandboxed_unit():
    text = ARCHIVE_CRON.read_text()
    assert text.endswith("\n"), "cron ignores a last line without a newline"
    assert re.fullmatch(r"[A-Za-z0-9_-]+", ARCHIVE_CRON.stem)
    [job] = cron_jobs(ARCHIVE_CRON)
    minute, hour, dom, month, dow, user, command = job.split(None, 6)
    assert 0 <= int(minute) < 60 and 0 <= int(hour) < 24
    assert (dom, month, dow) == ("*", "*", "*")
    # root only to start the unit, which runs as "user" in its sandbox.
    assert user == "root"
    assert "%" not in command
    assert "systemctl start s3mirrorfs-archive.service" in command
    # Not the binary itself, which would run as root outside the sandbox.
    assert "s3mirrorfs" not in command.replace("s3mirrorfs-archive", "").replace("s3mirrorfs archive exit", "")


def test_the_archive_cron_command_logs_the_exit_status(tmp_path):
    [job] = cron_jobs(ARCHIVE_CRON)
    command = job.split(None, 6)[6]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "systemctl $*" >> {tmp_path}/calls\necho "Job failed" >&2\nexit 1\n')
    (bin_dir / "logger").write_text(f'#!/bin/sh\necho "logger $*" >> {tmp_path}/syslog\ncat >> {tmp_path}/syslog\n')
    for program in bin_dir.iterdir():
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
    run = subprocess.run(
        ["/bin/sh", "-c", command],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
    assert (tmp_path / "calls").read_text().splitlines() == ["systemctl start s3mirrorfs-archive.service"]
    syslog = (tmp_path / "syslog").read_text().splitlines()
    assert syslog == ["logger -t s3mirrorfs-archive -p cron.info", "Job failed", "s3mirrorfs archive exit status 1"]


ENV_DEFAULT = UNITS / "s3mirrorfs.env"


def test_the_default_settings_document_every_variable_the_units_and_cron_read(tmp_path):
    """systemd/s3mirrorfs.env is what the packages install as /etc/s3mirrorfs.env."""
    used = set()
    for name in UNIT_NAMES:
        unit = UNITS / name
        if "EnvironmentFile=/etc/s3mirrorfs.env" not in unit.read_text():
            continue
        for key, values in parse_unit(unit).get("Service", {}).items():
            if key.startswith("Exec"):
                for value in values:
                    used |= set(re.findall(r"\$\{?(S3MIRRORFS_[A-Z_]+)", value))
    for job in cron_jobs():
        used |= set(re.findall(r"\$\{?(S3MIRRORFS_[A-Z_]+)", job))
    # The archive's own settings live in /etc/s3mirrorfs-archive.env; the region in this file.
    used = {v for v in used if not v.startswith("S3MIRRORFS_ARCHIVE_")} | {"AWS_REGION"}
    assert {"S3MIRRORFS_BUCKET", "S3MIRRORFS_MIRROR_DIR", "S3MIRRORFS_QUEUE_URL"} <= used
    text = ENV_DEFAULT.read_text()
    documented = set(re.findall(r"^#([A-Z][A-Z0-9_]*)=", text, re.M))
    assert used <= documented, used - documented
    # Nothing is set: a unit started before the administrator edits it fails
    # for want of a bucket rather than mirroring something by default.
    assert not re.findall(r"^[A-Z][A-Z0-9_]*=", text, re.M)
    # Uncommented, the shell (the cron job) reads every value as written.
    uncommented = tmp_path / "s3mirrorfs.env"
    uncommented.write_text(re.sub(r"^#([A-Z][A-Z0-9_]*=)", r"\1", text, flags=re.M))
    names = sorted(documented)
    run = subprocess.run(
        ["/bin/sh", "-c", '. "$1" && for n in ' + " ".join(names) + '; do eval "echo $n=\\$$n"; done', "sh", str(uncommented)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    values = dict(line.split("=", 1) for line in run.stdout.splitlines())
    assert values["S3MIRRORFS_MIRROR_DIR"] == MIRROR
    assert values["S3MIRRORFS_PREFETCH_OPTIONS"] == ""
    assert values["S3MIRRORFS_BUCKET"] and values["AWS_REGION"]
