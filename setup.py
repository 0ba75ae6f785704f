"""Packaging for opensora. Dependencies live in requirements/*.txt so pip and setup.py agree."""

import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
REQUIREMENTS = ROOT / "requirements"


def read_requirements(name: str) -> list[str]:
    """Requirement lines of requirements/<name>, without comments or blank lines; `-r FILE` is followed."""
    requirements = []
    for line in (REQUIREMENTS / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            requirements += read_requirements(line[3:].strip())
        elif line:
            requirements.append(line)
    return requirements


def read_version() -> str:
    # Parsed rather than imported: importing opensora would need torch at build time.
    text = (ROOT / "opensora" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise RuntimeError("opensora/__init__.py does not define __version__")
    return match.group(1)


setup(
    name="opensora",
    version=read_version(),
    description="Config-driven text-to-video diffusion framework compatible with Open-Sora 1.0-1.2 weights",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["opensora", "opensora.*"]),
    package_data={"opensora.datasets": ["aspect_ratios.json"]},
    python_requires=">=3.10",
    install_requires=read_requirements("requirements.txt"),
    extras_require={
        "test": read_requirements("requirements-test.txt"),
        "data": read_requirements("requirements-data.txt"),
        "eval": read_requirements("requirements-eval.txt"),
        "colossalai": read_requirements("requirements-colossalai.txt"),
        "gpu": read_requirements("requirements-gpu.txt"),
        "train": read_requirements("requirements-train.txt"),
        "gradio": read_requirements("requirements-gradio.txt"),
    },
)
