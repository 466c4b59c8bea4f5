"""The RPM and the .deb that scripts/release built (scripts/check-deploy builds
them before these tests): the same files from the same binary as the tarball,
the configuration file an upgrade keeps, dependencies on fuse3 and the C
library only, scriptlets that only tell systemd, and rpmlint's opinion. Then
the .deb for real on this Debian machine: installed with apt-get, its manual
page, unit, completion and binary in place, reinstalled over an edited
/etc/s3mirrorfs.env, removed, purged, and a mirror made before left exactly as
it was."""

import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

import cfn_template

ROOT = cfn_template.ROOT
DIST = ROOT / "target" / "dist"
COMMANDS = ("prefetch", "mount", "follow", "status", "verify", "restore", "history", "archive")
UNITS = (
    "s3mirrorfs-archive.service",
    "s3mirrorfs-archive.timer",
    "s3mirrorfs-follow.service",
    "s3mirrorfs-mount.service",
    "s3mirrorfs-prefetch.service",
    "s3mirrorfs-prefetch.timer",
)
# What both packages install, in both distributions' places.
COMMON = sorted(
    [
        "/etc/s3mirrorfs.env",
        "/usr/bin/s3mirrorfs",
        "/usr/share/bash-completion/completions/s3mirrorfs",
        "/usr/share/doc/s3mirrorfs/README.md",
        "/usr/share/man/man1/s3mirrorfs.1.gz",
        "/usr/share/s3mirrorfs/cron/s3mirrorfs-archive",
        "/usr/share/s3mirrorfs/cron/s3mirrorfs-prefetch",
        *[f"/usr/share/man/man1/s3mirrorfs-{c}.1.gz" for c in COMMANDS],
        *[f"/usr/lib/systemd/system/{u}" for u in UNITS],
    ]
)
# Where the two distributions differ: zsh's completion directory, and the
# license (Debian's copyright file, Fedora's licenses directory).
DEB_ONLY = ["/usr/share/doc/s3mirrorfs/copyright", "/usr/share/zsh/vendor-completions/_s3mirrorfs"]
RPM_ONLY = ["/usr/share/licenses/s3mirrorfs/LICENSE", "/usr/share/zsh/site-functions/_s3mirrorfs"]


def newest(pattern, variable):
    given = os.environ.get(variable)
    if given:
        return Path(given)
    found = sorted(DIST.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        pytest.skip(f"no {pattern} in target/dist: scripts/release builds it")
    return found[-1]


@pytest.fixture(scope="module")
def rpm():
    if shutil.which("rpm") is None:
        pytest.skip("no rpm (Debian's rpm package; scripts/setup-deploy installs it)")
    return newest("s3mirrorfs-*.x86_64.rpm", "RELEASE_RPM")


@pytest.fixture(scope="module")
def deb():
    return newest("s3mirrorfs_*_amd64.deb", "RELEASE_DEB")


@pytest.fixture(scope="module")
def tarball_binary():
    tarball = newest("s3mirrorfs-*-x86_64-linux-gnu.tar.gz", "RELEASE_TARBALL")
    with tarfile.open(tarball) as tar:
        [member] = [m for m in tar.getmembers() if m.name.endswith("/bin/s3mirrorfs")]
        return tar.extractfile(member).read()


def out(*command, **kwargs):
    run = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300, **kwargs)
    assert run.returncode == 0, f"{command}: {run.stdout}{run.stderr}"
    return run.stdout


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def version():
    return re.search(r'^version = "([^"]+)"$', (ROOT / "Cargo.toml").read_text(), re.M).group(1)


def deb_files(deb):
    """{path: content} of every file in the .deb's payload."""
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True, timeout=300).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name.lstrip("."): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def rpm_file(rpm, path):
    """One file's content from the RPM's payload."""
    # rpm2cpio exits 1 after writing the whole payload: it compares the bytes
    # with the archive size in the header, which cargo-generate-rpm does not
    # write (rpm and dnf do not need it; `rpm -K` checks the payload's digest,
    # in the test below). The content is compared instead.
    payload = subprocess.run(["rpm2cpio", str(rpm)], capture_output=True, timeout=300).stdout
    run = subprocess.run(
        ["cpio", "-i", "--quiet", "--to-stdout", "." + path], input=payload, capture_output=True, check=True, timeout=300
    )
    return run.stdout


