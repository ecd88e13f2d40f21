"""kamailio/kamailio.cfg has no feature switches; the designs the benchmarks compare regmirror
with replace kamailio/mirror.cfg (and add kamailio-local.cfg) from benches/kamailio/. Each
combination must pass Kamailio's own configuration check in the stack's image, with every
optional parameter the entrypoint knows set, so a benchmark never starts on a broken config."""

import subprocess

import pytest

from conftest import DOCKER, ROOT

IMAGE = "regmirror/kamailio:dev"
ENV = {"NOTIFY_KEY": "regmirror-notify-demo-key", "REGMIRROR_ADDR2": "192.0.2.41:5070",
       "PHONE_ADDR": "192.0.2.20", "RTPENGINE_SOCK": "udp:192.0.2.25:2223"}


def check(overlay_dir=None, files=None):
    """`kamailio -c` through the image's entrypoint (it passes extra arguments on), with the
    files of `overlay_dir` (or `files`: name -> text) mounted into /etc/kamailio."""
    argv = [DOCKER, "run", "--rm"]
    for k, v in ENV.items():
        argv += ["-e", f"{k}={v}"]
    for path in sorted((ROOT / overlay_dir).glob("*.cfg")) if overlay_dir else []:
        argv += ["-v", f"{path}:/etc/kamailio/{path.name}:ro"]
    for path in files or []:
        argv += ["-v", f"{path}:/etc/kamailio/{path.name}:ro"]
    return subprocess.run(argv + [IMAGE, "-c"], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("design", ["production", "tutorial", "none"])
def test_every_kamailio_design_passes_the_config_check(stack, design):
    res = check(None if design == "production" else f"benches/kamailio/{design}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "config file ok" in res.stdout + res.stderr


def test_a_broken_design_is_refused(stack, tmp_path):
    """The check is real: a mirror.cfg calling a function no module provides fails it (and the
    entrypoint, which runs the same check before starting Kamailio)."""
    broken = tmp_path / "mirror.cfg"
    broken.write_text("route[MIRROR_SAVED] {\n\tno_such_function();\n}\n"
                      "route[MIRROR_EXPIRED] {\n\treturn;\n}\n")
    res = check(files=[broken])
    assert res.returncode != 0
    assert "no_such_function" in res.stdout + res.stderr, res.stderr[-3000:]
