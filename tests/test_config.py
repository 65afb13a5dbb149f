"""Every setting is declared once, documented, reachable from the command line and the README."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sdui import config

REPO = Path(__file__).resolve().parent.parent


def test_every_setting_has_help_text():
    assert config.undocumented_settings() == []


def test_every_flag_is_in_help_and_readme():
    out = subprocess.run([sys.executable, str(REPO / "app.py"), "--help"], capture_output=True, text=True, timeout=120,
                         cwd=REPO).stdout
    readme = (REPO / "README.md").read_text()
    for opt in config.OPTIONS:
        flag = config.flag_name(opt)
        assert flag in out, f"{flag} missing from app.py --help"
        assert f"`{flag}" in readme, f"{flag} missing from the README flag table"


def test_a1111_flag_names_parse_to_settings():
    import argparse

    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    s = config.settings_from_args(parser.parse_args(
        ["--listen", "--port", "7861", "--api", "--gradio-auth", "a:b", "--use-cpu", "all", "--no-half", "--medvram",
         "--precision", "full", "--models-dir", "m", "--ckpt-dir", "c", "--no-watermark"]))
    assert (s.listen, s.port, s.api, s.gradio_auth, s.use_cpu, s.no_half, s.medvram) == (
        True, 7861, True, "a:b", "all", True, True)
    assert s.full_precision and s.start_memory_level == 3 and s.no_watermark and s.models_dir == "m"
