"""Package layout that pyproject.toml cannot express: ``configs/`` ships as ``imgsynth.configs``."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["imgsynth", "imgsynth.*"]), "imgsynth.configs"],
    package_dir={"imgsynth.configs": "configs"},
    package_data={
        "imgsynth.configs": ["*.yaml"],
        "imgsynth": ["**/*.json", "**/*.html", "**/*.js", "**/*.css", "**/*.txt"],
    },
    include_package_data=True,
)
