"""The README stays a user's page: at most 300 lines, and every file it links to exists."""
import re

from conftest import PROJECT_DIR


def test_readme_is_at_most_300_lines_and_its_links_resolve():
    text = (PROJECT_DIR / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert links
    missing = [link for link in links if not link.startswith("http") and not (PROJECT_DIR / link).exists()]
    assert not missing, missing