def test_the_packages_match_their_sha256_files(rpm, deb):
    for package in (rpm, deb):
        digest, name = (package.parent / (package.name + ".sha256")).read_text().split()
        assert name == package.name
        assert digest == sha256(package.read_bytes())
    assert rpm.name == f"s3mirrorfs-{version()}-1.x86_64.rpm"
    assert deb.name == f"s3mirrorfs_{version()}-1_amd64.deb"


def test_both_packages_install_the_same_files(rpm, deb):
    listing = out("rpm", "-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]", rpm)
    entries = [line.split(" ", 1) for line in listing.splitlines()]
    assert sorted(path for mode, path in entries if mode.startswith("-")) == sorted(COMMON + RPM_ONLY)
    files = deb_files(deb)
    assert sorted(files) == sorted(COMMON + DEB_ONLY)


def test_both_packages_hold_the_release_binary_and_the_repositorys_files(rpm, deb, tarball_binary):
    files = deb_files(deb)
    assert sha256(files["/usr/bin/s3mirrorfs"]) == sha256(tarball_binary)
    assert sha256(rpm_file(rpm, "/usr/bin/s3mirrorfs")) == sha256(tarball_binary)
    sources = {f"/usr/lib/systemd/system/{u}": ROOT / "systemd" / u for u in UNITS}
    sources.update(
        {
            "/etc/s3mirrorfs.env": ROOT / "systemd/s3mirrorfs.env",
            "/usr/share/s3mirrorfs/cron/s3mirrorfs-prefetch": ROOT / "systemd/s3mirrorfs-prefetch.cron",
            "/usr/share/s3mirrorfs/cron/s3mirrorfs-archive": ROOT / "systemd/s3mirrorfs-archive.cron",
            "/usr/share/doc/s3mirrorfs/README.md": ROOT / "README.md",
        }
    )
    for path, source in sources.items():
        assert files[path] == source.read_bytes(), path
        assert rpm_file(rpm, path) == source.read_bytes(), path
    assert rpm_file(rpm, "/usr/share/licenses/s3mirrorfs/LICENSE") == (ROOT / "LICENSE").read_bytes()
    assert (ROOT / "LICENSE").read_text() in files["/usr/share/doc/s3mirrorfs/copyright"].decode()
    # The pages are gzipped roff, the same in both.
    for command in ("s3mirrorfs",) + tuple(f"s3mirrorfs-{c}" for c in COMMANDS):
        path = f"/usr/share/man/man1/{command}.1.gz"
        page = gzip.decompress(files[path]).decode()
        assert page.startswith(".ie") and f".TH {command} 1" in page, path
        assert rpm_file(rpm, path) == files[path]


def test_the_units_run_the_packaged_binary():
    for unit in UNITS:
        text = (ROOT / "systemd" / unit).read_text()
        assert "/usr/local/bin" not in text, unit
        for line in text.splitlines():
            if line.startswith("ExecStart=") and "s3mirrorfs " in line:
                assert line.startswith("ExecStart=/usr/bin/s3mirrorfs "), line


def test_the_rpm_digests_are_intact(rpm):
    check = out("rpm", "-Kv", rpm)
    for digest in ("Header SHA256 digest: OK", "Payload SHA256 digest: OK"):
        assert digest in check, check


