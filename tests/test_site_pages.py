"""The documentation site repeats the README's feature table; the two must not drift apart."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def feature_rows(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    start = lines.index("## Features") + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def test_the_site_index_has_the_readme_feature_table_with_links_relative_to_docs():
    readme = [row.replace("](docs/", "](") for row in feature_rows(ROOT / "README.md")]
    assert len(readme) > 2
    assert feature_rows(ROOT / "docs" / "index.md") == readme
