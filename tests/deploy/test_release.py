"""The release tarball that scripts/release built (scripts/check-deploy builds
it before these tests): what it holds, its checksums, and a binary that needs
no glibc newer than Amazon Linux 2023's 2.34. The packages built with it are
checked in test_packages.py."""

import hashlib
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

import cfn_template

ROOT = cfn_template.ROOT
GLIBC_LIMIT = (2, 34)
COMMANDS = ("prefetch", "mount", "follow", "status", "verify", "restore", "history", "archive")
UNITS = (
    "s3mirrorfs-mount.service",
    "s3mirrorfs-prefetch.service",
    "s3mirrorfs-prefetch.timer",
    "s3mirrorfs-follow.service",
    "s3mirrorfs-archive.service",
    "s3mirrorfs-archive.timer",
)


@pytest.fixture(scope="module")
def tarball():
    given = os.environ.get("RELEASE_TARBALL")
    if given:
        return Path(given)
    found = sorted((ROOT / "target" / "dist").glob("s3mirrorfs-*.tar.gz"), key=lambda p: p.stat().st_mtime)
    if not found:
        pytest.skip("no release tarball: scripts/release builds it")
    return found[-1]


@pytest.fixture(scope="module")
def unpacked(tarball, tmp_path_factory):
    into = tmp_path_factory.mktemp("release")
    with tarfile.open(tarball) as tar:
        tar.extractall(into, filter="data")
    [top] = list(into.iterdir())
    return top


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_tarball_matches_its_sha256_file(tarball):
    digest, name = (tarball.parent / (tarball.name + ".sha256")).read_text().split()
    assert name == tarball.name
    assert digest == sha256(tarball)


def test_the_tarball_holds_the_binary_units_and_cron_file(tarball, unpacked):
    version = re.search(r'^version = "([^"]+)"$', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    assert unpacked.name == f"s3mirrorfs-{version}-x86_64-linux-gnu"
    assert tarball.name == unpacked.name + ".tar.gz"
    files = sorted(str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file())
    pages = sorted(f"man/man1/{p.name}" for p in (unpacked / "man/man1").iterdir())
    assert pages == sorted(["man/man1/s3mirrorfs.1.gz"] + [f"man/man1/s3mirrorfs-{c}.1.gz" for c in COMMANDS])
    assert files == [
        "LICENSE",
        "README.md",
        "SHA256SUMS",
        "bin/s3mirrorfs",
        "completions/_s3mirrorfs",
        "completions/s3mirrorfs.bash",
        "cron/s3mirrorfs-archive",
        "cron/s3mirrorfs-prefetch",
        *pages,
        "systemd/s3mirrorfs-archive.service",
        "systemd/s3mirrorfs-archive.timer",
        "systemd/s3mirrorfs-follow.service",
        "systemd/s3mirrorfs-mount.service",
        "systemd/s3mirrorfs-prefetch.service",
        "systemd/s3mirrorfs-prefetch.timer",
        "systemd/s3mirrorfs.env",
    ]
    for unit in UNITS + ("s3mirrorfs.env",):
        assert (unpacked / "systemd" / unit).read_bytes() == (ROOT / "systemd" / unit).read_bytes()
    for job in ("s3mirrorfs-prefetch", "s3mirrorfs-archive"):
        assert (unpacked / "cron" / job).read_bytes() == (ROOT / "systemd" / (job + ".cron")).read_bytes()
    assert os.access(unpacked / "bin/s3mirrorfs", os.X_OK)


def test_sha256sums_covers_every_file(unpacked):
    listed = {}
    for line in (unpacked / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    files = {str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert set(listed) == files
    for name, digest in listed.items():
        assert sha256(unpacked / name) == digest, name


def glibc_versions(binary):
    dump = subprocess.run(["objdump", "-T", str(binary)], capture_output=True, text=True, check=True, timeout=60)
    return {tuple(int(x) for x in v.split(".")) for v in re.findall(r"GLIBC_(\d+\.\d+(?:\.\d+)?)", dump.stdout)}


def test_the_binary_needs_no_glibc_newer_than_2_34(unpacked):
    versions = glibc_versions(unpacked / "bin/s3mirrorfs")
    assert versions, "no versioned glibc symbols: not the dynamic glibc binary that is expected"
    assert max(versions)[:2] <= GLIBC_LIMIT, sorted(versions)


def test_the_binary_runs(unpacked):
    run = subprocess.run([str(unpacked / "bin/s3mirrorfs"), "--version"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0
    # The version and the commit it was built from (a checkout of this repository).
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    version = re.search(r'^version = "([^"]+)"$', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    commit = head.stdout.strip() if head.returncode == 0 else "unknown"
    assert run.stdout == f"s3mirrorfs {version} (commit {commit})\n"


def test_the_glibc_check_refuses_a_binary_above_the_limit(unpacked):
    binary = unpacked / "bin/s3mirrorfs"
    ok = subprocess.run([str(ROOT / "scripts/release"), "--check-glibc", str(binary)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    # Any glibc binary needs more than 2.2.5; as a limit it must be refused.
    low = subprocess.run(
        [str(ROOT / "scripts/release"), "--check-glibc", str(binary), "2.2.5"], capture_output=True, text=True
    )
    assert low.returncode != 0
    assert "newer than GLIBC_2.2.5" in low.stderr


# Strings only the test doubles and hooks (the `test-util` feature) put into a
# binary: the crash-point variable and its log line, and the in-memory store.
TEST_ONLY = (b"S3MIRRORFS_FAULT_POINT", b"fault point reached", b"memory store is offline", b"MemoryStore")


def test_the_binary_has_no_test_hook_and_no_memory_store(unpacked):
    data = (unpacked / "bin/s3mirrorfs").read_bytes()
    assert b"s3mirrorfs" in data
    found = [s.decode() for s in TEST_ONLY if s in data]
    assert not found, f"test-only code in the release binary: {found}"
