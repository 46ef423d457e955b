from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def requirements() -> list[str]:
    # requirements.in names what the project needs; constraints.txt pins every version.
    lines = (HERE / "requirements.in").read_text().splitlines()
    runtime = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            runtime.append(line)
    return runtime


setup(
    name="podinsight_dagster",
    version="0.1.0",
    description="Pod-Insight: podcast RSS feeds to transcripts, segments, subtitles and KPIs on Dagster",
    packages=find_packages(include=["podinsight_dagster", "podinsight_dagster.*"]),
    package_data={"podinsight_dagster.demo": ["content/*.yaml", "content/*.md", "content/feeds/*.xml",
                                              "content/audio/*/*.mp3", "content/texts/*/*.txt",
                                              "content/texts/*/*.json"]},
    include_package_data=True,
    python_requires=">=3.11",
    install_requires=requirements(),
    entry_points={"console_scripts": ["podrun=podinsight_dagster.cli:main"]},
)