def test_the_rpm_keeps_an_edited_settings_file_and_requires_fuse3_and_the_c_library_only(rpm, deb):
    assert out("rpm", "-qp", "--configfiles", rpm).split() == ["/etc/s3mirrorfs.env"]
    flags = dict(
        line.split(" ", 1) for line in out("rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", rpm).splitlines()
    )
    assert set(flags["/etc/s3mirrorfs.env"]) == {"c", "n"}, "%config(noreplace)"
    requires = out("rpm", "-qp", "--requires", rpm).splitlines()
    assert "fuse3" in requires
    # Besides fuse3: the scriptlets' shell, rpm's own features, the package's
    # configuration file, and the shared libraries find-requires saw in the binary.
    other = ("rpmlib(", "/bin/sh", "config(s3mirrorfs) = ", "rtld(GNU_HASH)")
    libraries = [r for r in requires if r != "fuse3" and not r.startswith(other)]
    assert libraries, requires
    glibc, families = [], set()
    for requirement in libraries:
        library = r"libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|ld-linux-x86-64\.so\.2"
        match = re.fullmatch(rf"({library})\((.*)\)\(64bit\)", requirement)
        assert match, f"an unexpected requirement: {requirement} (of {requires})"
        # The Debian package that has the library, for comparing with the .deb.
        families.add("libgcc-s1" if match.group(1) == "libgcc_s.so.1" else "libc6")
        glibc += [tuple(int(x) for x in v.split(".")) for v in re.findall(r"GLIBC_(\d+(?:\.\d+)+)", match.group(2))]
    assert glibc and max(glibc) <= (2, 34), sorted(glibc)
    # The same dependencies as the .deb's, in each distribution's terms.
    depends = [d.split(" (")[0] for d in out("dpkg-deb", "--field", deb, "Depends").strip().split(", ")]
    assert sorted(depends) == sorted({"fuse3"} | families)


def test_the_scriptlets_only_reload_systemd(rpm, deb, tmp_path):
    scripts = out("rpm", "-qp", "--scripts", rpm)
    assert "postinstall scriptlet" in scripts and "postuninstall scriptlet" in scripts
    assert "preinstall" not in scripts and "preuninstall" not in scripts
    out("dpkg-deb", "--control", deb, tmp_path / "control")
    maintainer = ("preinst", "postinst", "prerm", "postrm")
    deb_scripts = {p.name: p.read_text() for p in (tmp_path / "control").iterdir() if p.name in maintainer}
    assert sorted(deb_scripts) == ["postinst", "postrm"]
    for text in [scripts, *deb_scripts.values()]:
        assert "systemctl daemon-reload" in text
        assert "[ -d /run/systemd/system ]" in text, "must work where systemd is not running"
        commands = re.findall(r"systemctl\s+(\S+)", text)
        assert set(commands) == {"daemon-reload"}, commands
        assert "rm " not in text and "myS3backup" not in text
    control = (tmp_path / "control/control").read_text()
    assert re.search(r"^Depends: fuse3, libc6 \(>= 2\.34\)$", control, re.M), control
    assert (tmp_path / "control/conffiles").read_text().split() == ["/etc/s3mirrorfs.env"]


