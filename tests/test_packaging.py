"""The package works from a wheel: built from this checkout, installed in a fresh environment, used outside the
checkout, it renders the card from the shipped template and finds what the Space ships."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from test_model_card import REPO_ID, write_model_dir

from clinical_modernbert.hub import SPACE_FILES, plan_space_upload
from clinical_modernbert.model_card import render_model_card

pytestmark = pytest.mark.slow

# Run by the installed package's interpreter, from a folder outside the checkout.
USE_INSTALLED = """
import json, sys
import clinical_modernbert
from clinical_modernbert.hub import plan_space_upload
from clinical_modernbert.model_card import render_model_card

plan = plan_space_upload("test-org/demo", sys.argv[2])
print(json.dumps({
    "package": clinical_modernbert.__file__,
    "card": str(render_model_card(sys.argv[1], sys.argv[2]).card),
    "space": {name: content.decode() for name, content in plan.files.items() if isinstance(content, bytes)},
    "space_files": sorted(plan.files),
}))
"""


def checkout_copy(destination: Path) -> Path:
    """The files of this checkout that git tracks or would track (what a fresh clone of this state holds)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"{REPO_ROOT} is not a git checkout: {listed.stderr.strip()}")
    for name in filter(None, listed.stdout.split("\0")):
        if (REPO_ROOT / name).is_file():  # tracked files deleted in the work tree are not part of it
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, destination / name)
    return destination


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = checkout_copy(tmp_path_factory.mktemp("source"))
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-w", str(dist), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = dist.glob("clinical_modernbert-*.whl")
    return wheel


def test_wheel_holds_every_module_and_the_shipped_folders(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    package = REPO_ROOT / "src" / "clinical_modernbert"
    modules = {f"clinical_modernbert/{p.relative_to(package).as_posix()}" for p in package.rglob("*.py")}
    assert modules - names == set(), "add the missing subpackage to pyproject.toml's [tool.setuptools] packages"
    assert "clinical_modernbert/model_card_template/template.md" in names
    assert {f"clinical_modernbert/space/{name}" for name in SPACE_FILES} <= names


def test_installed_wheel_renders_the_card_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    # the system's site-packages give torch & co. without a download; pip runs from there too (the venv has none)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # no checkout on the path
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
                              str(wheel)], capture_output=True, text=True, env=env, timeout=300)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    model_dir = write_model_dir(tmp_path / "model")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    used = subprocess.run([str(python), "-c", USE_INSTALLED, str(model_dir), REPO_ID], cwd=outside, env=env,
                          capture_output=True, text=True, timeout=300)
    assert used.returncode == 0, used.stderr[-3000:]
    result = json.loads(used.stdout.splitlines()[-1])

    package = Path(result["package"])
    assert package.is_relative_to(venv) and not package.is_relative_to(REPO_ROOT), package
    # the card rendered from the wheel's template is the card rendered from the checkout's model_card/template.md
    assert result["card"] == str(render_model_card(model_dir, REPO_ID).card)
    checkout_plan = plan_space_upload("test-org/demo", REPO_ID)
    assert result["space_files"] == sorted(checkout_plan.files)
    for name in SPACE_FILES:
        assert result["space"][name] == (REPO_ROOT / "space" / name).read_text()