def test_rpmlint_finds_no_error(rpm, tmp_path):
    if shutil.which("rpmlint") is None:
        pytest.skip("no rpmlint (Debian's rpmlint package; scripts/setup-deploy installs it)")
    # Fedora's own rules for what a package may be named and say about itself
    # do not all apply to a package built outside a distribution: those are
    # filtered in rpmlint.toml next to the packaging scripts, each with why.
    run = subprocess.run(
        ["rpmlint", "--config", str(ROOT / "packaging/rpm/rpmlint.toml"), str(rpm)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"\b0 errors, 0 warnings\b", run.stdout), run.stdout


def snapshot(directory):
    """Every entry under a directory: its type, mode, owner, mtime and content."""
    entries = {}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        entries[str(path.relative_to(directory))] = (
            st.st_mode,
            st.st_uid,
            st.st_mtime_ns,
            path.read_bytes() if path.is_file() and not path.is_symlink() else None,
        )
    return entries


def apt_get(*args):
    return out(
        "apt-get", "-o", "DPkg::Lock::Timeout=600", "-y", "-q", *args,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("apt-get") is None or shutil.which("man") is None,
    reason="installs the package for real: needs root, apt-get and man",
)
def test_the_deb_installs_and_purges_cleanly_and_never_touches_a_mirror(deb, tmp_path):
    installed = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", "s3mirrorfs"], capture_output=True, text=True)
    if "installed" in installed.stdout:
        pytest.skip("s3mirrorfs is installed on this machine already; not touching it")
    # A mirror made before the package, where the settings put it, with a copy
    # and the tool's own state.
    mirror = Path("/home/user/myS3backup")
    made_home = not mirror.parent.exists()
    made_mirror = not mirror.exists()
    if made_mirror:
        (mirror / ".s3mirrorfs/history").mkdir(parents=True)
        (mirror / "photos").mkdir()
        (mirror / "photos/a.jpg").write_bytes(b"\xff\xd8 an image")
        (mirror / ".s3mirrorfs/mirror.json").write_text('{"bucket": "images"}\n')
    before = snapshot(mirror)
    try:
        apt_get("install", "--no-install-recommends", str(deb.resolve()))
        listed = out("dpkg", "-L", "s3mirrorfs").split()
        files = [f for f in listed if Path(f).is_file()]
        assert sorted(files) == sorted(COMMON + DEB_ONLY)
        assert out("man", "-w", "s3mirrorfs").strip() == "/usr/share/man/man1/s3mirrorfs.1.gz"
        assert out("man", "-w", "s3mirrorfs-prefetch").strip() == "/usr/share/man/man1/s3mirrorfs-prefetch.1.gz"
        page = out("man", "-P", "cat", "s3mirrorfs-prefetch", env={**os.environ, "MANWIDTH": "80"})
        assert "--restore-archived" in page and "EXIT STATUS" in page.replace("\b", "")
        # The unit as systemd finds it on its search path. `systemctl cat` asks
        # the running systemd; where systemd is not PID 1 (a container) it
        # refuses, and `systemd-analyze cat-config` reads the same search path
        # from disk.
        assert "/usr/lib/systemd/system/s3mirrorfs-prefetch.service" in listed
        shown = subprocess.run(
            ["systemctl", "cat", "--no-pager", "s3mirrorfs-prefetch.service"], capture_output=True, text=True, timeout=60
        )
        if shown.returncode != 0 and "not been booted with systemd" in shown.stderr:
            shown = subprocess.run(
                ["systemd-analyze", "cat-config", "--no-pager", "systemd/system/s3mirrorfs-prefetch.service"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        assert shown.returncode == 0, shown.stderr
        unit = shown.stdout
        assert unit.startswith("# /usr/lib/systemd/system/s3mirrorfs-prefetch.service\n")
        assert "ExecStart=/usr/bin/s3mirrorfs prefetch " in unit
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        commit = head.stdout.strip() if head.returncode == 0 else "unknown"
        assert out("s3mirrorfs", "--version") == f"s3mirrorfs {version()} (commit {commit})\n"
        completion = "/usr/share/bash-completion/completions/s3mirrorfs"
        assert out("bash", "-c", f"source {completion} && complete -p s3mirrorfs").endswith(" -F _s3mirrorfs s3mirrorfs\n")
        # Not one unit enabled by installing.
        for unit_name in UNITS:
            assert not list(Path("/etc/systemd/system").rglob(unit_name)), unit_name
        settings = Path("/etc/s3mirrorfs.env")
        assert settings.read_text() == (ROOT / "systemd/s3mirrorfs.env").read_text()

        # An edited settings file survives the package being installed again.
        edited = settings.read_text() + "S3MIRRORFS_BUCKET=images\n"
        settings.write_text(edited)
        apt_get("install", "--reinstall", "--no-install-recommends", str(deb.resolve()))
        assert settings.read_text() == edited

        # Removing keeps the settings; purging takes them too; nothing else is left.
        apt_get("remove", "s3mirrorfs")
        assert not Path("/usr/bin/s3mirrorfs").exists()
        assert settings.read_text() == edited
        apt_get("purge", "s3mirrorfs")
        for path in COMMON + DEB_ONLY:
            assert not Path(path).exists(), path
        assert not Path("/usr/share/s3mirrorfs").exists()
        assert subprocess.run(["man", "-w", "s3mirrorfs"], capture_output=True).returncode != 0
        assert "ok installed" not in subprocess.run(
            ["dpkg-query", "-W", "-f", "${Status}", "s3mirrorfs"], capture_output=True, text=True
        ).stdout
        assert snapshot(mirror) == before, "the mirror changed"
    finally:
        subprocess.run(["apt-get", "purge", "-y", "-q", "s3mirrorfs"], capture_output=True, timeout=300)
        if made_mirror:
            shutil.rmtree(mirror)
        if made_home:
            shutil.rmtree(mirror.parent)
